"""Measurements for bench/replicas.sh (see there). Gateways: A and B on
PostgreSQL (http 29003, 29013; admin 29090, 29091), S on SQLite (29033,
29093), C on PostgreSQL through a relay on 29433 (started here). Loopback
only; every loop is bounded in count and time."""
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

TOKEN2 = sys.argv[1]
RUN, ROOT = os.environ["RUN"], os.environ["ROOT"]
ROUNDS = int(os.environ.get("ROUNDS", "5"))
DURATION = int(os.environ.get("DURATION", "5"))
SAMPLES = int(os.environ.get("SAMPLES", "40"))
OUTAGE = int(os.environ.get("OUTAGE", "60"))
CHANGES = int(os.environ.get("CHANGES", "10000"))
WRK = os.path.join(os.path.dirname(__file__), "wrk.lua")


def admin_token(name):
    return open(f"{RUN}/{name}/admin-token").read().strip()


def admin(port, token, method, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request(method, path, body=None if body is None else json.dumps(body), headers={"Authorization": f"Bearer {token}"})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, (json.loads(data) if data else None)


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def wrk(port, seconds, conns=32):
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "-s", WRK, f"http://127.0.0.1:{port}/"],
                         env=dict(os.environ), capture_output=True, text=True).stdout
    m = re.search(r"RESULT requests=(\d+) errors=(\d+) non2xx=(\d+)", out)
    requests, errors, non2xx = (int(x) for x in m.groups())
    return requests / seconds, errors + non2xx


def throughput():
    """Median req/s of the PostgreSQL replica A and the SQLite gateway S, interleaved."""
    rates = {"postgres": [], "sqlite": []}
    bad = 0
    for _ in range(ROUNDS):
        for name, port in (("postgres", 29003), ("sqlite", 29033)):
            rate, errors = wrk(port, DURATION)
            rates[name].append(rate)
            bad += errors
    return pct(rates["postgres"], 50), pct(rates["sqlite"], 50), bad


