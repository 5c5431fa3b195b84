"""Folding traces into per-line notes and hovers (the data behind diagnostics), on real traces
from engine/execution/sandbox/tracer.py run in this process."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

from engine.project.testfile import TestCase
from engine.execution.trace import Trace
from engine.execution.sandbox.tracer import Tracer
from lsp_server.analysis import analyse
from lsp_server.diagnostics import fold_all, functions_in, notes_for_function, summarise_values
from lsp_server.hover import hover_markdown
from lsp_server.settings import Settings

PROGRAM = textwrap.dedent('''\
    def total(xs):
        """Sum."""
        t = 0
        for x in xs:
            t += x
        return t

    def ratio(a, b):
        q = a / b
        return q
''')


@dataclass
class Result:
    test: str
    outcome: str
    message: str
    trace: Trace


@dataclass
class Job:
    tests: list


def run(program: str, tests: list[str], setup: str = "") -> list[Result]:
    out = []
    for test in tests:
        namespace: dict = {}
        exec(compile(program, "<program>", "exec"), namespace)
        exec(setup, namespace)
        tracer = Tracer({"<program>": "program", "<test>": "test"})
        outcome, message = "pass", ""
        try:
            with tracer:
                exec(compile(test, "<test>", "exec"), namespace)
        except AssertionError:
            outcome, message = "fail", "assertion failed"
        except Exception as error:
            outcome, message = "error", f"{type(error).__name__}: {error}"
        out.append(Result(test, outcome, message, Trace.from_dict(tracer.result())))
    return out


def case(source: str, label: str) -> TestCase:
    return TestCase(source, label, "test_m.py", 1, "assert")


def spans():
    return {s.name: s for s in functions_in(PROGRAM)}


def test_functions_in_a_module():
    found = spans()
    assert (found["total"].def_line, found["total"].end_line) == (0, 5)
    assert found["total"].docstring == "Sum." and found["total"].docstring_line == 2
    assert (found["ratio"].def_line, found["ratio"].end_line) == (7, 9)


def test_each_line_gets_each_tests_values_and_a_failure_gets_an_error_on_the_def_line():
    cases = [case("assert total([1, 2, 3]) == 6", "test_small"), case("assert total([4, 5]) == 10", "test_wrong")]
    records = fold_all(spans()["total"], cases, run(PROGRAM, [c.source for c in cases]))
    notes = notes_for_function(spans()["total"], records, PROGRAM.splitlines())
    by_line = {(n.line, n.severity): n.message for n in notes}
    assert by_line[(2, "value")] == "t1: t=0 (int) | t2: t=0 (int)"
    assert by_line[(4, "value")] == "t1: t=1, 3, 6 (int) 3× | t2: t=4, 9 (int) 2×"
    assert by_line[(5, "value")] == "t1: returns 6 (int) | t2: returns 9 (int)"
    assert "t1: x=1, 2, 3 (int)" in by_line[(3, "value")]
    error = by_line[(0, "error")]
    assert error.startswith("t2 (test_wrong) failed: assertion failed") and "returned 9 (int)" in error
    assert (1, "value") not in by_line  # the docstring line
    # values off: only the failure remains
    quiet = notes_for_function(spans()["total"], records, PROGRAM.splitlines(), values=False)
    assert [n.severity for n in quiet] == ["error"]


def test_an_exception_is_reported_on_the_line_that_raised():
    cases = [case("assert ratio(1, 0) == 0", "test_zero"), case("assert ratio(4, 2) == 2", "test_ok")]
    records = fold_all(spans()["ratio"], cases, run(PROGRAM, [c.source for c in cases]))
    notes = notes_for_function(spans()["ratio"], records, PROGRAM.splitlines())
    errors = [n for n in notes if n.severity == "error"]
    assert len(errors) == 1 and errors[0].line == 8
    assert errors[0].message == "t1 (test_zero) raised here: ZeroDivisionError: division by zero"
    assert (errors[0].start, errors[0].end) == (4, len("    q = a / b"))
    info = {n.line: n.message for n in notes if n.severity == "value"}
    assert info[8] == "t1: raises ZeroDivisionError | t2: q=2.0 (float)"


def test_summaries_shorten_long_runs():
    values = [(str(i), "int") for i in range(10)]
    assert summarise_values(values) == "0, 1, 2, …, 9 (int)"
    assert summarise_values([("1", "int"), ("1", "int")]) == "1 (int)"
    assert summarise_values([("1", "int"), ("'a'", "str")]) == "1, 'a' (int/str)"


def test_hover_shows_before_after_call_return_and_outcome():
    cases = [case("assert total([1, 2, 3]) == 6", "test_small"), case("assert total([4, 5]) == 10", "test_wrong")]
    records = fold_all(spans()["total"], cases, run(PROGRAM, [c.source for c in cases]))
    markdown = hover_markdown(spans()["total"], 4, PROGRAM.splitlines()[4], records)
    assert "| t1 test_small | 3× | `t=0` | `t=1, 3, 6 (int)` |" in markdown
    assert "| t1 | `total(xs=[1, 2, 3])` | `6 (int)` | ✅ pass |" in markdown
    assert "| t2 | `total(xs=[4, 5])` | `9 (int)` | ❌ fail: assertion failed |" in markdown
    not_run = hover_markdown(spans()["ratio"], 8, "    q = a / b", fold_all(spans()["ratio"], cases[:1], run(PROGRAM, [cases[0].source])))
    assert "| t1 test_small | not run |" in not_run


def test_analyse_runs_every_tested_function_and_reports_syntax_errors(tmp_path):
    module = tmp_path / "m.py"
    source = PROGRAM + "\ndef untested():\n    return 1\n"
    module.write_text(source)
    (tmp_path / "test_m.py").write_text("from m import total, ratio\nassert total([1]) == 1\nassert ratio(1, 0) == 0\n")

    def run_tests(jobs):
        return [Job(run(program, tests, setup)) for program, tests, setup in jobs]

    analysis = analyse(source, 3, str(module), str(tmp_path), Settings(), lambda p: open(p).read(), run_tests)
    assert [r.span.name for r in analysis.runs] == ["total", "ratio"]
    assert (analysis.passed, analysis.total) == (1, 2)
    assert analysis.run_at(4).span.name == "total" and analysis.run_at(11) is None
    assert any(n.severity == "error" and n.line == 8 for n in analysis.notes)
    assert analysis.stamp[0][0] == str(tmp_path / "test_m.py")

    broken = analyse("def f(:\n", 1, str(module), str(tmp_path), Settings(), lambda p: None, run_tests)
    assert broken.syntax_error and broken.notes[0].line == 0 and "not valid Python" in broken.notes[0].message
