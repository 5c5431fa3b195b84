"""`egcfg bench accuracy` without a model: the run folder, resume, config checks, task loading,
with a deterministic stand-in solver and an in-process stand-in executor."""

from __future__ import annotations

import argparse
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.bench import accuracy as bench_accuracy
from engine.bench.accuracy import (RESULTS, EngineSolver, Progress, RunDir, add_arguments, completion_task, load_benchmark,
                                   run_config, run_tasks)
from engine.bench.datasets import Task
from engine.errors import UserError
from engine.bench.scoring import Answer, TaskEvaluator, summarize


# --- stand-ins ----------------------------------------------------------------------------------

@dataclass
class Outcome:
    test: str
    outcome: str
    message: str = ""


@dataclass
class Outcomes:
    tests: list


class InProcessExecutor:
    def run(self, job):
        results = []
        for test in job.tests:
            namespace: dict = {}
            try:
                exec(job.program + "\n" + job.setup + "\n" + test, namespace)
                results.append(Outcome(test, "pass"))
            except AssertionError:
                results.append(Outcome(test, "fail"))
            except (Exception, SystemExit) as error:  # noqa: BLE001 - any error is the verdict
                results.append(Outcome(test, "error", type(error).__name__))
        return Outcomes(results)


class EvenTasksSolved:
    """EG-CFG returns the reference for even task numbers, the baseline for multiples of 4; the
    solver raises KeyboardInterrupt on the task named by `stop_at` (a run killed there)."""

    def __init__(self, stop_at: str | None = None):
        self.stop_at = stop_at

    def solve(self, task, method):
        if task.task_id == self.stop_at:
            raise KeyboardInterrupt
        number = int(task.task_id)
        good = number % 4 == 0 if method == "baseline" else number % 2 == 0
        code = task.reference if good else f"def {task.entry_point}(x):\n    return -1\n"
        return Answer(code=code, agent="greedy" if method == "baseline" else "s3-d2-t0.7-g1",
                      solved=good, lines=2, tokens=7, seconds=0.25)


def make_worker(stop_at=None):
    return lambda: TaskEvaluator(EvenTasksSolved(stop_at), InProcessExecutor(), info={"device": "cpu"})


def tasks(count: int = 8) -> list[Task]:
    made = []
    for number in range(1, count + 1):
        name = f"times_{number}"
        tests = [f"assert {name}(2) == {2 * number}", f"assert {name}(3) == {3 * number}"]
        made.append(Task(task_id=str(number), prompt=f"Multiply by {number}.", entry_point=name,
                         reference=f"def {name}(x):\n    return x * {number}\n", tests=tests, eval_tests=tests))
    return made


CONFIG = {"benchmark": "mbpp", "model": "stand-in", "preset": "editor", "gammas": None, "task_range": "1-8",
          "et": None, "timeout": None, "test_timeout": 5.0, "max_new_tokens": None}


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


# --- a full run and its resume ------------------------------------------------------------------

def full_run(path: Path) -> tuple[list[dict], dict]:
    run_dir = RunDir(path)
    records = run_tasks(tasks(), make_worker(), run_dir, run_dir.open(CONFIG, resume=False))
    return records, summarize(records, CONFIG)


def test_a_run_streams_one_line_per_task_and_scores_exactly(tmp_path):
    records, summary = full_run(tmp_path / "run")
    lines = (tmp_path / "run" / RESULTS).read_text().splitlines()
    assert [json.loads(line)["task_id"] for line in lines] == [str(n) for n in range(1, 9)]
    assert summary["methods"]["egcfg"]["pass_at_1"] == 50.0        # 2, 4, 6, 8
    assert summary["methods"]["baseline"]["pass_at_1"] == 25.0     # 4, 8
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == CONFIG
    assert summary["tasks"] == 8 and summary["task_range"] == "1-8" and summary["device"] == "cpu"


def test_resume_after_a_killed_run_gives_the_same_summary(tmp_path):
    _, expected = full_run(tmp_path / "complete")

    run_dir = RunDir(tmp_path / "killed")
    with pytest.raises(KeyboardInterrupt):
        run_tasks(tasks(), make_worker(stop_at="4"), run_dir, run_dir.open(CONFIG, resume=False))
    assert len((tmp_path / "killed" / RESULTS).read_text().splitlines()) == 3

    seen = []
    worker = make_worker()
    done = RunDir(tmp_path / "killed").open(CONFIG, resume=True)
    records = run_tasks(tasks(), lambda: _recording(worker(), seen), run_dir, done)
    assert seen == ["4", "5", "6", "7", "8"]                     # finished tasks are not run again
    assert summarize(records, CONFIG) == expected
    assert len((tmp_path / "killed" / RESULTS).read_text().splitlines()) == 8


