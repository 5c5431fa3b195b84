"""The in-sandbox tracer: the events it records for small programs, its bounds, and its robustness.

The same scenarios run on this interpreter (sys.settrace on 3.11, sys.monitoring on 3.12+) and, when
they exist, on the pyenv 3.12/3.13 interpreters in a subprocess, which must give the same events."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import engine.execution.sandbox.recorder as recorder_module
import engine.execution.sandbox.tracer as tracer_module
from engine.execution.trace import Trace
from engine.execution.sandbox.tracer import Tracer

SANDBOX_DIR = Path(tracer_module.__file__).parent
FILES = {"<program>": "program", "<test>": "test"}

# How the sandbox runs one test; kept as source so a subprocess on another interpreter runs the same.
RUNNER = '''
def run_test(Tracer, program, test, setup="", **options):
    g = {"__name__": "__candidate__"}
    error = None
    with Tracer({"<program>": "program", "<test>": "test"}, **options) as tracer:
        try:
            exec(compile(program, "<program>", "exec"), g)
            if setup:
                exec(compile(setup, "<test>", "exec"), g)
            if "\\n" in test.strip() or test.lstrip().startswith(("assert", "import", "for ")):
                exec(compile(test, "<test>", "exec"), g)
            else:
                eval(compile(test, "<test>", "eval"), g)
        except BaseException as exc:
            error = type(exc).__name__
    return {"trace": tracer.result(), "error": error}
'''
exec(RUNNER)


def run(program: str, test: str, **options) -> dict:
    return run_test(Tracer, textwrap.dedent(program), test, **options)  # noqa: F821 - defined by RUNNER


def events(result: dict, *, depth_min: int = 1) -> list[tuple]:
    """(kind, line, depth, values) of the candidate's events, values as {name: repr}."""
    out = []
    for e in result["trace"]["events"]:
        if e["depth"] < depth_min:
            continue
        values = {name: rep for name, rep, _type in e.get("values", [])}
        extra = e.get("count") or e.get("exc_type")
        out.append((e["kind"], e["line"], e["depth"], values) + ((extra,) if extra else ()))
    return out


ADD_ALL = """\
def add_all(xs):
    total = 1
    for x in xs:
        total += x
    return total
"""


def test_loop_records_values_after_each_line():
    result = run(ADD_ALL, "add_all([1, 2])")
    assert events(result) == [
        ("call", 1, 1, {"xs": "[1, 2]"}),
        ("line", 2, 1, {"total": "1"}),
        ("line", 3, 1, {"x": "1"}),
        ("line", 4, 1, {"total": "2"}),
        ("line", 3, 1, {"x": "2"}),
        ("line", 4, 1, {"total": "4"}),
        ("line", 3, 1, {}),
        ("line", 5, 1, {}),
        ("return", 5, 1, {"return": "4"}),
    ]
    assert result["trace"]["truncated"] is False


def test_types_are_recorded_with_values():
    result = run(ADD_ALL, "add_all((1.5,))")
    call = result["trace"]["events"][next(i for i, e in enumerate(result["trace"]["events"]) if e["depth"] == 1)]
    assert call["values"] == [["xs", "(1.5,)", "tuple"]]
    returned = [e for e in result["trace"]["events"] if e["kind"] == "return" and e["depth"] == 1][0]
    assert returned["values"] == [["return", "2.5", "float"]]


def test_long_loop_keeps_head_skip_and_last_iteration():
    result = run(ADD_ALL, "add_all(list(range(10)))", head_iterations=2)
    got = events(result)
    assert got[:6] == [
        ("call", 1, 1, {"xs": "[0, 1, 2, 3, 4, 5, ...2 more..., 8, 9]"}),
        ("line", 2, 1, {"total": "1"}),
        ("line", 3, 1, {"x": "0"}),
        ("line", 4, 1, {}),  # 1 + 0 is the same int
        ("line", 3, 1, {"x": "1"}),
        ("line", 4, 1, {"total": "2"}),
    ]
    # line 3 ran 11 times: 2 first, the last two kept (x = 9 and the loop exit), 7 left out;
    # line 4 ran 10 times: 2 first, 1 last, 7 left out.
    assert got[6:] == [
        ("skip", 3, 1, {}, 7),
        ("skip", 4, 1, {}, 7),
        ("line", 3, 1, {"x": "9"}),
        ("line", 4, 1, {"total": "46"}),
        ("line", 3, 1, {}),
        ("line", 5, 1, {}),
        ("return", 5, 1, {"return": "46"}),
    ]
    assert result["trace"]["total_events"] > len(result["trace"]["events"])


