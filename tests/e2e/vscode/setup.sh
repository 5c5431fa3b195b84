#!/usr/bin/env bash
# Installs what the VS Code end-to-end test needs, offline-friendly and idempotent:
#   - apt packages: a C tool chain for code-server's native modules, ripgrep, Debian's chromium
#   - code-server 4.100.3 (VS Code 1.100.3) from the npm registry, under .cache/code-server
#   - playwright-core (drives chromium), under tests/e2e/vscode/node_modules
# apt packages are installed only when running as root (e.g. in CI); otherwise a missing package
# stops the script with the exact command to run. Everything else lands in gitignored folders.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="$here/.cache"
code_server_version="4.100.3"
cs_root="$cache/code-server/node_modules/code-server"
mkdir -p "$cache"

say() { echo "e2e setup: $*" >&2; }
fail() { echo "e2e setup FAILED: $*" >&2; exit 1; }

apt_packages=(build-essential pkg-config libkrb5-dev libx11-dev libxkbfile-dev libsecret-1-dev ripgrep chromium)

check_apt() {
  local missing=()
  for p in "${apt_packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing apt packages: ${missing[*]}"
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
  else
    fail "missing apt packages: ${missing[*]} (run: sudo apt-get install ${missing[*]})"
  fi
}

# Only for nicer screenshots (the hover's pass/fail marks): installed when root, never required.
optional_apt_packages=(fonts-noto-color-emoji)

install_optional() {
  local missing=()
  for p in "${optional_apt_packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 \
      || say "optional packages not installed: ${missing[*]} (screenshots only)"
  fi
}

check_node() {
  command -v node >/dev/null || fail "node is missing (code-server $code_server_version needs node 20)"
  local major
  major="$(node -p 'process.versions.node.split(".")[0]')"
  [ "$major" = 20 ] || fail "code-server $code_server_version needs node 20, found $(node --version)"
}

# The recipe from the team notes: the package's postinstall downloads ripgrep from the internet,
# so run its steps by hand and use Debian's rg instead.
install_code_server() {
  if [ -f "$cache/code-server/.installed-$code_server_version" ]; then return 0; fi
  say "installing code-server $code_server_version (about a minute with a warm npm cache)"
  rm -rf "$cache/code-server"
  mkdir -p "$cache/code-server"
  (cd "$cache/code-server" && echo '{"private": true}' > package.json &&
    npm install --no-audit --no-fund --ignore-scripts "code-server@$code_server_version" >&2 &&
    npm rebuild argon2 >&2) || fail "npm install code-server@$code_server_version"
  local vs="$cs_root/lib/vscode"
  (cd "$vs" && npm install --no-audit --no-fund --omit=dev --ignore-scripts >&2) \
    || fail "npm install in code-server's lib/vscode"
  mkdir -p "$vs/node_modules/@vscode/ripgrep/bin"
  cp "$(command -v rg)" "$vs/node_modules/@vscode/ripgrep/bin/rg"
  (cd "$vs" && npm_config_yes=true npm rebuild >&2) || fail "npm rebuild in code-server's lib/vscode (native modules)"
  ln -sfn node_modules "$vs/node_modules.asar"
  ln -sfn code-linux.sh "$vs/bin/remote-cli/code-server"
  ln -sfn browser-linux.sh "$vs/bin/helpers/browser.sh"
  (cd "$vs/extensions" && npm install --no-audit --no-fund --omit=dev >&2) \
    || fail "npm install in code-server's lib/vscode/extensions"
  touch "$cache/code-server/.installed-$code_server_version"
}

install_driver() {
  if [ -d "$here/node_modules/playwright-core" ]; then return 0; fi
  say "installing playwright-core"
  (cd "$here" && npm ci --no-audit --no-fund >&2) || fail "npm ci in tests/e2e/vscode (playwright-core)"
}

check_apt
install_optional
check_node
install_code_server
install_driver
node "$cs_root/out/node/entry.js" --version >/dev/null || fail "code-server does not start: node $cs_root/out/node/entry.js --version"
say "ready ($(node "$cs_root/out/node/entry.js" --version | head -1))"