def _recording(evaluator, seen):
    original = evaluator.evaluate

    def evaluate(task):
        seen.append(task.task_id)
        return original(task)

    evaluator.evaluate = evaluate
    return evaluator


def test_a_torn_last_line_is_dropped_and_that_task_runs_again(tmp_path):
    _, expected = full_run(tmp_path / "run")
    results = tmp_path / "run" / RESULTS
    lines = results.read_text().splitlines()
    # killed while writing the 6th line: 5 whole lines and half of the next
    results.write_text("\n".join(lines[:5]) + "\n" + lines[5][: len(lines[5]) // 2])
    run_dir = RunDir(tmp_path / "run")
    done = run_dir.open(CONFIG, resume=True)
    assert sorted(done, key=int) == ["1", "2", "3", "4", "5"]
    assert results.read_text().count("\n") == 5                      # the torn line is gone
    records = run_tasks(tasks(), make_worker(), run_dir, done)
    assert summarize(records, CONFIG) == expected


def test_a_broken_line_inside_the_file_is_an_error(tmp_path):
    full_run(tmp_path / "run")
    results = tmp_path / "run" / RESULTS
    lines = results.read_text().splitlines()
    lines[2] = "{not json"
    results.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match="line 3 is not valid JSON"):
        RunDir(tmp_path / "run").open(CONFIG, resume=True)


def test_existing_results_need_resume_and_the_same_settings(tmp_path):
    full_run(tmp_path / "run")
    with pytest.raises(UserError, match="--resume"):
        RunDir(tmp_path / "run").open(CONFIG, resume=False)
    with pytest.raises(UserError, match=r"preset was 'editor', now 'paper'"):
        RunDir(tmp_path / "run").open({**CONFIG, "preset": "paper"}, resume=True)
    with pytest.raises(UserError, match="gammas"):
        RunDir(tmp_path / "run").open({**CONFIG, "gammas": [1.0]}, resume=True)
    assert len(RunDir(tmp_path / "run").open(CONFIG, resume=True)) == 8


def test_a_folder_without_results_takes_new_settings(tmp_path):
    # a run that failed before its first task (say, a wrong --model) leaves only config.json
    RunDir(tmp_path / "run").open(CONFIG, resume=False)
    assert RunDir(tmp_path / "run").open({**CONFIG, "model": "other"}, resume=False) == {}
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"] == "other"


def test_results_without_config_cannot_be_resumed(tmp_path):
    full_run(tmp_path / "run")
    (tmp_path / "run" / "config.json").unlink()
    with pytest.raises(UserError, match="no config.json"):
        RunDir(tmp_path / "run").open(CONFIG, resume=True)


def test_progress_is_silent_without_a_terminal_and_counts_on_one():
    quiet = io.StringIO()
    progress = Progress(4, [], stream=quiet)
    progress.update({"baseline": {"pass": True}, "egcfg": {"pass": True}})
    progress.close()
    assert quiet.getvalue() == ""

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    shown = Terminal()
    progress = Progress(4, [{"baseline": {"pass": False}, "egcfg": {"pass": True}}], stream=shown)
    progress.update({"baseline": {"pass": False}, "egcfg": {"pass": False}})
    assert "2/4" in shown.getvalue() and "egcfg  50.0%" in shown.getvalue()
    assert "baseline   0.0%" in shown.getvalue()


# --- what the engine is shown -------------------------------------------------------------------

def test_the_engine_sees_only_the_public_tests():
    humaneval = Task(task_id="HumanEval/1", prompt="from typing import List\n\ndef f(x: List[int]) -> int:\n"
                     '    """Sum.\n    >>> f([1])\n    1\n    """\n', entry_point="f",
                     reference="...", tests=["assert f([1]) == 1"],
                     eval_tests=["assert f([1]) == 1", "assert f([2, 3]) == 5"],
                     setup="from typing import List", et_tests=["assert f([]) == 0"])
    completion = completion_task(humaneval)
    assert completion.tests == ["assert f([1]) == 1"]
    assert completion.source_before == humaneval.prompt and completion.instruction == ""
    assert completion.function_name == "f"

    mbpp = tasks(1)[0]
    mbpp.et_tests = ["assert times_1(9) == 9"]
    completion = completion_task(mbpp)
    assert completion.instruction == "Multiply by 1." and completion.source_before == ""
    assert completion.tests == mbpp.tests


# --- arguments and data -------------------------------------------------------------------------

def test_arguments_and_config():
    args = parse("mbpp", "--model", "m", "--gamma", "1", "--gamma", "3", "--ray", "--et", "/x/MBPP_ET.jsonl")
    assert args.ray == "local" and args.gamma == [1.0, 3.0]
    config = run_config(args)
    assert config["task_range"] == "11-510" and config["et"] == "MBPP_ET.jsonl" and config["gammas"] == [1.0, 3.0]
    assert parse("humaneval", "--model", "m", "--ray", "10.0.0.1:6379").ray == "10.0.0.1:6379"
    assert run_config(parse("humaneval", "--model", "m"))["task_range"] == "all"


def test_resume_needs_out():
    with pytest.raises(UserError, match="--out"):
        bench_accuracy.main(parse("mbpp", "--model", "m", "--data", "/nowhere", "--resume"))


def test_missing_data_is_a_clear_error(monkeypatch, tmp_path):
    with pytest.raises(UserError, match="--data"):
        load_benchmark("mbpp", None, "11-20", None)
    with pytest.raises(UserError, match="does not exist"):
        load_benchmark("mbpp", str(tmp_path / "nothing"), "11-20", None)


@pytest.mark.data
def test_mbpp_test_split_and_et_tests(data_dir):
    selected = load_benchmark("mbpp", str(data_dir), "11-510", None)
    assert [task.task_id for task in selected] == [str(n) for n in range(11, 511)]
    assert all(len(task.tests) == 3 and task.eval_tests == task.tests and not task.et_tests for task in selected)

    with_et = load_benchmark("mbpp", str(data_dir), "11-20", str(data_dir / "MBPP_ET_partial.jsonl"))
    assert [task.task_id for task in with_et] == [str(n) for n in range(11, 21)]
    extended = [task for task in with_et if task.et_tests]
    assert extended and all(len(task.et_tests) > 3 for task in extended)


@pytest.mark.data
def test_humaneval_with_et(data_dir):
    selected = load_benchmark("humaneval", str(data_dir), "0-4", str(data_dir / "HumanEval_ET.jsonl"))
    assert [task.task_id for task in selected] == [f"HumanEval/{n}" for n in range(5)]
    assert all(task.et_tests for task in selected)
    # the hidden check() is not what guidance sees
    assert all(task.eval_tests and task.eval_tests != task.tests for task in selected)


@pytest.mark.data
def test_an_et_file_for_another_benchmark_is_refused(data_dir):
    with pytest.raises(UserError):
        load_benchmark("humaneval", str(data_dir), "0-4", str(data_dir / "MBPP_ET_partial.jsonl"))


# --- the engine solver, with run_completion replaced -------------------------------------------

class FakeTokenizer:
    def encode(self, text, add_special_tokens=False):
        return text.split()


class FakeModel:
    tokenizer = FakeTokenizer()


def fake_run_completion(calls, *, wait_for_cancel=False):
    from engine.generation.events import AgentFinished, Finished

    def run_completion(model, executor, task, *, cancel=None, **options):
        calls.append((task, options))
        if wait_for_cancel:
            while not cancel.cancelled:
                time.sleep(0.01)
        body = "    y = x * 2\n    return y\n"
        yield AgentFinished("instruct/g1/s3d3t0.7", "code", 1, 3, "cancelled" if wait_for_cancel else "token_cap")
        yield Finished(code="def f(x):\n" + body, passed=1, total=3, agent="instruct/g1/s3d3t0.7", solved=False,
                       seconds=0.0, status="no agent passed all 3 given tests", body=body)

    return run_completion


def test_engine_solver_runs_baseline_and_egcfg_with_their_settings(monkeypatch):
    import engine.generation.agents

    calls = []
    monkeypatch.setattr(engine.generation.agents, "run_completion", fake_run_completion(calls))
    solver = EngineSolver(FakeModel(), executor=None, preset="paper", gammas=[0.5, 3.0], max_new_tokens=64)
    task = tasks(1)[0]
    baseline, guided = solver.solve(task, "baseline"), solver.solve(task, "egcfg")
    (_, base_options), (shown, guided_options) = calls
    assert base_options["preset"] == "baseline" and "gammas" not in base_options
    assert guided_options["preset"] == "paper" and guided_options["gammas"] == [0.5, 3.0]
    assert base_options["max_new_tokens"] == guided_options["max_new_tokens"] == 64
    assert shown.tests == task.tests
    # seeds: fixed per task and method, so any worker gives the same answer
    assert base_options["seed"] != guided_options["seed"]
    solver.solve(task, "egcfg")
    assert calls[-1][1]["seed"] == guided_options["seed"]
    assert (guided.agent, guided.lines, guided.tokens, guided.status, guided.solved) == \
        ("instruct/g1/s3d3t0.7", 2, 7, "token_cap", False)
    assert guided.code.startswith("def f(x):")


def test_engine_solver_timeout_cancels_and_says_so(monkeypatch):
    import engine.generation.agents

    monkeypatch.setattr(engine.generation.agents, "run_completion", fake_run_completion([], wait_for_cancel=True))
    started = time.monotonic()
    answer = EngineSolver(FakeModel(), executor=None, timeout=0.2).solve(tasks(1)[0], "egcfg")
    assert answer.status == "timeout" and time.monotonic() - started < 5
