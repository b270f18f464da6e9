#!/usr/bin/env bash
# Binary-size budget (issue 5): the `small` profile's stripped `wsgate`, without
# optional features and with the compact Ed25519 (`opt-size`) (the router build), must
# stay within 800 KiB; the router build with TLS (`--features opt-size,tls`) within
# 1 700 KiB (rustls, ring and webpki add ~850 KiB, see docs/performance.md#binary-size).
# Builds both, prints their sizes, exits 1 when either is over budget. CI runs this
# (scripts/test), so that a new dependency or feature cannot grow the binary unnoticed.
#   scripts/size-check.sh          # build the router binaries and check them
#   scripts/size-check.sh --all    # also print the default-feature build and the router
#                                  # build with the full-speed Ed25519
#   BUDGET_KIB=700 TLS_BUDGET_KIB=1600 scripts/size-check.sh
# The build's link flags come from build.rs (they apply to the `small` profile only).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
budget_kib="${BUDGET_KIB:-800}"
tls_budget_kib="${TLS_BUDGET_KIB:-1700}"
target="${CARGO_TARGET_DIR:-$root/target}"
bin="$target/small/wsgate"

# Builds with the given feature flags; prints the stripped size in bytes.
size_of() {
  cargo build --quiet --profile small --bin wsgate "$@"
  # The profile strips already; strip again when the tool is there (no-op then).
  if command -v strip >/dev/null; then strip -o "$bin.stripped" "$bin"; else cp "$bin" "$bin.stripped"; fi
  stat -c %s "$bin.stripped"
}
kib() { echo $(( ($1 + 1023) / 1024 )); }

echo "wsgate, profile small, stripped ($(uname -m)):"
if [ "${1:-}" = "--all" ]; then
  full=$(size_of)
  fast_crypto=$(size_of --no-default-features)
  printf '  %-44s %8s bytes = %4s KiB\n' \
    'default features (with `bench`)' "$full" "$(kib "$full")" \
    '--no-default-features (full-speed Ed25519)' "$fast_crypto" "$(kib "$fast_crypto")"
fi
tls_bytes=$(size_of --no-default-features --features opt-size,tls)
printf '  %-44s %8s bytes = %4s KiB (budget %s KiB)\n' \
  '--no-default-features --features opt-size,tls' "$tls_bytes" "$(kib "$tls_bytes")" "$tls_budget_kib"
if [ "$tls_bytes" -gt $(( tls_budget_kib * 1024 )) ]; then
  echo "size-check: FAILED: the router build with TLS is $(kib "$tls_bytes") KiB > $tls_budget_kib KiB" >&2
  exit 1
fi
# Last, so that target/small/wsgate is the budgeted binary.
bytes=$(size_of --no-default-features --features opt-size)
printf '  %-44s %8s bytes = %4s KiB (budget %s KiB)\n' \
  '--no-default-features --features opt-size' "$bytes" "$(kib "$bytes")" "$budget_kib"
if [ "$bytes" -gt $(( budget_kib * 1024 )) ]; then
  echo "size-check: FAILED: $(kib "$bytes") KiB > $budget_kib KiB" >&2
  # build.rs packs relocations (DT_RELR, -27 KiB) only on glibc >= 2.36: say so when
  # that is why.
  if command -v readelf >/dev/null && ! readelf -d "$bin" | grep -q RELR; then
    echo "size-check: this build has no packed relocations (DT_RELR): glibc here is" \
      "$(getconf GNU_LIBC_VERSION 2>/dev/null || echo unknown), build.rs needs >= 2.36" \
      "(see docs/performance.md#binary-size)" >&2
  fi
  exit 1
fi
echo "size-check: ok"