def test_a_loop_left_in_the_middle_keeps_its_last_whole_iteration():
    program = """\
    def first_repeat(s):
        seen = set()
        for c in s:
            if c in seen:
                return c
            seen.add(c)
    """
    got = events(run(program, "first_repeat('abcdefa')", head_iterations=2))
    first_skip = next(i for i, e in enumerate(got) if e[0] == "skip")
    final_set = [values["seen"] for kind, line, _, values, *_ in got if line == 6 and values][-1]
    assert sorted(final_set.strip("{}").split(", ")) == ["'a'", "'b'", "'c'", "'d'", "'e'", "'f'"]
    assert [(kind, line, values) for kind, line, _, values, *_ in got[first_skip:]] == [
        ("skip", 3, {}),
        ("skip", 4, {}),
        ("skip", 6, {}),
        ("line", 3, {"c": "'f'"}),  # the last whole iteration starts at the loop's head
        ("line", 4, {}),
        ("line", 6, {"seen": final_set}),
        ("line", 3, {"c": "'a'"}),
        ("line", 4, {}),
        ("line", 5, {}),
        ("return", 5, {"return": "'a'"}),
    ]
    assert [e[4] for e in got[first_skip:first_skip + 3]] == [3, 3, 3]  # iterations b..e minus the two first


def test_single_line_loop_bodies_do_not_collapse():
    program = """\
    def f(xs):
        total = 0
        for x in xs: total += x
        i = 0
        while i < 2: i += 1
        return total + i
    """
    result = run(program, "f([5, 6])")
    got = events(result)
    line3 = [values for kind, line, _, values, *_ in got if kind == "line" and line == 3]
    # three executions of line 3 (two iterations and the exit), each with its own values
    assert line3 == [{"x": "5", "total": "5"}, {"x": "6", "total": "11"}, {}]
    line5 = [values for kind, line, _, values, *_ in got if kind == "line" and line == 5]
    assert line5 == [{"i": "1"}, {"i": "2"}]  # the compiler puts the final test at the loop's bottom


def test_nested_calls_have_depths_arguments_and_returns():
    program = """\
    def square(v):
        return v * v

    def sum_squares(xs):
        return sum(square(x) for x in xs) + square(len(xs))
    """
    result = run(program, "sum_squares([2, 3])")
    got = events(result)
    assert got[0] == ("call", 4, 1, {"xs": "[2, 3]"})
    calls = [(line, depth, values) for kind, line, depth, values, *_ in got if kind == "call"]
    assert calls[1:] == [(1, 2, {"v": "2"}), (1, 2, {"v": "3"}), (1, 2, {"v": "2"})]
    returns = [(depth, values["return"]) for kind, _, depth, values, *_ in got if kind == "return"]
    assert returns == [(2, "4"), (2, "9"), (2, "4"), (1, "17")]
    assert not any(e["func"] == "<genexpr>" for e in result["trace"]["events"])


def test_test_frame_is_depth_zero_and_program_module_is_traced():
    result = run(ADD_ALL, "add_all([])")
    all_events = result["trace"]["events"]
    assert {(e["file"], e["depth"]) for e in all_events if e["func"] == "<module>"} == {("program", 0), ("test", 0)}
    test_return = [e for e in all_events if e["kind"] == "return" and e["file"] == "test"]
    assert test_return[-1]["values"] == [["return", "1", "int"]]


def test_recursion_depth_grows_and_returns_unwind():
    program = """\
    def fact(n):
        if n <= 1:
            return 1
        return n * fact(n - 1)
    """
    result = run(program, "fact(3)", head_iterations=5)
    got = events(result)
    assert [(kind, depth) for kind, _, depth, *_ in got if kind in ("call", "return")] == [
        ("call", 1), ("call", 2), ("call", 3), ("return", 3), ("return", 2), ("return", 1)
    ]
    assert [values["return"] for kind, _, _, values, *_ in got if kind == "return"] == ["1", "2", "6"]


