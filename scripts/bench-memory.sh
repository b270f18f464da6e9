#!/usr/bin/env bash
# Memory per idle authenticated session: starts `wsgate serve` (release build),
# holds N sessions with `wsgate bench --hold N` and reads the server's RSS before
# and while they are held (from /proc, via --server-pid). Budget: 4 KiB each.
#   scripts/bench-memory.sh [N=5000] [METHOD=cookie] [SECS=10]
#   WSGATE_BIN=target/small/wsgate scripts/bench-memory.sh   # measure another server build
# The load always comes from the release build (`wsgate bench`, which the router
# build leaves out); WSGATE_BIN only picks the server.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
n="${1:-5000}"; method="${2:-cookie}"; secs="${3:-10}"
(cd "$root" && cargo build --quiet --release --bin wsgate)
load="${CARGO_TARGET_DIR:-$root/target}/release/wsgate"
WSGATE_BIN="${WSGATE_BIN:-$load}"
# Each session is one descriptor in the server and one in the load generator.
ulimit -n "$(( n * 2 + 1024 ))" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
tmp="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$tmp"' EXIT
"$load" keygen --out "$tmp/key" 2>/dev/null
"$WSGATE_BIN" serve --key "$tmp/key" --listen 127.0.0.1:0 --max-connections $(( n + 1000 )) \
  2>"$tmp/log" &
pid=$!
for _ in $(seq 100); do grep -q 'event=listen' "$tmp/log" 2>/dev/null && break; sleep 0.05; done
addr="$(grep -o 'addr=[^ ]*' "$tmp/log" | head -1 | cut -d= -f2)"
[ -n "$addr" ] || { echo "wsgate did not start" >&2; cat "$tmp/log" >&2; exit 1; }
# Warm up: one round of short connections so the allocator's steady state is in "before".
"$load" bench "ws://$addr/" --key "$tmp/key" --method "$method" -n 500 -c 64 >/dev/null
"$load" bench "ws://$addr/" --key "$tmp/key" --method "$method" -c 64 \
  --hold "$n" --hold-for "${secs}s" --server-pid "$pid" ${JSON:+--json}
