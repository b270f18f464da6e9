#!/usr/bin/env bash
# Binary-size budget (SPEC §1, issue 5): the `small` profile's stripped `wsgate`,
# without optional features, must stay within 800 KiB. Builds it, prints its size
# (and, for information, the `opt-size` and default-feature builds), exits 1 when
# over budget.
#   scripts/size-check.sh            # build and check
#   BUDGET_KIB=700 scripts/size-check.sh
#   scripts/size-check.sh --ceiling  # CI's guard (scripts/test): see below
#
# While the 800 KiB budget is not met (issue 5), `--ceiling` is what CI runs: it
# builds the budgeted binary only and fails when it is over CEILING_KIB, today's
# size plus 1 %, so that a new dependency or feature cannot grow it unnoticed. Lower
# the ceiling when the binary shrinks.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
budget_kib="${BUDGET_KIB:-800}"
ceiling_kib="${CEILING_KIB:-929}"
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

if [ "${1:-}" = "--ceiling" ]; then
  bytes=$(size_of --no-default-features)
  echo "wsgate, profile small, stripped, --no-default-features: $bytes bytes = $(kib "$bytes") KiB" \
    "(ceiling $ceiling_kib KiB; budget $budget_kib KiB)"
  if [ "$(kib "$bytes")" -gt "$ceiling_kib" ]; then
    echo "size-check: FAILED: $(kib "$bytes") KiB > ceiling $ceiling_kib KiB: the binary grew" >&2
    exit 1
  fi
  [ "$(kib "$bytes")" -le "$budget_kib" ] || echo "size-check: still over the $budget_kib KiB budget (issue 5)"
  exit 0
fi

full=$(size_of)
small_crypto=$(size_of --no-default-features --features opt-size)
# Last, so that target/small/wsgate is the budgeted binary.
bytes=$(size_of --no-default-features)
echo "wsgate, profile small, stripped (x86-64):"
printf '  %-44s %8s bytes = %4s KiB\n' \
  'default features (with `bench`)' "$full" "$(kib "$full")" \
  '--no-default-features --features opt-size' "$small_crypto" "$(kib "$small_crypto")" \
  '--no-default-features (budgeted)' "$bytes" "$(kib "$bytes")"
echo "  budget: $budget_kib KiB"
if [ "$(kib "$bytes")" -gt "$budget_kib" ]; then
  echo "size-check: FAILED: $(kib "$bytes") KiB > $budget_kib KiB" >&2
  exit 1
fi
echo "size-check: ok"
