#!/usr/bin/env bash
# Starts the example server as a user would and checks what README documents: exit 2 on a bad config,
# the routes, the metric names, a 503 with Retry-After; then its hardening: a slowloris client
# cut off, an idle h2c connection closed, a client that stops reading cut off (its permit given back), and a graceful
# SIGTERM that answers queued requests 503 at once and lets the admitted one finish.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --example server
server=target/release/examples/server
port=39517
base="http://127.0.0.1:$port"
log=$(mktemp)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; rm -f "$log"; }
trap cleanup EXIT

fail() { echo "FAIL: $*"; cat "$log"; exit 1; }

start_server() {
  env "$@" LISTEN_ADDR="127.0.0.1:$port" "$server" >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    curl -fs "$base/health" >/dev/null 2>&1 && return
    sleep 0.1
  done
  fail "the server did not start"
}
metric() { curl -fs "$base/metrics" | awk -v name="$1" '$1 == name { print $2 }'; }
now() { date +%s.%N; }
seconds_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# A bad configuration exits 2 before binding, naming the variable.
for bad in "ADMISSION_MAX_CONCURRENCY=0" "ADMISSION_MEMORY_BUDGET=lots" "ADMISSION_QUEUE_TIMOUT=1s"; do
  set +e
  env "$bad" LISTEN_ADDR="127.0.0.1:$port" "$server" >"$log" 2>&1
  status=$?
  set -e
  [ "$status" = 2 ] || fail "$bad: exit status $status, expected 2"
  grep -q "ADMISSION_" "$log" || fail "$bad: the error does not name the variable"
  echo "ok: $bad exits 2"
done

start_server ADMISSION_MAX_CONCURRENCY=1 ADMISSION_QUEUE_CAPACITY=0 ADMISSION_RETRY_AFTER=3
grep -q "effective configuration" "$log" || fail "no effective configuration printed"

[ "$(curl -s -o /dev/null -w '%{http_code}' "$base/health")" = 200 ] || fail "/health"
curl -fs "$base/work?kib=1024&ms=10" | grep -q "allocated 1024 KiB" || fail "/work"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$base/work?kib=abc")" = 400 ] || fail "/work bad query"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$base/work?kib=99999999")" = 400 ] || fail "/work out of range"
curl -fs -XPOST -H 'content-type: application/json' --data '[1,2,{"a":3}]' "$base/ingest" \
  | grep -q '"number_sum":6.0' || fail "/ingest"
[ "$(curl -s -o /dev/null -w '%{http_code}' -XPOST --data 'nope' "$base/ingest")" = 400 ] || fail "/ingest bad JSON"
[ "$(curl -fs "$base/stream?kib=4&chunks=5&ms=1" | wc -c)" = 20480 ] || fail "/stream"

# One slot, no queue: a second request while one is held gets 503 + Retry-After.
curl -fs "$base/work?ms=1500" >/dev/null &
holder=$!
sleep 0.5
headers=$(curl -s -D - -o /dev/null "$base/work")
echo "$headers" | head -1 | grep -q " 503" || fail "expected 503, got: $headers"
echo "$headers" | grep -qi "^retry-after: 3" || fail "no Retry-After: $headers"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$base/health")" = 200 ] || fail "/health while full"
wait "$holder"

metrics=$(curl -fs "$base/metrics")
for name in admission_in_flight admission_queued admission_memory_bytes \
  admission_memory_budget_bytes admission_max_concurrency admission_admitted_total \
  'admission_rejected_total{reason="queue_full",limit="concurrency"} 1' \
  admission_memory_source_errors_total admission_memory_reading_age_seconds \
  admission_queue_wait_seconds_bucket; do
  grep -qF "$name" <<<"$metrics" || fail "/metrics lacks $name"
done

# Slowloris: headers that never end are cut off after the header read timeout (5 s).
started=$(now)
exec 4<>"/dev/tcp/127.0.0.1/$port"
printf 'GET /health HTTP/1.1\r\nHost: x\r\n' >&4
[ "$(curl -s -o /dev/null -w '%{http_code}' "$base/health")" = 200 ] || fail "/health during slowloris"
timeout 15 cat <&4 >/dev/null || fail "a slowloris connection stayed open"
exec 4>&-
echo "ok: slowloris connection closed after $(seconds_since "$started") s"

# An idle h2c connection (the preface and SETTINGS, then nothing: not even the answer to the
# goodbye ping) is closed after the idle timeout (5–10 s), as an idle HTTP/1 one is.
started=$(now)
exec 6<>"/dev/tcp/127.0.0.1/$port"
printf 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00' >&6
timeout 20 cat <&6 >/dev/null || fail "an idle h2c connection stayed open"
exec 6>&-
echo "ok: idle h2c connection closed after $(seconds_since "$started") s"

# A client that stops reading a 256 MiB stream holds the only slot until the write stall
# timeout (10 s) closes its connection; the slot is then free again.
exec 5<>"/dev/tcp/127.0.0.1/$port"
printf 'GET /stream?kib=1024&chunks=256&ms=0 HTTP/1.1\r\nHost: x\r\n\r\n' >&5
started=$(now)
sleep 0.5
[ "$(metric admission_in_flight)" = 1 ] || fail "the stalled reader is not in flight"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$base/work")" = 503 ] || fail "the slot was not held"
for _ in $(seq 200); do
  [ "$(metric admission_in_flight)" = 0 ] && break
  sleep 0.1
done
[ "$(metric admission_in_flight)" = 0 ] || fail "the stalled reader kept its permit"
exec 5>&-
[ "$(curl -s -o /dev/null -w '%{http_code}' "$base/work")" = 200 ] || fail "the slot did not come back"
echo "ok: stalled reader cut off after $(seconds_since "$started") s, permit given back"

kill -TERM "$pid"
wait "$pid" || fail "the server did not stop cleanly on SIGTERM"
pid=""

# Graceful shutdown: one request admitted, two queued (30 s timeout). SIGTERM answers the
# queued ones 503 at once; the admitted one finishes with 200; the server exits 0.
start_server ADMISSION_MAX_CONCURRENCY=1 ADMISSION_QUEUE_CAPACITY=4 ADMISSION_QUEUE_TIMEOUT=30s
out=$(mktemp -d)
curl -s -o /dev/null -w '%{http_code}' "$base/work?ms=2000" >"$out/held" &
held=$!
sleep 0.3
curl -s -o "$out/q1.body" -w '%{http_code} %{time_total}' "$base/work" >"$out/q1" &
q1=$!
curl -s -o /dev/null -w '%{http_code} %{time_total}' "$base/work" >"$out/q2" &
q2=$!
sleep 0.3
[ "$(metric admission_queued)" = 2 ] || fail "expected 2 queued"
kill -TERM "$pid"
wait "$q1" "$q2"
for q in q1 q2; do
  read -r code took <"$out/$q" || true  # no newline at the end
  [ "$code" = 503 ] || fail "queued request got $code on shutdown, expected 503"
  awk -v t="$took" 'BEGIN { exit !(t < 1.5) }' || fail "queued request waited $took s on shutdown"
done
grep -q "reason=queue_timeout" "$out/q1.body" || fail "shutdown 503 body: $(cat "$out/q1.body")"
wait "$held"
[ "$(cat "$out/held")" = 200 ] || fail "the admitted request got $(cat "$out/held") on shutdown"
wait "$pid" || fail "the server did not stop cleanly on SIGTERM"
pid=""
rm -rf "$out"
echo "ok: SIGTERM answered 2 queued requests 503 at once, the admitted one finished 200"
echo "ok: example server smoke passed"
