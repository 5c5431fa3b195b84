"""Data-set loaders on small invented files in each format (tests/engine/bench/fixtures), not the real data."""

import gzip
import json
import shutil
from pathlib import Path

import pytest

from engine.bench.datasets import (
    check_tests,
    docstring_tests,
    load_tasks,
    mbpp_entry_point,
    parse_task_range,
    select_tasks,
)
from engine.errors import UserError

FIXTURES = Path(__file__).parent / "fixtures"


def by_id(tasks):
    return {task.task_id: task for task in tasks}


def test_mbpp_fields_crlf_setup_and_challenge_tests():
    tasks = load_tasks("mbpp", FIXTURES)
    assert [t.task_id for t in tasks] == ["1", "12", "30"]
    add = tasks[0]
    assert add.prompt == "Write a function to add two numbers."
    assert add.reference == "def add_two(a, b):\n    return a + b"  # CRLF -> LF
    assert add.entry_point == "add_two"
    assert add.tests == add.eval_tests == ["assert add_two(1, 2) == 3", "assert add_two(0, 0) == 0", "assert add_two(-1, 1) == 0"]
    assert add.challenge_tests == ["assert add_two(10**20, 1) == 10**20 + 1"]
    assert add.et_tests == []
    chain = tasks[1]
    assert chain.setup == "one = Link()\ntwo = Link(one)"
    # the entry point is the defined function the tests call, not the first or last definition
    assert chain.entry_point == "chain_length"


def test_a_file_path_works_as_well_as_a_folder():
    assert [t.task_id for t in load_tasks("mbpp", FIXTURES / "mbpp.jsonl")] == ["1", "12", "30"]


def test_sanitized_mbpp_joins_test_imports_into_setup():
    (task,) = load_tasks("mbpp-sanitized", FIXTURES)
    assert task.task_id == "12"
    assert task.prompt.startswith("Write a function to find the square root")
    assert task.setup == "import math"
    assert task.entry_point == "floor_sqrt"
    assert task.tests == ["assert floor_sqrt(10) == math.isqrt(10)", "assert floor_sqrt(16) == 4"]


def test_humaneval_reference_setup_and_split_check_asserts():
    tasks = by_id(load_tasks("humaneval", FIXTURES))
    total = tasks["HumanEval/0"]
    assert total.entry_point == "total"
    assert total.reference == total.prompt + "    return sum(xs)\n"
    assert total.setup == "from typing import List"
    # each assert of check() on its own, `candidate` renamed, multi-line asserts kept whole,
    # the assert message (which says "candidate") untouched
    assert total.eval_tests == [
        "assert total([1]) == 1",
        'assert total([2, 3]) == 5, "the candidate text stays"',
        "assert total(\n        [4, 4]\n    ) == 8",
    ]
    # doctest examples; `>>> x = 1` (no output, no call) is not a test
    assert total.tests == ["assert total([1, 2, 3]) == 6", "assert total([]) == 0"]


def test_humaneval_check_with_loops_is_one_block_test():
    shout = by_id(load_tasks("humaneval", FIXTURES))["HumanEval/1"]
    (block,) = shout.eval_tests
    assert block.startswith("def check(candidate):")
    assert block.rstrip().endswith("check(shout)")
    compile(block, "<test>", "exec")


def test_humaneval_check_imports_and_no_op_lines_go_to_setup():
    area = by_id(load_tasks("humaneval", FIXTURES))["HumanEval/2"]
    assert area.eval_tests == ["assert area(2, 2) == 4", "assert math.isclose(area(0.5, 2), 1.0)"]
    assert area.setup == "import math"


def test_prose_examples_become_asserts():
    shout = by_id(load_tasks("humaneval", FIXTURES))["HumanEval/1"]
    # `shout(name)` uses a name, not a literal: left out
    assert shout.tests == ['assert shout("hi") == "HI!"', "assert shout('a') == 'A!'", 'assert shout("ok") == "OK!"']


def test_for_and_input_output_examples_become_asserts():
    area = by_id(load_tasks("humaneval", FIXTURES))["HumanEval/2"]
    assert area.tests == ["assert area(2, 3) == 6", "assert area(1, 1) == 1"]


