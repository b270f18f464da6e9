#!/usr/bin/env bash
# Memory per idle authenticated session: starts `wsgate serve` (release build),
# holds N sessions with `wsgate bench --hold N` and reads the server's RSS before
# and while they are held (from /proc, via --server-pid). Budget: 4 KiB each.
#   scripts/bench-memory.sh [N=5000] [METHOD=cookie] [SECS=10]
#   WSGATE_BIN=target/small/wsgate scripts/bench-memory.sh   # measure another server build
#   TLS=1 scripts/bench-memory.sh          # sessions over wss:// (a self-signed P-256
#                                          # certificate made with the openssl CLI)
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
scheme=ws; tls_args=(); ca_args=()
if [ -n "${TLS:-}" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -addext basicConstraints=critical,CA:FALSE \
    -keyout "$tmp/tls.key" -out "$tmp/tls.crt" 2>/dev/null
  scheme=wss; tls_args=(--tls-cert "$tmp/tls.crt" --tls-key "$tmp/tls.key"); ca_args=(--ca "$tmp/tls.crt")
fi
"$WSGATE_BIN" serve --key "$tmp/key" --listen 127.0.0.1:0 --max-connections $(( n + 1000 )) \
  "${tls_args[@]}" 2>"$tmp/log" &
pid=$!
for _ in $(seq 100); do grep -q 'event=listen' "$tmp/log" 2>/dev/null && break; sleep 0.05; done
addr="$(grep -o 'addr=[^ ]*' "$tmp/log" | head -1 | cut -d= -f2)"
[ -n "$addr" ] || { echo "wsgate did not start" >&2; cat "$tmp/log" >&2; exit 1; }
# Warm up: one round of short connections so the allocator's steady state is in "before".
"$load" bench "$scheme://$addr/" --key "$tmp/key" --method "$method" -n 500 -c 64 "${ca_args[@]}" >/dev/null
"$load" bench "$scheme://$addr/" --key "$tmp/key" --method "$method" -c 64 "${ca_args[@]}" \
  --hold "$n" --hold-for "${secs}s" --server-pid "$pid" ${JSON:+--json}
