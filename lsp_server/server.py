"""The egcfg language server: thin pygls handlers over plain modules.

Each handler gets the document, calls a helper (discovery, completion, analysis, hover) and
converts the answer to LSP types. Slow work never runs on the event loop: the model loads and
completions run in one GPU worker thread, test runs in a small thread pool. Anything the user must
see goes out as `egcfg/status`, window/showMessage or window/logMessage; never to stdout.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from engine import __version__
from engine.errors import UserError
from engine.project.locate import check_rest_parses, find_function
from engine.project.testfile import TestSuite

from lsp_server.analysis import Analysis
from lsp_server.backend import ModelInfo, make_backend
from lsp_server.completion import GpuRunner, Outcome, Progress, Site, drive, site_at, task_fields
from lsp_server.diagnostics import Note
from lsp_server.discovery import discover_tests, read_file
from lsp_server.hover import hover_markdown
from lsp_server.live import LiveTests
from lsp_server.views import register_views
from lsp_server.settings import Settings, describe, parse_settings
from lsp_server.status import LINE_METHOD, STATUS_METHOD, Status

log = logging.getLogger("egcfg.lsp")

COMMAND_COMPLETE = "egcfg.completeWithTests"
COMMAND_CANCEL = "egcfg.cancel"
COMMAND_TRACE = "egcfg.showTrace"
COMMAND_STATUS = "egcfg.status"
COMMAND_REGENERATE = "egcfg.regenerateFrom"
SEVERITY = {"information": types.DiagnosticSeverity.Information, "hint": types.DiagnosticSeverity.Hint,
            "warning": types.DiagnosticSeverity.Warning, "error": types.DiagnosticSeverity.Error}


class EgcfgServer(LanguageServer):
    def __init__(self, backend: Any = None) -> None:
        super().__init__("egcfg", __version__, text_document_sync_kind=types.TextDocumentSyncKind.Incremental)
        self.backend = backend if backend is not None else make_backend()
        self.settings = Settings()
        self.setting_problems: list[str] = []
        self.status = Status(model=self.settings.model)
        self.model: ModelInfo | None = None
        self.model_error = ""
        self.model_loading: asyncio.Task | None = None
        self.gpu = GpuRunner()
        self.test_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="egcfg-tests")
        self.live = LiveTests(self)                         # test runs, their caches and analyses
        self.inline_generation: dict[str, int] = {}         # uri -> newest inline request number
        self.completion_bodies: dict[str, str] = {}         # uri -> last body offered (to see it accepted)
        self.run_ids = itertools.count(1)
        self.thread_safe_output = False   # set by the stdio entry point (its writer has a lock)

    # --- paths ----------------------------------------------------------------------------------
    @property
    def root(self) -> str | None:
        return self.workspace.root_path or None

    def read(self, path: str) -> str | None:
        """A file's text: the editor's (unsaved) version when it is open, else the disk's."""
        for document in list(self.workspace.text_documents.values()):
            if document.path and os.path.abspath(document.path) == os.path.abspath(path):
                return document.source
        return read_file(path)

    # --- status ---------------------------------------------------------------------------------
    def set_status(self, log_it: bool = True, **changes) -> None:
        self.status = self.status.update(**changes)
        self.protocol.notify(STATUS_METHOD, self.status.payload())
        if log_it and changes.get("message"):
            self.log(changes["message"], error=changes.get("state") == "error")

    def log(self, message: str, error: bool = False) -> None:
        kind = types.MessageType.Error if error else types.MessageType.Info
        self.window_log_message(types.LogMessageParams(type=kind, message=f"egcfg: {message}"))

    def show(self, message: str, kind: types.MessageType = types.MessageType.Warning) -> None:
        self.window_show_message(types.ShowMessageParams(type=kind, message=f"egcfg: {message}"))

    def ready_state(self) -> str:
        return "ready" if self.model else ("error" if self.model_error else "loading")

    # --- settings and the model -----------------------------------------------------------------
    def apply_settings(self, raw: Any, show: bool = True) -> Settings:
        old = self.settings
        self.settings, problems = parse_settings(raw, base=old)
        for problem in problems:
            self.show(problem) if show else self.setting_problems.append(problem)
        self.log(f"settings: {describe(self.settings)}")
        return old

    async def load_model(self) -> None:
        """Load in the background with work-done progress; requests meanwhile get an empty answer."""
        settings = self.settings
        self.model, self.model_error = None, ""
        self.set_status(state="loading", message=f"loading {settings.model}", model=settings.model,
                        device="", quantized=False)
        token = await self.begin_progress("egcfg: loading model", settings.model, cancellable=False)
        loop = asyncio.get_running_loop()
        try:
            info = await loop.run_in_executor(self.gpu.pool, self.backend.load, settings)
        except UserError as error:
            self.model_error = str(error)
        except Exception as error:  # a broken install must not take the server down
            log.exception("model load failed")
            self.model_error = f"the model could not be loaded: {type(error).__name__}: {error}"
        else:
            if settings.engine_key() != self.settings.engine_key():
                return  # the settings changed while loading; a newer load is under way
            self.model = info
        self.end_progress(token, "ready" if self.model else "failed")
        if self.model:
            self.set_status(state="ready", message=f"model ready: {self.model.description}",
                            device=self.model.device, quantized=self.model.quantized)
        else:
            self.set_status(state="error", message=self.model_error)
            self.show(self.model_error, types.MessageType.Error)

    def start_model_load(self) -> None:
        if self.model_loading and not self.model_loading.done():
            self.model_loading.cancel()
        self.model_loading = asyncio.ensure_future(self.load_model())

    # --- work-done progress ---------------------------------------------------------------------
    async def begin_progress(self, title: str, message: str, cancellable: bool) -> str | None:
        window = self.client_capabilities.window
        if not (window and window.work_done_progress):
            return None
        token = f"egcfg-{next(self.run_ids)}"
        try:
            await asyncio.wait_for(self.work_done_progress.create_async(token), timeout=5)
        except Exception:  # the client refused or never answered: go on without progress
            return None
        self.work_done_progress.begin(token, types.WorkDoneProgressBegin(title=title, message=message,
                                                                         cancellable=cancellable, percentage=0))
        return token

    def report_progress(self, token: str | None, message: str, percentage: int | None = None) -> None:
        if token:
            self.work_done_progress.report(token, types.WorkDoneProgressReport(message=message, percentage=percentage))

    def end_progress(self, token: str | None, message: str) -> None:
        if token:
            self.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))
            self.work_done_progress.tokens.pop(token, None)

    # --- completions ----------------------------------------------------------------------------
    def prepare(self, uri: str, line: int, character: int | None = None) -> tuple[Site, TestSuite]:
        """The function at the cursor and its tests; UserError with the reason when there is none."""
        document = self.workspace.get_text_document(uri)
        if len(document.source) > self.settings.max_file_bytes:
            raise UserError(f"{os.path.basename(document.path or uri)} is larger than maxFileBytes "
                            f"({self.settings.max_file_bytes} bytes): egcfg does not analyse it")
        site = site_at(document.source, line, character)
        check_rest_parses(site.function, os.path.basename(document.path or uri))
        suite = discover_tests(site.function.name, document.path, document.source, self.root,
                               docstring=site.docstring, docstring_line=site.docstring_line,
                               patterns=self.settings.test_patterns, read=self.read)
        return site, suite

    async def complete(self, uri: str, version: int | None, position: types.Position, site: Site,
                       suite: TestSuite, owner: str, progress_token: str | None = None) -> tuple[Outcome | None, str]:
        """Run the engine for `site` in the GPU worker; stream lines; (outcome, run id)."""
        loop = asyncio.get_running_loop()
        run_id = f"run-{next(self.run_ids)}"
        settings, root = self.settings, self.root
        where = {"requestId": run_id, "uri": uri, "version": version,
                 "position": {"line": position.line, "character": position.character}}
        if not suite.cases:
            self.log(suite.why_no_tests())
        self.set_status(state="running", message=f"completing {site.function.name}", total=suite.test_count,
                        log_it=False)

        def on_line(line: dict) -> None:
            if self.thread_safe_output:  # straight from the worker thread: no wait for the loop
                self.protocol.notify(LINE_METHOD, {**where, **line})
            else:
                loop.call_soon_threadsafe(self.protocol.notify, LINE_METHOD, {**where, **line})

        def on_progress(progress: Progress) -> None:
            loop.call_soon_threadsafe(self.on_run_progress, progress, progress_token)

        module_path = self.workspace.get_text_document(uri).path  # candidates run as this module of its package

        def work(cancel):
            events = self.backend.complete(settings, root, {**task_fields(site, suite), "module_path": module_path}, cancel)
            return drive(events, site, cancel, on_line, on_progress)

        token, future = self.gpu.submit(owner, work)
        try:
            outcome = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            token.cancel()
            raise
        except UserError as error:
            self.set_status(state="error", message=str(error))
            return None, run_id
        except Exception as error:
            log.exception("completion failed")
            self.set_status(state="error", message=f"the completion failed: {type(error).__name__}: {error}")
            return None, run_id
        if outcome is None or outcome.cancelled:
            self.set_status(state=self.ready_state(), message="completion cancelled", log_it=False)
            return None, run_id
        self.set_status(state=self.ready_state(), message=(
            f"{site.function.name}: {outcome.passed}/{outcome.total} tests pass (agent {outcome.agent}, "
            f"{outcome.seconds:.1f} s)" if suite.cases else suite.why_no_tests()))
        return outcome, run_id

    def on_run_progress(self, progress: Progress, token: str | None) -> None:
        percent = int(100 * progress.passed / progress.total) if progress.total else 0
        self.set_status(state="running", message=progress.message, agent=progress.agent, line=progress.line,
                        passed=progress.passed, total=progress.total, progress=percent, log_it=False)
        self.report_progress(token, progress.message, percent)

    def completion_refused(self, reason: str, loud: bool) -> None:
        self.set_status(state=self.ready_state() if self.model else self.status.state, message=reason)
        if loud:
            self.show(reason)

    def model_not_ready(self) -> str:
        if self.model_error:
            return f"no completion: {self.model_error}"
        return f"no completion yet: {self.settings.model} is still loading"

    def completion_target(self, uri: str, position: types.Position, loud: bool) -> tuple[Site, TestSuite]:
        """The function at the cursor and its tests. When no completion can run (no model yet, no
        function there), UserError with the reason, already in the status (and, if `loud`, shown)."""
        try:
            if not self.model:
                raise UserError(self.model_not_ready())
            return self.prepare(uri, position.line, position.character)
        except UserError as error:
            self.completion_refused(str(error), loud)
            raise

    async def inline_outcome(self, uri: str, position: types.Position,
                             automatic: bool) -> tuple[Site, Outcome] | None:
        """The completion to offer inline; None when there is none, or when a newer request or an
        edit came in before it finished (never answer for a document that moved on)."""
        if automatic and self.settings.trigger == "manual":
            return None
        generation = self.inline_generation[uri] = self.inline_generation.get(uri, 0) + 1
        version = self.workspace.get_text_document(uri).version

        def still_current() -> bool:
            return (self.inline_generation.get(uri) == generation
                    and self.workspace.get_text_document(uri).version == version)

        if automatic and self.settings.debounce_ms:
            await asyncio.sleep(self.settings.debounce_ms / 1000)
        if not still_current():
            return None
        try:  # while the model loads, an inline request only gets a status, even when invoked
            site, suite = self.completion_target(uri, position, loud=bool(self.model) and not automatic)
        except UserError:
            return None
        outcome, _ = await self.complete(uri, version, position, site, suite, owner=f"inline:{uri}")
        if outcome is None or not outcome.body or not still_current():
            return None
        self.completion_bodies[uri] = outcome.body
        return site, outcome

    async def wait_for_model(self) -> str:
        """Wait while the model loads, under cancellable progress "loading model…"; "" once it is
        ready, else why not (the load failed, or the user cancelled the wait)."""
        token = None
        try:
            while not self.model and not self.model_error and self.model_loading is not None:
                loading = self.model_loading
                if token is None:
                    self.set_status(state="loading", message=f"loading model… ({self.settings.model})", log_it=False)
                    token = await self.begin_progress("egcfg", "loading model…", cancellable=True)
                watch = self.work_done_progress.tokens.get(token) if token else None  # cancelled by the user
                waiting = [asyncio.ensure_future(asyncio.shield(loading))]
                if watch is not None:
                    waiting.append(asyncio.wrap_future(watch))
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                waiting[0].cancel()
                if watch is not None and watch.cancelled() and not loading.done():
                    return "cancelled"
                if loading.done() and self.model_loading is loading:
                    break
        finally:
            self.end_progress(token, "ready" if self.model else "stopped")
        return "" if self.model else self.model_not_ready()

    async def complete_for_command(self, uri: str, position: types.Position, regenerate: bool = False) -> dict:
        """The answer of egcfg.completeWithTests and egcfg.regenerateFrom (docs/protocol.md): the run
        with cancellable progress. While the model loads, the command waits for it."""
        if uri not in self.workspace.text_documents:
            return refused_answer(f"the document {uri} is not open")
        why = await self.wait_for_model()
        if why:
            self.completion_refused(why, loud=why != "cancelled")
            return refused_answer(why)
        if uri not in self.workspace.text_documents:
            return refused_answer(f"the document {uri} was closed")
        if regenerate:
            position = regenerate_position(self.workspace.get_text_document(uri).source, position.line)
        try:
            site, suite = self.completion_target(uri, position, loud=True)
        except UserError as error:
            return refused_answer(str(error))
        version = self.workspace.get_text_document(uri).version
        outcome, run_id = await self.complete_with_progress(uri, version, position, site, suite,
                                                            owner=f"command:{uri}")
        if outcome is None:
            reason = "cancelled" if self.status.state != "error" else self.status.message
            return refused_answer(reason, total=suite.test_count)
        self.completion_bodies[uri] = outcome.body
        return command_answer(site, suite, outcome, run_id, self.workspace.get_text_document(uri).source)

    async def complete_with_progress(self, uri: str, version: int | None, position: types.Position, site: Site,
                                     suite: TestSuite, owner: str) -> tuple[Outcome | None, str]:
        """`complete` under work-done progress whose cancel button stops the run."""
        token = await self.begin_progress(f"egcfg: {site.function.name}", f"{suite.test_count} tests",
                                          cancellable=True)
        cancel_watch = self.work_done_progress.tokens.get(token) if token else None
        if cancel_watch is not None:  # the user pressed cancel on the progress
            cancel_watch.add_done_callback(lambda f: f.cancelled() and self.gpu.cancel(owner=owner))
        try:
            return await self.complete(uri, version, position, site, suite, owner=owner, progress_token=token)
        finally:
            self.end_progress(token, "done")

    # --- tests, diagnostics ---------------------------------------------------------------------
    def report_analysis(self, analysis: Analysis) -> None:
        for problem in analysis.problems:
            self.log(problem)
        if analysis.syntax_error:
            message = f"not valid Python ({'; '.join(analysis.problems)}): tests not run"
        elif not analysis.runs:
            message = "no tests found for the functions in this file"
        else:
            message = f"tests: {analysis.passed}/{analysis.total} pass"
        self.set_status(state=self.ready_state() if self.status.state != "running" else "running", message=message,
                        log_it=False)

    def publish(self, uri: str, version: int | None, notes: list[Note], text: str = "") -> None:
        values, lines = self.settings.value_diagnostics, text.splitlines()
        units = self.workspace.position_codec.client_num_units   # notes count characters; the client
        #                                                          may have agreed on UTF-8 or UTF-32 (Neovim, Helix)
        diagnostics = [to_diagnostic(n, values, lines[n.line] if n.line < len(lines) else "", units)
                       for n in notes if n.severity != "value" or values != "off"]
        self.text_document_publish_diagnostics(types.PublishDiagnosticsParams(
            uri=uri, version=version, diagnostics=diagnostics))

    def refresh_views(self) -> None:
        """Ask the client to fetch inlay hints and code lenses again (when it supports being asked)."""
        workspace = self.client_capabilities.workspace
        if workspace and workspace.inlay_hint and workspace.inlay_hint.refresh_support:
            self.workspace_inlay_hint_refresh(None)
        if workspace and workspace.code_lens and workspace.code_lens.refresh_support:
            self.workspace_code_lens_refresh(None)

    def hover_text(self, uri: str, line: int) -> str | None:
        analysis = self.live.current(uri)
        if analysis is None:
            return None
        run = analysis.run_at(line)
        if run is None:
            return None
        lines = analysis.text.splitlines()
        return hover_markdown(run.span, line, lines[line] if line < len(lines) else "", run.records)

    def accepted_completion(self, uri: str, params: types.DidChangeTextDocumentParams) -> bool:
        """Whether this edit inserted (most of) the completion offered last for the document."""
        body = self.completion_bodies.get(uri, "").strip()
        if not body:
            return False
        for change in params.content_changes:
            inserted = change.text.strip()
            if inserted and len(inserted) >= min(len(body), 8) and (inserted in body or body in inserted):
                self.completion_bodies.pop(uri, None)
                return True
        return False

    def shutdown_work(self) -> None:
        self.gpu.close()
        self.test_pool.shutdown(wait=False, cancel_futures=True)
        self.backend.close()


