-- Sets the Host and (if given) the attestation header on every request,
-- and prints latency percentiles in a form run.sh parses.
local host = os.getenv("BENCH_HOST") or "bench.localhost"
local token = os.getenv("BENCH_TOKEN")
wrk.headers["Host"] = host
if token and token ~= "" then
  wrk.headers["Device-Attestation"] = token
end

function done(summary, latency, requests)
  io.write(string.format("RESULT requests=%d errors=%d non2xx=%d p50=%d p99=%d p999=%d\n",
    summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
