"""The language server over stdio with pygls's own client and a scripted backend: the protocol
behaviour that must not depend on a model's speed (capabilities, streaming, cancellation, bursts,
diagnostics/hover, bad input). Traces come from the real tracer (and the real executor once it exists)."""

from __future__ import annotations

import asyncio
import textwrap
import time
from pathlib import Path

import pytest
from lsprotocol import types

from test_lsp_harness import open_doc, start, stop, write_script

pytestmark = pytest.mark.timeout(120)

MODULE = textwrap.dedent('''\
    def add(a, b):
        """Add two numbers."""

    def total(xs):
        """Sum of xs."""
        t = 0
        for x in xs:
            t += x
        return t

    def ratio(a, b):
        return a / b
''')

TESTS = textwrap.dedent('''\
    from pkg.mathy import add, total, ratio

    def test_add():
        assert add(1, 2) == 3

    def test_total_small():
        assert total([1, 2, 3]) == 6

    def test_total_wrong():
        assert total([1, 2, 3, 4]) == 11

    def test_ratio_zero():
        assert ratio(1, 0) == 0
''')


def make_project(root: Path) -> Path:
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "src" / "pkg" / "__init__.py").write_text("")
    module = root / "src" / "pkg" / "mathy.py"
    module.write_text(MODULE)
    (root / "tests").mkdir()
    (root / "tests" / "test_mathy.py").write_text(TESTS)
    return module


def inline_params(uri: str, line: int, character: int, invoked: bool = True) -> types.InlineCompletionParams:
    kind = types.InlineCompletionTriggerKind.Invoked if invoked else types.InlineCompletionTriggerKind.Automatic
    return types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=line, character=character),
        context=types.InlineCompletionContext(trigger_kind=kind))


async def ready(rec):
    return await rec.wait_for(lambda: any(s["state"] in ("ready", "error") for s in rec.status), what="model load")


@pytest.fixture
def project(tmp_path):
    return tmp_path, make_project(tmp_path)


async def test_capabilities_streaming_and_command(project):
    root, module = project
    script = write_script(root, ["    return a + b"], delay=0.05)
    client, rec, drainer = await start(root, {"model": script, "debounceMs": 0})
    try:
        caps = client.init_result.capabilities
        assert caps.inline_completion_provider is not None
        assert caps.hover_provider
        assert {"egcfg.completeWithTests", "egcfg.cancel", "egcfg.showTrace", "egcfg.status"} <= set(
            caps.execute_command_provider.commands)
        assert (await ready(rec)) and rec.status[-1]["state"] == "ready"
        uri = open_doc(client, module)
        result = await client.text_document_inline_completion_async(inline_params(uri, 2, 4))
        assert result is not None and len(result.items) == 1
        assert result.items[0].insert_text == "    return a + b\n"
        assert result.items[0].range.start == types.Position(line=2, character=0)
        streamed = [p for _, p in rec.lines]
        assert [p["text"] for p in streamed] == ["    return a + b"]
        assert streamed[0]["uri"] == uri and streamed[0]["version"] == 1 and streamed[0]["agent"] == "a0"
        assert streamed[0]["position"] == {"line": 2, "character": 4}

        answer = await client.workspace_execute_command_async(types.ExecuteCommandParams(
            command="egcfg.completeWithTests", arguments=[{"uri": uri, "line": 2, "character": 4}]))
        assert (answer["code"], answer["passed"], answer["total"], answer["agent"]) == ("    return a + b\n", 1, 1, "a0")
        kinds = [value["kind"] for _, value in rec.progress if isinstance(value, dict) and "kind" in value]
        assert "begin" in kinds and "end" in kinds

        # accepting the completion (an edit inserting its text) runs the tests for the new version
        edit(client, uri, 2, 2, "    return a + b\n")
        published = await rec.wait_for(lambda: (d := rec.latest_diagnostics(uri)) and d.version == 2 and any(
            x.range.start.line == 2 for x in d.diagnostics) and d, what="diagnostics after accepting")
        assert any(d.range.start.line == 2 and "returns 3 (int)" in d.message for d in published.diagnostics)
    finally:
        await stop(client, drainer)


