"""Requests/s as registered devices grow (bench/run.sh with DEVICES=1).

Imports devices through the admin API (POST /v1/devices/import, the path an
administrator uses for an asset register) in steps up to DEVICE_STEPS, and at
each step loads the gateway with wrk (full rules, the bench user's token) and
records requests/s, proxy CPU per request, resident memory and the import
time. The claim under test: the request rate stays flat from 100 to 1,000,000
devices, because the state is a hash map and a snapshot swap never copies it.
Loopback only; every loop is bounded.
"""
import http.client
import json
import os
import re
import subprocess
import sys
import time

RUN, TOKEN, PID, PUB, ALG = sys.argv[1:6]
PID = int(PID)
STEPS = [int(s) for s in os.environ.get("DEVICE_STEPS", "100,10000,100000,1000000").split(",")]
ROUNDS = int(os.environ.get("ROUNDS", "3"))
DURATION = os.environ.get("DURATION", "5")
CONNS = os.environ.get("CONNS", "32")
LOAD_CPU = os.environ.get("LOAD_CPU", "").split()
BENCH = os.path.dirname(os.path.abspath(__file__))
OWNERS = 1000
BATCH = 2500  # about 850 KiB of JSON, under the admin API's 1 MiB
TICK = os.sysconf("SC_CLK_TCK")


def admin(method, path, body):
    token = open(f"{RUN}/data/admin-token").read().strip()
    c = http.client.HTTPConnection("127.0.0.1", 19090, timeout=300)
    c.request(method, path, body=json.dumps(body), headers={"Authorization": f"Bearer {token}"})
    r = c.getresponse()
    text = r.read()
    if r.status >= 300:
        sys.exit(f"{method} {path} answered {r.status}: {text[:300]!r}")


def rss_mib():
    with open(f"/proc/{PID}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024


def ticks():
    with open(f"/proc/{PID}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def import_up_to(have, want):
    today = time.strftime("%Y-%m-%d")
    for start in range(have, want, BATCH):
        devices = [
            {
                "id": f"scale-{i:07d}", "owner": f"scale{i % OWNERS}", "kind": "pc", "ownership": "issued",
                "os": "windows", "os_version": "10.0.22631", "key_alg": ALG, "public_key": PUB,
                "security_software": {"name": "Defender", "updated": today},
            }
            for i in range(start, min(start + BATCH, want))
        ]
        admin("POST", "/v1/devices/import", {"reason": "bench asset register", "devices": devices})


def load():
    before = ticks()
    out = subprocess.run(
        LOAD_CPU + ["wrk", "-t2", f"-c{CONNS}", f"-d{DURATION}s", "-s", f"{BENCH}/wrk.lua", "http://127.0.0.1:19003/"],
        env={**os.environ, "BENCH_TOKEN": TOKEN}, capture_output=True, text=True, check=True,
    ).stdout
    spent = ticks() - before
    res = re.search(r"RESULT requests=(\d+) .*non2xx=(\d+)", out)
    requests, bad = int(res.group(1)), int(res.group(2))
    if bad:
        sys.exit(f"{bad} requests were refused: the bench measures the allow path")
    return requests / float(DURATION), spent / TICK / max(requests, 1) * 1e6


def main():
    for u in range(OWNERS):
        admin("PUT", f"/v1/users/scale{u}", {"display_name": f"scale{u}", "role": "staff", "profiles": ["bench"]})
    rows, have = [], 0
    for want in STEPS:
        t0 = time.monotonic()
        import_up_to(have, want)
        took, have = time.monotonic() - t0, want
        runs = sorted(load() for _ in range(ROUNDS))
        rps, cpu = runs[len(runs) // 2]
        rows.append((want, took, rss_mib(), rps, cpu))
        print(f"{want} devices: {rps:.0f} req/s, {cpu:.1f} µs CPU/req, {rows[-1][2]:.0f} MiB", file=sys.stderr)
    base = rows[0][3]
    lines = [
        "| registered devices | import time | sekisho RSS | requests/s (median of %d) | vs first step | proxy CPU/req |" % ROUNDS,
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n, took, rss, rps, cpu in rows:
        lines.append(f"| {n:,} | {took:.1f} s | {rss:.0f} MiB | {rps:,.0f} | {rps / base:.2f}x | {cpu:.1f} µs |")
    table = "\n".join(lines)
    print(table)
    os.makedirs(f"{BENCH}/results", exist_ok=True)
    with open(f"{BENCH}/results/devices-{time.strftime('%Y%m%d-%H%M%S')}.md", "w") as f:
        f.write(table + "\n")


main()
