#!/usr/bin/env bash
# sekisho's bench: the same fixed-response nginx upstream behind nginx,
# HAProxy and sekisho, measured in one run, interleaved and repeated.
#
#   bench/run.sh                       # per-core: each proxy 1 worker on core 0,
#                                      # load generator and upstream on core 1
#   WORKERS=2 PIN=0 bench/run.sh       # each proxy's best on both cores
#   ROUNDS=5 DURATION=5 CONNS=32 bench/run.sh
#   ONLY='sekisho full' bench/run.sh     # only the cases whose name matches
#   SCALE=1 bench/run.sh                 # memory per idle connection and
#                                        # suspension-to-deny under load instead
#   DEVICES=1 bench/run.sh               # requests/s and memory as registered devices
#                                        # grow from 100 to 1,000,000 instead
#   PROFILE=1 bench/run.sh               # perf samples of the full-rules path instead
#                                        # (PROFILE_DENY=1: the deny path; PROFILE_BARE=1: bare hyper)
#   SYSCALLS=1 bench/run.sh              # system calls and context switches per request
#   UPLOAD=1 bench/run.sh                # request bodies streamed: MB/s, CPU per MB
#   OPENLOOP=1 bench/run.sh              # latency at fixed rates instead: 25/50/75%
#                                        # of nginx's closed-loop peak (PCTS, PEAK)
#
# Prints and writes (bench/results/) a table of requests/s, latency
# percentiles and proxy CPU time per request (utime+stime of the proxy's
# processes from /proc over the run, divided by requests served), with each
# case's ratio to nginx. Installs wrk, nginx, haproxy and h2load from Debian
# packages when missing. Touches only loopback.
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5}
CONNS=${CONNS:-32}
WORKERS=${WORKERS:-1}
PIN=${PIN:-1}
BENCH=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
command -v haproxy >/dev/null || need+=(haproxy)
command -v h2load >/dev/null || need+=(nghttp2-client)
[ -e /usr/share/nginx/modules/ngx_http_lua_module.so ] || need+=(libnginx-mod-http-lua)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
(cd "$ROOT" && cargo build --release --quiet)
(cd "$BENCH/bare" && CARGO_TARGET_DIR="$ROOT/target" cargo build --release --quiet)
if [ "${OPENLOOP:-0}" = 1 ]; then (cd "$BENCH/openloop" && CARGO_TARGET_DIR="$ROOT/target" cargo build --release --quiet); fi

RUN=$(mktemp -d /tmp/sekisho-bench.XXXXXX)
PIDS=()
# The audit trail is never rotated in a run (bench/sekisho.toml): a 5-round
# run leaves gigabytes of it, removed at the end (KEEP_AUDIT=1 keeps it).
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true
  [ "${KEEP_AUDIT:-0}" = 1 ] || rm -f "$RUN"/data/audit.jsonl* "$RUN"/nginx-lua-audit.jsonl
}
trap cleanup EXIT

if [ "$PIN" = 1 ]; then PROXY_CPU="taskset -c 0"; LOAD_CPU="taskset -c 1"; else PROXY_CPU=""; LOAD_CPU=""; fi
render() { sed -e "s#__RUN__#$RUN#g" -e "s#__WORKERS__#$WORKERS#g" "$BENCH/$1" > "$RUN/$2"; }
render nginx-upstream.conf upstream.conf
render nginx-proxy.conf nginx-proxy.conf
render haproxy.cfg haproxy.cfg
render nginx-lua.conf nginx-lua.conf
render sekisho.toml sekisho.toml
sed -i 's#^\[tls\]#[tls]\ngenerate_dev_certs = true#' "$RUN/sekisho.toml"
# ROTATE_BYTES=67108864: rotate the audit trail (and gzip it) inside the run.
[ -n "${ROTATE_BYTES:-}" ] && sed -i "s#^rotate_bytes = .*#rotate_bytes = $ROTATE_BYTES#" "$RUN/sekisho.toml"
cp -r "$BENCH/rules" "$RUN/rules"
mkdir -p "$RUN/data"

