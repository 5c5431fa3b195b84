"""Harness for the language-server end-to-end tests: a pygls LanguageClient that records what the
server sends, drains the server's stderr, and a scripted backend for protocol tests that must not
depend on a model's speed (cancellation, bursts, streaming latency).

The scripted backend runs in the server process (EGCFG_LSP_BACKEND=test_lsp_harness:ScriptedBackend);
its "model" setting is the path of a JSON script {"lines": [...], "delay": seconds, "agent": name}.
Tests run through the real executor when engine/execution/executor.py exists, else in-process with the
real tracer (engine/execution/sandbox/tracer.py), so traces are real either way.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from lsprotocol import types
from pygls.lsp.client import LanguageClient

from engine.errors import UserError
from engine.execution.trace import Trace

REPO = Path(__file__).resolve().parents[2]
HAVE_EXECUTOR = importlib.util.find_spec("engine.execution.executor") is not None


# ------------------------------------------------------------------------------------------------
# Scripted backend (runs inside the server process)

@dataclass
class LineCommitted:
    agent: str
    line_no: int
    text: str
    code: str
    signal: str = ""


@dataclass
class CandidatesRun:
    agent: str
    line_no: int
    candidates: list
    results: list


@dataclass
class Finished:
    code: str
    passed: int
    total: int
    agent: str
    solved: bool
    seconds: float
    status: str


@dataclass
class _Result:
    test: str
    outcome: str
    message: str
    trace: Trace | None
    output: str = ""
    seconds: float = 0.0


@dataclass
class _JobResult:
    tests: list = field(default_factory=list)
    isolation: str = "in-process"

    @property
    def passed(self) -> int:
        return sum(t.outcome == "pass" for t in self.tests)

    @property
    def total(self) -> int:
        return len(self.tests)


def run_in_process(program: str, tests, setup: str) -> _JobResult:
    """Run tests with the real tracer in this process (only for the scripted backend)."""
    from engine.execution.sandbox.tracer import Tracer

    out = _JobResult()
    for test in tests:
        namespace = {"__name__": "__egcfg__"}
        tracer = Tracer({"<program>": "program", "<test>": "test"})
        outcome, message = "pass", ""
        try:
            exec(compile(program, "<program>", "exec"), namespace)
            if setup:
                exec(compile(setup, "<setup>", "exec"), namespace)
            with tracer:
                exec(compile(test, "<test>", "exec"), namespace)
        except AssertionError as error:
            outcome, message = "fail", f"AssertionError: {error}" if str(error) else "assertion failed"
        except Exception as error:
            outcome, message = "error", f"{type(error).__name__}: {error}"
        out.tests.append(_Result(test, outcome, message, Trace.from_dict(tracer.result())))
    return out


class ScriptedBackend:
    """A backend whose completions follow a script and whose tests run through the real tracer."""

    def __init__(self):
        self.script = None
        self._executor = None

    def load(self, settings):
        from lsp_server.backend import ModelInfo

        path = Path(settings.model)
        if not path.is_file():
            raise UserError(f"no model at {settings.model}: pass a folder written by save_pretrained")
        self.script = json.loads(path.read_text())
        time.sleep(self.script.get("load_seconds", 0.0))
        return ModelInfo(str(path), "cpu", False, f"scripted ({path.name}) on cpu")

    def run_tests(self, settings, root, jobs):
        if HAVE_EXECUTOR:
            from lsp_server.backend import EngineBackend

            if self._executor is None:
                self._executor = EngineBackend()
            return self._executor.run_tests(settings, root, jobs)
        return [run_in_process(program, tests, setup) for program, tests, setup in jobs]

    def complete(self, settings, root, task, cancel):
        script = self.script or {}
        agent = script.get("agent", "a0")
        code = task["source_before"]
        for number, text in enumerate(script.get("lines", []), 1):
            deadline = time.monotonic() + script.get("delay", 0.0)
            while time.monotonic() < deadline:  # "token steps": check the cancel token often
                if cancel.cancelled:
                    return
                time.sleep(0.002)
            code += text + "\n"
            yield CandidatesRun(agent, number, [text], [])
            yield LineCommitted(agent, number, text, code)
        program = code + task["source_after"]
        result = run_in_process(program, task["tests"], task["setup"])
        yield Finished(code, result.passed, result.total, agent, result.passed == result.total, 0.0, "complete")

    def close(self):
        if self._executor is not None:
            self._executor.close()


# ------------------------------------------------------------------------------------------------
# Client side

class Recorder:
    """Everything the server sent that a test may look at."""

    def __init__(self):
        self.lines: list[tuple[float, dict]] = []          # (client receive time, payload)
        self.status: list[dict] = []
        self.diagnostics: dict[str, list[types.PublishDiagnosticsParams]] = {}
        self.progress: list[tuple[str, object]] = []
        self.messages: list[types.ShowMessageParams] = []
        self.logs: list[str] = []
        self.stderr = bytearray()
        self.changed = asyncio.Event()

    def poke(self):
        self.changed.set()

    async def wait_for(self, predicate, timeout: float = 30.0, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {what}; last status: {self.status[-1:]}; "
                                     f"messages: {[m.message for m in self.messages]}; "
                                     f"stderr tail: {bytes(self.stderr[-2000:]).decode(errors='replace')}")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), timeout=min(remaining, 0.5))
            except asyncio.TimeoutError:
                pass

    def latest_diagnostics(self, uri: str):
        published = self.diagnostics.get(uri) or []
        return published[-1] if published else None


def make_client() -> tuple[LanguageClient, Recorder]:
    client = LanguageClient("egcfg-test-client", "0.1")
    rec = Recorder()

    @client.feature("egcfg/completionLine")
    def on_line(params):
        rec.lines.append((time.time(), _plain(params)))
        rec.poke()

    @client.feature("egcfg/status")
    def on_status(params):
        rec.status.append(_plain(params))
        rec.poke()

    @client.feature(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    def on_diagnostics(params: types.PublishDiagnosticsParams):
        rec.diagnostics.setdefault(params.uri, []).append(params)
        rec.poke()

    @client.feature(types.WINDOW_WORK_DONE_PROGRESS_CREATE)
    def on_progress_create(params):
        return None

    @client.feature(types.PROGRESS)
    def on_progress(params: types.ProgressParams):
        rec.progress.append((params.token, _plain(params.value)))
        rec.poke()

    @client.feature(types.WINDOW_SHOW_MESSAGE)
    def on_message(params: types.ShowMessageParams):
        rec.messages.append(params)
        rec.poke()

    @client.feature(types.WINDOW_LOG_MESSAGE)
    def on_log(params: types.LogMessageParams):
        rec.logs.append(params.message)
        rec.poke()

    @client.feature(types.CLIENT_REGISTER_CAPABILITY)
    def on_register(params):
        return None

    return client, rec


def _plain(value):
    """Custom notification params arrive as attribute objects; make them dicts."""
    if isinstance(value, dict):
        return value
    if hasattr(value, "_asdict"):
        return {k: _plain(v) for k, v in value._asdict().items()}
    if hasattr(value, "__dict__"):
        return {k: _plain(v) for k, v in vars(value).items()}
    return value


async def drain(stream, rec: Recorder):
    """The client pipes the server's stderr and never reads it: read it so the server never blocks."""
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            return
        rec.stderr += chunk
        if len(rec.stderr) > 1 << 20:
            del rec.stderr[: len(rec.stderr) - (1 << 19)]


