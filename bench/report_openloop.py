"""Open-loop table for run.sh (OPENLOOP=1): medians per case and offered rate,
with sekisho's and the others' p99 as a ratio to nginx's at the same rate."""
import json
import statistics
import sys
from collections import defaultdict

rows_path, tick, peak, duration, header = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
runs = defaultdict(list)  # (pct, name) -> [result]
order, pcts, rates = [], [], {}
for line in open(rows_path):
    rnd, name, pct, rate, ticks, other, res = line.rstrip("\n").split("\t")
    pct = int(pct)
    r = json.loads(res)
    r["cpu_us"] = int(ticks) / tick * 1e6 / r["requests"] if r["requests"] else 0.0
    r["round"] = int(rnd)
    r["other_pct"] = int(other) / tick / duration * 100  # % of one core used outside the bench
    runs[(pct, name)].append(r)
    rates[pct] = int(rate)
    if name not in order:
        order.append(name)
    if pct not in pcts:
        pcts.append(pct)


def med(pct, name, key):
    vals = [r[key] for r in runs.get((pct, name), [])]
    return statistics.median(vals) if vals else None


def round_ratios(pct, name):
    """sekisho p99 / nginx p99 within each round (the spread across rounds)."""
    base = {r["round"]: r["p99_us"] for r in runs.get((pct, "nginx"), [])}
    return [r["p99_us"] / base[r["round"]] for r in runs[(pct, name)] if base.get(r["round"])]


rounds = max(len(v) for v in runs.values())
print(f"# sekisho open-loop latency\n\n`{header}`; nginx closed-loop peak {peak:,} req/s; "
      f"medians of {rounds} interleaved rounds; latency from each request's intended send time.\n")
print("| load | case | offered req/s | achieved req/s | p50 µs | p99 µs | p99.9 µs | p99 vs nginx (per round) | proxy CPU µs/req | unsent | errors + non-2xx | other work, max % of a core |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for pct in sorted(pcts):
    base = med(pct, "nginx", "p99_us")
    for name in order:
        if (pct, name) not in runs:
            continue
        p99 = med(pct, name, "p99_us")
        ratio = "-"
        if base and name != "nginx":
            spread = ", ".join(f"{x:.2f}" for x in round_ratios(pct, name))
            ratio = f"{p99 / base:.2f}x ({spread})"
        unsent = sum(r["unsent"] for r in runs[(pct, name)])
        failed = sum(r["errors"] + r["non_2xx"] for r in runs[(pct, name)])
        cpu = "–" if name == "upstream direct" else f"{med(pct, name, 'cpu_us'):.1f}"
        print(f"| {pct}% | {name} | {rates[pct]:,} | {med(pct, name, 'achieved_rate'):,.0f} | {med(pct, name, 'p50_us'):.0f} "
              f"| {p99:.0f} | {med(pct, name, 'p999_us'):.0f} | {ratio} | {cpu} | {unsent} | {failed} | {max(r['other_pct'] for r in runs[(pct, name)]):.0f} |")

if (50, "sekisho full rules") in runs and (50, "nginx") in runs:
    s, n = med(50, "sekisho full rules", "p99_us"), med(50, "nginx", "p99_us")
    verdict = "met" if s <= n else "not met"
    print(f"\nTarget (sekisho full rules p99 ≤ nginx p99 at 50% of nginx's peak): {verdict} ({s:.0f} µs vs {n:.0f} µs, {s / n:.2f}x).")
print("\n`unsent` (summed over the rounds) counts requests whose send time had come but that no connection had sent by the end: "
      "the offered rate was not kept up, so the queue, and the latency, grew for the whole run. "
      "`upstream direct` is the floor of the load generator and the upstream, which share one core. "
      "`other work` is CPU used by processes outside the bench during the case (run.sh measures a case again when it passes 10%).")
