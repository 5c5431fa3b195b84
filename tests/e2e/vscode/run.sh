#!/usr/bin/env bash
# The VS Code end-to-end test (`make e2e`): installs code-server and the browser driver if needed
# (apt packages only as root; otherwise a missing one fails with the command to run), packages the
# extension, then drives a real VS Code against the real server with a tiny model.
# Screenshots and logs: test-output/e2e/. Environment knobs: EGCFG_E2E_PYTHON (default .venv/bin/python),
# EGCFG_E2E_LINE_DELAY_MS (server slowdown per committed line, default 1500), EGCFG_E2E_KEEP=1.
set -euo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
cd "$root"
tests/e2e/vscode/setup.sh
if [ ! -x "${EGCFG_E2E_PYTHON:-.venv/bin/python}" ]; then
  echo "e2e FAILED: no Python at ${EGCFG_E2E_PYTHON:-.venv/bin/python} (run scripts/setup first)" >&2
  exit 1
fi
(cd vscode-client && { [ -d node_modules/@vscode/vsce ] || npm ci --no-audit --no-fund; } && npm run --silent package >/dev/null) \
  || { echo "e2e FAILED: packaging the extension (cd vscode-client && npm ci && npm run package)" >&2; exit 1; }
exec node tests/e2e/vscode/run_e2e.mjs
