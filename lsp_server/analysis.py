"""Running a module's tests traced and folding the results per function: the data behind the
diagnostics, hints, lenses and hovers of one document version. No LSP types; the executor is passed in.

Results are kept per function, keyed by a fingerprint of everything its tests can depend on
(lsp_server/callgraph.py): after an edit only the functions whose fingerprint changed run again,
and the rest are reused with their lines shifted to where the function is now."""

from __future__ import annotations

import ast
import hashlib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

from engine.project.testfile import TestSuite

from lsp_server.callgraph import ModuleGraph, module_graph, names_in_source
from lsp_server.diagnostics import (
    FunctionSpan, Note, TestRecord, fold_all, functions_in, notes_for_function, syntax_note, tests_passed,
)
from lsp_server.discovery import Reader, candidate_test_files, discover_tests
from lsp_server.settings import Settings

RunTests = Callable[[Sequence[tuple[str, Sequence[str], str]]], list]  # [(program, tests, setup)] -> [JobResult]


@dataclass
class FunctionRun:
    span: FunctionSpan
    suite: TestSuite
    records: list[TestRecord]

    @property
    def passed(self) -> int:
        return tests_passed(self.records)[0]

    @property
    def total(self) -> int:
        return tests_passed(self.records)[1]


@dataclass
class Analysis:
    version: int | None
    text: str
    stamp: tuple                                   # the test files' (path, mtime, size) when it ran
    runs: list[FunctionRun] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)   # shown in the status / log
    syntax_error: bool = False
    pending: int = 0                               # functions whose tests have not run yet for this text
    extra_notes: list[Note] = field(default_factory=list)   # notes of no function (a test file that cannot load)

    @property
    def passed(self) -> int:
        return sum(run.passed for run in self.runs)

    @property
    def total(self) -> int:
        return sum(run.total for run in self.runs)

    def run_at(self, line: int) -> FunctionRun | None:
        """The innermost tested function containing a 0-based line."""
        best = None
        for run in self.runs:
            if run.span.def_line <= line <= run.span.end_line and (best is None or run.span.def_line >= best.span.def_line):
                best = run
        return best

    def add(self, runs: Sequence[FunctionRun]) -> None:
        """Put fresh runs in (replacing older ones of the same function) and rebuild the notes."""
        fresh = {run.span.def_line for run in runs}
        self.runs = sorted([r for r in self.runs if r.span.def_line not in fresh] + list(runs),
                           key=lambda r: r.span.def_line)
        lines = self.text.splitlines()
        self.notes = [note for run in self.runs for note in notes_for_function(run.span, run.records, lines)]
        self.notes += self.extra_notes


def file_stamp(paths: Sequence[str]) -> tuple:
    out = []
    for path in paths:
        try:
            info = os.stat(path)
            out.append((path, info.st_mtime_ns, info.st_size))
        except OSError:
            out.append((path, 0, -1))
    return tuple(out)


# ------------------------------------------------------------------------------------------------
# Caches shared by the runs of one document (thread-safe: runs finish in worker threads)

@dataclass(frozen=True)
class KnownSuite:
    suite: TestSuite
    names: frozenset[str]      # names its tests and setup mention (they join the call graph)
    text: str                  # its tests and setup, for the fingerprint


class Caches:
    """Suites by (function, docstring, test files' text); results by fingerprint, lines relative to the def."""

    def __init__(self, max_results: int = 4096) -> None:
        self._lock = threading.Lock()
        self._suites: dict[tuple, KnownSuite] = {}
        self._results: OrderedDict[tuple, list[TestRecord]] = OrderedDict()
        self._max = max_results

    def suite(self, key: tuple) -> KnownSuite | None:
        with self._lock:
            return self._suites.get(key)

    def keep_suite(self, key: tuple, suite: TestSuite) -> KnownSuite:
        names = set().union(*(names_in_source(c.source) for c in suite.cases), names_in_source(suite.setup))
        known = KnownSuite(suite, frozenset(names), "\0".join([c.source for c in suite.cases] + [suite.setup]))
        with self._lock:
            if len(self._suites) > 4 * self._max:
                self._suites.clear()
            self._suites[key] = known
        return known

    def result(self, key: tuple) -> list[TestRecord] | None:
        with self._lock:
            records = self._results.get(key)
            if records is not None:
                self._results.move_to_end(key)
            return records

    def keep_result(self, key: tuple, records: list[TestRecord]) -> None:
        with self._lock:
            self._results[key] = records
            self._results.move_to_end(key)
            while len(self._results) > self._max:
                self._results.popitem(last=False)


def shifted(records: Sequence[TestRecord], delta: int) -> list[TestRecord]:
    """The records with every document line moved by `delta`."""
    if delta == 0:
        return list(records)
    return [replace(r, lines={line + delta: entry for line, entry in r.lines.items()},
                    raised_at=None if r.raised_at is None else r.raised_at + delta) for r in records]


# ------------------------------------------------------------------------------------------------
# One document version: what can be reused, what must run

