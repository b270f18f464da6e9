# Sourced by scripts/bench-cluster.sh and scripts/bench-idle.sh: a release `wsgate
# serve` under callgrind, for counting user-space instructions.
#   cg_setup NAME     builds the release binary, sets $bin, $work (a temp dir, removed
#                     on exit with whatever cg_cleanup_extra does) and $work/key
#   cg_start ARGS…    starts `serve --key $work/key --listen 127.0.0.1:0 --log-level
#                     error ARGS…` under callgrind; sets $cg_pid and $cg_addr
#   cg_stop           SIGTERM, wait, and prints the server's total instructions
cg_setup() {
  cg_name="$1"
  command -v valgrind >/dev/null || { echo "$cg_name: valgrind is needed" >&2; exit 1; }
  cargo build --quiet --release --bin wsgate
  bin="${CARGO_TARGET_DIR:-$root/target}/release/wsgate"
  work="$(mktemp -d)"
  trap 'cg_cleanup_extra 2>/dev/null || true; rm -rf "$work"' EXIT
  "$bin" keygen --out "$work/key" 2>/dev/null
}

cg_start() {
  rm -f "$work/cg.out"
  valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" "$bin" serve --key "$work/key" \
    --listen 127.0.0.1:0 --log-level error "$@" 2>"$work/serve.log" &
  cg_pid=$!
  cg_addr=""
  # The listen line is at info; with --log-level error, find the port from the socket table.
  for _ in $(seq 300); do
    cg_addr="$(ss -ltnpH 2>/dev/null | awk -v p="pid=$cg_pid," '$0 ~ p {print $4; exit}')"
    [ -n "$cg_addr" ] && break
    sleep 0.1
  done
  [ -n "$cg_addr" ] || { echo "$cg_name: the server did not listen" >&2; cat "$work/serve.log" >&2; exit 1; }
}

cg_stop() {
  kill -TERM "$cg_pid"
  wait "$cg_pid" || true
  awk '/^(summary|totals):/ {print $2; exit}' "$work/cg.out"
}