def to_diagnostic(note: Note, values: str = "hint", line_text: str = "", units: Callable[[str], int] = len) -> types.Diagnostic:
    def column(chars: int) -> int:   # past the text (an empty line) each column is one unit
        return units(line_text[:chars]) + max(0, chars - len(line_text))

    start, end = column(note.start), column(note.end or note.start + 1)
    return types.Diagnostic(
        range=types.Range(start=types.Position(line=note.line, character=start),
                          end=types.Position(line=note.line, character=max(end, start + 1))),
        message=note.message, severity=SEVERITY[values if note.severity == "value" else note.severity], source="egcfg")


def edited_lines(params: types.DidChangeTextDocumentParams) -> tuple[int, int]:
    """The document lines an edit touched (after it): where the tests rerun first."""
    first, last = 1 << 30, 0
    for change in params.content_changes:
        if isinstance(change, types.TextDocumentContentChangePartial):
            first = min(first, change.range.start.line)
            last = max(last, change.range.start.line + change.text.count("\n"))
        else:
            return 0, 1 << 30
    return (first, last) if first <= last else (0, 0)


def command_args(args: tuple) -> dict:
    """Command arguments as a dict: [{uri, line, character}] or [uri, line, character]."""
    if len(args) == 1 and isinstance(args[0], dict):
        return args[0]
    keys = ("uri", "line", "character")
    return dict(zip(keys, args))