def suspension(admin_port, name, poll_port):
    """ms from sending the suspension to the admin API on `admin_port` to
    the first denied request on `poll_port`, and the admin answer's time."""
    token_a = admin_token(name)
    seen = {}

    def poll():
        c = http.client.HTTPConnection("127.0.0.1", poll_port, timeout=10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                c.request("GET", "/", headers={"Host": "bench.localhost", "Device-Attestation": TOKEN2})
                r = c.getresponse()
                r.read()
            except (http.client.HTTPException, OSError):
                c.close()
                c = http.client.HTTPConnection("127.0.0.1", poll_port, timeout=10)
                continue
            if r.status == 200:
                seen["allowed"] = True
            elif r.status == 403 and "sent" in seen:
                seen["denied"] = time.monotonic()
                return

    t = threading.Thread(target=poll)
    t.start()
    while "allowed" not in seen and t.is_alive():
        time.sleep(0.005)
    time.sleep(0.05)
    seen["sent"] = sent = time.monotonic()
    status, _ = admin(admin_port, token_a, "POST", "/v1/users/bench2/suspend", {"reason": "bench"})
    ack = (time.monotonic() - sent) * 1000
    t.join(20)
    admin(admin_port, token_a, "POST", "/v1/users/bench2/unsuspend", {"reason": "bench"})
    time.sleep(0.05)
    denied = seen.get("denied") if status == 200 else None
    return ack, None if denied is None else (denied - sent) * 1000


def suspensions():
    """Interleaved, with wrk on A, B and the SQLite gateway S: suspended
    through S and denied on S (one gateway, as before replicas), through A
    and denied on A, through A and denied on B."""
    loads = [subprocess.Popen(["taskset", "-c", "1", "wrk", "-t1", "-c6", f"-d{SAMPLES * 4 + 30}s", "-s", WRK, f"http://127.0.0.1:{p}/"],
                              env=dict(os.environ), stdout=subprocess.DEVNULL) for p in (29003, 29013, 29033)]
    time.sleep(1)
    series = {"sqlite": ([], []), "local": ([], []), "remote": ([], [])}
    cases = (("sqlite", 29093, "s", 29033), ("local", 29090, "a", 29003), ("remote", 29090, "a", 29013))
    for _ in range(SAMPLES):
        for key, admin_port, name, poll_port in cases:
            ack, denied = suspension(admin_port, name, poll_port)
            series[key][0].append(ack)
            if denied is not None:
                series[key][1].append(denied)
    for l in loads:
        l.terminate()
        l.wait()
    return series


class Relay:
    """A TCP relay to PostgreSQL that can be cut (every connection closed,
    new ones refused) and restored."""

    def __init__(self, listen, target):
        self.listen, self.target = listen, target
        self.conns, self.server, self.lock = [], None, threading.Lock()

    def up(self):
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", self.listen))
        self.server.listen(64)
        threading.Thread(target=self.accept, args=(self.server,), daemon=True).start()

    def accept(self, server):
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self.pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def pipe(a, b):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        # shutdown wakes the thread blocked in accept(); close alone does not.
        try:
            self.server.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.server.close()
        with self.lock:
            for s in self.conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass
            self.conns = []


def position(port, token):
    _, status = admin(port, token, "GET", "/v1/status")
    return status["store"]["position"], status["store"]["fresh"]


def catch_up():
    """C cut off for OUTAGE s while CHANGES writes go through A; seconds until C is at A's position."""
    relay = Relay(29433, 29432)
    relay.up()
    c = subprocess.Popen(["taskset", "-c", "0", f"{ROOT}/target/release/sekisho", "--config", f"{RUN}/c.toml"],
                         stdout=open(f"{RUN}/c.log", "w"), stderr=subprocess.STDOUT)
    try:
        for _ in range(200):
            try:
                position(29092, admin_token("c"))
                break
            except (OSError, FileNotFoundError, http.client.HTTPException):
                time.sleep(0.1)
        token_a, token_c = admin_token("a"), admin_token("c")
        relay.cut()
        cut_at = time.monotonic()
        failed = []

        def writer(offset, step):
            conn = http.client.HTTPConnection("127.0.0.1", 29090, timeout=30)
            for i in range(offset, CHANGES, step):
                body = json.dumps({"display_name": f"c{i}", "role": "staff", "profiles": ["bench"]})
                conn.request("PUT", f"/v1/users/c{i}", body=body, headers={"Authorization": f"Bearer {token_a}"})
                r = conn.getresponse()
                r.read()
                if r.status != 200:
                    failed.append(r.status)

        writers = [threading.Thread(target=writer, args=(k, 4)) for k in range(4)]
        for w in writers:
            w.start()
        for w in writers:
            w.join()
        written = time.monotonic() - cut_at
        head, _ = position(29090, token_a)
        while time.monotonic() - cut_at < OUTAGE:
            time.sleep(0.5)
        at_c, fresh = position(29092, token_c)
        refused_during = (not fresh, at_c)
        relay.up()
        back = time.monotonic()
        deadline = back + 120
        while time.monotonic() < deadline:
            at, fresh = position(29092, token_c)
            if at >= head and fresh:
                return head, written, time.monotonic() - back, refused_during, failed
            time.sleep(0.005)
        return head, written, None, refused_during, failed
    finally:
        c.terminate()
        c.wait()


pg, sq, bad = throughput()
series = suspensions()
head, written, caught, refused, failed = catch_up()
print(f"bench/replicas.sh, {time.strftime('%Y-%m-%d %H:%M')}: ROUNDS={ROUNDS} DURATION={DURATION} SAMPLES={SAMPLES} OUTAGE={OUTAGE} CHANGES={CHANGES}")
print()
print("| measure | value |")
print("| --- | ---: |")
print(f"| req/s, PostgreSQL replica A (median of {ROUNDS}) | {pg:,.0f} |")
print(f"| req/s, SQLite gateway (median of {ROUNDS}, interleaved) | {sq:,.0f} |")
print(f"| **ratio PostgreSQL / SQLite** | **{pg / sq:.3f}x** (non-2xx or errors: {bad}) |")
sq_acks, sq_denies = series["sqlite"]
acks, local = series["local"]
remote = series["remote"][1]
print(f"| one SQLite gateway (as before): suspension answer (commit + fsync) | p50 {pct(sq_acks, 50):.1f} ms, p99 {pct(sq_acks, 99):.1f} ms |")
print(f"| one SQLite gateway (as before): suspension sent → first denied request, {len(sq_denies)} of {SAMPLES} | p50 {pct(sq_denies, 50):.1f} ms, p99 {pct(sq_denies, 99):.1f} ms, max {max(sq_denies):.1f} ms |")
print(f"| replica A: suspension answer (PostgreSQL commit + fsync) | p50 {pct(acks, 50):.1f} ms, p99 {pct(acks, 99):.1f} ms |")
print(f"| replica A: suspension via A → first denied request on A, {len(local)} of {SAMPLES} | p50 {pct(local, 50):.1f} ms, p99 {pct(local, 99):.1f} ms, max {max(local):.1f} ms |")
print(f"| **suspension via A → first denied request on B**, {len(remote)} of {SAMPLES} | **p50 {pct(remote, 50):.1f} ms, p99 {pct(remote, 99):.1f} ms**, max {max(remote):.1f} ms |")
print(f"| B against one SQLite gateway | p50 {pct(remote, 50) / pct(sq_denies, 50):.2f}x, p99 {pct(remote, 99) / pct(sq_denies, 99):.2f}x |")
print(f"| B against A (the replication's own cost) | p50 {pct(remote, 50) / pct(local, 50):.2f}x, p99 {pct(remote, 99) / pct(local, 99):.2f}x |")
print(f"| catch-up: {CHANGES} changes written through A while C was cut off ({written:.1f} s; failed writes: {len(failed)}); at the end of the {OUTAGE} s outage C was (failing closed, at position): {refused} | A's change-log position {head} |")
print(f"| **catch-up time**: relay back → C at A's position and fresh | **{'not reached' if caught is None else f'{caught * 1000:.0f} ms'}** |")
