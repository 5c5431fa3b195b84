"""The calm views over stdio with a scripted backend: inlay hints with values (and their refresh),
Hint value diagnostics, a lens per tested function, the regenerate quick fix and command, and a
command sent while the model is still loading."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from lsprotocol import types
from pygls.protocol.json_rpc import JsonRPCResponseMessage

from test_lsp_harness import make_client, open_doc, start, stop, write_script
from test_lsp_protocol import edit, make_project, ready

pytestmark = pytest.mark.timeout(120)

CAPABILITIES = types.ClientCapabilities(
    window=types.WindowClientCapabilities(work_done_progress=True),
    workspace=types.WorkspaceClientCapabilities(
        inlay_hint=types.InlayHintWorkspaceClientCapabilities(refresh_support=True),
        code_lens=types.CodeLensWorkspaceClientCapabilities(refresh_support=True)),
    text_document=types.TextDocumentClientCapabilities(
        publish_diagnostics=types.PublishDiagnosticsClientCapabilities(version_support=True)))


def whole(uri: str) -> types.InlayHintParams:
    return types.InlayHintParams(text_document=types.TextDocumentIdentifier(uri=uri), range=types.Range(
        start=types.Position(line=0, character=0), end=types.Position(line=100, character=0)))


async def settled(rec, uri):
    """Diagnostics once every function's tests ran (the division by zero is in the last one)."""
    return await rec.wait_for(lambda: (d := rec.latest_diagnostics(uri)) and any(
        "ZeroDivisionError" in x.message for x in d.diagnostics) and d, what="all diagnostics")


async def code_actions(client, uri: str, where: types.Range, diagnostics: list) -> list[dict]:
    """textDocument/codeAction as plain JSON (pygls's client would read a CodeAction as a Command)."""
    msg_id = str(uuid.uuid4())
    future = client.protocol.send_request_async(types.TEXT_DOCUMENT_CODE_ACTION, types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), range=where,
        context=types.CodeActionContext(diagnostics=diagnostics)), msg_id=msg_id)
    client.protocol._result_types[msg_id] = JsonRPCResponseMessage
    return plain(await future) or []


def plain(value):
    if isinstance(value, (list, tuple)) and not hasattr(value, "_asdict"):
        return [plain(v) for v in value]
    if hasattr(value, "_asdict"):
        return {k: plain(v) for k, v in value._asdict().items()}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


@pytest.fixture
def project(tmp_path):
    return tmp_path, make_project(tmp_path)


