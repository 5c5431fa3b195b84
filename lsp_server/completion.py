"""One guided completion, without LSP types: the task for the function at the cursor, the engine's
events turned into streamed lines and progress, and the body to insert at the end.

`GpuRunner` runs completions one at a time in a worker thread (the GPU is one): a newer run
cancels the older through its CancelToken, which the engine checks at every token step."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from engine.errors import UserError
from engine.project.locate import FunctionSite, find_function
from engine.project.testfile import TestSuite, docstring_of

from engine.generation.events import CancelToken


@dataclass(frozen=True)
class Site:
    """The function at the cursor and its docstring (for doctests)."""

    function: FunctionSite
    docstring: str | None
    docstring_line: int  # 1-based line of the docstring's opening quotes

    @property
    def insert_line(self) -> int:
        """0-based line where the completion starts (the cursor's line, or the body's first line)."""
        return self.function.end_line


def site_at(text: str, line: int, character: int | None = None) -> Site:
    """The function whose body the cursor is in. Raises UserError when there is none."""
    if not 0 <= line <= text.count("\n") + 1:
        raise UserError(f"line {line + 1} is outside the document")
    function = find_function(text, line=line)
    if line <= function.def_line or line < function.body_line and _in_signature(text, function, line):
        raise UserError(f"the cursor is in the signature of {function.name}: put it in the body")
    if character is not None and _after_finished_body(text, function, line, character):
        raise UserError("the cursor is not inside a function (it is after the end of "
                        f"{function.name}, whose body is written)")
    docstring, doc_line = docstring_of(function)
    return Site(function, docstring, doc_line)


def _after_finished_body(text: str, function: FunctionSite, line: int, character: int) -> bool:
    """A cursor on a blank line after a function that has a body, at or left of the def's column."""
    lines = text.splitlines()
    has_body = any(lines[i].strip() for i in range(function.body_line, min(line, len(lines))))
    on_blank = line >= len(lines) or not lines[line].strip()
    return has_body and on_blank and character <= len(function.indent.expandtabs(4))


def _in_signature(text: str, function: FunctionSite, line: int) -> bool:
    lines = text.splitlines()
    header = function.def_line
    while header < len(lines) and not lines[header].split("#", 1)[0].rstrip().endswith(":"):
        header += 1
    return line <= header


def task_fields(site: Site, suite: TestSuite) -> dict:
    """Keyword arguments of engine.generation.events.CompletionTask."""
    return {
        "function_name": site.function.name,
        "source_before": site.function.source_before,
        "source_after": site.function.source_after,
        "tests": [case.source for case in suite.cases],
        "test_names": [case.test for case in suite.cases],
        "setup": suite.setup,
    }


def body_to_insert(site: Site, code: str) -> str:
    """The text to insert at the completion's line, from the engine's final code (the whole module,
    the whole function, or only the new body lines: all three are handled)."""
    before, after = site.function.source_before, site.function.source_after
    if code.startswith(before):
        body = code[len(before):]
        if after and body.endswith(after):
            body = body[: len(body) - len(after)]
        return _ending_newline(body)
    try:
        generated = find_function(code, name=site.function.name)
    except UserError:
        return _ending_newline(code)
    lines = (generated.source_before + generated.source_after).splitlines(keepends=True)
    already = site.function.end_line - site.function.body_line  # body lines the document has before the cursor
    start = generated.body_line + already
    end = generated.end_line
    return _ending_newline("".join(lines[start:end]))


def _ending_newline(text: str) -> str:
    return text if not text or text.endswith("\n") else text + "\n"


@dataclass
class Progress:
    agent: str = ""
    line: int = 0
    passed: int = 0
    total: int = 0
    message: str = ""


@dataclass
class Outcome:
    body: str = ""          # text to insert
    code: str = ""          # the engine's final code
    passed: int = 0
    total: int = 0
    agent: str = ""
    status: str = ""
    cancelled: bool = False
    seconds: float = 0.0
    lines: list[dict] = field(default_factory=list)  # every streamed line, in order