async def test_diagnostics_and_hover_after_save(project):
    root, module = project
    client, rec, drainer = await start(root, {"model": str(root / "missing"), "debounceMs": 0})
    try:
        uri = open_doc(client, module)
        client.text_document_did_save(types.DidSaveTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri)))
        published = await rec.wait_for(lambda: (d := rec.latest_diagnostics(uri)) and any(
            "ZeroDivisionError" in x.message for x in d.diagnostics) and any(x.range.start.line == 7 for x in d.diagnostics)
            and d, what="diagnostics")
        assert published.version == 1
        by_line = {}
        for d in published.diagnostics:
            by_line.setdefault(d.range.start.line, []).append(d)
        # values are Hint diagnostics (no Problems entries, no squiggles); failures stay Errors
        info_total = [d.message for d in by_line[7] if d.severity == types.DiagnosticSeverity.Hint]
        assert info_total and "t=1, 3, 6 (int)" in info_total[0] and "t2:" in info_total[0]
        errors = [d for d in published.diagnostics if d.severity == types.DiagnosticSeverity.Error]
        # the wrong sum is reported on total's def line, the division by zero on the line that raised
        assert any(d.range.start.line == 3 and "test_total_wrong" in d.message for d in errors)
        assert any(d.range.start.line == 11 and "ZeroDivisionError" in d.message for d in errors)

        started = time.perf_counter()
        hover = await client.text_document_hover_async(types.HoverParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=7, character=8)))
        assert time.perf_counter() - started < 1.0
        assert "| t1" in hover.contents.value and "t=" in hover.contents.value and "total(xs=[1, 2, 3])" in hover.contents.value
        trace = await client.workspace_execute_command_async(types.ExecuteCommandParams(
            command="egcfg.showTrace", arguments=[{"uri": uri, "line": 7}]))
        assert trace["markdown"] == hover.contents.value
        # the model failed to load, and said so, but the server kept serving
        assert any("missing" in m.message for m in rec.messages)
    finally:
        await stop(client, drainer)


def edit(client, uri: str, version: int, line: int, text: str) -> None:
    """Insert `text` at the start of `line`."""
    position = types.Position(line=line, character=0)
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[types.TextDocumentContentChangePartial(range=types.Range(start=position, end=position), text=text)]))


async def test_cancel_mid_run_stops_the_engine(project):
    root, module = project
    lines = [f"    x{i} = {i}" for i in range(30)] + ["    return a + b"]
    client, rec, drainer = await start(root, {"model": write_script(root, lines, delay=0.1), "debounceMs": 0})
    try:
        await ready(rec)
        uri = open_doc(client, module)
        request = client.protocol.send_request_async(
            types.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(uri, 2, 4), msg_id="cancel-me")
        await rec.wait_for(lambda: len(rec.lines) >= 2, what="two streamed lines")
        client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="cancel-me"))
        with pytest.raises(Exception, match="cancel"):
            await asyncio.wait_for(request, timeout=10)
        seen = len(rec.lines)
        await asyncio.sleep(0.5)  # five more "lines" would have come by now
        assert len(rec.lines) <= seen + 1 and len(rec.lines) < len(lines)
        status = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="egcfg.status", arguments=[]))
        assert status["busy"] is False

        # egcfg.cancel stops a command run; the command answers with what it knows
        command = asyncio.ensure_future(client.workspace_execute_command_async(types.ExecuteCommandParams(
            command="egcfg.completeWithTests", arguments=[{"uri": uri, "line": 2, "character": 4}])))
        before = len(rec.lines)
        await rec.wait_for(lambda: len(rec.lines) >= before + 2, what="command lines")
        cancelled = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="egcfg.cancel", arguments=[]))
        assert cancelled["cancelled"] == 1
        answer = await asyncio.wait_for(command, timeout=10)
        assert answer["code"] == "" and answer["error"] == "cancelled"
    finally:
        await stop(client, drainer)