async def test_hints_hint_diagnostics_lenses_and_refresh(project, monkeypatch):
    root, module = project
    refreshes = []
    original = make_client

    def recording_client():
        client, rec = original()

        @client.feature(types.WORKSPACE_INLAY_HINT_REFRESH)
        def on_refresh(params):
            refreshes.append(time.monotonic())
            return None

        @client.feature(types.WORKSPACE_CODE_LENS_REFRESH)
        def on_lens_refresh(params):
            return None

        return client, rec

    monkeypatch.setattr("test_lsp_harness.make_client", recording_client)
    client, rec, drainer = await start(root, {"model": write_script(root, ["    return 1"]), "debounceMs": 0},
                                       capabilities=CAPABILITIES)
    try:
        caps = client.init_result.capabilities
        assert caps.inlay_hint_provider and caps.code_lens_provider and caps.code_action_provider
        assert "egcfg.regenerateFrom" in caps.execute_command_provider.commands
        uri = open_doc(client, module)
        published = await settled(rec, uri)
        values = [d for d in published.diagnostics if d.range.start.line == 7]
        assert values and all(d.severity == types.DiagnosticSeverity.Hint for d in values)
        severities = {d.range.start.line: d.severity for d in published.diagnostics
                      if d.severity != types.DiagnosticSeverity.Hint}
        assert severities == {0: types.DiagnosticSeverity.Error, 3: types.DiagnosticSeverity.Error,
                              11: types.DiagnosticSeverity.Error}
        assert refreshes, "the client was never asked to refresh its inlay hints"

        hints = await client.text_document_inlay_hint_async(whole(uri))
        by_line = {h.position.line: h for h in hints}
        assert by_line[7].label == "t1: t = 1, 3, 6 · t2: t = 1, 3, 6, 10"
        assert by_line[7].position.character == len("        t += x") and by_line[7].padding_left
        assert by_line[8].label == "t1: → 6 · t2: → 10" and "test_total_wrong" in by_line[8].tooltip
        assert by_line[5].label == "t = 0" and by_line[11].label == "raises ZeroDivisionError"

        lenses = await client.text_document_code_lens_async(types.CodeLensParams(
            text_document=types.TextDocumentIdentifier(uri=uri)))
        titles = {lens.range.start.line: lens.command.title for lens in lenses}
        assert titles == {0: "Complete with tests (1)", 3: "✗ 1/2 tests · Fix with EG-CFG",
                          10: "✗ 0/1 tests · Fix with EG-CFG"}
        fix = next(lens for lens in lenses if lens.range.start.line == 10).command
        assert fix.command == "egcfg.regenerateFrom" and list(fix.arguments) == [{"uri": uri, "line": 11}]

        # valueDiagnostics off: the values leave the diagnostics, the failures stay; the hints stay
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
            settings={"egcfg": {"valueDiagnostics": "off"}}))
        quiet = await rec.wait_for(lambda: (d := rec.latest_diagnostics(uri)) and all(
            x.severity == types.DiagnosticSeverity.Error for x in d.diagnostics) and d, what="values off")
        assert len(quiet.diagnostics) == 3
        assert len(await client.text_document_inlay_hint_async(whole(uri))) == len(hints)
    finally:
        await stop(client, drainer)


async def test_regenerate_from_a_failing_line_by_quick_fix(project):
    root, module = project
    script = write_script(root, ["    return a / b if b else 0"], delay=0.02)
    client, rec, drainer = await start(root, {"model": script, "debounceMs": 0})
    try:
        await ready(rec)
        uri = open_doc(client, module)
        published = await settled(rec, uri)
        raised = next(d for d in published.diagnostics if "raised here" in d.message)
        assert raised.severity == types.DiagnosticSeverity.Error
        actions = await code_actions(client, uri, raised.range, [raised])
        [action] = actions
        assert action["kind"] == "quickfix" and action["diagnostics"][0]["message"] == raised.message
        assert action["command"]["command"] == "egcfg.regenerateFrom"
        assert action["command"]["arguments"] == [{"uri": uri, "line": 11}]

        before = len(rec.lines)
        answer = await client.workspace_execute_command_async(types.ExecuteCommandParams(
            command=action["command"]["command"], arguments=action["command"]["arguments"]))
        assert (answer["code"], answer["passed"], answer["total"]) == ("    return a / b if b else 0\n", 1, 1)
        assert answer["range"] == {"start": {"line": 11, "character": 0}, "end": {"line": 12, "character": 0}}
        assert answer["replaced"] == "    return a / b\n" and answer["function"] == "ratio"
        streamed = [p for _, p in rec.lines[before:]]
        assert [p["text"] for p in streamed] == ["    return a / b if b else 0"]
        assert streamed[0]["position"] == {"line": 11, "character": 0}

        # from the def line (the Fix lens of a wrong value): the whole body after the docstring
        whole_body = await client.workspace_execute_command_async(types.ExecuteCommandParams(
            command="egcfg.regenerateFrom", arguments=[{"uri": uri, "line": 3}]))
        assert whole_body["range"] == {"start": {"line": 5, "character": 0}, "end": {"line": 9, "character": 0}}
        assert whole_body["replaced"].startswith("    t = 0\n") and whole_body["total"] == 2

        # no code action where every test passes (line 1 is add's docstring: add has a failing test)
        edit(client, uri, 2, 2, "    return a + b\n")
        await rec.wait_for(lambda: (d := rec.latest_diagnostics(uri)) and d.version == 2 and any(
            x.range.start.line == 2 for x in d.diagnostics), what="diagnostics of version 2")
        add_line = types.Range(start=types.Position(line=2, character=4), end=types.Position(line=2, character=4))
        assert not await code_actions(client, uri, add_line, [])
    finally:
        await stop(client, drainer)


