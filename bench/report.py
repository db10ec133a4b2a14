"""Medians per case from run.sh's rows, with ratios to nginx, as Markdown."""
import statistics
import sys
from collections import defaultdict

rows_path, tick, header = sys.argv[1], int(sys.argv[2]), sys.argv[3]
cases = defaultdict(list)
order = []
for line in open(rows_path):
    rnd, name, req, secs, ticks, p50, p99, p999, bad = line.rstrip("\n").split("\t")
    if name not in cases:
        order.append(name)
    cases[name].append(
        dict(rps=int(req) / float(secs), req=int(req), cpu_us=(int(ticks) / tick * 1e6 / int(req)) if int(req) else 0.0,
             p50=p50, p99=p99, p999=p999, bad=int(bad or 0)))

def med(name, key):
    vals = [r[key] for r in cases[name]]
    if not vals or isinstance(vals[0], str) and vals[0] == "-":
        return None
    return statistics.median(float(v) for v in vals)

def base_for(name):
    if "h2" in name:
        return "nginx h2 TLS"
    if "TLS" in name:
        return "nginx TLS"
    return "nginx"

print(f"# sekisho bench\n\n`{header}`; medians of {len(next(iter(cases.values())))} interleaved rounds.\n")
print("| case | req/s | vs nginx | p50 µs | p99 µs | p99.9 µs | proxy CPU µs/req | per core vs nginx | non-2xx |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for name in order:
    rps = med(name, "rps")
    base = med(base_for(name), "rps")
    ratio = f"{rps / base:.2f}x" if base else "-"
    cpu = med(name, "cpu_us")
    fmt = lambda v: "-" if v is None else f"{v:.0f}"
    base_cpu = med(base_for(name), "cpu_us")
    # Requests per CPU-second against nginx's: what "per core" means when
    # the load generator, not the proxy, may be what limits req/s.
    per_core = f"{base_cpu / cpu:.2f}x" if base_cpu and cpu else "-"
    bad = sum(r["bad"] for r in cases[name])
    print(f"| {name} | {rps:,.0f} | {ratio} | {fmt(med(name, 'p50'))} | {fmt(med(name, 'p99'))} | {fmt(med(name, 'p999'))} | {cpu:.1f} | {per_core} | {bad} |")
print("\nThe deny and `answering 403 itself` cases answer 403 by design (their non-2xx count is every request). "
      "Ratios compare with nginx over the same transport (plain, TLS, or HTTP/2).")