async def test_burst_of_edits_never_returns_a_stale_result(project):
    root, module = project
    script = write_script(root, ["    s = a + b", "    return s"], delay=0.05)
    client, rec, drainer = await start(root, {"model": script, "debounceMs": 30})
    try:
        await ready(rec)
        uri = open_doc(client, module)
        end_line = MODULE.count("\n")
        requests = []
        for version in range(2, 52):
            edit(client, uri, version, end_line, f"# edit {version}\n")
            params = inline_params(uri, 2, 4, invoked=version % 2 == 0)
            requests.append((version, client.protocol.send_request_async(types.TEXT_DOCUMENT_INLINE_COMPLETION, params)))
        answered = 0
        for version, request in requests:
            try:
                result = await asyncio.wait_for(request, timeout=30)
            except asyncio.TimeoutError:
                raise AssertionError(f"request at version {version} was never answered")
            except Exception as error:  # cancelled requests answer with an error: still an answer
                assert "cancel" in str(error).lower()
                answered += 1
                continue
            answered += 1
            if result and result.items:
                assert version == 51, f"a result for version {version} came after the document moved on"
        assert answered == 50
        last = await client.text_document_inline_completion_async(inline_params(uri, 2, 4))
        assert last.items[0].insert_text == "    s = a + b\n    return s\n"
    finally:
        await stop(client, drainer)


async def test_bad_input_gives_clear_messages_and_the_server_keeps_serving(project):
    root, module = project
    client, rec, drainer = await start(root, {"model": write_script(root, ["    return 1"]), "debounceMs": 0,
                                              "trigger": "sometimes"})
    try:
        await ready(rec)
        await rec.wait_for(lambda: any("trigger" in m.message for m in rec.messages), what="settings message")
        # a cursor outside any function
        uri = open_doc(client, module)
        outside = await client.text_document_inline_completion_async(inline_params(uri, 12, 0))
        assert outside is None
        await rec.wait_for(lambda: any("not inside a function" in m.message for m in rec.messages), what="outside message")

        # a document that is not valid Python
        broken = root / "src" / "pkg" / "broken.py"
        broken.write_text("def f(x):\n    return x\n\nclass (:\n")
        broken_uri = open_doc(client, broken)
        published = await rec.wait_for(lambda: rec.latest_diagnostics(broken_uri), what="syntax diagnostics")
        assert published.diagnostics[0].range.start.line == 3 and "not valid Python" in published.diagnostics[0].message
        assert await client.text_document_inline_completion_async(inline_params(broken_uri, 1, 4)) is None
        await rec.wait_for(lambda: any("syntax error" in m.message for m in rec.messages), what="syntax message")

        # a huge file
        huge = root / "src" / "pkg" / "huge.py"
        huge.write_text("def f(x):\n    pass\n" + "# filler line of a very large module\n" * 140_000)
        assert huge.stat().st_size > 5_000_000
        huge_uri = open_doc(client, huge)
        assert await client.text_document_inline_completion_async(inline_params(huge_uri, 1, 4)) is None
        await rec.wait_for(lambda: any("maxFileBytes" in m.message for m in rec.messages), what="huge message")

        # still serving: the first document's completion works
        result = await client.text_document_inline_completion_async(inline_params(uri, 2, 4))
        assert result.items[0].insert_text == "    return 1\n"
    finally:
        await stop(client, drainer)


async def test_manual_trigger_ignores_automatic_requests_and_tests_without_tests(project):
    root, module = project
    (root / "tests" / "test_mathy.py").unlink()
    client, rec, drainer = await start(root, {"model": write_script(root, ["    return a + b"]), "trigger": "manual"})
    try:
        await ready(rec)
        uri = open_doc(client, module)
        assert await client.text_document_inline_completion_async(inline_params(uri, 2, 4, invoked=False)) is None
        assert rec.lines == []
        result = await client.text_document_inline_completion_async(inline_params(uri, 2, 4, invoked=True))
        assert result.items[0].insert_text == "    return a + b\n"  # no tests: still a completion (plain decoding)
        await rec.wait_for(lambda: any("guidance is off" in s["message"] for s in rec.status), what="no-tests status")
    finally:
        await stop(client, drainer)
