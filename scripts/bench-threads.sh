#!/usr/bin/env bash
# Handshakes per second with `serve --threads 2` against `--threads 1` (issue 17, goal
# 2): v4.public tokens (Ed25519 verification dominates), one token presented by
# `wsgate bench --token` at 64 clients, ROUNDS interleaved rounds of SECS each; prints
# each run (rate, server and load-generator CPU per round trip, load average) and the
# medians. The load comes from LOADERS `wsgate bench` processes [2] of 64/LOADERS
# clients each: one load generator is one thread, and alone it is what limits a server
# of two threads. The load shares the machine:
#   PLACEMENT=shared  server and load on every core (default)
#   PLACEMENT=split   server on CPU 0 (1 thread) or CPUs 0-1 (2 threads), load on CPU 1
#   PROCESSES=1       the ceiling: in place of `--threads 2`, two `--threads 1`
#                     servers, one per load generator (threads that share nothing)
#   scripts/bench-threads.sh [ROUNDS=3] [SECS=10]
#   WSGATE_BIN=target/small/wsgate scripts/bench-threads.sh   # another server build
# The load always comes from the release build (`wsgate bench`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
rounds="${1:-3}"
secs="${2:-10}"
placement="${PLACEMENT:-shared}"
loaders="${LOADERS:-2}"
target="${CARGO_TARGET_DIR:-$root/target}"
cargo build --quiet --release --bin wsgate
load="$target/release/wsgate"
server="${WSGATE_BIN:-$load}"
tmp="$(mktemp -d)"
servers=()
trap 'kill "${servers[@]}" 2>/dev/null || true; rm -rf "$tmp"' EXIT
"$load" keygen --public --out "$tmp/key" >/dev/null 2>&1
token="$("$load" issue --key "$tmp/key" --sub bench --ttl 2h)"
case "$placement" in
  shared) server_cpus() { echo 0-1; }; load_cpus=0-1 ;;
  split) server_cpus() { [ "$1" = 1 ] && echo 0 || echo 0-1; }; load_cpus=1 ;;
  *) echo "PLACEMENT: shared or split" >&2; exit 2 ;;
esac
per=$((64 / loaders))

# The servers' CPU time so far, in clock ticks (user + system, every thread).
server_ticks() {
  local p t=0
  for p in "${servers[@]}"; do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$t"
}

# Runs the load generators (at once) against the servers' addresses, round robin;
# `$1`: what to pass for the length of the run.
load_all() {
  local i jobs=()
  for i in $(seq "$loaders"); do
    (
      TIMEFORMAT='%U %S'
      addr="${addrs[$(((i - 1) % ${#addrs[@]}))]}"
      # shellcheck disable=SC2086 # $1 is two words
      { time taskset -c "$load_cpus" "$load" bench "ws://$addr/" --token "$token" \
        -c "$per" $1 --json >"$tmp/out$i.json"; } 2>"$tmp/time$i"
    ) &
    jobs+=($!)
  done
  # A load generator that saw failures exits 1: its report still counts (below).
  wait "${jobs[@]}" || true
}

# One run: prints `rate server_us client_us load1`.
one() {
  local threads="$1" n=1 i addr
  if [ "${PROCESSES:-0}" = 1 ] && [ "$threads" = 2 ]; then
    n=2 threads=1
  fi
  servers=() addrs=()
  for i in $(seq "$n"); do
    taskset -c "$(server_cpus "$1")" "$server" serve --key "$tmp/key.pub" \
      --listen 127.0.0.1:0 --threads "$threads" --max-connections 100000 \
      2>"$tmp/serve$i.log" >/dev/null &
    servers+=($!)
  done
  for i in $(seq "$n"); do
    addr=""
    for _ in $(seq 200); do
      addr="$(sed -n 's/.*event=listen addr=\([^ ]*\).*/\1/p' "$tmp/serve$i.log" | head -1)"
      [ -n "$addr" ] && break
      sleep 0.02
    done
    [ -n "$addr" ] || { echo "server $i did not start" >&2; exit 1; }
    addrs+=("$addr")
  done
  load_all "-n 500"
  local loadavg cpu0 cpu1
  loadavg="$(cut -d' ' -f1 /proc/loadavg)"
  cpu0="$(server_ticks)"
  load_all "--duration ${secs}s"
  cpu1="$(server_ticks)"
  kill -TERM "${servers[@]}"
  wait "${servers[@]}" || true
  python3 - "$tmp" "$loaders" "$cpu0" "$cpu1" "$(getconf CLK_TCK)" "$loadavg" <<'EOF'
import json, sys
tmp, n, cpu0, cpu1, hz, loadavg = sys.argv[1:]
ok, failed, rate, client = 0, 0, 0.0, 0.0
for i in range(1, int(n) + 1):
    d = json.load(open(f"{tmp}/out{i}.json"))
    ok += d["ok"]
    failed += d["failed"]
    rate += d["rate_per_s"]
    client += sum(map(float, open(f"{tmp}/time{i}").read().split()))
ok = max(ok, 1)
server = (int(cpu1) - int(cpu0)) / int(hz)
print(f"{rate:.0f} {server * 1e6 / ok:.1f} {client * 1e6 / ok:.1f} {loadavg} {failed}")
EOF
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

echo "placement=$placement, $rounds rounds of ${secs}s, 64 clients from $loaders load" \
  "generator(s), v4.public${PROCESSES:+, PROCESSES=$PROCESSES}"
for r in $(seq "$rounds"); do
  for t in 1 2; do
    read -r rate s c l f < <(one "$t")
    echo "round $r threads=$t: $rate/s, server $s µs/rt, load generator $c µs/rt," \
      "load average $l, $f failed"
    echo "$rate" >>"$tmp/rate$t"
    echo "$s" >>"$tmp/server$t"
  done
done
r1="$(median <"$tmp/rate1")"
r2="$(median <"$tmp/rate2")"
echo "medians: threads=1 $r1/s, threads=2 $r2/s, ratio $(python3 -c "print(f'{$r2 / $r1:.2f}')");" \
  "server µs/rt $(median <"$tmp/server1") -> $(median <"$tmp/server2")"