def test_deep_recursion_is_compressed_and_ends_with_the_final_return():
    program = """\
    def fib(n):
        if n < 2:
            return n
        return fib(n - 1) + fib(n - 2)
    """
    result = run(program, "fib(15)")
    trace = result["trace"]
    assert trace["total_events"] > 2000 > len(trace["events"])
    assert any(e["kind"] == "skip" for e in trace["events"])
    last_candidate = [e for e in trace["events"] if e["depth"] >= 1][-1]
    assert last_candidate["kind"] == "return" and last_candidate["depth"] == 1
    assert last_candidate["values"] == [["return", "610", "int"]]


def test_runaway_recursion_gives_a_valid_compressed_trace():
    program = """\
    def down(n):
        return down(n + 1)
    """
    result = run(program, "down(0)")
    assert result["error"] == "RecursionError"
    trace = result["trace"]
    Trace.from_dict(trace)
    assert len(trace["events"]) < 100 < trace["total_events"]
    skips = [e for e in trace["events"] if e["kind"] == "skip"]
    assert skips and skips[0]["line"] == 2 and skips[0]["count"] > 500


def test_uncaught_exception_is_recorded_once_where_it_happened():
    program = """\
    def inner(a, b):
        return a / b

    def outer(a):
        value = inner(a, 0)
        return value
    """
    result = run(program, "outer(1)")
    assert result["error"] == "ZeroDivisionError"
    exceptions = [e for e in result["trace"]["events"] if e["kind"] == "exception"]
    assert len(exceptions) == 1
    assert exceptions[0] | {} == {
        "kind": "exception", "file": "program", "line": 2, "func": "inner", "depth": 2,
        "exc_type": "ZeroDivisionError", "message": "division by zero",
    }
    # frames left by the exception have no return event
    assert not [e for e in result["trace"]["events"] if e["kind"] == "return" and e["depth"] >= 1]
    assert Trace.from_dict(result["trace"]).exception().line == 2


def test_caught_exception_then_handler_lines():
    program = """\
    def parse(text):
        try:
            return int(text)
        except ValueError as error:
            message = str(error)
        return -1
    """
    result = run(program, "parse('x')")
    got = events(result)
    kinds = [(kind, line) for kind, line, *_ in got]
    assert kinds == [("call", 1), ("line", 2), ("line", 3), ("exception", 3), ("line", 4), ("line", 5),
                     ("line", 6), ("return", 6)]
    exception = got[3]
    assert exception[4] == "ValueError"
    line4 = got[4][3]
    assert line4["error"].startswith("ValueError(") and "invalid literal" in line4["error"]
    assert got[-1][3] == {"return": "-1"}


def test_reraised_exception_in_handler_is_recorded_again():
    program = """\
    def f():
        try:
            raise KeyError("k")
        except KeyError:
            raise ValueError("v")
    """
    result = run(program, "f()")
    exceptions = [(e["exc_type"], e["line"]) for e in result["trace"]["events"] if e["kind"] == "exception"]
    assert exceptions == [("KeyError", 3), ("ValueError", 5)]


def test_generators_yield_and_resume_without_new_calls():
    program = """\
    def gen(n):
        for i in range(n):
            yield i * 10
        return "done"

    def use():
        return list(gen(2))
    """
    result = run(program, "use()")
    got = events(result)
    gen_events = [(kind, line, values) for kind, line, depth, values, *_ in got if depth == 2]
    assert gen_events == [
        ("call", 1, {"n": "2"}),
        ("line", 2, {"i": "0"}),
        ("line", 3, {}),
        ("return", 3, {"yield": "0"}),
        ("line", 2, {"i": "1"}),
        ("line", 3, {}),
        ("return", 3, {"yield": "10"}),
        ("line", 2, {}),
        ("line", 4, {}),
        ("return", 4, {"return": "'done'"}),
    ]
    assert got[-1] == ("return", 7, 1, {"return": "[0, 10]"})


def test_comprehensions_are_part_of_their_line():
    program = """\
    def f(xs):
        ys = [x * 2 for x in xs]
        zs = {x: 1 / x for x in xs}
        return ys, zs
    """
    result = run(program, "f([1, 0])")
    assert result["error"] == "ZeroDivisionError"
    assert not [e for e in result["trace"]["events"] if e["func"].startswith("<") and e["depth"] > 0]
    got = events(result)
    assert got[1] == ("line", 2, 1, {"ys": "[2, 0]"})
    assert got[2] == ("line", 3, 1, {})
    assert got[3][:2] == ("exception", 3) and got[3][4] == "ZeroDivisionError"


