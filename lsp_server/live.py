"""Live test runs of the open documents: what reruns after an edit, in which order, and when the
editor hears about it.

After an edit (debounced) or a save, the document's text is planned against the caches
(lsp_server/analysis.py): results whose fingerprint still holds are published at once, shifted to
where their function now is. The functions left run in small batches in the test pool: first the
function that was edited (or, on open, the one nearest the visible lines), alone, so its values come
back within about a second; then the rest, nearest first, in the background. Every batch is
published (diagnostics, then an inlay-hint and code-lens refresh). A newer edit cancels the rest;
a batch already running finishes into the cache, so its work is not lost.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING

from engine.errors import UserError

from lsp_server.analysis import Analysis, Caches, FunctionRun, file_stamp, order, plan, run_some, syntax_analysis
from lsp_server.project_live import Learned, plan_project, run_full, run_stale

if TYPE_CHECKING:
    from lsp_server.server import EgcfgServer

log = logging.getLogger("egcfg.lsp")

BATCH_TESTS = 12        # tests per background batch: a newer edit waits at most for one batch


class LiveTests:
    def __init__(self, server: "EgcfgServer") -> None:
        self.server = server
        self.analyses: dict[str, Analysis] = {}             # uri -> latest analysis (maybe partial)
        self.caches: dict[str, Caches] = {}                 # uri -> suites and results by fingerprint
        self.tasks: dict[str, asyncio.Task] = {}            # uri -> pending/running run
        self.task_text: dict[str, str] = {}                 # uri -> the text that run is for
        self.visible: dict[str, tuple[int, int]] = {}       # uri -> lines the editor shows (from inlay hint requests)
        self.edited: dict[str, tuple[int, int]] = {}        # uri -> lines of the latest edit
        self.learned: dict[str, Learned] = {}               # uri -> which pytest tests are whose
        self.announced: set[tuple] = set()                   # (interpreter, hidden import folders) already logged

    # --- scheduling -----------------------------------------------------------------------------
    def schedule(self, uri: str, delay: float, quiet: bool = False) -> None:
        """Run the document's tests after `delay` s; a newer call (or edit) cancels this one.
        `quiet`: a text that does not parse (mid-typing) publishes nothing."""
        self.cancel(uri)
        self.tasks[uri] = asyncio.ensure_future(self.run(uri, delay, quiet))

    def cancel(self, uri: str) -> None:
        pending = self.tasks.pop(uri, None)
        self.task_text.pop(uri, None)
        if pending:
            pending.cancel()

    def forget(self, uri: str) -> None:
        self.cancel(uri)
        for table in (self.analyses, self.caches, self.visible, self.edited, self.learned):
            table.pop(uri, None)

    def clear(self) -> None:
        """Settings changed: nothing cached holds."""
        self.analyses.clear()
        self.caches.clear()
        self.learned.clear()

    def on_saved(self, uri: str) -> None:
        document = self.server.workspace.text_documents.get(uri)
        if document is None:
            return
        running = self.tasks.get(uri)
        if running is not None and not running.done() and self.task_text.get(uri) == document.source:
            return  # the run for this very text is under way
        analysis = self.current(uri)
        if analysis is not None and analysis.pending == 0:
            self.publish(uri, analysis)  # nothing changed since it ran: say it again
            return
        self.schedule(uri, 0)

    def on_edited(self, uri: str, first: int, last: int) -> None:
        self.edited[uri] = (first, last)
        self.schedule(uri, max(self.server.settings.debounce_ms, 100) / 1000, quiet=True)

    def current(self, uri: str) -> Analysis | None:
        """The analysis of the document's current text, if its test files did not change since."""
        analysis = self.analyses.get(uri)
        document = self.server.workspace.text_documents.get(uri)
        if analysis is None or document is None or analysis.text != document.source:
            return None
        if file_stamp([path for path, _, _ in analysis.stamp]) != analysis.stamp:
            return None
        return analysis

    # --- one run --------------------------------------------------------------------------------
    async def run(self, uri: str, delay: float, quiet: bool) -> None:
        await asyncio.sleep(delay)
        server = self.server
        document = server.workspace.text_documents.get(uri)
        if document is None:
            return
        version, text, path = document.version, document.source, document.path
        self.task_text[uri] = text
        if len(text) > server.settings.max_file_bytes:
            server.set_status(state=server.ready_state(), message=(
                f"{os.path.basename(path or uri)} is larger than maxFileBytes: tests are not run"))
            return
        settings, root, read = server.settings, server.root, server.read
        caches = self.caches.setdefault(uri, Caches())
        loop = asyncio.get_running_loop()
        try:
            if path and hasattr(server.backend, "run_project"):  # the project's own pytest runs the module's tests
                if await self.run_project_tests(uri, version, text, path, quiet, caches):
                    return
            if hasattr(server.backend, "isolation"):  # the status shows the level (a warning when it is limits)
                isolation = await loop.run_in_executor(server.test_pool, server.backend.isolation, settings, root)
                server.status = server.status.update(isolation=isolation)
            current = await loop.run_in_executor(server.test_pool, plan, text, version, path, root, settings, read, caches)
            if isinstance(current, Analysis):  # a syntax error
                if not quiet and self.still(uri, version):
                    self.store(uri, current)
                return
            if not self.still(uri, version):
                return
            self.store(uri, current.analysis, final=not current.todo)
            todo, first = current.todo, True
            run_tests = lambda jobs: server.backend.run_tests(settings, root, jobs)  # noqa: E731
            while todo:
                todo = self.ordered(uri, todo)
                runs, looked = await loop.run_in_executor(
                    server.test_pool, run_some, current, todo, path, root, settings, read, caches, run_tests,
                    1 if first else BATCH_TESTS)
                first = False
                if not self.still(uri, version):
                    return
                todo = [span for span in todo if span not in looked]
                self.merge(uri, current.analysis, runs, len(todo))
        except UserError as error:
            server.set_status(state=server.ready_state(), message=f"tests not run: {error}")
        except Exception as error:
            log.exception("test run failed")
            server.set_status(state=server.ready_state(), message=f"tests not run: {type(error).__name__}: {error}")

    async def run_project_tests(self, uri: str, version: int | None, text: str, path: str, quiet: bool,
                                caches: Caches) -> bool:
        """The project's pytest runs the tests (lsp_server/project_live.py): everything when nothing
        is known yet, else only the functions an edit can change, the edited one first. False when
        the project's interpreter has no pytest (egcfg reads the tests itself then)."""
        server, loop = self.server, asyncio.get_running_loop()
        settings, root, read, backend, pool = server.settings, server.root, server.read, server.backend, server.test_pool
        python = await loop.run_in_executor(pool, backend.interpreter, settings, root)
        isolation = await loop.run_in_executor(pool, backend.isolation, settings, root)
        server.status = server.status.update(interpreter=python.describe(), isolation=isolation)
        hidden = python.hidden_paths(settings.read_folders)
        if hidden and (python.executable, hidden) not in self.announced:
            self.announced.add((python.executable, hidden))
            server.log(f"the tests' Python adds {', '.join(hidden)} to its import path (a .pth file), outside the "
                       "workspace: the sandbox does not show it; list it in the readFolders setting if the tests import from it")

        def run_project(files, nodeids):
            return backend.run_project(settings, root, path, text, files, nodeids=nodeids)

        try:
            current = await loop.run_in_executor(pool, plan_project, text, version, path, root, settings, read,
                                                 python, caches, self.learned.get(uri))
        except SyntaxError as error:
            if not quiet and self.still(uri, version):
                self.store(uri, syntax_analysis(text, version, error))
            return True
        if not self.still(uri, version):
            return True
        if current.full:
            if uri not in self.analyses:  # just opened: a quick look at the nearest function first
                await self.preview(uri, version, text, path, caches)
            done = await loop.run_in_executor(pool, run_full, current, run_project, caches, settings)
            if done is None:
                return False
            self.learned[uri] = done[1]
            if self.still(uri, version):
                self.store(uri, done[0])
            return True
        self.store(uri, current.analysis, final=not current.stale)
        stale = self.ordered(uri, current.stale)
        pending = len(stale)
        for group in (stale[:1], stale[1:]):  # the edited function alone first
            if group:
                runs = await loop.run_in_executor(pool, run_stale, current, group, run_project, caches,
                                                  self.learned[uri], settings)
                if not self.still(uri, version):
                    return True
                pending -= len(group)
                self.merge(uri, current.analysis, runs, pending)
        return True

    async def preview(self, uri: str, version: int | None, text: str, path: str, caches: Caches) -> None:
        """Before a module's first pytest session (which runs every test: tens of seconds on a large
        module), egcfg's own reading of the nearest function's tests, run at once, so that values
        show within about a second of opening; the session's results replace it."""
        server, loop = self.server, asyncio.get_running_loop()
        settings, root, read, pool = server.settings, server.root, server.read, server.test_pool
        current = await loop.run_in_executor(pool, plan, text, version, path, root, settings, read, caches)
        if isinstance(current, Analysis) or not current.todo or not self.still(uri, version):
            return
        run_tests = lambda jobs: server.backend.run_tests(settings, root, jobs)  # noqa: E731
        runs, _ = await loop.run_in_executor(pool, run_some, current, self.ordered(uri, current.todo), path, root,
                                             settings, read, caches, run_tests, 1)
        if runs and self.still(uri, version) and uri not in self.analyses:
            current.analysis.add(runs)
            current.analysis.pending = len(current.todo)
            self.store(uri, current.analysis, final=False)

    def ordered(self, uri: str, todo: list) -> list:
        """The edited function first, then those nearest the visible lines."""
        edited = self.edited.get(uri)
        nearest = order(todo, self.visible.get(uri) or edited or (0, 0))
        if edited is None:
            return nearest
        return [s for s in nearest if s.def_line <= edited[1] and s.end_line >= edited[0]] + \
               [s for s in nearest if not (s.def_line <= edited[1] and s.end_line >= edited[0])]

    def still(self, uri: str, version: int | None) -> bool:
        document = self.server.workspace.text_documents.get(uri)
        return document is not None and document.version == version

    def merge(self, uri: str, analysis: Analysis, runs: list[FunctionRun], pending: int) -> None:
        analysis.add(runs)
        analysis.pending = pending
        self.store(uri, analysis, final=pending == 0)

    def store(self, uri: str, analysis: Analysis, final: bool = True) -> None:
        self.analyses[uri] = analysis
        self.publish(uri, analysis)
        if final:
            self.server.report_analysis(analysis)

    def publish(self, uri: str, analysis: Analysis) -> None:
        self.server.publish(uri, analysis.version, analysis.notes, analysis.text)
        self.server.refresh_views()

