#!/usr/bin/env bash
# Drives the example service under load, side by side with tower's own limits (at each N of
# a sweep in mixed, mixed3 and ingest) and with no limit, and writes
# load/results/<timestamp>/report.md with SVG charts.
#
#   load/run.sh              the default demo (mixed), about 3 minutes with a warm build
#   load/run.sh SCENARIO     steady | mixed | mixed3 | two-sizes | two-parses | held-uploads | large-head | spike | connections | disconnect | stream | ingest | cost | slowloris | slowloris-1k | retry | priority | cpu | cpu-mixed | h2 | uploads | sleepers | refusals | smoke
#   load/run.sh retry-storm  open loop from Python's asyncio with retries, against the layer, tower N=8 and no limit (about 5 minutes)
#   load/run.sh explore      seeded workloads checked against the promises (EXPLORE_SEEDS=1-40: about 30 minutes)
#   load/run.sh overload     open loop at 0.5-8x the capacity, 1 s client deadlines (about 5 minutes)
#   load/run.sh overload-memory  the same on a memory-bound route, budget 128 MiB (about 5 minutes)
#   load/run.sh spike-retry  open loop, a 3x spike, with each retry policy (about 4 minutes)
#   load/run.sh processes    three servers in one memory cgroup (root; cgroup v2 or v1)
#   load/run.sh replicas     one and three servers behind nginx (installed when missing)
#   load/run.sh all          every scenario, about 21 minutes
#   SETUPS=admission,none load/run.sh mixed    only some of the setups (admission, variants, tower, none)
#
# Everything it starts listens on or targets 127.0.0.1 only, runs for a bounded time, and is
# stopped by PID when the run ends or is interrupted (Ctrl-C).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
scenario=${1:-mixed}

# The load generator: oha (crates.io). Installed once; it takes ~12 minutes to build on 2 cores.
oha=$(command -v oha || true)
[ -n "$oha" ] || [ ! -x "$HOME/.cargo/bin/oha" ] || oha="$HOME/.cargo/bin/oha"
if [ -z "$oha" ]; then
  echo "oha is not installed: cargo install oha --locked (about 12 minutes on 2 cores, once)" >&2
  cargo install oha --locked --quiet
  oha="$HOME/.cargo/bin/oha"
fi

# The balancer of `replicas`: Debian's nginx, installed when missing (as root).
if [ "$scenario" = replicas ] && ! [ -x /usr/sbin/nginx ]; then
  echo "installing nginx (Debian's package)" >&2
  apt-get update -qq && apt-get install -y -qq --no-install-recommends nginx >/dev/null
fi

# The h2c load generator of `h2` (and `all`): Debian's nghttp2-client, installed when missing.
if { [ "$scenario" = h2 ] || [ "$scenario" = all ]; } && ! command -v h2load >/dev/null; then
  echo "installing h2load (Debian's nghttp2-client)" >&2
  apt-get update -qq && apt-get install -y -qq --no-install-recommends nghttp2-client >/dev/null
fi

echo "building the example servers and the load driver (release)" >&2
(cd "$root" && cargo build --release --quiet --example server --example compare)
(cd "$here/driver" && cargo build --release --quiet)

out="$here/results/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"

if [ "$scenario" = retry-storm ]; then
  # A client unlike the driver's (Python's asyncio, see clients/retry_storm.py) against the
  # layer's defaults, tower's LoadShed + GlobalConcurrencyLimit N=8 and no limit; the
  # capacity C measured once, closed loop against no limit.
  client="$here/clients/retry_storm.py"
  # Below the ephemeral range: the clients' own connections cannot hold it.
  port=29017
  LIMITER=none LISTEN_ADDR="127.0.0.1:$port" "$root/target/release/examples/compare" \
    >"$out/capacity.log" 2>&1 &
  server=$!
  sleep 1
  capacity=$(timeout 60 python3 "$client" "$port" capacity)
  kill "$server"; wait "$server" || true
  echo "C = $capacity/s (closed loop, 8 clients, no limit)" | tee "$out/report.txt"
  for setup in "admission:server:" "tower-n8:compare:LIMITER=tower TOWER_CONCURRENCY=8" \
      "no-limit:compare:LIMITER=none"; do
    IFS=: read -r name binary env <<<"$setup"
    port=$((port + 1))
    # shellcheck disable=SC2086
    env $env LISTEN_ADDR="127.0.0.1:$port" "$root/target/release/examples/$binary" \
      >"$out/$name.log" 2>&1 &
    server=$!
    sleep 1
    kill -0 "$server" || { echo "the $name server did not start: see $out/$name.log" >&2; exit 1; }
    for retry in ${RETRIES:-storm polite none}; do
      echo "== $name, retries: $retry" | tee -a "$out/report.txt"
      timeout 300 python3 "$client" "$port" spike "$capacity" "$retry" | tee -a "$out/report.txt"
    done
    kill "$server"; wait "$server" || true
  done
  echo "report: $out/report.txt"
  exit 0
fi
# Its own process group, so that an interrupt stops the driver, the servers and oha, and
# nothing else.
setsid "$here/driver/target/release/admission-load" "$scenario" \
  --out "$out" --bin-dir "$root/target/release/examples" --oha "$oha" &
driver=$!
stop() { kill -TERM -- "-$driver" 2>/dev/null || true; }
trap 'stop; exit 130' INT TERM
status=0
wait "$driver" || status=$?
trap - INT TERM
exit "$status"