@dataclass
class Plan:
    analysis: Analysis
    graph: ModuleGraph
    spans: list[FunctionSpan]
    files_key: str
    todo: list[FunctionSpan]            # functions whose tests must run (or whose tests are not known yet)


def plan(text: str, version: int | None, path: str | None, root: str | None, settings: Settings,
         read: Reader, caches: Caches) -> Plan | Analysis:
    """Reuse every cached result that still holds for `text`; list the functions left to run.
    A module that does not parse gives an Analysis with the syntax error instead."""
    try:
        tree = ast.parse(text)
    except SyntaxError as error:
        return syntax_analysis(text, version, error)
    graph = module_graph(text, tree)
    spans = functions_in(text, tree)
    files = candidate_test_files(path, text, root, settings.test_patterns) if path else []
    digest = hashlib.sha1("\0".join(settings.test_patterns).encode())
    for file in files:
        digest.update(f"\0{file}\0{read(file)}".encode())
    files_key = digest.hexdigest()
    result = Plan(Analysis(version, text, file_stamp(files)), graph, spans, files_key, [])
    reused = []
    for span in spans:
        known = caches.suite(suite_key(span, files_key))
        if known is not None and not known.suite.cases:
            result.analysis.problems += [p for p in known.suite.problems if p not in result.analysis.problems]
            continue
        records = caches.result(result_key(result, span, known, settings)) if known else None
        if records is None:
            result.todo.append(span)
        else:
            reused.append(FunctionRun(span, known.suite, shifted(records, span.def_line)))
    result.analysis.add(reused)
    result.analysis.pending = len(result.todo)
    return result


def syntax_analysis(text: str, version: int | None, error: SyntaxError) -> Analysis:
    analysis = Analysis(version, text, (), notes=[syntax_note(error, text.splitlines())], syntax_error=True)
    analysis.problems.append(f"line {error.lineno}: {error.msg}")
    return analysis


def suite_key(span: FunctionSpan, files_key: str) -> tuple:
    return (span.name, span.docstring, files_key)


def result_key(current: Plan, span: FunctionSpan, known: KnownSuite, settings: Settings) -> tuple:
    unit = current.graph.unit_at(span.def_line)
    offset = span.def_line - unit.start if unit else span.def_line
    fingerprint = current.graph.fingerprint(span.def_line, known.names, known.text)
    return (fingerprint, span.name, offset, settings.sandbox_key())


def order(todo: Sequence[FunctionSpan], focus: tuple[int, int]) -> list[FunctionSpan]:
    """Functions at the focus (the edited lines, else the visible ones) first, then by distance."""
    start, end = focus

    def distance(span: FunctionSpan) -> int:
        if span.end_line < start:
            return start - span.end_line
        if span.def_line > end:
            return span.def_line - end
        return 0

    return sorted(todo, key=lambda s: (distance(s), s.def_line))


def run_some(current: Plan, spans: Sequence[FunctionSpan], path: str | None, root: str | None,
             settings: Settings, read: Reader, caches: Caches, run_tests: RunTests,
             max_tests: int) -> tuple[list[FunctionRun], list[FunctionSpan]]:
    """Discover and run the first of `spans` in order, up to about `max_tests` tests (at least one
    function that has tests); results go to the caches. Returns (runs, spans looked at)."""
    text = current.analysis.text
    chosen: list[tuple[FunctionSpan, KnownSuite]] = []
    looked: list[FunctionSpan] = []
    tests = 0
    for span in spans:
        if chosen and tests + 1 > max_tests:
            break
        looked.append(span)
        key = suite_key(span, current.files_key)
        known = caches.suite(key)
        if known is None:
            suite = discover_tests(span.name, path, text, root, docstring=span.docstring,
                                   docstring_line=span.docstring_line, patterns=settings.test_patterns, read=read)
            known = caches.keep_suite(key, suite)
        problems = current.analysis.problems
        problems += [p for p in known.suite.problems if p not in problems]
        if known.suite.cases:
            chosen.append((span, known))
            tests += len(known.suite.cases)
    if not chosen:
        return [], looked
    results = run_tests([(text, [c.source for c in known.suite.cases], known.suite.setup) for _, known in chosen])
    runs = []
    for (span, known), result in zip(chosen, results):
        records = fold_all(span, known.suite.cases, result.tests)
        caches.keep_result(result_key(current, span, known, settings), shifted(records, -span.def_line))
        runs.append(FunctionRun(span, known.suite, records))
    return runs, looked


def analyse(text: str, version: int | None, path: str | None, root: str | None, settings: Settings,
            read: Reader, run_tests: RunTests, caches: Caches | None = None) -> Analysis:
    """Run every tested function's tests against the module text (reusing `caches`); fold the traces."""
    caches = caches or Caches()
    current = plan(text, version, path, root, settings, read, caches)
    if isinstance(current, Analysis):
        return current
    todo = list(current.todo)
    while todo:
        runs, looked = run_some(current, todo, path, root, settings, read, caches, run_tests, max_tests=1 << 30)
        current.analysis.add(runs)
        todo = [s for s in todo if s not in looked]
    current.analysis.pending = 0
    return current.analysis
