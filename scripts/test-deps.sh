#!/usr/bin/env bash
# Installs what the browser end-to-end and interop tests need, idempotently:
#   - Debian's `chromium` package (/usr/bin/chromium); no browser download from a test tool;
#   - Debian's `redis-server` package (the cluster tests start their own servers);
#   - the Node packages pinned in tests/browser/package-lock.json (`npm ci`): playwright-core
#     (drives /usr/bin/chromium), paseto-ts and paseto (independent PASETO v4 implementations), ws.
#   - websocat 1.14.1 (the README's client; tests run its commands with it): Debian has no
#     package, so `cargo install --locked` into $WSGATE_TOOLS (default ~/.cache/wsgate-tools),
#     where the tests look for it; skipped when that binary is already there.
# Needs root (or sudo) for apt-get, and node >= 20 with npm. Safe to run again: it skips what is
# already there. Exits non-zero, saying what failed, if anything cannot be installed.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
browser_dir="$root/tests/browser"
log() { printf 'test-deps: %s\n' "$*" >&2; }
die() { printf 'test-deps: error: %s\n' "$*" >&2; exit 1; }

# apt_install PACKAGE: Debian's package, as root or through sudo (apt-get update once).
apt_updated=""
apt_install() {
  command -v apt-get >/dev/null || die "$1 missing and no apt-get: install Debian's $1 package"
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || die "installing $1 needs root (or sudo)"
    sudo="sudo"
  fi
  log "installing Debian $1 (apt-get)"
  if [ -z "$apt_updated" ]; then
    $sudo apt-get update -qq || die "apt-get update failed"
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$1" \
    || die "apt-get install $1 failed"
}

# --- Chromium (Debian package) ---
if [ -x /usr/bin/chromium ]; then
  log "chromium present: $(/usr/bin/chromium --version 2>/dev/null || echo '?')"
else
  apt_install chromium
  [ -x /usr/bin/chromium ] || die "chromium installed but /usr/bin/chromium is missing"
  log "installed: $(/usr/bin/chromium --version 2>/dev/null || echo '?')"
fi

# --- redis-server (Debian package): the cluster tests start their own on free ports ---
# (The package's service is not wanted; on a machine without systemd its post-install
# step cannot start it anyway.)
if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
  log "redis-server present: $(redis-server --version | cut -d' ' -f1-3)"
else
  apt_install redis-server
  command -v redis-server >/dev/null || die "redis-server installed but not on PATH"
  log "installed: $(redis-server --version | cut -d' ' -f1-3)"
fi

# --- websocat (crates.io) ---
tools="${WSGATE_TOOLS:-$HOME/.cache/wsgate-tools}"
websocat_version=1.14.1
if "$tools/bin/websocat" --version 2>/dev/null | grep -qx "websocat $websocat_version"; then
  log "websocat present: $tools/bin/websocat"
else
  command -v cargo >/dev/null || die "cargo not found (needed to install websocat)"
  log "installing websocat $websocat_version into $tools (cargo install, a few minutes)"
  # Its own target directory: not the project's (CARGO_TARGET_DIR), not left behind.
  build="$(mktemp -d)"
  env -u CARGO_TARGET_DIR cargo install websocat --locked --version "$websocat_version" \
    --root "$tools" --target-dir "$build" --quiet \
    || { rm -rf "$build"; die "cargo install websocat failed"; }
  rm -rf "$build"
  log "installed: $("$tools/bin/websocat" --version)"
fi

# --- Node packages ---
command -v node >/dev/null || die "node not found (need Node.js >= 20)"
command -v npm >/dev/null || die "npm not found"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] || die "Node.js $(node --version) is too old: need >= 20"

# `npm ci` only when node_modules does not match the lock file (npm writes its own copy of the
# lock into node_modules/.package-lock.json on install).
stamp="$browser_dir/node_modules/.package-lock.json"
if [ -f "$stamp" ] && [ "$stamp" -nt "$browser_dir/package-lock.json" ] \
   && [ -d "$browser_dir/node_modules/playwright-core" ]; then
  log "tests/browser/node_modules up to date"
else
  log "npm ci in tests/browser"
  (cd "$browser_dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error) \
    || die "npm ci in tests/browser failed"
fi

log "ok"
