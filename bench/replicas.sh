#!/usr/bin/env bash
# Replicas on one PostgreSQL (issue 12), measured in one run:
#
#   bench/replicas.sh                          # everything below
#   SAMPLES=40 ROUNDS=5 DURATION=5 OUTAGE=60 CHANGES=10000 bench/replicas.sh
#
# 1. requests/s of a PostgreSQL replica against an SQLite gateway (same
#    binary, same rules, one worker each on core 0, wrk and the upstream on
#    core 1), ROUNDS interleaved rounds: the request path must not touch the
#    database, so the ratio should be ~1.0;
# 2. suspension through replica A to the first denied request of that user
#    on replica B, while wrk loads both: p50/p99 over SAMPLES samples;
# 3. catch-up: replica C reaches the database through a TCP relay that the
#    bench cuts for OUTAGE seconds while CHANGES admin writes go through A;
#    the time from the relay's return to C at A's change-log position.
#
# Starts its own PostgreSQL cluster (Debian's postgresql package, as
# `nobody` when run as root) in a temp directory. Loopback only; every loop
# is bounded. Prints a table and writes it to bench/results/.
set -euo pipefail

BENCH=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
(cd "$ROOT" && cargo build --release --quiet)
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

RUN=$(mktemp -d /tmp/sekisho-replicas.XXXXXX)
chmod 755 "$RUN"
PIDS=()
PG=""
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "$PG" ]; then as_pg "$PGBIN/pg_ctl" -D "$RUN/pg/data" -m immediate stop >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u nobody -- "$@"; else "$@"; fi; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 did not open" >&2; exit 1; }

# PostgreSQL: SCRAM password in a file, fsync on (as in production).
PGPORT=29432
mkdir -p "$RUN/pg"
head -c 18 /dev/urandom | base64 > "$RUN/pg/pwfile"
cp "$RUN/pg/pwfile" "$RUN/pg-password"
[ "$(id -u)" = 0 ] && chown -R nobody: "$RUN/pg"
as_pg "$PGBIN/initdb" -D "$RUN/pg/data" -U sekisho --pwfile "$RUN/pg/pwfile" --auth=scram-sha-256 -E UTF8 --locale=C -N >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$RUN/pg/data" -l "$RUN/pg/log" -w -o "-p $PGPORT -k $RUN/pg -c listen_addresses=127.0.0.1" start >/dev/null
PG=1

# Ports 29xxx: bench/run.sh (19xxx) may run at the same time.
sed -e "s#__RUN__#$RUN#g" -e "s#19000#29000#" "$BENCH/nginx-upstream.conf" > "$RUN/upstream.conf"
mkdir -p "$RUN/rules"
sed -e "s#127.0.0.1:19000#127.0.0.1:29000#" "$BENCH/rules/bench.toml" > "$RUN/rules/bench.toml"
taskset -c 1 nginx -c "$RUN/upstream.conf" -p "$RUN" & PIDS+=($!)

# gateway NAME HTTP HTTPS ADMIN STORE_SECTION
gateway() {
  mkdir -p "$RUN/$1"
  sed -e "s#__RUN__/data#$RUN/$1#g" -e "s#__RUN__#$RUN#g" -e "s#__WORKERS__#1#g" \
      -e "s#19003#$2#; s#19443#$3#; s#19090#$4#" "$BENCH/sekisho.toml" > "$RUN/$1.toml"
  # Only A creates the development certificates; the others start after it.
  [ "$1" = a ] && sed -i 's#^\[tls\]#[tls]\ngenerate_dev_certs = true#' "$RUN/$1.toml"
  printf '%s\n' "$5" >> "$RUN/$1.toml"
}
store() { printf '[store]\nbackend = "postgres"\nurl = "postgres://sekisho@127.0.0.1:%s/postgres"\npassword_file = "%s"\n' "$1" "$RUN/pg-password"; }
gateway a 29003 29443 29090 "$(store $PGPORT)"
gateway b 29013 29453 29091 "$(store $PGPORT)"
gateway c 29023 29463 29092 "$(store 29433)"   # through the relay the bench cuts
gateway s 29033 29473 29093 ""                 # SQLite
for g in a b s; do
  taskset -c 0 "$ROOT/target/release/sekisho" --config "$RUN/$g.toml" > "$RUN/$g.log" 2>&1 & PIDS+=($!)
  wait_port "$(sed -n 's/^listen = "127.0.0.1:\([0-9]*\)"/\1/p' "$RUN/$g.toml")"
done

# The bench users, registered through A (and on the SQLite gateway).
KEY=$("$ROOT/target/release/sekisho" agent keygen --out "$RUN/device.key")
ALG=$(echo "$KEY" | sed 's/.*"key_alg":"\([^"]*\)".*/\1/'); PUB=$(echo "$KEY" | sed 's/.*"public_key":"\([^"]*\)".*/\1/')
enrol() {
  local S="$ROOT/target/release/sekisho --config $RUN/$1.toml"
  for u in bench bench2; do
    $S admin call put "/v1/users/$u" "{\"display_name\":\"$u\",\"role\":\"staff\",\"profiles\":[\"bench\"]}" >/dev/null
    $S admin call post /v1/devices "{\"id\":\"$u-pc\",\"owner\":\"$u\",\"kind\":\"pc\",\"ownership\":\"issued\",\"os\":\"windows\",\"os_version\":\"10.0.22631\",\"key_alg\":\"$ALG\",\"public_key\":\"$PUB\"}" >/dev/null
    $S admin device "$u-pc" approve --reason bench >/dev/null
    $S admin call post /v1/overtime "{\"user\":\"$u\",\"approver\":\"bench\",\"reason\":\"bench\",\"start\":\"$(date -u -d '-1 hour' +%FT%TZ)\",\"end\":\"$(date -u -d '+1 day' +%FT%TZ)\"}" >/dev/null
  done
}
enrol a
enrol s
token() { "$ROOT/target/release/sekisho" agent token --key "$RUN/device.key" --device "$1-pc" --user "$1" --aud bench.localhost --os windows --os-version 10.0.22631 --security-software Defender --security-updated "$(date +%F)" --lifetime-secs 3600; }
TOKEN=$(token bench); TOKEN2=$(token bench2)
for port in 29003 29013 29033; do
  status=$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: bench.localhost' -H "Device-Attestation: $TOKEN" "http://127.0.0.1:$port/")
  [ "$status" = 200 ] || { echo "the gateway on $port refused the bench token ($status)"; exit 1; }
done

mkdir -p "$BENCH/results"
OUT="$BENCH/results/replicas-$(date +%Y%m%d-%H%M%S).md"
BENCH_TOKEN="$TOKEN" RUN="$RUN" ROOT="$ROOT" python3 "$BENCH/replicas.py" "$TOKEN2" | tee "$OUT"