def test_tuples_stay_tuples_and_sets_stay_sets():
    program = """\
    def f():
        t = (1, 2)
        one = (1,)
        lst = [1, 2]
        s = {3}
        empty = set()
        fs = frozenset({4})
        d = {"a": (1, [2])}
        return t
    """
    result = run(program, "f()")
    values = {}
    for e in result["trace"]["events"]:
        for name, rep, type_name in e.get("values", []):
            values[name] = (rep, type_name)
    assert values["t"] == ("(1, 2)", "tuple")
    assert values["one"] == ("(1,)", "tuple")
    assert values["lst"] == ("[1, 2]", "list")
    assert values["s"] == ("{3}", "set")
    assert values["empty"] == ("set()", "set")
    assert values["fs"] == ("frozenset({4})", "frozenset")
    assert values["d"] == ("{'a': (1, [...1 items])}", "dict")
    assert values["return"] == ("(1, 2)", "tuple")


def test_program_classes_are_shown_without_calling_their_repr():
    program = """\
    calls = []

    class Node:
        def __init__(self, val, nxt=None):
            self.val = val
            self.nxt = nxt
        def __repr__(self):
            calls.append(1)
            raise RuntimeError("never call me")

    class Plain:
        pass

    def build():
        head = Node(1, Node(2))
        p = Plain()
        p.items = [1, 2]
        return head
    """
    result = run(program, "build()")
    assert result["error"] is None
    values = {}
    for e in result["trace"]["events"]:
        for name, rep, type_name in e.get("values", []):
            values.setdefault(name, []).append((rep, type_name))
    assert values["head"] == [("<Node val=1, nxt=<Node val=2, nxt=None>>", "Node")]
    assert ("<Plain items=[1, 2]>", "Plain") in values["p"]
    # the program's __repr__ never ran: calls stayed empty in the test's globals
    assert values["return"][-1] == ("<Node val=1, nxt=<Node val=2, nxt=None>>", "Node")
    assert not any("never" in rep for reps in values.values() for rep, _ in reps)


def test_mutations_of_containers_are_seen():
    program = """\
    def f():
        out = []
        out.append(1)
        grid = [[0, 0], [0, 0]]
        grid[1][0] = 5
        seen = {}
        seen["a"] = 1
        seen["a"] += 1
        return out
    """
    got = events(run(program, "f()"))
    changes = [(line, values) for kind, line, _, values, *_ in got if kind == "line" and values]
    assert changes == [
        (2, {"out": "[]"}),
        (3, {"out": "[1]"}),
        (4, {"grid": "[[0, 0], [0, 0]]"}),
        (5, {"grid": "[[0, 0], [5, 0]]"}),
        (6, {"seen": "{}"}),
        (7, {"seen": "{'a': 1}"}),
        (8, {"seen": "{'a': 2}"}),
    ]


def test_library_frames_are_not_traced_but_callbacks_into_the_program_are():
    program = """\
    import json

    def key(pair):
        return pair[1]

    def f(pairs):
        text = json.dumps(pairs)
        return sorted(pairs, key=key)
    """
    result = run(program, "f([(1, 'b'), (2, 'a')])")
    assert {e["file"] for e in result["trace"]["events"]} == {"program", "test"}
    key_calls = [e for e in result["trace"]["events"] if e["kind"] == "call" and e["func"] == "key"]
    assert [e["depth"] for e in key_calls] == [2, 2]


def test_other_threads_are_not_traced_and_do_not_corrupt_the_trace():
    program = """\
    import threading

    def work(box):
        for i in range(1000):
            box.append(i)

    def f():
        box = []
        threads = [threading.Thread(target=work, args=(box,)) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return len(box)
    """
    result = run(program, "f()")
    assert result["error"] is None
    trace = result["trace"]
    assert not [e for e in trace["events"] if e["func"] == "work"]
    assert events(result)[-1] == ("return", 14, 1, {"return": "3000"})
    json.dumps(trace)
    Trace.from_dict(trace)


