"""Splitting asserts into a host-side skeleton and sandbox leaves, decoding values, judging."""

import math

import pytest

from engine.execution import verdict
from engine.execution.executor import Job
from engine.execution.verdict import Leaf, decode, judge_assert, judge_block, plan_test, top_level_names


def value(v):
    """The JSON form the sandbox sends for a plain value (mirror of sandbox_worker's encoder)."""
    if v is None:
        return ["n"]
    if isinstance(v, bool):
        return ["b", v]
    if isinstance(v, int):
        return ["i", hex(v)]
    if isinstance(v, float):
        return ["f", v.hex()]
    if isinstance(v, complex):
        return ["c", v.real.hex(), v.imag.hex()]
    if isinstance(v, str):
        return ["s", v]
    if isinstance(v, bytes):
        return ["y", v.hex()]
    if isinstance(v, dict):
        return ["d", [[value(k), value(x)] for k, x in v.items()]]
    tag = {list: "l", tuple: "t", set: "S", frozenset: "F"}[type(v)]
    return [tag, [value(x) for x in v]]


def judge(test, *leaf_values, shadowed=frozenset()):
    plan = plan_test(test, shadowed)
    assert plan.kind == "assert", plan
    return judge_assert(plan, [["value", value(v)] for v in leaf_values])


@pytest.mark.parametrize(
    "test, leaves",
    [
        ("assert f(1) == 2", ["f(1)"]),
        ("assert set(f(x)) == set(y)", ["f(x)", "y"]),
        ("assert set(f([1, 2])) == set([2, 1])", ["f([1, 2])"]),
        ("assert math.isclose(f(1), 2.0, rel_tol=0.001)", ["f(1)"]),
        ("assert f(x)", ["f(x)"]),
        ("assert not f(x)", ["f(x)"]),
        ("assert f(x) == (1, 2)", ["f(x)"]),
        ("assert f(1) == -1", ["f(1)"]),
        ("assert f(1) == [0] * 5", ["f(1)"]),
        ("assert sorted(f(3), reverse=True) == [3, 2, 1]", ["f(3)"]),
        ("assert f(1) == 1 and g(2) < 3", ["f(1)", "g(2)"]),
        ("assert f('a b') == {'a': 1, 'b': 1}", ["f('a b')"]),
        ("assert round(f(2.5), 2) == 1.25", ["f(2.5)"]),
        ("assert len(f(5)) == 5", ["f(5)"]),
        ("assert f(x)[0] == 1", ["f(x)[0]"]),
        ("assert f(1) in (1, 2)", ["f(1)"]),
        ("assert 0 < f(1) <= 10", ["f(1)"]),
        ("assert f(1) is None", ["f(1)"]),
    ],
)
def test_plans_split_asserts_into_leaves(test, leaves):
    plan = plan_test(test)
    assert plan.kind == "assert"
    assert [leaf.source for leaf in plan.leaves] == leaves


def test_iterating_calls_mark_their_leaf():
    plan = plan_test("assert set(f(x)) == {1} and len(g(x)) == 2")
    assert plan.leaves == (Leaf("f(x)", 1, True), Leaf("g(x)", 1, False))


def test_calls_with_unsupported_keywords_are_leaves():
    plan = plan_test("assert sorted(f(x), key=lambda v: -v) == [3, 1]")
    assert [leaf.source for leaf in plan.leaves] == ["sorted(f(x), key=lambda v: -v)"]


def test_a_shadowed_builtin_is_evaluated_in_the_sandbox():
    names = top_level_names("def max(a, b):\n    return a\n")
    assert "max" in names
    plan = plan_test("assert max(1, 2) == 2", names)
    assert [leaf.source for leaf in plan.leaves] == ["max(1, 2)"]
    assert "math" not in top_level_names("import math\n")


@pytest.mark.parametrize("test", ["check(f)", "x = f(1)\nassert x == 2", "assert f(1) == 1; print(2)",
                                  "for i in range(3):\n    assert f(i)"])
def test_other_tests_are_blocks(test):
    assert plan_test(test).kind == "block"


def test_syntax_errors_in_tests_are_reported_without_running():
    plan = plan_test("assert f(1) ==")
    assert plan.error.startswith("SyntaxError") and "test line 1" in plan.error


