"""Scoring logic of `egcfg bench accuracy` with a stand-in solver and an in-process stand-in executor
(the real executor is exercised by tests/engine/bench/test_accuracy_cli.py)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from engine.bench.datasets import Task
from engine.bench.scoring import (Answer, MEANINGLESS_NOTE, TaskEvaluator, evaluate_task, find_broken_tests,
                            score_answer, summarize, summary_markdown)


# --- stand-ins ----------------------------------------------------------------------------------

@dataclass
class FakeTestResult:
    test: str
    outcome: str
    message: str = ""


@dataclass
class FakeJobResult:
    tests: list


class InProcessExecutor:
    """Runs each test in a fresh namespace (program, then setup, then the test). Counts its jobs."""

    def __init__(self):
        self.jobs = []

    def run(self, job):
        self.jobs.append(job)
        results = []
        for test in job.tests:
            namespace: dict = {}
            try:
                exec(job.program, namespace)
                exec(job.setup, namespace)
                exec(test, namespace)
                results.append(FakeTestResult(test, "pass"))
            except AssertionError:
                results.append(FakeTestResult(test, "fail", "assertion failed"))
            except (Exception, SystemExit) as error:  # noqa: BLE001 - any error is the verdict
                results.append(FakeTestResult(test, "error", f"{type(error).__name__}: {error}"))
        return FakeJobResult(results)


WRONG = "def {name}(*args):\n    return None\n"


class StandInSolver:
    """Returns the reference solution for the task ids listed per method, wrong code otherwise."""

    def __init__(self, correct: dict[str, set[str]], overrides: dict | None = None):
        self.correct, self.overrides, self.calls = correct, overrides or {}, []

    def solve(self, task, method):
        self.calls.append((task.task_id, method))
        if (task.task_id, method) in self.overrides:
            code = self.overrides[task.task_id, method]
        elif task.task_id in self.correct[method]:
            code = task.reference
        else:
            code = WRONG.format(name=task.entry_point)
        agent = "greedy" if method == "baseline" else f"agent-{task.task_id}"
        return Answer(code=code, agent=agent, solved=True, lines=code.count("\n"), tokens=10,
                      seconds=1.5 if method == "egcfg" else 0.5)


def mbpp_like(number: int) -> Task:
    """A task whose guidance and evaluation tests are the same asserts, as in MBPP."""
    name = f"add_{number}"
    tests = [f"assert {name}(1) == {1 + number}", f"assert {name}(2) == {2 + number}"]
    return Task(task_id=str(number), prompt=f"Add {number} to x.", entry_point=name,
                reference=f"def {name}(x):\n    return x + {number}\n", tests=tests, eval_tests=tests)


# --- tests --------------------------------------------------------------------------------------

def test_exact_pass_rates_for_reference_and_wrong_answers():
    tasks = [mbpp_like(n) for n in range(1, 6)]
    solver = StandInSolver({"baseline": {"1"}, "egcfg": {"1", "2", "4"}})
    executor = InProcessExecutor()
    records = [evaluate_task(task, solver, executor, info={"device": "cpu"}) for task in tasks]
    summary = summarize(records, {"benchmark": "mbpp", "model": "stand-in", "preset": "editor"})

    base, guided = summary["methods"]["baseline"], summary["methods"]["egcfg"]
    assert (base["passed"], base["tasks"], base["pass_at_1"]) == (1, 5, 20.0)
    assert (guided["passed"], guided["tasks"], guided["pass_at_1"]) == (3, 5, 60.0)
    assert [record["egcfg"]["pass"] for record in records] == [True, True, False, True, False]
    assert records[2]["egcfg"]["eval"] == [0, 2] and records[3]["egcfg"]["eval"] == [2, 2]
    assert "note" not in summary and summary["random_weights"] is False
    # No ET tests anywhere: the ET score is absent, not zero.
    assert guided["et_tasks"] == 0 and guided["et_pass_at_1"] is None
    assert guided["seconds_per_task"] == 1.5 and base["seconds_per_task"] == 0.5
    assert guided["agents"] == {f"agent-{n}": 1 for n in range(1, 6)}
    # Both methods ran for every task, baseline first.
    assert solver.calls == [(str(n), method) for n in range(1, 6) for method in ("baseline", "egcfg")]


def test_shared_tests_run_once_per_answer():
    task = mbpp_like(3)
    executor = InProcessExecutor()
    score_answer(task, Answer(task.reference, "a", True, 2, 5, 0.1), executor)
    assert len(executor.jobs) == 1 and len(executor.jobs[0].tests) == 2   # not 4: tests == eval_tests


def test_only_the_returned_program_is_scored_and_overfitting_is_reported():
    # HumanEval-like: the guidance sees one example, the evaluation checks more.
    task = Task(task_id="HumanEval/9", prompt="def double(x):\n", entry_point="double",
                reference="def double(x):\n    return 2 * x\n",
                tests=["assert double(1) == 2"],
                eval_tests=["assert double(1) == 2", "assert double(5) == 10"])
    overfit = "def double(x):\n    return 2\n"
    solver = StandInSolver({"baseline": set(), "egcfg": set()}, {("HumanEval/9", "egcfg"): overfit,
                                                               ("HumanEval/9", "baseline"): overfit})
    record = evaluate_task(task, solver, InProcessExecutor())
    entry = record["egcfg"]
    assert entry["code"] == overfit and entry["guidance"] == [1, 1] and entry["eval"] == [1, 2]
    assert entry["pass"] is False
    summary = summarize([record], {"benchmark": "humaneval"})
    assert summary["methods"]["egcfg"]["guidance_solved_eval_failed"] == 1
    assert summary["methods"]["egcfg"]["pass_at_1"] == 0.0


def et_task() -> Task:
    task = mbpp_like(7)
    task.et_tests = [
        "assert add_7(10) == 17",
        "assert add_7(0) == 8",          # broken: the reference returns 7
        "assert add_7(-7) == 0",
        "assert add_7(1) == undefined",  # broken: NameError
    ]
    return task


def test_tests_the_reference_fails_are_excluded_and_listed():
    task = et_task()
    broken = find_broken_tests(task, InProcessExecutor())
    assert [test.index for test in broken] == [1, 3]
    assert broken[1].reason.startswith("error: NameError")

    solver = StandInSolver({"baseline": set(), "egcfg": {"7"}})
    record = evaluate_task(task, solver, InProcessExecutor())
    assert record["egcfg"]["et"] == [2, 2] and record["egcfg"]["et_pass"] is True
    assert record["baseline"]["et"] == [0, 2] and record["baseline"]["et_pass"] is False

    summary = summarize([record, evaluate_task(mbpp_like(8), solver, InProcessExecutor())],
                        {"benchmark": "mbpp"})
    guided = summary["methods"]["egcfg"]
    assert (guided["et_passed"], guided["et_tasks"], guided["et_pass_at_1"]) == (1, 1, 100.0)
    assert [(test["task_id"], test["index"]) for test in summary["et_broken_tests"]] == [("7", 1), ("7", 3)]
    table = summary_markdown(summary)
    assert "assert add_7(0) == 8" in table and "ET tests excluded" in table


def test_task_with_only_broken_et_tests_leaves_the_et_score():
    task = mbpp_like(4)
    task.et_tests = ["assert add_4(0) == 1"]
    record = evaluate_task(task, StandInSolver({"baseline": {"4"}, "egcfg": {"4"}}), InProcessExecutor())
    assert record["egcfg"]["et"] is None and record["egcfg"]["et_pass"] is None
    summary = summarize([record], {"benchmark": "mbpp"})
    assert summary["et_excluded_tasks"] == ["4"]
    assert summary["methods"]["egcfg"]["et_tasks"] == 0


def test_markdown_table_and_random_weight_note():
    tasks = [mbpp_like(n) for n in range(1, 5)]
    evaluator = TaskEvaluator(StandInSolver({"baseline": {"1", "2"}, "egcfg": {"1", "2", "3"}}),
                              InProcessExecutor(), info={"device": "cpu", "random_weights": True})
    records = [evaluator.evaluate(task) for task in tasks]
    summary = summarize(records, {"benchmark": "mbpp", "model": "tiny", "preset": "editor"})
    assert summary["note"] == MEANINGLESS_NOTE and summary["device"] == "cpu"
    table = summary_markdown(summary)
    assert "| pass@1, base tests | 50.0% (2/4) | 75.0% (3/4) |" in table
    assert "| pass@1, ET tests | n/a (0/0) | n/a (0/0) |" in table
    assert "meaningless" in table and "`tiny`" in table and "## Per task" not in table
    per_task = summary_markdown(summary, records)
    assert "| 3 | 0/2 | - | agent-3 | 2/2 | 2/2 | - | 2 | 10 | 1.5 |" in per_task
    assert "| 4 | 0/2 | - | agent-4 | 0/2 | 0/2 | - | 2 | 10 | 1.5 |" in per_task


@pytest.mark.parametrize("code", ["", "def add_2(x):\n    return x +\n", "raise SystemExit(1)\n"])
def test_unusable_programs_score_zero(code):
    task = mbpp_like(2)
    entry = score_answer(task, Answer(code, "a", False, 0, 0, 0.0), InProcessExecutor())
    assert entry["eval"] == [0, 2] and entry["pass"] is False
