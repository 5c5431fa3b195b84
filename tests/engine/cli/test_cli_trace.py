"""`egcfg trace` as a user runs it: a subprocess, exit codes, text and JSON output."""

import json
from pathlib import Path
import subprocess
import sys

import pytest

from engine.cli.trace import tests_from_file
from engine.errors import UserError

PROGRAM = '''\
def add_all(xs):
    total = 1
    for x in xs:
        total += x
    return total


def divide(a, b):
    return a / b
'''


def egcfg(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "engine.cli.main", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.fixture
def code_file(tmp_path):
    path = tmp_path / "mathy.py"
    path.write_text(PROGRAM)
    return path


# --------------------------------------------------------------------------- running tests


def test_json_output_has_outcomes_messages_and_traces(code_file):
    run = egcfg("trace", code_file, "--function", "add_all", "--test", "assert add_all([1, 2]) == 3",
                "--test", "assert add_all([]) == 1", "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["isolation"] in ("bubblewrap", "limits")
    assert [t["outcome"] for t in report["tests"]] == ["fail", "pass"]
    failing = report["tests"][0]
    assert failing["test"] == "assert add_all([1, 2]) == 3"
    assert "4" in failing["message"]  # the value it returned
    assert "total += x" in failing["trace_text"]
    kinds = {event["kind"] for event in failing["trace"]["events"]}
    assert {"call", "line", "return"} <= kinds
    assert report["passed"] == 1 and report["total"] == 2


def test_text_output_shows_the_rendered_trace_and_exceptions(code_file):
    run = egcfg("trace", code_file, "--test", "assert divide(1, 0) == 0")
    assert run.returncode == 0, run.stderr  # a failing test is still a successful run
    assert "0/1 tests passed" in run.stdout
    assert "ZeroDivisionError" in run.stdout
    assert "assert divide(1, 0) == 0" in run.stdout


def test_no_trace_gives_outcomes_without_events(code_file):
    run = egcfg("trace", code_file, "--test", "assert add_all([5]) == 6", "--no-trace", "--json")
    assert run.returncode == 0, run.stderr
    (test,) = json.loads(run.stdout)["tests"]
    assert test["outcome"] == "pass"
    assert not test["trace"] or not test["trace"]["events"]


def test_timeout_is_reported_as_an_outcome(tmp_path):
    path = tmp_path / "slow.py"
    path.write_text("def spin():\n    while True:\n        pass\n")
    run = egcfg("trace", path, "--test", "spin()", "--timeout", "0.5", "--json", "--no-trace")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["tests"][0]["outcome"] == "timeout"


def test_tests_file_top_level_asserts_and_test_functions(code_file, tmp_path):
    tests = tmp_path / "test_mathy.py"
    tests.write_text(
        "import math\nfrom mathy import add_all\n\n"
        "assert add_all([1]) == 2\n"
        "assert divide(4, 2) == 2\n\n"
        "def test_sum():\n    xs = [1, 2, 3]\n    assert add_all(xs) == math.prod(xs) + 1\n\n"
        "def test_needs_fixture(capsys):\n    assert add_all([0]) == 0\n"
    )
    run = egcfg("trace", code_file, "--tests-file", tests, "--function", "add_all", "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    # divide's assert does not mention add_all; the fixture test cannot run outside pytest
    assert [t["outcome"] for t in report["tests"]] == ["pass", "pass"]
    assert report["tests"][1]["test"].rstrip().endswith("test_sum()")
    assert "test_needs_fixture" in run.stderr


# --------------------------------------------------------------------------- bad input: exit 2, one sentence


@pytest.mark.parametrize(
    "setup, args, message",
    [
        (None, ["missing.py", "--test", "assert True"], "no such file"),
        ("code", ["CODE"], "no tests given"),
        ("code", ["CODE", "--function", "nope", "--test", "assert True"], "defines no function or class named 'nope'"),
        ("latin1", ["LATIN1", "--test", "assert True"], "not valid utf-8 text"),
        ("code", ["CODE", "--tests-file", "BROKEN_TESTS"], "has a syntax error at line 1"),
        ("code", ["CODE", "--test", "assert (("], "--test number 1 does not compile"),
        ("code", ["CODE", "--tests-file", "missing_tests.py"], "no such file"),
        ("broken_code", ["BROKEN_CODE", "--test", "assert True"], "does not compile: line 2"),
        ("code", ["CODE", "--test", "assert True", "--timeout", "0"], "--timeout must be a positive"),
        ("code", ["CODE", "--tests-file", "EMPTY_TESTS"], "has no tests that can run here"),
    ],
)
def test_bad_input_exits_2_with_one_clear_line(tmp_path, setup, args, message):
    (tmp_path / "code.py").write_text(PROGRAM)
    (tmp_path / "latin1.py").write_bytes("def f():\n    return 'caf\xe9'\n".encode("latin-1"))
    (tmp_path / "broken_tests.py").write_text("assert (\n")
    (tmp_path / "broken_code.py").write_text("def f():\nreturn 1\n")
    (tmp_path / "empty_tests.py").write_text("import os\n")
    names = {"CODE": "code.py", "LATIN1": "latin1.py", "BROKEN_TESTS": "broken_tests.py", "BROKEN_CODE": "broken_code.py",
             "EMPTY_TESTS": "empty_tests.py"}
    run = egcfg("trace", *[names.get(arg, arg) for arg in args], cwd=tmp_path)
    assert run.returncode == 2
    assert message in run.stderr
    assert "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_tests_file_without_a_matching_test_is_a_user_error():
    with pytest.raises(UserError, match="no test in t.py mentions g"):
        tests_from_file("assert f(1) == 1\n", "t.py", Path("code.py"), function="g")


def test_tests_file_rebinds_imports_of_the_code_module():
    source = "import mathy\nimport mathy as m\nfrom mathy import add_all as total, divide\nimport os\nHELPER = 3\nif __name__ == '__main__':\n    run()\nassert total([1]) == 2\n"
    tests, setup = tests_from_file(source, "t.py", Path("mathy.py"))
    assert tests == ["assert total([1]) == 2"]
    assert setup.splitlines() == [
        "mathy = __import__('types').SimpleNamespace(**globals())",
        "m = __import__('types').SimpleNamespace(**globals())",
        "total = add_all",
        "import os",
        "HELPER = 3",
    ]