def test_empty_tests_are_errors():
    assert plan_test("# nothing\n").error == "the test is empty"


def test_multi_line_leaves_keep_their_line():
    plan = plan_test("assert f(\n    1,\n    2) == (\n    3)")
    assert plan.leaves[0].line == 1 and plan.leaves[0].source.startswith("f(")


@pytest.mark.parametrize(
    "test, leaf_values, outcome, message",
    [
        ("assert f(1) == 5", [6], "fail", "returned 6, expected 5"),
        ("assert f(1) == 5", [5], "pass", ""),
        ("assert 5 == f(1)", [6], "fail", "returned 6, expected 5"),
        ("assert f(1) == (1, 2)", [(1, 2)], "pass", ""),
        ("assert f(1) == (1, 2)", [[1, 2]], "fail", "returned [1, 2], expected (1, 2)"),
        ("assert set(f(x)) == set(y)", [[1, 2, 2], (2, 1)], "pass", ""),
        ("assert set(f(x)) == set(y)", [[1, 3], (2, 1)], "fail", "returned {1, 3}, expected {1, 2}"),
        ("assert f(x)", [0], "fail", "returned 0, expected a true value"),
        ("assert f(x)", [[1]], "pass", ""),
        ("assert not f(x)", [True], "fail", "returned True, expected a false value"),
        ("assert not f(x)", [""], "pass", ""),
        ("assert f(1) < 3", [4], "fail", "returned 4, expected < 3"),
        ("assert f(1) in [1, 2]", [4], "fail", "returned 4, expected in [1, 2]"),
        ("assert f(1) == 1 and f(2) == 2", [1, 3], "fail", "returned 3, expected 2"),
        ("assert f(1) == 1 or f(2) == 2", [0, 2], "pass", ""),
        ("assert f(1) == 0.30000000000000004", [0.1 + 0.2], "pass", ""),
        ("assert f(1) == 0.3", [0.1 + 0.2], "fail", "returned 0.30000000000000004, expected 0.3"),
        ("assert f(1) != f(1)", [math.nan, math.nan], "pass", ""),
        ("assert f(1) == float('inf')", [math.inf], "pass", ""),
        ("assert f(1) == [0] * 3", [[0, 0, 0]], "pass", ""),
        ("assert f(1) == {'a': [1, (2, b'x')]}", [{"a": [1, (2, b"x")]}], "pass", ""),
        ("assert f(1) == 1j", [1j], "pass", ""),
        ("assert round(f(1), 2) == 3.14", [3.14159], "pass", ""),
        ("assert sorted(f(1), reverse=True) == [3, 2]", [[2, 3]], "pass", ""),
        ("assert len(f(1)) == 2", [[1, 2, 3]], "fail", "returned 3, expected 2"),
        ("assert -f(1) == 2", [-2], "pass", ""),
        ("assert f(1) is None", [None], "pass", ""),
        ("assert f(1) == 2 ** 64", [2 ** 64], "pass", ""),
    ],
)
def test_judging_on_the_host(test, leaf_values, outcome, message):
    assert judge(test, *leaf_values) == (outcome, message)


def test_math_isclose_with_tolerances():
    test = "assert math.isclose(f(1), 2.0, rel_tol=0.001)"
    assert judge(test, 2.0001) == ("pass", "")
    outcome, message = judge(test, 2.5)
    assert outcome == "fail" and message == "returned 2.5, expected close to 2.0 (rel_tol=0.001)"


def test_exceptions_in_leaves_are_errors():
    plan = plan_test("assert f(0) == 1")
    leaves = [["raise", ["ZeroDivisionError", "division by zero", "program", 4]]]
    assert judge_assert(plan, leaves) == ("error", "ZeroDivisionError: division by zero (program line 4)")


def test_short_circuit_ignores_a_leaf_that_raised():
    plan = plan_test("assert f(1) or g(2)")
    leaves = [["value", value(1)], ["raise", ["ValueError", "boom", "program", 2]]]
    assert judge_assert(plan, leaves) == ("pass", "")


def test_refused_values_fail():
    plan = plan_test("assert f(1) == 5")
    message = "returned a Foo, which cannot be compared outside the sandbox"
    assert judge_assert(plan, [["refused", message]]) == ("fail", message)


