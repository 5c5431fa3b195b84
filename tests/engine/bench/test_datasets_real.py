"""The loaders and the repair on the real benchmark files (EGCFG_DATA)."""

import ast
import re
import warnings

import pytest

from engine.bench.datasets import load_tasks
from engine.execution.repair import compiles, make_executable

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def tasks(data_dir):
    names = ["mbpp", "mbpp-sanitized", "humaneval", "humaneval-et", "mbpp-et"]
    return {name: load_tasks(name, data_dir) for name in names}


def defined_names(code):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escapes in old benchmark code
        tree = ast.parse(code)
    return {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}


def test_counts_match_data_md(tasks):
    assert len(tasks["mbpp"]) == 974
    assert sum(len(t.tests) for t in tasks["mbpp"]) == 2922
    assert sum(1 for t in tasks["mbpp"] if t.challenge_tests) == 11
    assert len(tasks["mbpp-sanitized"]) == 427
    assert len(tasks["humaneval"]) == 164
    assert len(tasks["humaneval-et"]) == 164
    assert sum(len(t.et_tests) for t in tasks["humaneval-et"]) == 17628
    assert len(tasks["mbpp-et"]) == 397
    assert {len(t.et_tests) for t in tasks["mbpp-et"]} == {102}


def test_every_reference_and_test_compiles_and_entry_points_are_defined(tasks):
    for name in ["mbpp", "mbpp-sanitized", "humaneval"]:
        for task in tasks[name]:
            assert compiles(task.reference), task.task_id
            assert "\r" not in task.reference
            assert task.entry_point in defined_names(task.reference), (name, task.task_id)
            for test in task.tests + task.eval_tests:
                assert compiles(test), (name, task.task_id, test)


def test_mbpp_et_keeps_mbpp_public_tests_first(tasks):
    mbpp = {t.task_id: t for t in tasks["mbpp"]}
    for task in tasks["mbpp-et"]:
        assert task.tests == mbpp[task.task_id].tests == task.et_tests[:3]
        assert task.entry_point == mbpp[task.task_id].entry_point


def test_humaneval_check_is_split_except_where_it_needs_its_own_body(tasks):
    blocks = [t.task_id for t in tasks["humaneval"] if len(t.eval_tests) == 1 and t.eval_tests[0].endswith(f"check({t.entry_point})")]
    # these check() bodies loop or bind helper variables (DATA.md's ET NameErrors come from these)
    assert blocks == [f"HumanEval/{n}" for n in (32, 38, 44, 50, 53, 151)]
    for task in tasks["humaneval"]:
        if task.task_id not in blocks:
            assert all(t.startswith("assert ") and "candidate" not in t.split(",")[0] for t in task.eval_tests), task.task_id


def test_most_humaneval_docstrings_give_guidance_tests(tasks):
    with_tests = [t for t in tasks["humaneval"] if t.tests]
    assert len(with_tests) >= 150
    assert sum(len(t.tests) for t in tasks["humaneval"]) >= 420
    for task in with_tests:
        assert all(re.match(rf"assert {task.entry_point}\(", test) for test in task.tests), task.task_id


def line_prefixes(code):
    lines = re.split(r"\r\n|\r|\n", code)
    return ["\n".join(lines[:k]) for k in range(1, len(lines) + 1)]


def test_every_line_prefix_of_every_reference_is_repaired_or_none(data_dir):
    """Raw MBPP `code` (CRLF) and HumanEval prompt + canonical_solution, as the files hold them."""
    import gzip
    import json

    codes = [json.loads(line)["code"] for line in (data_dir / "mbpp.jsonl").read_text().splitlines() if line.strip()]
    with gzip.open(data_dir / "HumanEval.jsonl.gz", "rt") as handle:
        codes += [row["prompt"] + row["canonical_solution"] for row in map(json.loads, handle)]
    assert len(codes) == 974 + 164
    repaired = nothing = 0
    for code in codes:
        for prefix in line_prefixes(code):
            result = make_executable(prefix)
            if result is None:
                nothing += 1
                continue
            assert compiles(result), prefix
            if result != prefix:
                repaired += 1
                # the repair keeps a prefix of the lines and only appends pass / finally lines
                kept = [line for line in result.split("\n")]
                original = prefix.split("\n")
                common = 0
                while common < min(len(kept), len(original)) and kept[common] == original[common]:
                    common += 1
                assert all(line.strip() in ("pass", "finally:") for line in kept[common:]), (prefix, result)
    assert repaired > 1000  # prefixes ending in a header or mid-statement are common
    assert nothing < 20