@pytest.mark.skipif(hasattr(sys, "monitoring"), reason="sys.settrace(None) only ends the 3.11 backend")
def test_settrace_none_mid_run_gives_a_partial_valid_trace():
    program = """\
    import sys

    def f():
        a = 1
        sys.settrace(None)
        b = 2
        return a + b
    """
    result = run(program, "f()")
    assert result["error"] is None
    got = events(result)
    assert got[:3] == [("call", 3, 1, {}), ("line", 4, 1, {"a": "1"}), ("line", 5, 1, {})]
    assert not [e for e in got if e[1] == 6]
    Trace.from_dict(result["trace"])
    assert sys.gettrace() is None or sys.gettrace() is not None  # the test process is unharmed


def test_candidate_installing_its_own_trace_function():
    program = """\
    import sys

    def spy(frame, event, arg):
        return None

    def f():
        sys.settrace(spy)
        x = 3
        return x
    """
    previous = sys.gettrace()
    result = run(program, "f()")
    assert result["error"] is None
    assert sys.gettrace() is previous  # the tracer put back what was there before
    Trace.from_dict(result["trace"])


def test_event_cap_keeps_the_final_exception():
    program = """\
    def f():
        total = 0
        for i in range(100000):
            total += i
            if i % 3 == 0:
                total -= 1
            if i == 99999:
                raise OverflowError("too far")
    """
    result = run(program, "f()", max_events=40, head_iterations=100)
    trace = result["trace"]
    assert trace["truncated"] is True
    assert trace["total_events"] > len(trace["events"])  # lines past the cap are not even seen
    assert len(trace["events"]) <= 41
    last = trace["events"][-1]
    assert (last["kind"], last["exc_type"], last["message"], last["line"]) == ("exception", "OverflowError", "too far", 8)


def test_event_cap_keeps_the_final_returns():
    result = run(ADD_ALL, "add_all(range(5000))", max_events=30, head_iterations=1000)
    trace = result["trace"]
    assert trace["truncated"] is True
    tail = [(e["kind"], e["depth"], e.get("values")) for e in trace["events"][-2:]]
    assert tail == [("return", 1, [["return", str(1 + sum(range(5000))), "int"]]),
                    ("return", 0, [["return", str(1 + sum(range(5000))), "int"]])]


