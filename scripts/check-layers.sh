#!/usr/bin/env bash
# The import rules of CONTRIBUTING.md ("Architecture"): the sans-IO core and the plain
# shared state never use the async runtime, the WebSocket stream or TLS (smol and its
# parts, async-tungstenite, async-io, futures-rustls). Only the server layer may. And
# `server` is the top of the library: no module names it but lib.rs (its re-exports).
# Run by scripts/test beside fmt and clippy; exits 1 naming each offending line.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The core is the folder src/core/ (src/lib.rs declares each module with its folder):
# every .rs file under it is checked; a core folder that is missing or empty fails.
mapfile -t core < <(find src/core -name '*.rs' 2>/dev/null | sort)
crates='smol|async_tungstenite|tungstenite|async_io|futures_rustls|futures_lite|async_net|async_executor|async_signal'

if [ "${#core[@]}" -eq 0 ]; then
  echo "check-layers: no file under src/core/: update scripts/check-layers.sh and CONTRIBUTING.md" >&2
  exit 1
fi

# A path or `use` of one of the crates, outside comments.
if hits=$(grep -nE "(^|[^A-Za-z0-9_])($crates)(::|;|[[:space:]]+as[[:space:]])" "${core[@]}" \
  | grep -vE '^[^:]+:[0-9]+:[[:space:]]*//'); then
  echo "check-layers: a core module uses an IO crate (only the server layer may; see CONTRIBUTING.md, \"Architecture\"):" >&2
  echo "$hits" >&2
  exit 1
fi
echo "check-layers: the core modules import no IO crate (${#core[@]} files)"

# `server` → `admin` → `conn`, `state`: nothing imports back up (comments included, so
# that a doc link does not hide a dependency either).
if hits=$(grep -rnE 'crate::server([^A-Za-z0-9_]|$)' src --include='*.rs' \
  | grep -vE '^src/(server/server|lib)\.rs:'); then
  echo "check-layers: only src/lib.rs may name crate::server (it imports the other modules, not the reverse):" >&2
  echo "$hits" >&2
  exit 1
fi
echo "check-layers: no module names crate::server but lib.rs"
