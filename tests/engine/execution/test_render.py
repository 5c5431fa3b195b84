"""The trace renderer: the text the model reads, its budget, and the per-line summary."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Any

import pytest

from engine.execution.render import line_summary, render_blocks, render_test
from engine.execution.trace import Trace, TraceEvent, Value
from engine.execution.sandbox.tracer import Tracer


@dataclass
class Result:  # what render_test needs from engine.execution.executor.TestResult
    test: str
    outcome: str
    message: str
    trace: Any


def traced(program: str, test: str, **options) -> dict:
    """Run a test like the sandbox does and return the trace dict."""
    g: dict = {"__name__": "__candidate__"}
    with Tracer({"<program>": "program", "<test>": "test"}, **options) as tracer:
        try:
            exec(compile(program, "<program>", "exec"), g)
            exec(compile(test, "<test>", "exec"), g)
        except Exception:
            pass
    return tracer.result()


ADD_ALL = textwrap.dedent("""\
    def add_all(xs):
        total = 1
        for x in xs:
            total += x
        return total
    """)

DIVIDE = textwrap.dedent("""\
    def divide(a, b):
        return a / b

    def mean(xs):
        total = sum(xs)
        return divide(total, len(xs))
    """)


def add_all_result(n: int) -> Result:
    test = f"assert add_all({list(range(1, n + 1))}) == {sum(range(1, n + 1))}"
    return Result(test, "fail", f"returned {sum(range(1, n + 1)) + 1}, expected {sum(range(1, n + 1))}",
                  traced(ADD_ALL, test))


def test_a_failing_test_reads_like_the_example():
    text = render_test(ADD_ALL, add_all_result(2))
    assert text == textwrap.dedent("""\
        # test: assert add_all([1, 2]) == 3
        # outcome: fail: returned 4, expected 3
        call add_all(xs=[1, 2])
          L2  total = 1  # total = 1 (int)
          L3  for x in xs:  # x = 1 (int)
          L4      total += x  # total = 2 (int)
          L3  for x in xs:  # x = 2 (int)
          L4      total += x  # total = 4 (int)
          L3  for x in xs:
          L5  return total  # return 4 (int)""")


def test_long_loops_show_first_iterations_a_count_and_the_last_one():
    text = render_test(ADD_ALL, add_all_result(10))
    lines = text.splitlines()
    assert "  ... 6 more iteration(s) of L3-L4 ..." in lines
    skip = lines.index("  ... 6 more iteration(s) of L3-L4 ...")
    assert lines[skip - 1] == "  L4      total += x  # total = 7 (int)"
    assert lines[skip + 1] == "  L3  for x in xs:  # x = 10 (int)"
    assert lines[-1] == "  L5  return total  # return 56 (int)"


def test_nested_calls_are_indented_and_the_error_is_shown():
    test = "assert mean([]) == 0"
    result = Result(test, "error", "ZeroDivisionError: division by zero (program line 2)", traced(DIVIDE, test))
    text = render_test(DIVIDE, result)
    assert text == textwrap.dedent("""\
        # test: assert mean([]) == 0
        # outcome: error: ZeroDivisionError: division by zero (program line 2)
        call mean(xs=[])
          L5  total = sum(xs)  # total = 0 (int)
          L6  return divide(total, len(xs))
          call divide(a=0, b=0)
            L2  return a / b
            !! ZeroDivisionError: division by zero (line 2)""")


def test_single_line_loop_bodies_are_rendered_per_iteration():
    program = "def f(xs):\n    t = 0\n    for x in xs: t += x\n    return t\n"
    text = render_test(program, Result("assert f([1, 2]) == 3", "pass", "", traced(program, "assert f([1, 2]) == 3")))
    assert "L3  for x in xs: t += x  # t = 1 (int), x = 1 (int)" in text
    assert "L3  for x in xs: t += x  # t = 3 (int), x = 2 (int)" in text


