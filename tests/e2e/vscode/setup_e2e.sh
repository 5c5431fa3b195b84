#!/usr/bin/env bash
# The "Set up EG-CFG" end-to-end test (`make e2e-setup`): builds the .vsix with the egcfg wheel
# inside, a bare interpreter (a venv without egcfg), a tiny model, and a local wheelhouse with
# everything the setup installs (torch's CPU wheel included: no index is read during the test),
# then drives a real VS Code from "not installed" to a ready server (setup_e2e.mjs).
# The wheelhouse is kept in tests/e2e/vscode/.cache/wheelhouse and refreshed when pyproject.toml
# changes. Screenshots and logs: test-output/e2e-setup/. EGCFG_E2E_KEEP=1 keeps the scratch folder.
set -euo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
cd "$root"
here=tests/e2e/vscode
fail() { echo "e2e-setup FAILED: $*" >&2; exit 1; }

tests/e2e/vscode/setup.sh
scripts/setup

echo "e2e-setup: building the wheel and the .vsix" >&2
rm -rf vscode-client/wheels
.venv/bin/python -m pip wheel --no-deps --quiet --wheel-dir vscode-client/wheels . >&2 || fail "pip wheel ."
(cd vscode-client && { [ -d node_modules/@vscode/vsce ] || npm ci --no-audit --no-fund; } && npm run --silent package >/dev/null) \
  || fail "packaging the extension (cd vscode-client && npm ci && npm run package)"
wheel="$(ls vscode-client/wheels/egcfg-*.whl)"

wheelhouse="$root/$here/.cache/wheelhouse"
want="$(cat pyproject.toml <(echo "torch==${EGCFG_TORCH_VERSION:-2.13.0}") | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$wheelhouse/.stamp" 2>/dev/null)" != "$want" ]; then
  echo "e2e-setup: filling the wheelhouse (torch and egcfg's dependencies)" >&2
  rm -rf "$wheelhouse"
  mkdir -p "$wheelhouse"
  .venv/bin/python -m pip download --quiet --only-binary :all: --dest "$wheelhouse" \
    "torch==${EGCFG_TORCH_VERSION:-2.13.0}" "$wheel" >&2 || fail "pip download into $wheelhouse"
  rm -f "$wheelhouse"/egcfg-*.whl  # the extension installs the wheel it carries
  echo "$want" > "$wheelhouse/.stamp"
fi

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
python="$(.venv/bin/python -c 'import sys; print(sys._base_executable)')"
"$python" -m venv "$scratch/bare"
echo "e2e-setup: building a tiny model" >&2
HF_HUB_OFFLINE=1 .venv/bin/egcfg dev tiny-model "$scratch/tiny-model" >/dev/null

EGCFG_E2E_BARE_PYTHON="$scratch/bare/bin/python" EGCFG_E2E_WHEELHOUSE="$wheelhouse" EGCFG_E2E_MODEL="$scratch/tiny-model" \
  node "$here/setup_e2e.mjs"