def test_comparison_errors_follow_python():
    outcome, message = judge("assert f(1) < 3", "a")
    assert outcome == "error" and message.startswith("TypeError: '<' not supported")
    outcome, message = judge("assert set(f(1)) == {1}", [[1]])
    assert outcome == "error" and "unhashable" in message


def test_missing_leaves_are_errors():
    plan = plan_test("assert f(1) == 1")
    assert judge_assert(plan, [])[0] == "error"


def test_huge_host_side_results_are_refused():
    plan = plan_test("assert f(1) == 'ab' * 10**9")
    assert judge_assert(plan, [["value", value("x")]])[0] == "error"
    plan = plan_test("assert round(f(1), -10**9) == 0")
    assert judge_assert(plan, [["value", value(5)]])[0] == "error"


def test_decode_round_trips_plain_values():
    for v in [None, True, 0, -(2 ** 100), 1.5, -0.0, math.inf, 1 + 2j, "é\u0000", b"\x00\xff",
              [1, (2, {3}), frozenset({4})], {"k": [None]}]:
        assert decode(value(v)) == v and type(decode(value(v))) is type(v)
    assert math.isnan(decode(value(math.nan)))
    assert str(decode(value(-0.0))) == "-0.0"


@pytest.mark.parametrize("bad", [[], ["x"], ["i", 5], ["i", "zz"], ["s", 1], ["l", "ab"], ["d", [[["l", []], ["n"]]]],
                                 {"a": 1}, ["f", "1" * 100], ["b", 1]])
def test_decode_rejects_malformed_data(bad):
    with pytest.raises(verdict.BadValue):
        decode(bad)


def test_decode_caps_depth_and_size():
    nested = ["n"]
    for _ in range(verdict.MAX_DEPTH + 5):
        nested = ["l", [nested]]
    with pytest.raises(verdict.BadValue):
        decode(nested)
    with pytest.raises(verdict.BadValue):
        decode(["l", [["n"]] * (verdict.MAX_NODES + 1)])


def test_block_verdicts():
    assert judge_block({"block": "ok"}) == ("pass", "")
    assert judge_block({"block": ["AssertionError", "", "test", 2]}) == ("fail", "AssertionError (test line 2)")
    assert judge_block({"block": ["KeyError", "'x'", "program", 3]}) == ("error", "KeyError: 'x' (program line 3)")
    assert judge_block({"block": None})[0] == "error"


def test_reprs_in_messages_are_bounded():
    outcome, message = judge("assert f(1) == 1", "x" * 10_000)
    assert outcome == "fail" and len(message) < 300


def test_a_value_only_tested_for_truth_is_sent_as_its_truth_when_it_is_not_plain_data(executor):
    # re.Match cannot cross the sandbox boundary, but `assert f(x)` only needs its truth value
    # (a candidate could return True just as well, so nothing is lost).
    program = "import re\ndef find(text):\n    return re.search(r'\\d+', text)\n"
    job = Job(program=program, tests=("assert find('a1')", "assert not find('ab')", "assert find('ab')",
                                      "assert find('a1') and True", "assert find('a1') == 1"), trace=False)
    outcomes = [t.outcome for t in executor.run(job).tests]
    assert outcomes == ["pass", "pass", "fail", "pass", "fail"]


# --- standard-library value types and the module's own objects (issue 10) -----------------------

VALUES_PROGRAM = '''
import datetime, decimal, enum, fractions, pathlib, uuid
from collections import namedtuple
from dataclasses import dataclass

class Color(enum.Enum):
    RED = 1
    GREEN = 2

@dataclass
class Point:
    x: int
    y: int

class Always:
    def __eq__(self, other):
        return True

Pair = namedtuple("Pair", "a b")

def ident(v):
    return v

def patched_point():
    Point.__eq__ = lambda self, other: True
    return Point(9, 9)

class Sub(Point):
    pass
'''