@pytest.mark.parametrize(
    "line, expected",
    [
        ("f(1) ==> 2", "assert f(1) == 2"),
        ("f(1) => true", "assert f(1) == True"),
        ("f([1, 2]) ➞ [2]", "assert f([1, 2]) == [2]"),
        ("f('a)') returns 'b'", "assert f('a)') == 'b'"),
        ("f(2) # => 'x' (the reason)", "assert f(2) == 'x'"),
        ("f(3) should return 16.", "assert f(3) == 16"),
        ("f(3) == 1 + 2 = 3", "assert f(3) == 1 + 2"),
        ("* f(-1) -> (1, -1)", "assert f(-1) == (1, -1)"),
        ('f(["a"]) == ""aa"', None),  # a typo in the docstring: not the empty string
        ("f(x) => 3", None),
        ("f(1) is a nice call", None),
        ("g(1) => 3", None),
    ],
)
def test_prose_styles(line, expected):
    prompt = f'def f(x):\n    """Does things.\n    Examples:\n    {line}\n    """\n'
    assert docstring_tests(prompt, "f") == ([expected] if expected else [])


def test_doctest_comparison_without_output_line():
    prompt = 'def f(x):\n    """\n    >>> f(1) == 2\n    >>> f(2)\n    3\n    >>> print(f(2))\n    3\n    """\n'
    assert docstring_tests(prompt, "f") == ["assert f(2) == 3", "assert f(1) == 2"]


def test_prose_before_an_examples_heading_is_not_read_as_examples():
    prompt = 'def t(n):\n    """Defined by\n    t(1) = 3\n    Examples:\n    t(2) = [1, 3]\n    """\n'
    assert docstring_tests(prompt, "t") == ["assert t(2) == [1, 3]"]


def test_check_tests_when_check_uses_helper_variables():
    source = "def check(candidate):\n    xs = [1, 2]\n    assert candidate(xs) == 3\n"
    tests, setup = check_tests(source, "f")
    assert tests == [source.strip() + "\n\n\ncheck(f)"] and setup == []


def test_check_tests_keeps_module_level_assignments_the_asserts_use():
    source = "LIMIT = 3\nMETADATA = {}\n\ndef check(candidate):\n    assert candidate(LIMIT) == 4\n"
    assert check_tests(source, "f") == (["assert f(LIMIT) == 4"], ["LIMIT = 3"])


def test_check_tests_keeps_module_imports_in_order_and_used_helpers():
    source = (
        "import math\nfrom fractions import Fraction\n\n"
        "def near(a, b):\n    return math.isclose(a, b)\n\n"
        "def unused():\n    pass\n\n"
        "def check(candidate):\n    import cmath\n    assert near(candidate(1), 2.0)\n"
    )
    tests, setup = check_tests(source, "f")
    assert tests == ["assert near(f(1), 2.0)"]
    assert setup == ["import math", "from fractions import Fraction", "def near(a, b):\n    return math.isclose(a, b)", "import cmath"]


def test_humaneval_et_and_mbpp_et_extended_tests():
    tasks = by_id(load_tasks("humaneval-et", FIXTURES))
    assert tasks["HumanEval/0"].et_tests[:2] == ["assert total([5]) == 5", "assert total([1, 1]) == 2"]
    assert len(tasks["HumanEval/0"].et_tests) == 4
    assert tasks["HumanEval/0"].tests == ["assert total([1, 2, 3]) == 6", "assert total([]) == 0"]
    (add,) = load_tasks("mbpp-et", FIXTURES)
    assert add.entry_point == "add_two"
    assert add.tests == add.eval_tests == add.et_tests[:3]
    assert len(add.et_tests) == 6  # all asserts, broken ones included (validate flags them)


def test_gzip_is_detected_by_content_and_json_arrays_and_lines_both_load(tmp_path):
    raw = gzip.decompress((FIXTURES / "HumanEval.jsonl.gz").read_bytes())
    (tmp_path / "plain.jsonl").write_bytes(raw)
    assert len(load_tasks("humaneval", tmp_path / "plain.jsonl")) == 3
    rows = [json.loads(line) for line in (FIXTURES / "mbpp.jsonl").read_text().splitlines()]
    (tmp_path / "mbpp.json").write_text(json.dumps(rows))
    assert [t.task_id for t in load_tasks("mbpp", tmp_path / "mbpp.json")] == ["1", "12", "30"]
    (tmp_path / "sanitized.jsonl.gz").write_bytes(gzip.compress((FIXTURES / "sanitized-mbpp.json").read_bytes()))
    assert load_tasks("mbpp-sanitized", tmp_path / "sanitized.jsonl.gz")[0].task_id == "12"