def _best(event: Any) -> tuple[int, int]:
    """(passed, total) of the best candidate in a CandidatesRun (its scores, else its results)."""
    best = (0, 0)
    scores = getattr(event, "scores", None) or [(getattr(r, "passed", 0), getattr(r, "total", 0))
                                                 for r in event.results or ()]
    for passed, total in scores:
        if (passed, -total) > (best[0], -best[1]) or best == (0, 0):
            best = (passed, total)
    return best


def drive(events: Iterable[Any], site: Site, cancel, on_line: Callable[[dict], None],
          on_progress: Callable[[Progress], None]) -> Outcome:
    """Consume the engine's events: stream committed lines, report progress, return the outcome.

    Events are matched by class name so that fakes (and a newer engine) work without importing it."""
    started = time.monotonic()
    outcome = Outcome()
    progress = Progress()
    for event in events:
        kind = type(event).__name__
        if kind == "LineCommitted":
            line = {"lineNo": event.line_no, "text": event.text, "code": event.code,
                    "body": getattr(event, "body", ""), "agent": event.agent, "engineTime": time.time()}
            outcome.lines.append(line)
            on_line(line)
            progress.agent, progress.line = event.agent, event.line_no
            progress.message = f"{event.agent}: line {event.line_no} committed"
            on_progress(progress)
        elif kind == "CandidatesRun":
            progress.agent, progress.line = event.agent, event.line_no
            progress.passed, progress.total = _best(event)
            progress.message = (f"{event.agent}: line {event.line_no}, {len(event.candidates)} candidate(s), "
                                f"best passes {progress.passed}/{progress.total} tests")
            on_progress(progress)
        elif kind == "AgentFinished":
            progress.agent, progress.passed, progress.total = event.agent, event.passed, event.total
            progress.message = f"{event.agent} finished ({event.reason}): {event.passed}/{event.total} tests pass"
            on_progress(progress)
        elif kind == "Finished":
            outcome.code, outcome.passed, outcome.total = event.code, event.passed, event.total
            outcome.agent, outcome.status = event.agent, getattr(event, "status", "")
            outcome.body = _ending_newline(getattr(event, "body", "") or "")
        if cancel.cancelled:
            break
    outcome.cancelled = cancel.cancelled
    if not outcome.cancelled and not outcome.code and not outcome.lines:
        raise UserError("the engine stopped without an answer")
    if outcome.code and not outcome.body:
        outcome.body = body_to_insert(site, outcome.code)
    outcome.seconds = time.monotonic() - started
    return outcome


class GpuRunner:
    """One completion at a time in one worker thread; starting a run cancels the one before."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="egcfg-gpu")
        self._lock = threading.Lock()
        self._active: list[tuple[str, Any]] = []  # (owner, token) of submitted, unfinished runs

    def submit(self, owner: str, work: Callable[[Any], Any]) -> tuple[Any, Future]:
        token = CancelToken()
        with self._lock:
            for _, older in self._active:
                older.cancel()
            self._active.append((owner, token))

        def run():
            try:
                if token.cancelled:
                    return None
                return work(token)
            finally:
                with self._lock:
                    self._active = [(o, t) for o, t in self._active if t is not token]

        return token, self._pool.submit(run)

    def cancel(self, owner: str | None = None) -> int:
        """Cancel the runs of `owner` (every run when None); returns how many were cancelled."""
        with self._lock:
            targets = [t for o, t in self._active if owner is None or o == owner]
        for token in targets:
            token.cancel()
        return len(targets)

    @property
    def pool(self) -> ThreadPoolExecutor:
        """The worker thread itself (the model loads there too, so a load never races a run)."""
        return self._pool

    @property
    def busy(self) -> bool:
        with self._lock:
            return bool(self._active)

    def close(self) -> None:
        self.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