async def test_a_command_sent_while_the_model_loads_waits_and_runs(project):
    root, module = project
    script = write_script(root, ["    return a + b"], load_seconds=3)
    client, rec, drainer = await start(root, {"model": script, "debounceMs": 0})
    try:
        uri = open_doc(client, module)  # right after `initialized`, while the model loads
        started = time.monotonic()
        answer = await asyncio.wait_for(client.workspace_execute_command_async(types.ExecuteCommandParams(
            command="egcfg.completeWithTests", arguments=[{"uri": uri, "line": 2, "character": 4}])), timeout=60)
        assert "error" not in answer, answer
        assert (answer["code"], answer["passed"], answer["total"]) == ("    return a + b\n", 1, 1)
        assert time.monotonic() - started > 1.0  # it did wait for the load
        messages = [value.get("message") for _, value in rec.progress if isinstance(value, dict)]
        assert "loading model…" in messages
    finally:
        await stop(client, drainer)


async def test_cancelling_the_wait_for_the_model_answers_cancelled(project):
    root, module = project
    script = write_script(root, ["    return a + b"], load_seconds=30)
    client, rec, drainer = await start(root, {"model": script, "debounceMs": 0})
    try:
        uri = open_doc(client, module)
        command = asyncio.ensure_future(client.workspace_execute_command_async(types.ExecuteCommandParams(
            command="egcfg.completeWithTests", arguments=[{"uri": uri, "line": 2, "character": 4}])))
        token = await rec.wait_for(lambda: next((t for t, v in rec.progress if isinstance(v, dict)
                                                 and v.get("message") == "loading model…"), None), what="wait progress")
        client.window_work_done_progress_cancel(types.WorkDoneProgressCancelParams(token=token))
        answer = await asyncio.wait_for(command, timeout=10)
        assert answer["code"] == "" and answer["error"] == "cancelled"
    finally:
        await stop(client, drainer)


WIDE = '''def greet(name):
    text = "h\u00e9llo \U0001F600 " + name
    return text
'''


@pytest.mark.parametrize("encoding, units", [
    (None, lambda s: len(s.encode("utf-16-le")) // 2),      # the default: UTF-16, the emoji is 2 units
    ("utf-8", lambda s: len(s.encode("utf-8"))),             # Neovim and Helix may offer UTF-8 first
    ("utf-32", len),
])
async def test_columns_follow_the_position_encoding_agreed_with_the_client(tmp_path, encoding, units):
    module = tmp_path / "wide.py"
    module.write_text(WIDE)
    (tmp_path / "test_wide.py").write_text(
        'from wide import greet\n\n\ndef test_greet():\n    assert greet("a") == "x"\n')
    general = types.GeneralClientCapabilities(position_encodings=[encoding]) if encoding else None
    caps = types.ClientCapabilities(general=general, window=CAPABILITIES.window, workspace=CAPABILITIES.workspace,
                                    text_document=CAPABILITIES.text_document)
    client, rec, drainer = await start(tmp_path, {"model": write_script(tmp_path, ["    return 1"]), "debounceMs": 0},
                                       capabilities=caps)
    try:
        assert client.init_result.capabilities.position_encoding == (encoding or "utf-16")
        uri = open_doc(client, module)
        line = WIDE.splitlines()[1]
        published = await rec.wait_for(lambda: (d := rec.latest_diagnostics(uri)) and any(
            x.range.start.line == 1 for x in d.diagnostics) and d, what="values on line 2")
        value = next(d for d in published.diagnostics if d.range.start.line == 1)
        assert (value.range.start.character, value.range.end.character) == (4, units(line))
        hints = await client.text_document_inlay_hint_async(whole(uri))
        hint = next(h for h in hints if h.position.line == 1)
        assert hint.position.character == units(line) and "h\u00e9llo" in hint.label
    finally:
        await stop(client, drainer)