@pytest.mark.parametrize("test, outcome", [
    ("assert ident(datetime.date(2020, 1, 1)) == datetime.date(2020, 1, 1)", "pass"),
    ("assert ident(datetime.date(2021, 1, 1)) == datetime.date(2020, 1, 1)", "fail"),
    ("assert ident(datetime.datetime(2020, 1, 2, 3, 4, 5, 6, tzinfo=datetime.timezone.utc)) == "
     "datetime.datetime(2020, 1, 2, 4, 4, 5, 6, tzinfo=datetime.timezone(datetime.timedelta(hours=1)))", "pass"),
    ("assert ident(datetime.time(1, 2)) < datetime.time(1, 3)", "pass"),
    ("assert ident(datetime.timedelta(days=1)) == datetime.timedelta(hours=24)", "pass"),
    ("assert ident(decimal.Decimal('1.10')) == decimal.Decimal('1.1')", "pass"),
    ("assert ident(decimal.Decimal('1.2')) == decimal.Decimal('1.1')", "fail"),
    ("assert ident(fractions.Fraction(2, 4)) == fractions.Fraction(1, 2)", "pass"),
    ("assert ident(Color.RED) is Color.RED", "pass"),
    ("assert ident(Color.RED) is Color.GREEN", "fail"),
    ("assert ident(Color.RED) == 1", "fail"),  # an Enum member is not its value
    ("assert ident(pathlib.PurePosixPath('/a/b')) == pathlib.PurePosixPath('/a') / 'b'", "pass"),
    ("assert ident(uuid.UUID(int=5)) == uuid.UUID(int=5)", "pass"),
    ("assert ident(Pair(1, 2)) == (1, 2)", "pass"),
    ("assert ident({b'x', b'y'}) == {b'y', b'x'}", "pass"),
    ("assert ident(Point(1, 2)) == Point(1, 2)", "pass"),
    ("assert ident(Point(1, 2)) != Point(1, 3)", "pass"),
    ("assert ident(Point(1, 2)) == Point(1, 3)", "fail"),
    # forgeries: an always-equal object, a look-alike subclass, an __eq__ swapped during the test
    ("assert Always() == 1", "fail"),
    ("assert Always() == Point(1, 2)", "fail"),
    ("assert ident(Sub(1, 2)) == Point(1, 2)", "fail"),
    ("assert patched_point() == Point(1, 2)", "fail"),
])
def test_values_of_many_types_are_judged_as_python_would(executor, test, outcome):
    result = executor.run(Job(program=VALUES_PROGRAM, tests=(test,), trace=False)).tests[0]
    assert result.outcome == outcome, result.message


def test_verdicts_that_relied_on_the_modules_own_eq_say_so(executor):
    result = executor.run(Job(program=VALUES_PROGRAM, tests=("assert ident(Point(1, 2)) == Point(1, 2)",
                                                             "assert ident(datetime.date(2020, 1, 1)) == datetime.date(2020, 1, 1)"),
                              trace=False))
    point, date = result.tests
    assert point.outcome == "pass" and "inside the sandbox" in point.message and "Point" in point.message
    assert date.outcome == "pass" and date.message == ""  # compared outside, on the host


def test_decode_of_standard_library_values():
    import datetime
    import decimal
    import fractions
    import pathlib
    import uuid

    assert decode(["D", "date", [2020, 1, 2], None]) == datetime.date(2020, 1, 2)
    assert decode(["D", "datetime", [2020, 1, 2, 3, 4, 5, 6, 0], [3600, 0, None]]).utcoffset() == datetime.timedelta(hours=1)
    assert decode(["D", "timedelta", [1, 2, 3], None]) == datetime.timedelta(1, 2, 3)
    assert decode(["Dc", "1.50"]) == decimal.Decimal("1.5")
    assert decode(["Fr", hex(1), hex(3)]) == fractions.Fraction(1, 3)
    assert decode(["U", hex(7)]) == uuid.UUID(int=7)
    assert decode(["P", "windows", "C:\\x"]) == pathlib.PureWindowsPath("C:/x")
    red = decode(["E", "m", "Color", "RED", ["i", hex(1)]])
    assert red is decode(["E", "m", "Color", "RED", ["i", hex(1)]]) and red != 1
    assert red is not decode(["E", "other", "Color", "RED", ["i", hex(1)]])
    for bad in (["D", "date", [2020, 13, 1], None], ["D", "epoch", [1], None], ["Dc", "not a number"],
                ["Fr", hex(1), hex(0)], ["P", "posix"], ["E", "m", "C", 3, ["n"]]):
        with pytest.raises(verdict.BadValue):
            decode(bad)