def test_block_tests_show_their_own_lines():
    test = "value = add_all([5])\nassert value == 5"
    text = render_test(ADD_ALL, Result(test, "fail", "AssertionError (test line 2)", traced(ADD_ALL, test)))
    lines = text.splitlines()
    assert lines[:3] == ["# test: value = add_all([5])", "#       assert value == 5",
                         "# outcome: fail: AssertionError (test line 2)"]
    assert "  T1  value = add_all([5])  # value = 6 (int)" in lines
    # a line comes before the calls it makes, with the values it left behind
    assert lines.index("  T1  value = add_all([5])  # value = 6 (int)") + 1 == lines.index("call add_all(xs=[5])")
    assert "!! AssertionError (test line 2)" in text


def test_a_broken_program_module_is_shown():
    program = "import math\nVALUE = undefined_name\ndef f():\n    return 1\n"
    test = "assert f() == 1"
    text = render_test(program, Result(test, "error", "NameError", traced(program, test)))
    assert "!! NameError: name 'undefined_name' is not defined (line 2)" in text


def test_no_trace_gives_the_header():
    text = render_test(ADD_ALL, Result("assert add_all([1]) == 1", "timeout", "timed out after 5 s", None))
    assert text == "# test: assert add_all([1]) == 1\n# outcome: timeout: timed out after 5 s"


def test_trace_objects_and_dicts_render_the_same():
    result = add_all_result(3)
    as_object = Result(result.test, result.outcome, result.message, Trace.from_dict(result.trace))
    assert render_test(ADD_ALL, as_object) == render_test(ADD_ALL, result)


def test_cut_traces_say_so():
    test = "assert add_all(range(100)) == 0"
    trace = traced(ADD_ALL, test, max_events=10, head_iterations=50)
    text = render_test(ADD_ALL, Result(test, "fail", "returned 4951, expected 0", trace))
    lines = text.splitlines()
    assert lines[-1] == "... trace cut: too many events ..."
    assert lines[-2] == "  => return 4951 (int)"  # the final return survives the cap


# --- budgets -------------------------------------------------------------------------------------

BIG = textwrap.dedent("""\
    def collatz(n):
        steps = []
        while n != 1:
            if n % 2 == 0:
                n = n // 2
            else:
                n = 3 * n + 1
            steps.append(n)
        return helper(steps)

    def helper(steps):
        longest = max(steps)
        return longest / (len(steps) - len(steps))
    """)


@pytest.fixture(scope="module")
def big_result() -> Result:
    test = "assert collatz(27) == 9232"
    return Result(test, "error", "ZeroDivisionError: division by zero (program line 13)", traced(BIG, test))


def test_every_budget_is_respected_and_the_error_kept_while_it_fits(big_result):
    full = render_test(BIG, big_result, budget=10**6)
    error = "!! ZeroDivisionError: division by zero (line 13)"
    assert error in full
    header = "# test: assert collatz(27) == 9232\n# outcome: error: ZeroDivisionError: division by zero (program line 13)"
    for budget in list(range(0, 400, 7)) + list(range(400, len(full) + 50, 41)):
        text = render_test(BIG, big_result, budget=budget)
        assert len(text) <= budget, budget
        if budget >= len(header) + 1 + len(error):
            assert text.startswith(header), budget
            assert error in text, budget


def test_degradation_order_iterations_then_types_then_values_then_lines(big_result):
    full = render_test(BIG, big_result, budget=10**6)
    skips = [line for line in full.splitlines() if "more iteration(s)" in line]
    assert skips  # the loop ran 111 times

    def features(text: str) -> dict:
        first_iterations = sum(1 for line in text.splitlines() if "L4      if n % 2 == 0:" in line)
        return {
            "iterations": first_iterations,
            "types": "(int)" in text,
            "values": "# n = " in text or "# steps = " in text,
            "omitted": "line(s) omitted" in text,
        }

    seen = []
    for budget in range(len(full), 150, -5):
        state = features(render_test(BIG, big_result, budget=budget))
        if not seen or seen[-1] != state:
            seen.append(state)
    # iterations shrink while types and values are still there
    assert seen[0]["types"] and seen[0]["values"] and not seen[0]["omitted"]
    iterations_with_types = [s["iterations"] for s in seen if s["types"]]
    assert len(iterations_with_types) >= 3  # fewer first iterations, twice, before anything else goes
    assert iterations_with_types == sorted(iterations_with_types, reverse=True)
    # then types go, then values, and only then lines
    order = [(s["types"], s["values"], s["omitted"]) for s in seen]
    assert order.index((False, True, False)) < order.index((False, False, False)) < order.index((False, False, True))


