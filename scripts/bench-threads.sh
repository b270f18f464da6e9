#!/usr/bin/env bash
# Handshakes per second with `serve --threads 2` against `--threads 1` (issue 17, goal
# 2): v4.public tokens (Ed25519 verification dominates), one token presented by
# `wsgate bench --token` at 64 clients, ROUNDS interleaved rounds of SECS each; prints
# each run (rate, server and load-generator CPU per round trip, load average) and the
# medians. The load generator shares the machine:
#   PLACEMENT=shared  server and load on every core (default)
#   PLACEMENT=split   server on CPU 0 (1 thread) or CPUs 0-1 (2 threads), load on CPU 1
#   scripts/bench-threads.sh [ROUNDS=3] [SECS=10]
#   WSGATE_BIN=target/small/wsgate scripts/bench-threads.sh   # another server build
# The load always comes from the release build (`wsgate bench`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
rounds="${1:-3}"
secs="${2:-10}"
placement="${PLACEMENT:-shared}"
target="${CARGO_TARGET_DIR:-$root/target}"
cargo build --quiet --release --bin wsgate
load="$target/release/wsgate"
server="${WSGATE_BIN:-$load}"
tmp="$(mktemp -d)"
trap 'kill "${pid:-}" 2>/dev/null || true; rm -rf "$tmp"' EXIT
"$load" keygen --public --out "$tmp/key" >/dev/null 2>&1
token="$("$load" issue --key "$tmp/key" --sub bench --ttl 2h)"
case "$placement" in
  shared) server_cpus() { echo 0-1; }; load_cpus=0-1 ;;
  split) server_cpus() { [ "$1" = 1 ] && echo 0 || echo 0-1; }; load_cpus=1 ;;
  *) echo "PLACEMENT: shared or split" >&2; exit 2 ;;
esac

# One run: prints `rate server_us client_us load1`.
one() {
  local threads="$1" log="$tmp/serve.log" addr="" out
  taskset -c "$(server_cpus "$threads")" "$server" serve --key "$tmp/key.pub" \
    --listen 127.0.0.1:0 --threads "$threads" --max-connections 100000 2>"$log" >/dev/null &
  pid=$!
  for _ in $(seq 200); do
    addr="$(sed -n 's/.*event=listen addr=\([^ ]*\).*/\1/p' "$log" | head -1)"
    [ -n "$addr" ] && break
    sleep 0.02
  done
  taskset -c "$load_cpus" "$load" bench "ws://$addr/" --token "$token" -n 1000 -c 64 >/dev/null
  local loadavg
  loadavg="$(cut -d' ' -f1 /proc/loadavg)"
  local TIMEFORMAT='%U %S'
  { time taskset -c "$load_cpus" "$load" bench "ws://$addr/" --token "$token" -c 64 \
      --duration "${secs}s" --server-pid "$pid" --json >"$tmp/out.json"; } 2>"$tmp/time"
  kill -TERM "$pid"
  wait "$pid" || true
  python3 - "$tmp/out.json" "$tmp/time" "$loadavg" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
user, sys_ = map(float, open(sys.argv[2]).read().split())
ok = max(d["ok"], 1)
print(f'{d["rate_per_s"]:.0f} {d["server"]["cpu_us_per_round_trip"]:.1f} '
      f'{(user + sys_) * 1e6 / ok:.1f} {sys.argv[3]}')
EOF
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

echo "placement=$placement, $rounds rounds of ${secs}s, 64 clients, v4.public"
for r in $(seq "$rounds"); do
  for t in 1 2; do
    read -r rate s c l < <(one "$t")
    echo "round $r threads=$t: $rate/s, server $s µs/rt, load generator $c µs/rt, load average $l"
    echo "$rate" >>"$tmp/rate$t"
    echo "$s" >>"$tmp/server$t"
  done
done
r1="$(median <"$tmp/rate1")"
r2="$(median <"$tmp/rate2")"
echo "medians: threads=1 $r1/s, threads=2 $r2/s, ratio $(python3 -c "print(f'{$r2 / $r1:.2f}')");" \
  "server µs/rt $(median <"$tmp/server1") -> $(median <"$tmp/server2")"