def server_env(scripted: bool) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=os.pathsep.join([str(REPO), str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    if scripted:
        env["EGCFG_LSP_BACKEND"] = "test_lsp_harness:ScriptedBackend"
    else:
        env.pop("EGCFG_LSP_BACKEND", None)
    return env


async def start(root: Path, options: dict, scripted: bool = True, capabilities: types.ClientCapabilities | None = None):
    """Start `python -m lsp_server`, initialize it; returns (client, recorder, drain task)."""
    client, rec = make_client()
    await client.start_io(sys.executable, "-m", "lsp_server", env=server_env(scripted), cwd=str(REPO))
    drainer = asyncio.ensure_future(drain(client._server.stderr, rec))
    caps = capabilities or types.ClientCapabilities(
        window=types.WindowClientCapabilities(work_done_progress=True),
        text_document=types.TextDocumentClientCapabilities(
            hover=types.HoverClientCapabilities(content_format=[types.MarkupKind.Markdown]),
            publish_diagnostics=types.PublishDiagnosticsClientCapabilities(version_support=True)),
    )
    result = await client.initialize_async(types.InitializeParams(
        capabilities=caps, root_uri=root.as_uri(), initialization_options={"egcfg": options},
        workspace_folders=[types.WorkspaceFolder(uri=root.as_uri(), name=root.name)]))
    client.initialized(types.InitializedParams())
    client.init_result = result
    return client, rec, drainer


async def stop(client: LanguageClient, drainer):
    try:
        await asyncio.wait_for(client.shutdown_async(None), timeout=10)
        client.exit(None)
    except Exception:
        pass
    try:
        await asyncio.wait_for(client.stop(), timeout=10)
    except Exception:
        if client._server and client._server.returncode is None:
            client._server.kill()
    drainer.cancel()


def open_doc(client: LanguageClient, path: Path, text: str | None = None, version: int = 1) -> str:
    uri = path.as_uri()
    client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=types.TextDocumentItem(
        uri=uri, language_id="python", version=version, text=path.read_text() if text is None else text)))
    return uri


def write_script(folder: Path, lines: list[str], delay: float = 0.0, agent: str = "a0", load_seconds: float = 0.0) -> str:
    path = folder / "script.json"
    path.write_text(json.dumps({"lines": lines, "delay": delay, "agent": agent, "load_seconds": load_seconds}))
    return str(path)