wait_port() { for _ in $(seq "${WAIT_TRIES:-100}"); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 did not open" >&2; exit 1; }

$LOAD_CPU nginx -c "$RUN/upstream.conf" -p "$RUN" & PIDS+=($!)
# CALLGRIND=1: sekisho and bare hyper run under callgrind (instructions are
# counted, not timed, so the figure repeats on a busy machine).
WRAP=(); [ "${CALLGRIND:-0}" = 1 ] && WAIT_TRIES=900 && WRAP=(valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$RUN/callgrind-%p.out" -q)
$PROXY_CPU "${WRAP[@]}" "$ROOT/target/release/sekisho" --config "$RUN/sekisho.toml" > "$RUN/sekisho.log" 2>&1 & SEKISHO=$!; PIDS+=($SEKISHO)
wait_port 19000; wait_port 19003; wait_port 19090
$PROXY_CPU nginx -c "$RUN/nginx-proxy.conf" -p "$RUN" & NGINX=$!; PIDS+=($NGINX)
$PROXY_CPU haproxy -f "$RUN/haproxy.cfg" -q & HAPROXY=$!; PIDS+=($HAPROXY)
$PROXY_CPU "${WRAP[@]}" "$ROOT/target/release/bare-hyper" "$WORKERS" > "$RUN/bare.log" 2>&1 & BARE=$!; PIDS+=($BARE)
wait_port 19001; wait_port 19002; wait_port 19004

# A staff member with an approved PC, an overtime grant for holidays, and one token for the run.
S="$ROOT/target/release/sekisho --config $RUN/sekisho.toml"
$S admin call put /v1/users/bench '{"display_name":"bench","role":"staff","profiles":["bench"]}' >/dev/null
KEY=$($S agent keygen --out "$RUN/device.key")
ALG=$(echo "$KEY" | sed 's/.*"key_alg":"\([^"]*\)".*/\1/'); PUB=$(echo "$KEY" | sed 's/.*"public_key":"\([^"]*\)".*/\1/')
$S admin call post /v1/devices "{\"id\":\"bench-pc\",\"owner\":\"bench\",\"kind\":\"pc\",\"ownership\":\"issued\",\"os\":\"windows\",\"os_version\":\"10.0.22631\",\"key_alg\":\"$ALG\",\"public_key\":\"$PUB\"}" >/dev/null
$S admin device bench-pc approve --reason bench >/dev/null
$S admin call post /v1/overtime "{\"user\":\"bench\",\"approver\":\"bench\",\"reason\":\"bench\",\"start\":\"$(date -u -d '-1 hour' +%FT%TZ)\",\"end\":\"$(date -u -d '+1 day' +%FT%TZ)\"}" >/dev/null
TOKEN=$($S agent token --key "$RUN/device.key" --device bench-pc --user bench --aud bench.localhost --os windows --os-version 10.0.22631 --security-software Defender --security-updated "$(date +%F)" --lifetime-secs 3600)
status=$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: bench.localhost' -H "Device-Attestation: $TOKEN" http://127.0.0.1:19003/)
[ "$status" = 200 ] || { echo "sekisho refused the bench token ($status)"; cat "$RUN/sekisho.log"; exit 1; }
# The Lua peer learns the same token as verified (its cache, filled at start).
BENCH_TOKEN="$TOKEN" $PROXY_CPU nginx -c "$RUN/nginx-lua.conf" -p "$RUN" & LUA=$!; PIDS+=($LUA)
wait_port 19005
status=$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: bench.localhost' -H "Device-Attestation: $TOKEN" http://127.0.0.1:19005/)
[ "$status" = 200 ] || { echo "the Lua peer refused the bench token ($status)"; cat "$RUN/nginx-lua-error.log"; exit 1; }

if [ "${CALLGRIND:-0}" = 1 ]; then
  # Instructions per request on the full-rules and deny paths, and on bare
  # hyper's proxying and own 403 (the floors under each): counting is
  # switched on only around each load, and divided by the requests served.
  # count NAME PID LOAD...: instructions per request while LOAD runs (wrk's
  # RESULT line or h2load's summary gives the requests served).
  count() {
    local name=$1 pid=$2; shift 2
    callgrind_control -i on "$pid" > /dev/null
    local out; out=$("$@" 2>&1)
    callgrind_control -i off "$pid" > /dev/null
    callgrind_control -d "$name" "$pid" > /dev/null
    local n; n=$(echo "$out" | sed -n -e 's/^RESULT.*requests=\([0-9]*\).*/\1/p' \
      -e 's/^requests: [0-9]* total, [0-9]* started, [0-9]* done, \([0-9]*\) succeeded.*/\1/p')
    local f; f=$(ls -t "$RUN"/callgrind-"$pid".out* | head -1)
    local total; total=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    echo "$name: $((total / n)) instructions per request ($n requests; $f)"
    callgrind_control -z "$pid" > /dev/null
  }
  for c in "sekisho full rules|$SEKISHO|19003/|$TOKEN" "sekisho deny|$SEKISHO|19003/|" \
    "bare hyper|$BARE|19004/|" "bare hyper answering 403 itself|$BARE|19004/deny|"; do
    IFS='|' read -r name pid port tok <<< "$c"
    BENCH_TOKEN="$tok" count "$name" "$pid" $LOAD_CPU wrk -t1 -c8 -d"${DURATION}s" -s "$BENCH/wrk.lua" "http://127.0.0.1:$port"
  done
  # HTTP/2 over TLS, as the h2 case loads it (TLS and h2 framing included).
  count "sekisho h2 TLS full rules" "$SEKISHO" $LOAD_CPU h2load -c8 -m10 -t1 -D"$DURATION" \
    -H ":authority: bench.localhost" -H "device-attestation: $TOKEN" https://127.0.0.1:19443/
  exit 0
fi

if [ "${PROFILE:-0}" = 1 ]; then
  # Where sekisho's CPU goes on the full-rules path: perf's cpu-clock
  # samples of the gateway under wrk load (no hardware counters needed).
  # PROFILE_BARE=1 profiles the bare data path instead, for comparison;
  # PROFILE_DENY=1 the deny path (no attestation: the block page).
  if [ "${PROFILE_BARE:-0}" = 1 ]; then target=$BARE; port=19004; else target=$SEKISHO; port=19003; fi
  tok=$TOKEN; [ "${PROFILE_DENY:-0}" = 1 ] && tok=
  if [ "${PROFILE_H2:-0}" = 1 ]; then
    # HTTP/2 over TLS, as the h2 case loads it.
    $LOAD_CPU h2load -c"$CONNS" -m10 -t2 -D"$((DURATION + 2))" -H ":authority: bench.localhost" -H "device-attestation: $TOKEN" \
      https://127.0.0.1:19443/ > "$RUN/h2load.out" 2>&1 & WRK=$!
  else
    BENCH_TOKEN="$tok" $LOAD_CPU wrk -t2 -c"$CONNS" -d"$((DURATION + 2))s" -s "$BENCH/wrk.lua" "http://127.0.0.1:$port/" > "$RUN/wrk.out" & WRK=$!
  fi
  sleep 1
  perf record -q -e cpu-clock -F 2999 -g -p "$target" -o "$RUN/perf.data" -- sleep "$DURATION" 2>/dev/null
  wait "$WRK"
  if [ "${PROFILE_H2:-0}" = 1 ]; then
    n=$(sed -n 's/^requests: [0-9]* total, [0-9]* started, [0-9]* done, \([0-9]*\) succeeded.*/\1/p' "$RUN/h2load.out")
  else
    n=$(grep '^RESULT' "$RUN/wrk.out" | sed 's/.*requests=\([0-9]*\).*/\1/')
  fi
  echo "$((n / (DURATION + 2))) requests/s; perf data in $RUN/perf.data"
  perf report -q -i "$RUN/perf.data" --no-children --percent-limit 0.7 --stdio -g none | head -60
  exit 0
fi

if [ "${SYSCALLS:-0}" = 1 ]; then
  # System calls and context switches per request, by name, for each proxy
  # under the same wrk load (perf's raw_syscalls tracepoint): counts, not
  # times, so they repeat on a busy machine.
  for c in "nginx|$NGINX|19001/|" "bare hyper|$BARE|19004/|" "sekisho full|$SEKISHO|19003/|$TOKEN" "nginx+lua|$LUA|19005/|$TOKEN" \
    "sekisho deny|$SEKISHO|19003/|" "bare hyper 403|$BARE|19004/deny|" "nginx 403|$NGINX|19001/deny|"; do
    IFS='|' read -r name pid port tok <<< "$c"
    pids=$(echo "$pid" $(pgrep -P "$pid" || true) | tr ' ' ',')
    BENCH_TOKEN="$tok" $LOAD_CPU wrk -t2 -c"$CONNS" -d"$((DURATION + 2))s" -s "$BENCH/wrk.lua" "http://127.0.0.1:$port" > "$RUN/wrk-sys.out" & WRK=$!
    sleep 1
    perf stat -x, -e raw_syscalls:sys_enter,context-switches -p "$pids" -o "$RUN/stat.out" -- sleep "$DURATION"
    perf trace -s -p "$pids" -o "$RUN/trace.out" -- sleep 1 2>/dev/null || true
    wait "$WRK"
    n=$(grep '^RESULT' "$RUN/wrk-sys.out" | sed 's/.*requests=\([0-9]*\).*/\1/')
    rate=$(( n / (DURATION + 2) ))
    sys=$(awk -F, '/sys_enter/ {print $1}' "$RUN/stat.out"); cs=$(awk -F, '/context-switches/ {print $1}' "$RUN/stat.out")
    python3 -c 'import sys; s, c, r, d = map(float, sys.argv[2:]); print(f"{sys.argv[1]:14s} {s / (r * d):6.2f} syscalls/req  {c / (r * d):6.3f} context switches/req")' "$name" "$sys" "$cs" "$rate" "$DURATION"
    grep -E '^ +[a-z_0-9]+ +[0-9]+' "$RUN/trace.out" | awk '{print "    " $1, $2}' | sort -k2 -n -r | head -8
  done
  exit 0
fi

if [ "${DEVICES:-0}" = 1 ]; then
  # Requests/s as registered devices grow to a million (bench/devices.py).
  ROUNDS="$ROUNDS" DURATION="$DURATION" CONNS="$CONNS" LOAD_CPU="$LOAD_CPU" \
    python3 "$BENCH/devices.py" "$RUN" "$TOKEN" "$SEKISHO" "$PUB" "$ALG"
  exit 0
fi

if [ "${SCALE:-0}" = 1 ]; then
  # A second user whose suspension is timed while wrk loads the first.
  $S admin call put /v1/users/bench2 '{"display_name":"bench2","role":"staff","profiles":["bench"]}' >/dev/null
  $S admin call post /v1/devices "{\"id\":\"bench2-pc\",\"owner\":\"bench2\",\"kind\":\"pc\",\"ownership\":\"issued\",\"os\":\"windows\",\"os_version\":\"10.0.22631\",\"key_alg\":\"$ALG\",\"public_key\":\"$PUB\"}" >/dev/null
  $S admin device bench2-pc approve --reason bench >/dev/null
  $S admin call post /v1/overtime "{\"user\":\"bench2\",\"approver\":\"bench\",\"reason\":\"bench\",\"start\":\"$(date -u -d '-1 hour' +%FT%TZ)\",\"end\":\"$(date -u -d '+1 day' +%FT%TZ)\"}" >/dev/null
  TOKEN2=$($S agent token --key "$RUN/device.key" --device bench2-pc --user bench2 --aud bench.localhost --os windows --os-version 10.0.22631 --security-software Defender --security-updated "$(date +%F)" --lifetime-secs 3600)
  ulimit -n 65536 2>/dev/null || true
  BENCH_TOKEN="$TOKEN" python3 "$BENCH/scale.py" "$RUN" "$TOKEN2" "$SEKISHO" "$NGINX" "$BARE"
  exit 0
fi

TICK=$(getconf CLK_TCK)
# utime+stime in ticks of a process and its direct children (nginx workers).
ticks() {
  local total=0 pid
  for pid in "$1" $(pgrep -P "$1" || true); do
    [ -r "/proc/$pid/stat" ] || continue
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$total"
}

if [ "${UPLOAD:-0}" = 1 ]; then
  # Request bodies streamed through each proxy: POSTs of UPLOAD_BYTES
  # (1,000,000) each, 8 connections, the upstream reading each whole before
  # it answers (`/upload` in nginx-upstream.conf). nginx
  # streams them too (`proxy_request_buffering off`), so every proxy reads
  # the client's socket and writes the upstream's as the bytes come; MB/s
  # and the proxy's CPU per MB, medians of ROUNDS interleaved rounds.
  BYTES=${UPLOAD_BYTES:-1000000}
  cat > "$RUN/upload.lua" <<LUA
wrk.method = "POST"
wrk.body = string.rep("x", $BYTES)
wrk.headers["Host"] = "bench.localhost"
wrk.headers["Content-Type"] = "application/octet-stream"
local token = os.getenv("BENCH_TOKEN")
if token and token ~= "" then wrk.headers["Device-Attestation"] = token end
function done(summary, latency, requests)
  io.write(string.format("RESULT requests=%d errors=%d non2xx=%d\n", summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout, summary.errors.status))
end
LUA
  ROWS="$RUN/upload.tsv"
  : > "$ROWS"
  for round in $(seq "$ROUNDS"); do
    for c in "nginx|$NGINX|19001|" "bare hyper (no checks)|$BARE|19004|" "sekisho full rules|$SEKISHO|19003|$TOKEN"; do
      IFS='|' read -r name pid port tok <<< "$c"
      [[ "$name" =~ ${ONLY:-.} ]] || continue
      before=$(ticks "$pid")
      res=$(BENCH_TOKEN="$tok" $LOAD_CPU wrk -t1 -c8 -d"${DURATION}s" -s "$RUN/upload.lua" "http://127.0.0.1:$port/upload" | grep '^RESULT')
      after=$(ticks "$pid")
      printf '%s\t%s\t%s\t%s\n' "$name" "$res" "$((after - before))" "$round" >> "$ROWS"
      echo "round $round: $name: $res" >&2
    done
  done
  python3 - "$ROWS" "$TICK" "$BYTES" "$DURATION" <<'PY'
import re, statistics, sys
rows, tick, size, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
cases = {}
for line in open(rows):
    name, res, ticks, _ = line.rstrip("\n").split("\t")
    n = dict((k, int(v)) for k, v in re.findall(r"(\w+)=(\d+)", res))
    mb = n["requests"] * size / 1e6
    cases.setdefault(name, []).append((mb / secs, int(ticks) / tick * 1e6 / mb if mb else float("nan"), n["errors"] + n["non2xx"]))
print(f"| case | MB/s | vs nginx | proxy CPU µs per MB | errors + non-2xx |\n| --- | ---: | ---: | ---: | ---: |")
base = statistics.median(r[0] for r in cases.get("nginx", [(float("nan"), 0, 0)]))
for name, rs in cases.items():
    rate = statistics.median(r[0] for r in rs)
    print(f"| {name} | {rate:,.0f} | {rate / base:.2f}x | {statistics.median(r[1] for r in rs):,.0f} | {sum(r[2] for r in rs)} |")
PY
  exit 0
fi

if [ "${OPENLOOP:-0}" = 1 ]; then
  # Open loop: each case at fixed fractions of nginx's closed-loop peak in this
  # run (the median of ROUNDS wrk runs, or PEAK req/s if given), with latency
  # from each request's intended send time (bench/openloop), interleaved.
  # On a shared VM other work (a compile) moves the tail far more than it
  # moves throughput, so each case first waits up to QUIET_WAIT seconds (30)
  # for a second in which the machine is at least 90% idle, and is measured
  # again (up to RETRIES times, 2) when processes outside the bench used more
  # than OTHER_PCT percent (10) of one core during it.
  wait_quiet() {
    local a b i k idle total
    for i in $(seq "${QUIET_WAIT:-30}"); do
      read -ra a < /proc/stat; sleep 1; read -ra b < /proc/stat
      idle=$(( b[4] + b[5] - a[4] - a[5] )); total=0
      for k in 1 2 3 4 5 6 7 8; do total=$(( total + b[k] - a[k] )); done
      (( idle * 10 >= total * 9 )) && return 0
    done
    echo "machine still busy after ${QUIET_WAIT:-30}s; measuring anyway" >&2
  }
  # CPU ticks of every process outside the bench (this shell, which waits
  # for the load generator, and the servers); exited ones count through
  # their parents. ksoftirqd is left out: it may carry the bench's packets.
  others() {
    local ours=" $$ ${PIDS[*]} $(for p in "${PIDS[@]}"; do pgrep -P "$p"; done | tr '\n' ' ') " t=0 f s
    for f in /proc/[0-9]*/stat; do
      read -r s < "$f" 2>/dev/null || continue
      [[ "$ours" == *" ${s%% *} "* || "$s" == *"(ksoftirqd/"* ]] && continue
      s=(${s##*\) }); t=$(( t + s[11] + s[12] + s[13] + s[14] ))
    done
    echo "$t"
  }
  if [ -z "${PEAK:-}" ]; then
    peaks=()
    for round in $(seq "$ROUNDS"); do
      for attempt in $(seq $(( ${RETRIES:-2} + 1 ))); do
        wait_quiet; other=$(others)
        res=$(BENCH_TOKEN="" $LOAD_CPU wrk -t2 -c"$CONNS" -d"${DURATION}s" -s "$BENCH/wrk.lua" http://127.0.0.1:19001/ 2>&1 | grep '^RESULT')
        (( ($(others) - other) * 100 <= ${OTHER_PCT:-10} * TICK * DURATION )) && break
      done
      peaks+=("$(echo "$res" | sed 's/.*requests=\([0-9]*\).*/\1/')")
      echo "peak round $round: nginx ${peaks[-1]} requests in ${DURATION}s" >&2
    done
    PEAK=$(python3 -c 'import statistics, sys; print(int(statistics.median(int(v) for v in sys.argv[2:]) / float(sys.argv[1])))' "$DURATION" "${peaks[@]}")
  fi
  # case name | proxy pid (or -) | target | token?
  OL_CASES=(
    "upstream direct|-|http://127.0.0.1:19000/|"
    "nginx|$NGINX|http://127.0.0.1:19001/|"
    "haproxy|$HAPROXY|http://127.0.0.1:19002/|"
    "bare hyper (no checks)|$BARE|http://127.0.0.1:19004/|"
    "nginx+lua peer (same checks)|$LUA|http://127.0.0.1:19005/|token"
    "sekisho full rules|$SEKISHO|http://127.0.0.1:19003/|token"
  )
  ROWS="$RUN/openloop.tsv"
  : > "$ROWS"
  for round in $(seq "$ROUNDS"); do
    for pct in ${PCTS:-25 50 75}; do
      rate=$((PEAK * pct / 100))
      for c in "${OL_CASES[@]}"; do
        IFS='|' read -r name pid url tok <<< "$c"
        [[ "$name" =~ ${ONLY:-.} ]] || continue
        hdr=(-H "Host: bench.localhost"); [ "$tok" = token ] && hdr+=(-H "Device-Attestation: $TOKEN")
        for attempt in $(seq $(( ${RETRIES:-2} + 1 ))); do
          wait_quiet; other=$(others)
          before=0; [ "$pid" != - ] && before=$(ticks "$pid")
          res=$($LOAD_CPU "$ROOT/target/release/openloop" --url "$url" --rate "$rate" --connections "$CONNS" --duration "$DURATION" "${hdr[@]}")
          after=0; [ "$pid" != - ] && after=$(ticks "$pid")
          other=$(( $(others) - other ))
          (( other * 100 <= ${OTHER_PCT:-10} * TICK * DURATION )) && break
          echo "round $round: $pct%: $name: other work took $other ticks (attempt $attempt)" >&2
        done
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$name" "$pct" "$rate" "$((after - before))" "$other" "$res" >> "$ROWS"
        echo "round $round: $pct% ($rate req/s): $name: $res" >&2
      done
    done
  done
  mkdir -p "$BENCH/results"
  OUT="$BENCH/results/$(date +%Y%m%d-%H%M%S)-openloop-w${WORKERS}-pin${PIN}.md"
  python3 "$BENCH/report_openloop.py" "$ROWS" "$TICK" "$PEAK" "$DURATION" "rounds=$ROUNDS duration=${DURATION}s conns=$CONNS workers=$WORKERS pinned=$PIN cpu=$(nproc) $(uname -r)" | tee "$OUT"
  echo "written: $OUT"
  exit 0
fi

# case name | proxy pid (or -) | kind | target | token?
CASES=(
  "upstream direct|-|wrk|http://127.0.0.1:19000/|"
  "nginx|$NGINX|wrk|http://127.0.0.1:19001/|"
  "haproxy|$HAPROXY|wrk|http://127.0.0.1:19002/|"
  "bare hyper (no checks)|$BARE|wrk|http://127.0.0.1:19004/|"
  "nginx+lua peer (same checks)|$LUA|wrk|http://127.0.0.1:19005/|token"
  "sekisho full rules|$SEKISHO|wrk|http://127.0.0.1:19003/|token"
  "sekisho deny (block page)|$SEKISHO|wrk|http://127.0.0.1:19003/|"
  "nginx answering 403 itself|$NGINX|wrk|http://127.0.0.1:19001/deny|"
  "bare hyper answering 403 itself|$BARE|wrk|http://127.0.0.1:19004/deny|"
  "nginx TLS|$NGINX|wrk|https://127.0.0.1:19441/|"
  "sekisho TLS full rules|$SEKISHO|wrk|https://127.0.0.1:19443/|token"
  "nginx h2 TLS|$NGINX|h2load|https://127.0.0.1:19441/|"
  "sekisho h2 TLS full rules|$SEKISHO|h2load|https://127.0.0.1:19443/|token"
)

ROWS="$RUN/rows.tsv"
: > "$ROWS"
for round in $(seq "$ROUNDS"); do
  for c in "${CASES[@]}"; do
    IFS='|' read -r name pid kind url tok <<< "$c"
    [[ "$name" =~ ${ONLY:-.} ]] || continue
    tokv=""; [ "$tok" = token ] && tokv="$TOKEN"
    before=0; [ "$pid" != - ] && before=$(ticks "$pid")
    if [ "$kind" = wrk ]; then
      out=$(BENCH_TOKEN="$tokv" $LOAD_CPU wrk -t2 -c"$CONNS" -d"${DURATION}s" -s "$BENCH/wrk.lua" "$url" 2>&1)
      res=$(echo "$out" | grep '^RESULT')
      req=$(echo "$res" | sed 's/.*requests=\([0-9]*\).*/\1/')
      bad=$(echo "$res" | sed 's/.*non2xx=\([0-9]*\).*/\1/')
      p50=$(echo "$res" | sed 's/.*p50=\([0-9]*\).*/\1/'); p99=$(echo "$res" | sed 's/.* p99=\([0-9]*\).*/\1/'); p999=$(echo "$res" | sed 's/.*p999=\([0-9]*\).*/\1/')
      secs=$DURATION
    else
      hdr=(-H ":authority: bench.localhost"); [ -n "$tokv" ] && hdr+=(-H "device-attestation: $tokv")
      out=$($LOAD_CPU h2load -c"$CONNS" -m10 -t2 -D"$DURATION" "${hdr[@]}" "$url" 2>&1)
      [ -n "${DEBUG:-}" ] && echo "$out" >&2
      req=$(echo "$out" | sed -n 's/^requests: [0-9]* total, [0-9]* started, [0-9]* done, \([0-9]*\) succeeded.*/\1/p')
      bad=$(echo "$out" | sed -n 's/^status codes: [0-9]* 2xx, \([0-9]*\) 3xx, \([0-9]*\) 4xx, \([0-9]*\) 5xx.*/\2/p')
      p50=-; p99=-; p999=-
      secs=$DURATION
    fi
    after=0; [ "$pid" != - ] && after=$(ticks "$pid")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$name" "$req" "$secs" "$((after - before))" "$p50" "$p99" "$p999" "${bad:-0}" >> "$ROWS"
    echo "round $round: $name: $req requests" >&2
  done
done

mkdir -p "$BENCH/results"
OUT="$BENCH/results/$(date +%Y%m%d-%H%M%S)-w${WORKERS}-pin${PIN}.md"
python3 "$BENCH/report.py" "$ROWS" "$TICK" "rounds=$ROUNDS duration=${DURATION}s conns=$CONNS workers=$WORKERS pinned=$PIN cpu=$(nproc) $(uname -r)" | tee "$OUT"
echo "written: $OUT"
