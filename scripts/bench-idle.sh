#!/usr/bin/env bash
# Does a handshake cost more while many sessions are held? User-space instructions
# per cookie round trip (callgrind: repeatable whatever the machine's load) of a
# server holding H idle authenticated sessions, against the same server holding none,
# in one run. Each figure: the server runs under callgrind for N1 and for N2 round
# trips (one client at a time) after the sessions are up, and
# (I(N2) - I(N1)) / (N2 - N1) removes start-up, the held sessions' own handshakes
# and shutdown. Needs valgrind and a file limit above H (each side holds H sockets).
# Keepalive pings are put off (--ping-interval 1h): their cost grows with time, not
# with handshakes, and would land in whichever run lasted longer.
# Usage: scripts/bench-idle.sh [H N1 N2] (15000 100 1100).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
held="${1:-15000}"
n1="${2:-100}"
n2="${3:-1100}"
ulimit -n "$((held + 1000))" 2>/dev/null || true
[ "$(ulimit -n)" -gt "$held" ] || { echo "bench-idle: the file limit ($(ulimit -n)) is below $held" >&2; exit 1; }
# shellcheck source=scripts/callgrind-serve.sh
. "$root/scripts/callgrind-serve.sh"
holder=""
cg_cleanup_extra() { [ -n "$holder" ] && kill "$holder"; }
cg_setup bench-idle

metric() { curl -s "http://$1/metrics" | awk -v m="$2" '$1 == m {print $2}'; }

# instructions <held> <n>: total user-space instructions of a server that held
# <held> idle sessions while it served <n> cookie round trips.
instructions() {
  local hold="$1" n="$2"
  cg_start --max-connections "$((held + 100))" --ping-interval 1h
  local addr="$cg_addr"
  if [ "$hold" -gt 0 ]; then
    "$bin" bench "ws://$addr/" --key "$work/key" --method cookie --hold "$hold" \
      --hold-for 1h -c 64 --timeout 120s >/dev/null 2>&1 &
    holder=$!
    for _ in $(seq 3000); do
      [ "$(metric "$addr" wsgate_sessions_active)" = "$hold" ] && break
      sleep 0.2
    done
    [ "$(metric "$addr" wsgate_sessions_active)" = "$hold" ] \
      || { echo "bench-idle: $hold sessions were not held" >&2; exit 1; }
  fi
  "$bin" bench "ws://$addr/" --key "$work/key" --method cookie -n "$n" -c 1 >/dev/null
  if [ -n "$holder" ]; then
    kill "$holder" 2>/dev/null || true
    wait "$holder" 2>/dev/null || true
    holder=""
    # Every held session closed before the shutdown, so that both runs do the same
    # closing work (a shutdown that still finds some would close them otherwise).
    for _ in $(seq 3000); do
      # (the /metrics request itself is one)
      [ "$(metric "$addr" wsgate_connections_active)" = "1" ] && break
      sleep 0.2
    done
  fi
  cg_stop
}

per_trip() {
  local a b
  a="$(instructions "$1" "$n1")"
  b="$(instructions "$1" "$n2")"
  echo $(((b - a) / (n2 - n1)))
}

none="$(per_trip 0)"
many="$(per_trip "$held")"
printf 'user-space instructions per cookie round trip (callgrind, %s and %s round trips, one client at a time)\n' "$n1" "$n2"
printf '  %-34s %10s\n' 'no session held' "$none"
printf '  %-34s %10s  %s x\n' "$held idle sessions held" "$many" \
  "$(awk -v a="$many" -v b="$none" 'BEGIN { printf "%.3f", a / b }')"
