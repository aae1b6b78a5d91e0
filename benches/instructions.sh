#!/usr/bin/env bash
# Instructions per request of each service stack, counted by callgrind (repeatable, unlike
# timings on a shared 2-core machine), and the mallctl calls made while requests run.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind; }
cargo build --release --example request_loop >/dev/null
bin=target/release/examples/request_loop
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
small=2000
large=12000

instructions() { # stack n -> total instructions
  valgrind --tool=callgrind --callgrind-out-file="$dir/$1.$2" "$bin" "$1" "$2" 2>&1 \
    | grep -oE 'Collected : [0-9]+' | grep -oE '[0-9]+'
}

declare -A per
for stack in bare concurrency-limit admission load-shed-reject admission-reject; do
  a=$(instructions "$stack" $small)
  b=$(instructions "$stack" $large)
  per[$stack]=$(( (b - a) / (large - small) ))
done

echo "| stack | instructions per request | overhead over bare |"
echo "|---|---:|---:|"
for stack in bare concurrency-limit admission load-shed-reject admission-reject; do
  echo "| $stack | ${per[$stack]} | $(( per[$stack] - per[bare] )) |"
done
python3 - "${per[bare]}" "${per[concurrency-limit]}" "${per[admission]}" \
  "${per[load-shed-reject]}" "${per[admission-reject]}" <<'PY'
import sys
bare, limit, admission, shed, reject = map(int, sys.argv[1:])
print(f"\nadmitted overhead, admission ÷ ConcurrencyLimit: {(admission - bare) / (limit - bare):.2f}×")
print(f"rejection path, admission ÷ LoadShed+ConcurrencyLimit: {reject / shed:.2f}×")
PY

echo
echo "mallctl calls during a run of the admission stack (start-up included):"
for n in $small $large; do
  printf '  %6d requests: ' "$n"
  python3 benches/count_calls.py "$dir/admission.$n" mallctl | tail -1 | awk '{print $1}'
done
