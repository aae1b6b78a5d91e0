#!/usr/bin/env bash
# Starts the example server as a user would and checks its contract: exit 2 on a bad config,
# the routes, the metric names, a 503 with Retry-After, and a clean stop on SIGTERM.
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

ADMISSION_MAX_CONCURRENCY=1 ADMISSION_QUEUE_CAPACITY=0 ADMISSION_RETRY_AFTER=3 \
  LISTEN_ADDR="127.0.0.1:$port" "$server" >"$log" 2>&1 &
pid=$!
for _ in $(seq 100); do
  curl -fs "$base/health" >/dev/null 2>&1 && break
  sleep 0.1
done
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
  admission_queue_wait_seconds_bucket; do
  grep -qF "$name" <<<"$metrics" || fail "/metrics lacks $name"
done

kill -TERM "$pid"
wait "$pid" || fail "the server did not stop cleanly on SIGTERM"
pid=""
echo "ok: example server smoke passed"
