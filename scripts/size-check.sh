#!/usr/bin/env bash
# Binary-size budget (SPEC §1, issue 5): the `small` profile's stripped `wsgate`
# must stay within 800 KiB. Builds it, prints the size, exits 1 when over budget.
#   scripts/size-check.sh            # build and check
#   BUDGET_KIB=700 scripts/size-check.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
budget_kib="${BUDGET_KIB:-800}"
# Without optional features (SPEC §1): `wsgate bench` is left out.
cargo build --quiet --profile small --no-default-features --bin wsgate
target="${CARGO_TARGET_DIR:-$root/target}"
bin="$target/small/wsgate"
# The profile strips already; strip again when the tool is there (no-op then).
if command -v strip >/dev/null; then strip -o "$bin.stripped" "$bin"; else cp "$bin" "$bin.stripped"; fi
bytes=$(stat -c %s "$bin.stripped")
kib=$(( (bytes + 1023) / 1024 ))
echo "wsgate (profile small, stripped): $bytes bytes = $kib KiB (budget $budget_kib KiB)"
if [ "$kib" -gt "$budget_kib" ]; then
  echo "size-check: FAILED: $kib KiB > $budget_kib KiB" >&2
  exit 1
fi
echo "size-check: ok"