def test_tiny_budgets_shorten_the_header_but_keep_every_part(big_result):
    text = render_test(BIG, big_result, budget=90)
    assert len(text) <= 90
    lines = text.splitlines()
    assert lines[0].startswith("# test: assert co") and lines[1].startswith("# outcome: error")
    assert lines[-1].startswith("!! ZeroDivision")


def test_blocks_share_one_budget_fairly(big_result):
    small = add_all_result(1)
    small_text = render_test(ADD_ALL, small)
    blocks = [(ADD_ALL, small), (BIG, big_result), (BIG, big_result)]
    for budget in (300, 600, 1200, 3000):
        text = render_blocks(blocks, budget=budget)
        assert len(text) <= budget
        parts = text.split("\n\n")
        assert len(parts) == 3
        assert all(part.startswith("# test:") for part in parts)
        if budget >= 3 * len(small_text) + 4:
            assert parts[0] == small_text  # a small block gets all it needs
            assert abs(len(parts[1]) - len(parts[2])) <= 5  # the others split the rest evenly
    assert render_blocks([], 100) == ""


# --- the per-line summary --------------------------------------------------------------------------

def test_line_summary_gives_last_values_per_line():
    summary = line_summary(ADD_ALL, add_all_result(3).trace)
    assert summary[1] == [Value("xs", "[1, 2, 3]", "list")]
    assert summary[2] == [Value("total", "1", "int")]
    assert summary[3] == [Value("x", "3", "int")]
    assert summary[4] == [Value("total", "7", "int")]
    assert summary[5] == [Value("return", "7", "int")]


def test_line_summary_reports_exceptions():
    trace = traced(DIVIDE, "mean([])")
    summary = line_summary(DIVIDE, trace)
    assert Value("exception", "division by zero", "ZeroDivisionError") in summary[2]
    assert line_summary(DIVIDE, None) == {}


def test_hand_built_trace_with_skips_from_the_tracer():
    events = [
        TraceEvent("call", "program", 1, "f", 1, (Value("n", "3", "int"),)),
        TraceEvent("line", "program", 2, "f", 1, (Value("i", "0", "int"),)),
        TraceEvent("skip", "program", 2, "f", 1, count=40),
        TraceEvent("line", "program", 2, "f", 1, (Value("i", "41", "int"),)),
        TraceEvent("return", "program", 3, "f", 1, (Value("return", "None", "NoneType"),)),
    ]
    program = "def f(n):\n    for i in range(n): pass\n    return None\n"
    text = render_test(program, Result("f(3)", "pass", "", Trace(events, total_events=44)))
    assert text.splitlines()[2:] == [
        "call f(n=3)",
        "  L2  for i in range(n): pass  # i = 0 (int)",
        "  ... 40 more iteration(s) of L2 ...",
        "  L2  for i in range(n): pass  # i = 41 (int)",
        "  => return None (NoneType)",
    ]


def test_a_timeout_hides_the_sandbox_interruption_but_keeps_the_loop():
    events = [
        TraceEvent("call", "program", 1, "spin", 1, (Value("n", "1", "int"),)),
        TraceEvent("line", "program", 2, "spin", 1),
        TraceEvent("line", "program", 3, "spin", 1, (Value("n", "2", "int"),)),
        TraceEvent("skip", "program", 2, "spin", 1, count=9000),
        TraceEvent("skip", "program", 3, "spin", 1, count=9000),
        TraceEvent("line", "program", 2, "spin", 1),
        TraceEvent("exception", "program", 2, "spin", 1, exc_type="_SoftTimeout"),
    ]
    program = "def spin(n):\n    while n > 0:\n        n += 1\n"
    result = Result("assert spin(1) == 0", "timeout", "timed out after 1 s", Trace(events, total_events=18004))
    text = render_test(program, result)
    assert "_SoftTimeout" not in text
    assert text.splitlines()[-2:] == ["  ... 9000 more iteration(s) of L2-L3 ...", "  L2  while n > 0:"]
    errored = Result(result.test, "error", "RuntimeError", result.trace)
    assert "!! _SoftTimeout (line 2)" in render_test(program, errored)  # other outcomes keep it
