"""A module's tests run the way pytest runs them (engine/execution/project_run.py), folded into the
same per-function Analysis the diagnostics, hints and hovers read.

Used when the project's interpreter has pytest (the usual case): one sandboxed pytest session runs
the module's test files (found by lsp_server.discovery) and the module's doctests against the
document's text. A test belongs to the function of this module it calls first from the test
itself (the shallowest call in its trace); a doctest belongs to the function whose docstring it is.
The module is parsed with the grammar of the project's interpreter (engine/project/outline.py)."""

from __future__ import annotations

import ast
from dataclasses import dataclass

from engine.project.outline import functions as outline_functions
from engine.project.outline import same_grammar
from engine.project.testfile import TestCase, TestSuite

from lsp_server.analysis import Analysis, FunctionRun, file_stamp
from lsp_server.diagnostics import FunctionSpan, Note, fold, functions_in, syntax_note
from lsp_server.discovery import candidate_test_files


@dataclass
class _Outcome:
    """The shape fold() reads from an executor TestResult."""

    outcome: str
    message: str
    trace: object


def spans_of(text: str, interpreter) -> list[FunctionSpan]:
    """The module's functions, parsed by the project's grammar (raises SyntaxError)."""
    version = tuple(interpreter.version) if interpreter is not None else None
    if same_grammar(version):
        return functions_in(text, ast.parse(text))
    try:
        return functions_in(text, ast.parse(text))
    except SyntaxError:  # newer syntax than egcfg's Python reads (PEP 695 on 3.12, say)
        found = outline_functions(text, interpreter.executable, version)
        return [FunctionSpan(f.name, f.def_line, f.end_line, f.docstring, f.docstring_line) for f in found]


def owner(test, spans: list[FunctionSpan]) -> FunctionSpan | None:
    """The function a test is about (see the module's docstring), or None."""
    if test.is_doctest:
        last = test.name.rsplit(".", 1)[-1]
        for span in spans:
            if span.name == last and span.docstring is not None:
                return span
    trace = test.trace
    if trace is None:
        return None
    calls = [e for e in trace.events if e.kind == "call" and e.file == "program" and e.func != "<module>"]
    if not calls:
        return None
    shallowest = min(e.depth for e in calls)
    for event in calls:
        if event.depth != shallowest:
            continue
        line = event.line - 1
        for span in spans:
            if span.name == event.func and span.def_line - 20 <= line <= span.end_line:
                return span
    return None


def analyse_project(text: str, version: int | None, path: str, root: str | None, settings, run_project,
                    interpreter) -> Analysis | None:
    """The Analysis of one document version from one pytest session (`run_project(path, text, files)`
    returns an engine.execution.project_run.ProjectRun)."""
    lines = text.splitlines()
    try:
        spans = spans_of(text, interpreter)
    except SyntaxError as error:
        analysis = Analysis(version, text, (), notes=[syntax_note(error, lines)], syntax_error=True)
        analysis.problems.append(f"line {error.lineno}: {error.msg}")
        return analysis
    files = candidate_test_files(path, text, root, settings.test_patterns)
    run = run_project(path, text, files)
    if run is None:  # no pytest in the project's interpreter: the caller reads the tests itself
        return None
    return fold_run(run, spans, files, text, version)[0]


def fold_run(run, spans: list[FunctionSpan], files, text: str, version: int | None) -> tuple[Analysis, dict[int, list]]:
    """The Analysis of one pytest session's results, and its tests grouped by owner (def line)."""
    analysis = Analysis(version, text, file_stamp(files), problems=list(run.problems))
    grouped: dict[int, list] = {}
    loose = []
    for test in run.ran:
        span = owner(test, spans)
        if span is None:
            loose.append(test)
        else:
            grouped.setdefault(span.def_line, []).append(test)
    runs = []
    for span in spans:
        tests = grouped.get(span.def_line)
        if not tests:
            continue
        suite = TestSuite(span.name, files=list(files))
        records = []
        for index, test in enumerate(tests):
            case = TestCase(test.nodeid, test.name, test.file, test.line, "pytest")
            suite.cases.append(case)
            records.append(fold(span, case, _Outcome(test.outcome, test.message, test.trace), f"t{index + 1}"))
        runs.append(FunctionRun(span, suite, records))
    analysis.add(runs)
    for nodeid, message, timed_out in run.collect_errors:  # a test file that cannot even be imported
        note = Note(0, "warning" if timed_out else "error", f"{nodeid} could not be collected: {message}"[:400])
        analysis.extra_notes.append(note)  # kept when later runs are added
        analysis.notes.append(note)
    failing = [t for t in loose if t.outcome != "pass"]
    for test in failing[:5]:
        analysis.problems.append(f"{test.nodeid} {test.outcome}: {test.message.splitlines()[0] if test.message else ''}"[:300])
    return analysis, grouped