def test_folder_with_an_alternative_standard_name(tmp_path):
    shutil.copy(FIXTURES / "MBPP_ET_partial.jsonl", tmp_path / "MBPP_ET.jsonl")
    assert load_tasks("mbpp-et", tmp_path)[0].entry_point == "add_two"


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("mbpp", "/no/such/place", "does not exist"),
        ("mbpp", "EMPTY_DIR", "has no mbpp file"),
        ("nope", FIXTURES, "unknown data set"),
        ("mbpp", "BAD_JSON", "line 2 is not valid JSON"),
        ("humaneval", "WRONG_KIND", "has no field"),
        ("mbpp", "BINARY", "not UTF-8"),
        ("mbpp", "EMPTY_FILE", "holds no tasks"),
    ],
)
def test_bad_input_is_a_user_error(tmp_path, name, data, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.jsonl").write_text('{"task_id": 1}\n{not json\n')
    (tmp_path / "wrong.jsonl").write_text('{"task_id": 1, "prompt": "x"}\n')
    (tmp_path / "binary.jsonl").write_bytes(b"\xff\xfe\x00\x81")
    (tmp_path / "nothing.jsonl").write_text("\n")
    data = {
        "EMPTY_DIR": tmp_path / "empty",
        "BAD_JSON": tmp_path / "bad.jsonl",
        "WRONG_KIND": tmp_path / "wrong.jsonl",
        "BINARY": tmp_path / "binary.jsonl",
        "EMPTY_FILE": tmp_path / "nothing.jsonl",
    }.get(data, data)
    with pytest.raises(UserError, match=message):
        load_tasks(name, data)


def test_hub_without_the_datasets_package_is_a_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError("no datasets")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(UserError, match="needs the `datasets` package"):
        load_tasks("humaneval", "hf:openai/openai_humaneval")


def test_hub_rows_go_through_the_same_converters(monkeypatch):
    import sys
    import types

    rows = [json.loads(line) for line in (FIXTURES / "mbpp.jsonl").read_text().splitlines()]
    fake = types.ModuleType("datasets")
    fake.load_dataset = lambda dataset_id, config: {"test": rows[1:], "train": rows[:1]}
    monkeypatch.setitem(sys.modules, "datasets", fake)
    tasks = load_tasks("mbpp", "hf:google-research-datasets/mbpp:full")
    assert [t.task_id for t in tasks] == ["1", "12", "30"]  # all splits, in task order
    assert tasks[1].setup == "one = Link()\ntwo = Link(one)"


def test_mbpp_entry_point_prefers_the_called_definition():
    code = "def helper(x):\n    return x\ndef main(x):\n    return helper(x)"
    assert mbpp_entry_point(code, ["assert main(1) == 1"]) == "main"
    assert mbpp_entry_point(code, ["assert len([main(1)]) == 1"]) == "main"
    assert mbpp_entry_point(code, []) == "main"


def test_task_ranges():
    assert parse_task_range("11-510") == [(11, 510)]
    assert parse_task_range("11-20, 30") == [(11, 20), (30, 30)]
    for bad in ["", "a-b", "20-10", "1-", "3,,4"]:
        with pytest.raises(UserError):
            parse_task_range(bad)


def test_select_tasks_matches_numbers_of_any_id_style():
    mbpp = load_tasks("mbpp", FIXTURES)
    assert [t.task_id for t in select_tasks(mbpp, "10-20,30")] == ["12", "30"]
    assert select_tasks(mbpp, None) == mbpp
    humaneval = load_tasks("humaneval", FIXTURES)
    assert [t.task_id for t in select_tasks(humaneval, "1-2")] == ["HumanEval/1", "HumanEval/2"]
    with pytest.raises(UserError, match="no task matches"):
        select_tasks(mbpp, "500-600")
