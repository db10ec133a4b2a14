"""Scale checks for bench/run.sh (SCALE=1): memory per idle keep-alive
connection (sekisho vs nginx, same run) and suspension-to-deny latency while
wrk loads the gateway. Loopback only; every loop is bounded."""
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time

RUN, TOKEN2, SEKISHO_PID, NGINX_PID, BARE_PID = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
IDLE = int(os.environ.get("IDLE_CONNS", "2000"))
# Seconds between batches of 100 idle connections (0: all at once).
PACE = float(os.environ.get("IDLE_PACE", "0"))


def rss_kib(pid):
    """Resident memory of a process and its direct children (nginx workers)."""
    pids = [pid] + [int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()]
    total = 0
    for p in pids:
        with open(f"/proc/{p}/status") as f:
            total += next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
    return total


def idle_cost(port, pid, host, tls=False, since=None):
    """KiB per idle keep-alive connection that has served one request (over
    TLS when asked: a full handshake each, no session resumption), twice:
    two seconds after the last one opened with nothing else happening, and
    again after other clients came and went (a gateway is never that quiet,
    and the allocator hands freed pages back to the system only as it
    works). The allocator keeps what earlier connections freed, and new
    ones reuse it; `since` (the process's memory before any of them)
    measures from there instead, which is right when these connections
    need at least as much."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    before = rss_kib(pid)
    socks = []
    for i in range(IDLE):
        if PACE and i and i % 100 == 0:
            # Idle connections gather over time, not all in one instant.
            time.sleep(PACE)
        s = socket.create_connection(("127.0.0.1", port))
        if tls:
            s = context.wrap_socket(s, server_hostname=host)
        s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        s.recv(65536)
        socks.append(s)
    time.sleep(2)
    base = before if since is None else since
    quiet = rss_kib(pid)
    for _ in range(500):
        s = socket.create_connection(("127.0.0.1", port))
        if tls:
            s = context.wrap_socket(s, server_hostname=host)
        s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        s.recv(65536)
        s.close()
    time.sleep(1)
    live = rss_kib(pid)
    for s in socks:
        s.close()
    return (quiet - base) / IDLE, (live - base) / IDLE


def admin(path, token):
    a = http.client.HTTPConnection("127.0.0.1", 19090)
    a.request("POST", path, body=json.dumps({"reason": "bench"}), headers={"Authorization": f"Bearer {token}"})
    resp = a.getresponse()
    resp.read()
    return resp.status


def suspension_to_deny():
    """Milliseconds from sending the suspension to the first denied request of that user, under load."""
    token = open(f"{RUN}/data/admin-token").read().strip()
    seen = {}
    stop = threading.Event()

    def poll():
        c = http.client.HTTPConnection("127.0.0.1", 19003)
        deadline = time.monotonic() + 20
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                c.request("GET", "/", headers={"Host": "bench.localhost", "Device-Attestation": TOKEN2})
                r = c.getresponse()
                r.read()
            except (http.client.HTTPException, OSError) as e:
                seen.setdefault("errors", []).append(repr(e))
                c.close()
                c = http.client.HTTPConnection("127.0.0.1", 19003)
                continue
            if r.status == 200:
                seen["allowed"] = True
            if r.status == 403 and "denied" not in seen:
                seen["denied"] = time.monotonic()
                return

    t = threading.Thread(target=poll)
    t.start()
    while "allowed" not in seen and t.is_alive():
        time.sleep(0.01)
    time.sleep(0.1)
    sent = time.monotonic()
    status = admin("/v1/users/bench2/suspend", token)
    acked = time.monotonic()
    t.join(20)
    stop.set()
    denied = seen.get("denied")
    if seen.get("errors"):
        print(f"poller reconnected {len(seen['errors'])} times: {seen['errors'][:3]}", file=sys.stderr)
    admin("/v1/users/bench2/unsuspend", token)
    return status, (acked - sent) * 1000, None if denied is None else (denied - sent) * 1000


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


SAMPLES = int(os.environ.get("SAMPLES", "40"))
load = subprocess.Popen(["taskset", "-c", "1", "wrk", "-t1", "-c16", f"-d{SAMPLES + 10}s", "-s", os.path.join(os.path.dirname(__file__), "wrk.lua"), "http://127.0.0.1:19003/"],
                        env=dict(os.environ, BENCH_TOKEN=os.environ["BENCH_TOKEN"]), stdout=subprocess.DEVNULL)
time.sleep(1)
samples = [suspension_to_deny() for _ in range(SAMPLES)]
load.terminate()
load.wait()
acks = [a for _, a, _ in samples]
denies = [d for _, _, d in samples if d is not None]
statuses = sorted({st for st, _, _ in samples})
sek_start = rss_kib(SEKISHO_PID)
sek = idle_cost(19003, SEKISHO_PID, "bench.localhost")
ngx = idle_cost(19001, NGINX_PID, "bench.localhost")
bare = idle_cost(19004, BARE_PID, "bench.localhost")
sek_tls = idle_cost(19443, SEKISHO_PID, "bench.localhost", tls=True, since=sek_start)
ngx_tls = idle_cost(19441, NGINX_PID, "bench.localhost", tls=True)
def kib(pair):
    return f"{pair[1]:.1f} KiB ({pair[0]:.1f} KiB before other traffic)"


print("| measure | value |")
print("| --- | ---: |")
print(f"| suspension: admin answer (commit + fsync + swap), under load, {SAMPLES} samples | p50 {pct(acks, 50):.1f} ms, p99 {pct(acks, 99):.1f} ms, max {max(acks):.1f} ms (HTTP {statuses}) |")
print(f"| suspension: sent → first denied request of that user, under load, {len(denies)} of {SAMPLES} samples | p50 {pct(denies, 50):.1f} ms, p99 {pct(denies, 99):.1f} ms, max {max(denies):.1f} ms |")
print(f"| memory per idle keep-alive connection, sekisho ({IDLE} conns) | {kib(sek)} |")
print(f"| memory per idle keep-alive connection, bare hyper ({IDLE} conns) | {kib(bare)} |")
print(f"| memory per idle keep-alive connection, nginx ({IDLE} conns) | {kib(ngx)} |")
print(f"| memory per idle keep-alive TLS connection, sekisho ({IDLE} conns) | {kib(sek_tls)} |")
print(f"| memory per idle keep-alive TLS connection, nginx ({IDLE} conns) | {kib(ngx_tls)} |")