def refused_answer(reason: str, total: int = 0) -> dict:
    """egcfg.completeWithTests's answer when the run could not happen or was cancelled."""
    return {"code": "", "passed": 0, "total": total, "agent": "", "error": reason}


def command_answer(site: Site, suite: TestSuite, outcome: Outcome, run_id: str, text: str) -> dict:
    """The commands' answer: the body to put in place of `range` (from the start line to the end of
    the function's old body), the text it replaces, and how it did."""
    lines = text.splitlines(keepends=True)
    end = max(site.insert_line, len(lines) - len(site.function.source_after.splitlines(keepends=True)))
    return {"code": outcome.body, "passed": outcome.passed, "total": outcome.total, "agent": outcome.agent,
            "requestId": run_id, "status": outcome.status, "seconds": round(outcome.seconds, 3),
            "range": {"start": {"line": site.insert_line, "character": 0}, "end": {"line": end, "character": 0}},
            "replaced": "".join(lines[site.insert_line:end]), "function": site.function.name,
            "guided": bool(suite.cases), "note": suite.why_no_tests()}


def regenerate_position(text: str, line: int) -> types.Position:
    """Where egcfg.regenerateFrom starts: `line`, or the body's first line when `line` is above it
    (the def, its signature, its docstring). UserError when no function contains the line."""
    try:
        function = find_function(text, line=line)
    except UserError:
        return types.Position(line=line, character=0)  # prepare() says why, in the usual words
    return types.Position(line=max(line, function.body_line), character=0)


