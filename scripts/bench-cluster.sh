#!/usr/bin/env bash
# What sharing state through Redis costs a node, in user-space instructions per round
# trip (callgrind: repeatable whatever the machine's load), all in one run:
#   - a token handshake (Authorization header) with --redis vs without: no Redis
#     round trip is made, so the ratio should be 1.00;
#   - the ticket flow (POST /ticket, then the ticket at the handshake) with --redis vs
#     the single-node flow: the redemption becomes one round trip (EVALSHA of a
#     script running SET NX PX; cmdstat_set still counts one per ticket).
# Each figure: the server runs under callgrind for N1 and for N2 round trips (one
# client at a time), and (I(N2) - I(N1)) / (N2 - N1) removes start-up and shutdown.
# Needs valgrind and redis-server. Usage: scripts/bench-cluster.sh [N1 N2] (100 1100).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
n1="${1:-100}"
n2="${2:-1100}"
command -v redis-server >/dev/null || { echo "bench-cluster: redis-server is needed" >&2; exit 1; }
# shellcheck source=scripts/callgrind-serve.sh
. "$root/scripts/callgrind-serve.sh"
redis_pid=""
cg_cleanup_extra() { [ -n "$redis_pid" ] && kill "$redis_pid"; }
cg_setup bench-cluster

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
rport="$(free_port)"
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
redis_pid=$!
for _ in $(seq 100); do redis-cli -p "$rport" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done

# instructions <method> <n> [serve options…]: total user-space instructions of a server
# that served n round trips.
instructions() {
  local method="$1" n="$2"
  shift 2
  cg_start "$@"
  if [ "$#" -gt 0 ]; then
    for _ in $(seq 300); do
      curl -s -o /dev/null -w '%{http_code}' "http://$cg_addr/healthz" | grep -q 200 && break
      sleep 0.1
    done
  fi
  "$bin" bench "ws://$cg_addr/" --key "$work/key" --method "$method" -n "$n" -c 1 >/dev/null
  cg_stop
}

per_trip() {
  local a b
  a="$(instructions "$@")"
  local method="$1"
  shift 2
  b="$(instructions "$method" "$n2" "$@")"
  echo $(((b - a) / (n2 - n1)))
}

header_plain="$(per_trip header "$n1")"
header_redis="$(per_trip header "$n1" --redis "redis://127.0.0.1:$rport")"
ticket_plain="$(per_trip ticket "$n1")"
set_before="$(redis-cli -p "$rport" info commandstats | awk -F'[=,]' '/^cmdstat_set:/ {print $2}')"
ticket_redis="$(per_trip ticket "$n1" --redis "redis://127.0.0.1:$rport")"
set_after="$(redis-cli -p "$rport" info commandstats | awk -F'[=,]' '/^cmdstat_set:/ {print $2}')"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
printf 'user-space instructions per round trip (callgrind, %s and %s round trips, one client at a time)\n' "$n1" "$n2"
printf '  %-38s %10s\n' 'header token, single node' "$header_plain"
printf '  %-38s %10s  %s x\n' 'header token, --redis' "$header_redis" "$(ratio "$header_redis" "$header_plain")"
printf '  %-38s %10s\n' 'ticket flow, single node' "$ticket_plain"
printf '  %-38s %10s  %s x\n' 'ticket flow, --redis' "$ticket_redis" "$(ratio "$ticket_redis" "$ticket_plain")"
printf '  Redis SET commands during the --redis ticket runs: %s (%s tickets)\n' \
  "$(( ${set_after:-0} - ${set_before:-0} ))" "$((n1 + n2))"
