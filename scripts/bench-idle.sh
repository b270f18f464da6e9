#!/usr/bin/env bash
# Does a handshake cost more while many sessions are held? User-space instructions
# per cookie round trip (callgrind: repeatable whatever the machine's load) of one
# server, first holding no session, then holding H idle authenticated sessions. Only
# the measured round trips are counted: callgrind's counters are zeroed just before
# them and dumped just after (callgrind_control), so start-up, the held sessions' own
# handshakes, the /metrics polls and shutdown are outside both figures (the earlier
# method, the difference of two whole runs, carried their timing-dependent work into
# the result). One client at a time; N round trips each [1000], after a warm-up of
# 100. Keepalive pings are put off (--ping-interval 1h): their cost grows with time,
# not with handshakes. Needs valgrind and a file limit above H (each side holds H
# sockets).
# Usage: scripts/bench-idle.sh [H N] (15000 1000).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
held="${1:-15000}"
n="${2:-1000}"
ulimit -n "$((held + 1000))" 2>/dev/null || true
[ "$(ulimit -n)" -gt "$held" ] || { echo "bench-idle: the file limit ($(ulimit -n)) is below $held" >&2; exit 1; }
# shellcheck source=scripts/callgrind-serve.sh
. "$root/scripts/callgrind-serve.sh"
holder=""
cg_cleanup_extra() { [ -n "$holder" ] && kill "$holder"; }
cg_setup bench-idle

metric() { curl -s "http://$1/metrics" | awk -v m="$2" '$1 == m {print $2}'; }

# measured <dump number>: instructions per round trip of $n cookie round trips,
# counted alone (zero, run, dump).
measured() {
  callgrind_control -z "$cg_pid" >/dev/null 2>&1
  "$bin" bench "ws://$cg_addr/" --key "$work/key" --method cookie -n "$n" -c 1 >/dev/null
  callgrind_control -d "$cg_pid" >/dev/null 2>&1
  cp "$work/cg.out.$1" "${KEEP_DUMPS:-/nonexistent}/" 2>/dev/null || true
  local total
  total="$(awk '/^(summary|totals):/ {print $2; exit}' "$work/cg.out.$1")"
  echo $((total / n))
}

cg_start --max-connections "$((held + 100))" --ping-interval 1h
"$bin" bench "ws://$cg_addr/" --key "$work/key" --method cookie -n 100 -c 1 >/dev/null
none="$(measured 1)"
"$bin" bench "ws://$cg_addr/" --key "$work/key" --method cookie --hold "$held" \
  --hold-for 1h -c 64 --timeout 120s >/dev/null 2>&1 &
holder=$!
for _ in $(seq 3000); do
  [ "$(metric "$cg_addr" wsgate_sessions_active)" = "$held" ] && break
  sleep 0.2
done
[ "$(metric "$cg_addr" wsgate_sessions_active)" = "$held" ] \
  || { echo "bench-idle: $held sessions were not held" >&2; exit 1; }
many="$(measured 2)"
kill "$holder" 2>/dev/null || true
wait "$holder" 2>/dev/null || true
holder=""
cg_stop >/dev/null
printf 'user-space instructions per cookie round trip (callgrind, %s round trips counted alone, one client at a time)\n' "$n"
printf '  %-34s %10s\n' 'no session held' "$none"
printf '  %-34s %10s  %s x\n' "$held idle sessions held" "$many" \
  "$(awk -v a="$many" -v b="$none" 'BEGIN { printf "%.3f", a / b }')"