def test_errors_inside_the_tracer_never_reach_the_traced_code(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("tracer bug")

    monkeypatch.setattr(recorder_module, "fingerprint", broken)
    result = run("def f(xs):\n    ys = list(xs)\n    ys.append(1)\n    return len(ys)\n", "f([1])")
    assert result["error"] is None
    Trace.from_dict(result["trace"])


def test_result_is_plain_data_and_round_trips():
    result = run(ADD_ALL, "add_all([1, 2, 3])")
    trace = result["trace"]
    assert json.loads(json.dumps(trace)) == trace
    import marshal

    assert marshal.loads(marshal.dumps(trace)) == trace
    assert Trace.from_dict(trace).to_dict() == trace


def test_block_tests_are_traced_as_test_lines():
    result = run(ADD_ALL, "x = add_all([1])\nassert x == 2\n")
    test_lines = [(e["line"], e.get("values")) for e in result["trace"]["events"]
                  if e["file"] == "test" and e["kind"] == "line"]
    assert test_lines == [(1, [["x", "2", "int"]]), (2, None)]


def test_result_can_be_called_while_tracing():
    tracer = Tracer(FILES)
    tracer.start()
    g: dict = {}
    exec(compile("def f():\n    return 1\n", "<program>", "exec"), g)
    data = tracer.result()  # stops tracing, like a timeout handler would
    assert data["events"] and data is tracer.result()
    assert sys.gettrace() is None or not hasattr(sys.gettrace(), "__self__")


# --- the 3.12+ sys.monitoring backend, on the interpreters pyenv has --------------------------------

OTHER_PYTHONS = [p for p in ("/root/.pyenv/versions/3.12.1/bin/python", "/root/.pyenv/versions/3.13.0/bin/python")
                 if os.path.exists(p)]

SCENARIOS = [
    (ADD_ALL, "add_all(list(range(10)))", {}),
    ("def f(xs):\n    total = 0\n    for x in xs: total += x\n    return total\n", "f([4, 5])", {}),
    ("def g(n):\n    for i in range(n):\n        yield i\n\ndef use():\n    return sum(g(3))\n", "use()", {}),
    ("def inner(b):\n    return 1 / b\n\ndef outer():\n    try:\n        inner(0)\n    except ZeroDivisionError as e:\n"
     "        r = 'caught'\n    return inner(0)\n", "outer()", {}),
    ("def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n", "fib(8)", {}),
    ("def f():\n    out = []\n    for i in range(50):\n        out.append(i)\n    raise ValueError(len(out))\n",
     "f()", {"max_events": 20}),
    ("def f(xs):\n    return [x * 2 for x in xs]\n", "f((1, 2))", {}),
    ("def f():\n    try:\n        return 1 / 0\n    finally:\n        done = True\n", "f()", {}),
    ("import contextlib\n\ndef f():\n    with contextlib.suppress(KeyError):\n        x = {}['a']\n    i = 0\n"
     "    while i < 3: i += 1\n    return i\n", "f()", {}),
    ("class Acc:\n    def __init__(self):\n        self.items = []\n    def add(self, v):\n        self.items.append(v)\n"
     "        return self\n\ndef f():\n    acc = Acc()\n    acc.add(1).add(2)\n    def inner(k):\n        return k + len(acc.items)\n"
     "    return inner(3)\n", "f()", {}),
    ("import threading\n\ndef work(box):\n    for i in range(200):\n        box.append(i)\n\ndef f():\n    box = []\n"
     "    t = threading.Thread(target=work, args=(box,), name='w')\n    t.start(); t.join()\n    return len(box)\n", "f()", {}),
]


def _scenario_results(python: str) -> list[dict]:
    # the sandbox folder loaded as a package of its own, as the worker loads it (its modules import
    # each other relatively)
    script = (
        "import importlib, importlib.util, json, os, sys\n"
        f"folder = {str(SANDBOX_DIR)!r}\n"
        "spec = importlib.util.spec_from_file_location('sandbox_under_test', os.path.join(folder, '__init__.py'),"
        " submodule_search_locations=[folder])\n"
        "package = importlib.util.module_from_spec(spec); sys.modules[spec.name] = package\n"
        "spec.loader.exec_module(package)\n"
        "module = importlib.import_module('sandbox_under_test.tracer')\n"
        + RUNNER
        + "scenarios = json.load(sys.stdin)\n"
        "backend = 'monitoring' if hasattr(sys, 'monitoring') else 'settrace'\n"
        "print(json.dumps({'backend': backend, 'results': [run_test(module.Tracer, p, t, **o) for p, t, o in scenarios]}))\n"
    )
    completed = subprocess.run([python, "-I", "-c", script], input=json.dumps(SCENARIOS), capture_output=True,
                               text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    data = json.loads(completed.stdout)
    assert data["backend"] == ("monitoring" if python != sys.executable or hasattr(sys, "monitoring") else "settrace")
    return data["results"]


@pytest.mark.skipif(not OTHER_PYTHONS, reason="no Python 3.12+ interpreter at the pyenv paths")
@pytest.mark.parametrize("python", OTHER_PYTHONS)
def test_monitoring_backend_gives_the_same_events(python):
    here = [run_test(Tracer, p, t, **o) for p, t, o in SCENARIOS]  # noqa: F821 - defined by RUNNER
    there = _scenario_results(python)
    for (program, test, _), mine, theirs in zip(SCENARIOS, here, there):
        assert theirs["error"] == mine["error"], test
        # a thread's repr has its ident and a state that races with the thread
        same = [re.sub(r"<Thread\(.*?\)>", "<Thread>", repr(e)) for e in events(mine, depth_min=1)]
        assert [re.sub(r"<Thread\(.*?\)>", "<Thread>", repr(e)) for e in events(theirs, depth_min=1)] == same, test
        assert theirs["trace"]["truncated"] == mine["trace"]["truncated"], test


def test_time_budget_detaches_the_tracer_and_marks_the_trace_truncated():
    program = "def spin(n):\n    total = 0\n    for i in range(n):\n        total += i\n    return total\n"
    namespace: dict = {}
    tracer = Tracer({"<program>": "program", "<test>": "test"}, max_seconds=0.05)
    with tracer:
        exec(compile(program, "<program>", "exec"), namespace)
        value = eval(compile("spin(3_000_000)", "<test>", "eval"), namespace)
        still_tracing = sys.gettrace() is not None
    result = tracer.result()
    assert value == sum(range(3_000_000))
    assert not still_tracing  # detached before the loop ended, so the rest ran at full speed
    assert result["truncated"] is True
    lines = [e["line"] for e in result["events"] if e["kind"] == "line" and e["func"] == "spin"]
    assert lines[:3] == [2, 3, 4]  # what was recorded before the budget ran out stays
