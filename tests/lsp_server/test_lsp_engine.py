"""The language server with the real engine: a tiny random-weight model (built by the conftest's
`tiny_model_dir`), the real executor and sandbox, over stdio with pygls's client."""

from __future__ import annotations

import asyncio

import pytest
from lsprotocol import types

from test_lsp_harness import open_doc, start, stop
from test_lsp_protocol import inline_params, make_project, ready

pytestmark = pytest.mark.timeout(240)


async def test_tiny_model_streams_lines_and_the_command_reports_progress(tmp_path, tiny_model_dir):
    module = make_project(tmp_path)
    options = {"model": str(tiny_model_dir), "device": "cpu", "preset": "baseline", "maxNewTokens": 24, "debounceMs": 0}
    client, rec, drainer = await start(tmp_path, options, scripted=False)
    try:
        await ready(rec)
        assert rec.status[-1]["state"] == "ready" and rec.status[-1]["device"] == "cpu"
        kinds = [v.get("kind") for _, v in rec.progress if isinstance(v, dict)]
        assert kinds[0] == "begin" and kinds[-1] == "end"  # the load reported work-done progress
        uri = open_doc(client, module)
        result = await client.text_document_inline_completion_async(inline_params(uri, 2, 4))
        streamed = [p for _, p in rec.lines]
        assert streamed, "no line was streamed"
        assert all(p["uri"] == uri and p["version"] == 1 and p["engineTime"] > 0 for p in streamed)
        if result is not None and result.items:
            body = result.items[0].insert_text
            agent_lines = [p["text"] for p in streamed if p["agent"] == streamed[-1]["agent"]]
            assert body.rstrip("\n") == "\n".join(agent_lines).rstrip("\n")
            assert result.items[0].range.start == types.Position(line=2, character=0)

        progress_before = len(rec.progress)
        answer = await client.workspace_execute_command_async(types.ExecuteCommandParams(
            command="egcfg.completeWithTests", arguments=[{"uri": uri, "line": 2, "character": 4}]))
        assert set(answer) >= {"code", "passed", "total", "agent"}
        assert answer["total"] == 1 and 0 <= answer["passed"] <= 1 and answer["agent"]
        run_progress = [v for _, v in rec.progress[progress_before:] if isinstance(v, dict)]
        assert run_progress[0]["kind"] == "begin" and run_progress[0]["cancellable"] is True
        assert any(v["kind"] == "report" for v in run_progress) and run_progress[-1]["kind"] == "end"
        assert any(s["state"] == "running" and s["total"] == 1 for s in rec.status)
    finally:
        await stop(client, drainer)


async def test_a_model_that_fails_to_load_leaves_a_working_server(tmp_path):
    module = make_project(tmp_path)
    client, rec, drainer = await start(tmp_path, {"model": str(tmp_path / "no-such-model"), "debounceMs": 0}, scripted=False)
    try:
        await ready(rec)
        assert rec.status[-1]["state"] == "error"
        message = await rec.wait_for(lambda: next((m for m in rec.messages if m.type == types.MessageType.Error), None),
                                     what="error message")
        assert "no-such-model" in message.message and "Traceback" not in message.message
        uri = open_doc(client, module)
        assert await client.text_document_inline_completion_async(inline_params(uri, 2, 4)) is None
        answer = await client.workspace_execute_command_async(types.ExecuteCommandParams(
            command="egcfg.completeWithTests", arguments=[{"uri": uri, "line": 2, "character": 4}]))
        assert answer["code"] == "" and "no-such-model" in answer["error"]
        # diagnostics still come from the real sandbox
        # (published function by function: wait for the one that raises)
        await rec.wait_for(lambda: (d := rec.latest_diagnostics(uri)) and any(
            "ZeroDivisionError" in x.message for x in d.diagnostics), what="diagnostics")
    finally:
        await stop(client, drainer)


async def test_a_test_file_that_hangs_at_import_times_out_with_a_clear_message(tmp_path):
    module = make_project(tmp_path)
    (tmp_path / "src" / "pkg" / "slow.py").write_text("def g(x):\n    return x\n")
    (tmp_path / "tests" / "test_slow.py").write_text(
        "import time\ntime.sleep(3600)\nfrom pkg.slow import g\n\ndef test_g():\n    assert g(1) == 1\n")
    client, rec, drainer = await start(tmp_path, {"model": str(tmp_path / "none"), "testSeconds": 1, "debounceMs": 0},
                                       scripted=False)
    try:
        uri = open_doc(client, tmp_path / "src" / "pkg" / "slow.py")
        published = await rec.wait_for(lambda: (d := rec.latest_diagnostics(uri)) and d.diagnostics and d,
                                       timeout=60, what="timeout diagnostics")
        warnings = [d for d in published.diagnostics if d.severity == types.DiagnosticSeverity.Warning]
        assert warnings and warnings[0].range.start.line == 0 and "timed out" in warnings[0].message
        # and the server still answers
        other = open_doc(client, module)
        await rec.wait_for(lambda: rec.latest_diagnostics(other), what="other diagnostics")
    finally:
        await stop(client, drainer)
