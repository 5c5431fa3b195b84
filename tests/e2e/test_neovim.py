"""A real editor: headless Neovim (0.7, from Debian) loads the shipped configuration
(editors/neovim/lua/egcfg), starts the server, opens a file, reads the diagnostics, requests a
hover and runs egcfg.completeWithTests, whose answer it applies to the buffer."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lsp_server"))  # the shared harness

from test_lsp_harness import REPO, server_env, write_script
from test_lsp_protocol import MODULE, make_project

pytestmark = pytest.mark.timeout(180)

DRIVER = textwrap.dedent('''\
    local results = {}
    local ok, err = pcall(function()
      package.path = REPO .. "/editors/neovim/lua/?/init.lua;" .. package.path
      local egcfg = require("egcfg")
      egcfg.setup({ cmd = { PYTHON, "-m", "lsp_server" }, cmd_env = ENV,
                    settings = { model = SCRIPT, debounceMs = 0 } })
      vim.cmd("filetype on")
      vim.cmd("edit " .. MODULE)
      local bufnr = vim.api.nvim_get_current_buf()
      results.started = vim.wait(30000, function() return egcfg.client() ~= nil end, 50)
      results.ready = vim.wait(30000, function() return egcfg.status.state == "ready" end, 50)
      -- published function by function: wait for the last one (the division by zero)
      results.has_diagnostics = vim.wait(30000, function()
        for _, d in ipairs(vim.diagnostic.get(bufnr)) do
          if d.message:find("ZeroDivisionError") then return true end
        end
        return false
      end, 50)
      results.diagnostics = {}
      for _, d in ipairs(vim.diagnostic.get(bufnr)) do
        table.insert(results.diagnostics, { line = d.lnum, severity = d.severity, message = d.message })
      end
      local client = egcfg.client()
      local hover = client.request_sync("textDocument/hover", {
        textDocument = { uri = vim.uri_from_bufnr(bufnr) }, position = { line = 7, character = 8 } }, 10000, bufnr)
      results.hover = hover and hover.result and hover.result.contents.value or ""
      results.inlay_hints = egcfg.inlay_hints
      results.notices = egcfg.notices
      local lenses = client.request_sync("textDocument/codeLens", {
        textDocument = { uri = vim.uri_from_bufnr(bufnr) } }, 10000, bufnr)
      results.lenses = {}
      for _, lens in ipairs(lenses and lenses.result or {}) do
        table.insert(results.lenses, { line = lens.range.start.line, title = lens.command.title })
      end
      -- the Fix lens of ratio, run the way vim.lsp.codelens.run runs it (vim.lsp.commands first)
      results.fix = egcfg.regenerate(11, 30000)
      results.fixed_lines = vim.api.nvim_buf_get_lines(bufnr, 0, -1, false)
      vim.api.nvim_win_set_cursor(0, { 3, 4 })
      results.answer = egcfg.complete(30000)
      results.lines = vim.api.nvim_buf_get_lines(bufnr, 0, -1, false)
      results.statusline = egcfg.statusline()
      results.streamed = 0
      for _, lines in pairs(egcfg.lines) do results.streamed = results.streamed + #lines end
    end)
    results.ok = ok
    results.error = ok and "" or tostring(err)
    local file = io.open(OUT, "w")
    file:write(vim.fn.json_encode(results))
    file:close()
    vim.cmd("qa!")
''')


def lua_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid Lua string literal for these paths


@pytest.mark.skipif(shutil.which("nvim") is None, reason="Neovim (nvim) is not installed")
def test_neovim_shows_diagnostics_hover_and_applies_the_command(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    (root / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    module = make_project(root)
    script = write_script(tmp_path, ["    return a + b"], delay=0.02)  # for ratio too: a body that passes
    out = tmp_path / "results.json"
    env = server_env(scripted=True)
    lua_env = "{" + ", ".join(f"[{lua_string(k)}] = {lua_string(env[k])}" for k in
                                ("EGCFG_LSP_BACKEND", "PYTHONPATH", "HF_HUB_OFFLINE")) + "}"
    driver = tmp_path / "driver.lua"
    driver.write_text("\n".join([
        f"REPO = {lua_string(str(REPO))}", f"PYTHON = {lua_string(sys.executable)}",
        f"ENV = {lua_env}", f"SCRIPT = {lua_string(script)}", f"MODULE = {lua_string(str(module))}",
        f"OUT = {lua_string(str(out))}", DRIVER]))
    process = subprocess.run(["nvim", "--headless", "-u", "NONE", "-i", "NONE", "-n", "-c", f"luafile {driver}"],
                             cwd=root, capture_output=True, text=True, timeout=150,
                             env=dict(os.environ, XDG_STATE_HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path)))
    assert out.exists(), f"nvim wrote no results: {process.stdout[-2000:]} {process.stderr[-2000:]}"
    results = json.loads(out.read_text())
    assert results["ok"], results["error"]
    assert results["started"] and results["ready"] and results["has_diagnostics"]
    messages = {(d["line"], d["message"]) for d in results["diagnostics"]}
    assert any(line == 7 and "t=1, 3, 6 (int)" in message for line, message in messages)
    assert any(line == 11 and "ZeroDivisionError" in message for line, message in messages)
    assert "total(xs=[1, 2, 3])" in results["hover"]
    # Neovim 0.7 has no inlay hints: the config says where the values are instead; the values are
    # Hint diagnostics (severity 4), shown as virtual text; failures stay errors (severity 1)
    assert results["inlay_hints"] is False and any("no inlay hints" in n for n in results["notices"])
    severities = {(d["line"], d["severity"]) for d in results["diagnostics"]}
    assert (7, 4) in severities and (11, 1) in severities
    assert {(lens["line"], lens["title"]) for lens in results["lenses"]} == {
        (0, "Complete with tests (1)"), (3, "✗ 1/2 tests · Fix with EG-CFG"), (10, "✗ 0/1 tests · Fix with EG-CFG")}
    # regenerating ratio from its failing line replaced that line (the answer's range), nothing else
    assert results["fix"]["range"]["start"]["line"] == 11 and results["fix"]["replaced"] == "    return a / b\n"
    assert results["fixed_lines"][10:12] == ["def ratio(a, b):", "    return a + b"]
    assert len(results["fixed_lines"]) == len(MODULE.splitlines())
    assert results["answer"]["code"] == "    return a + b\n" and results["answer"]["passed"] == 1
    assert results["lines"][:3] == ["def add(a, b):", '    """Add two numbers."""', "    return a + b"]
    assert results["streamed"] >= 1 and results["statusline"].startswith("egcfg: ")