def build_server(backend: Any = None) -> EgcfgServer:  # noqa: C901 (one registration per feature)
    server = EgcfgServer(backend)

    @server.feature(types.INITIALIZE)
    def initialize(ls: EgcfgServer, params: types.InitializeParams) -> None:
        ls.apply_settings(params.initialization_options, show=False)
        ls.status = ls.status.update(model=ls.settings.model)

    @server.feature(types.INITIALIZED)
    def initialized(ls: EgcfgServer, params: types.InitializedParams) -> None:
        for problem in ls.setting_problems:
            ls.show(problem)
        ls.setting_problems.clear()
        ls.start_model_load()
        watch = ls.client_capabilities.workspace and ls.client_capabilities.workspace.did_change_watched_files
        if watch and watch.dynamic_registration:
            ls.client_register_capability(types.RegistrationParams(registrations=[types.Registration(
                id="egcfg-watch-py", method=types.WORKSPACE_DID_CHANGE_WATCHED_FILES,
                register_options=types.DidChangeWatchedFilesRegistrationOptions(
                    watchers=[types.FileSystemWatcher(glob_pattern="**/*.py")]))]))

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def did_change_configuration(ls: EgcfgServer, params: types.DidChangeConfigurationParams) -> None:
        old = ls.apply_settings(params.settings)
        if old.engine_key() != ls.settings.engine_key():
            ls.start_model_load()
        if old.sandbox_key() != ls.settings.sandbox_key() or old.test_patterns != ls.settings.test_patterns:
            ls.live.clear()
            for uri in list(ls.workspace.text_documents):
                ls.live.schedule(uri, 0)
        elif old != ls.settings:  # only how results are shown changed
            for uri in list(ls.workspace.text_documents):
                if (analysis := ls.live.current(uri)) is not None:
                    ls.live.publish(uri, analysis)

    @server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    def did_change_watched_files(ls: EgcfgServer, params: types.DidChangeWatchedFilesParams) -> None:
        # a test file changed: the cached analyses that read it are stale (file_stamp sees it too)
        changed = {to_fs_path(c.uri) for c in params.changes}
        for uri, analysis in list(ls.live.analyses.items()):
            if changed & {path for path, _, _ in analysis.stamp}:
                ls.live.schedule(uri, ls.settings.debounce_ms / 1000)

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: EgcfgServer, params: types.DidOpenTextDocumentParams) -> None:
        ls.live.schedule(params.text_document.uri, 0)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: EgcfgServer, params: types.DidSaveTextDocumentParams) -> None:
        ls.live.on_saved(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: EgcfgServer, params: types.DidChangeTextDocumentParams) -> None:
        uri = params.text_document.uri
        ls.gpu.cancel(owner=f"inline:{uri}")  # its position is no longer valid
        ls.accepted_completion(uri, params)
        ls.live.on_edited(uri, *edited_lines(params))

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: EgcfgServer, params: types.DidCloseTextDocumentParams) -> None:
        uri = params.text_document.uri
        ls.live.forget(uri)
        ls.gpu.cancel(owner=f"inline:{uri}")
        ls.publish(uri, None, [])

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(ls: EgcfgServer, params: types.InlineCompletionParams):
        automatic = params.context.trigger_kind == types.InlineCompletionTriggerKind.Automatic
        answer = await ls.inline_outcome(params.text_document.uri, params.position, automatic)
        if answer is None:
            return None
        site, outcome = answer
        start = types.Position(line=site.insert_line, character=0)
        return types.InlineCompletionList(items=[types.InlineCompletionItem(
            insert_text=outcome.body, range=types.Range(start=start, end=params.position))])

    @server.command(COMMAND_COMPLETE)
    async def complete_with_tests(ls: EgcfgServer, *args):
        request = command_args(args)
        position = types.Position(line=int(request.get("line", 0)), character=int(request.get("character", 0)))
        return await ls.complete_for_command(request.get("uri", ""), position)

    @server.command(COMMAND_REGENERATE)
    async def regenerate_from(ls: EgcfgServer, *args):
        request = command_args(args)
        position = types.Position(line=int(request.get("line", 0)), character=0)
        return await ls.complete_for_command(request.get("uri", ""), position, regenerate=True)

    @server.command(COMMAND_CANCEL)
    def cancel(ls: EgcfgServer, *args):
        cancelled = ls.gpu.cancel()
        for uri in list(ls.live.tasks):
            ls.live.cancel(uri)
        return {"cancelled": cancelled}

    @server.command(COMMAND_TRACE)
    def show_trace(ls: EgcfgServer, *args):
        request = command_args(args)
        markdown = ls.hover_text(request.get("uri", ""), int(request.get("line", 0)))
        return {"markdown": markdown or "", "found": markdown is not None}

    @server.command(COMMAND_STATUS)
    def status(ls: EgcfgServer, *args):
        return {**ls.status.payload(), "settings": describe(ls.settings), "busy": ls.gpu.busy}

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    def hover(ls: EgcfgServer, params: types.HoverParams):
        markdown = ls.hover_text(params.text_document.uri, params.position.line)
        if markdown is None:
            return None
        return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=markdown))

    register_views(server)

    @server.feature(types.SHUTDOWN)
    def shutdown(ls: EgcfgServer, *args) -> None:
        ls.shutdown_work()

    return server
