"""Running a module's tests traced and folding the results per function: the data behind the
diagnostics and the hovers of one document version. No LSP types; the executor is passed in."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Sequence

from engine.project.testfile import TestSuite

from lsp_server.diagnostics import (
    FunctionSpan, Note, TestRecord, fold_all, functions_in, notes_for_function, syntax_note,
)
from lsp_server.discovery import Reader, discover_tests
from lsp_server.settings import Settings

RunTests = Callable[[Sequence[tuple[str, Sequence[str], str]]], list]  # [(program, tests, setup)] -> [JobResult]


@dataclass
class FunctionRun:
    span: FunctionSpan
    suite: TestSuite
    records: list[TestRecord]


@dataclass
class Analysis:
    version: int | None
    text: str
    stamp: tuple                                   # the test files' (path, mtime, size) when it ran
    runs: list[FunctionRun] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)   # shown in the status / log
    syntax_error: bool = False

    @property
    def passed(self) -> int:
        return sum(r.outcome == "pass" for run in self.runs for r in run.records)

    @property
    def total(self) -> int:
        return sum(len(run.records) for run in self.runs)

    def run_at(self, line: int) -> FunctionRun | None:
        """The innermost tested function containing a 0-based line."""
        best = None
        for run in self.runs:
            if run.span.def_line <= line <= run.span.end_line and (best is None or run.span.def_line >= best.span.def_line):
                best = run
        return best


def file_stamp(paths: Sequence[str]) -> tuple:
    out = []
    for path in paths:
        try:
            info = os.stat(path)
            out.append((path, info.st_mtime_ns, info.st_size))
        except OSError:
            out.append((path, 0, -1))
    return tuple(out)


def discover_all(text: str, path: str | None, root: str | None, settings: Settings, read: Reader) -> tuple[list[tuple[FunctionSpan, TestSuite]], list[str]]:
    """Each function of the module with its tests (only functions that have some)."""
    found = []
    problems: list[str] = []
    for span in functions_in(text):
        suite = discover_tests(span.name, path, text, root, docstring=span.docstring,
                               docstring_line=span.docstring_line, patterns=settings.test_patterns, read=read)
        problems += [p for p in suite.problems if p not in problems]
        if suite.cases:
            found.append((span, suite))
    return found, problems


def analyse(text: str, version: int | None, path: str | None, root: str | None, settings: Settings,
            read: Reader, run_tests: RunTests) -> Analysis:
    """Run every tested function's tests against the module text; fold the traces into notes."""
    lines = text.splitlines()
    try:
        tested, problems = discover_all(text, path, root, settings, read)
    except SyntaxError as error:
        analysis = Analysis(version, text, (), notes=[syntax_note(error, lines)], syntax_error=True)
        analysis.problems.append(f"line {error.lineno}: {error.msg}")
        return analysis
    files = sorted({f for _, suite in tested for f in suite.files})
    analysis = Analysis(version, text, file_stamp(files), problems=problems)
    if not tested:
        return analysis
    results = run_tests([(text, [c.source for c in suite.cases], suite.setup) for _, suite in tested])
    for (span, suite), result in zip(tested, results):
        records = fold_all(span, suite.cases, result.tests)
        analysis.runs.append(FunctionRun(span, suite, records))
        analysis.notes += notes_for_function(span, records, lines, values=settings.value_diagnostics)
    return analysis
