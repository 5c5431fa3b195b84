"""Incremental runs over the project's own pytest (lsp_server/project_tests.py).

The first session runs every test of the module and learns which tests belong to which function
(project_tests.owner) and which of the module's functions each function's tests executed (from
their traces). After an edit, a function's results are reused while the fingerprint of what its
tests can reach still holds (lsp_server/callgraph.py: its own definition, what it mentions, the
functions its tests executed, module-level code, the test files' text); the others' tests run
again, selected by pytest node id: the edited function's first, in a session of their own, then
the rest. A change to a test file (or a module that no longer parses the same way) means a full
session again."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable, Sequence

from engine.project.testfile import TestCase, TestSuite

from lsp_server.analysis import Analysis, Caches, FunctionRun, file_stamp, shifted
from lsp_server.callgraph import ModuleGraph, module_graph
from lsp_server.diagnostics import FunctionSpan, fold
from lsp_server.discovery import Reader, candidate_test_files
from lsp_server.project_tests import _Outcome, fold_run, owner, spans_of

RunProject = Callable[[Sequence[str], Sequence[str]], object]   # (files, nodeids) -> ProjectRun | None


@dataclass
class Learned:
    """What the last full session taught about the module's tests (one per document)."""

    files_key: str
    nodeids: dict[tuple[str, int], list[str]] = field(default_factory=dict)   # function -> its tests
    reached: dict[tuple[str, int], set[str]] = field(default_factory=dict)    # function -> functions its tests ran


@dataclass
class ProjectPlan:
    analysis: Analysis
    spans: list[FunctionSpan]
    graph: ModuleGraph | None
    files: list[str]
    files_key: str
    full: bool                                     # no usable knowledge: one session runs everything
    stale: list[FunctionSpan] = field(default_factory=list)


def function_keys(spans: Sequence[FunctionSpan]) -> dict[int, tuple[str, int]]:
    """def line -> (name, how many functions of that name come before): stable across edits that move it."""
    seen: dict[str, int] = {}
    keys = {}
    for span in spans:
        keys[span.def_line] = (span.name, seen.get(span.name, 0))
        seen[span.name] = seen.get(span.name, 0) + 1
    return keys


def plan_project(text: str, version: int | None, path: str, root: str | None, settings, read: Reader,
                 interpreter, caches: Caches, learned: Learned | None) -> ProjectPlan:
    """Reuse what still holds; list the functions whose tests must run. SyntaxError propagates."""
    spans = spans_of(text, interpreter)
    try:
        graph = module_graph(text)
    except SyntaxError:  # newer grammar than this Python's: no call graph, so nothing is reused
        graph = None
    files = candidate_test_files(path, text, root, settings.test_patterns)
    digest = hashlib.sha1("\0".join(settings.test_patterns).encode())
    for file in files:
        digest.update(f"\0{file}\0{read(file)}".encode())
    files_key = digest.hexdigest()
    current = ProjectPlan(Analysis(version, text, file_stamp(files)), spans, graph, files, files_key,
                          full=graph is None or learned is None or learned.files_key != files_key)
    if current.full:
        return current
    keys = function_keys(spans)
    reused = []
    for span in spans:
        key = keys[span.def_line]
        if not learned.nodeids.get(key):
            continue
        cached = caches.result(result_key(current, span, key, learned, settings))
        if cached is None:
            current.stale.append(span)
        else:
            suite, records = cached
            reused.append(FunctionRun(span, suite, shifted(records, span.def_line)))
    current.analysis.add(reused)
    current.analysis.pending = len(current.stale)
    return current


def result_key(current: ProjectPlan, span: FunctionSpan, key: tuple[str, int], learned: Learned, settings) -> tuple:
    unit = current.graph.unit_at(span.def_line)
    offset = span.def_line - unit.start if unit else span.def_line
    fingerprint = current.graph.fingerprint(span.def_line, learned.reached.get(key, ()), current.files_key)
    return ("pytest", fingerprint, key, offset, settings.sandbox_key())


def run_full(current: ProjectPlan, run_project: RunProject, caches: Caches, settings) -> tuple[Analysis, Learned] | None:
    """One session with every test; None when the project's interpreter has no pytest."""
    run = run_project(current.files, ())
    if run is None:
        return None
    analysis, grouped = fold_run(run, current.spans, current.files, current.analysis.text, current.analysis.version)
    learned = Learned(current.files_key)
    keys = function_keys(current.spans)
    for function in analysis.runs:
        key = keys[function.span.def_line]
        tests = grouped.get(function.span.def_line, [])
        learned.nodeids[key] = [t.nodeid for t in tests]
        learned.reached[key] = reached_functions(tests)
    if current.graph is not None:
        for function in analysis.runs:
            remember(current, function, keys, learned, caches, settings)
    return analysis, learned


def run_stale(current: ProjectPlan, spans: Sequence[FunctionSpan], run_project: RunProject, caches: Caches,
              learned: Learned, settings) -> list[FunctionRun]:
    """One session with the tests of `spans`, folded per function (and kept in the caches)."""
    keys = function_keys(current.spans)
    wanted = {span.def_line: span for span in spans}
    nodeids = [nodeid for span in spans for nodeid in learned.nodeids.get(keys[span.def_line], [])]
    run = run_project(current.files, nodeids) if nodeids else None
    if run is None:
        return []
    grouped: dict[int, list] = {}
    for test in run.ran:
        span = owner(test, current.spans)
        if span is not None and span.def_line in wanted:
            grouped.setdefault(span.def_line, []).append(test)
    runs = []
    for def_line, span in wanted.items():
        tests = grouped.get(def_line, [])
        suite = TestSuite(span.name, files=list(current.files))
        records = []
        for index, test in enumerate(tests):
            case = TestCase(test.nodeid, test.name, test.file, test.line, "pytest")
            suite.cases.append(case)
            records.append(fold(span, case, _Outcome(test.outcome, test.message, test.trace), f"t{index + 1}"))
        function = FunctionRun(span, suite, records)
        learned.reached[keys[def_line]] = reached_functions(tests) | learned.reached.get(keys[def_line], set())
        if tests:
            runs.append(function)
            remember(current, function, keys, learned, caches, settings)
    return runs


def remember(current: ProjectPlan, function: FunctionRun, keys, learned: Learned, caches: Caches, settings) -> None:
    key = keys[function.span.def_line]
    caches.keep_result(result_key(current, function.span, key, learned, settings),
                       (function.suite, shifted(function.records, -function.span.def_line)))


def reached_functions(tests) -> set[str]:
    """The module's functions the tests executed (their traces' calls into the program)."""
    names: set[str] = set()
    for test in tests:
        for event in getattr(test.trace, "events", ()) or ():
            if event.kind == "call" and event.file == "program" and event.func != "<module>":
                names.add(event.func)
    return names
