"""`egcfg bench accuracy --ray` on a local Ray instance (2 CPUs): the same per-task records as the
in-process path, with a deterministic stand-in and with the tiny model through the real engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

import pytest

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'egcfg[ray]')")

from engine.bench.accuracy import RunDir, run_tasks  # noqa: E402
from engine.bench.datasets import Task  # noqa: E402
from engine.bench.scoring import Answer, TaskEvaluator  # noqa: E402

# Actors cannot import this test module: ship its classes by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

# Keys that legitimately differ between workers and runs.
VARYING = {"seconds", "worker_pid"}


class Halves:
    """Deterministic stand-in: odd task numbers get the reference, even ones a wrong program."""

    def solve(self, task, method):
        good = int(task.task_id) % 2 == 1 and method == "egcfg"
        code = task.reference if good else f"def {task.entry_point}(x):\n    return 0\n"
        return Answer(code=code, agent=f"{method}-agent", solved=good, lines=2, tokens=5, seconds=0.1)


@dataclass
class StandInWorker:
    def __call__(self) -> TaskEvaluator:
        from engine.execution.executor import Executor

        executor = Executor(workers=1)
        return TaskEvaluator(Halves(), executor, info={"device": "cpu", "worker_pid": os.getpid()},
                             close=executor.close)


def tasks() -> list[Task]:
    made = []
    for number in range(1, 7):
        name = f"plus_{number}"
        tests = [f"assert {name}(1) == {1 + number}", f"assert {name}(5) == {5 + number}"]
        made.append(Task(task_id=str(number), prompt=f"Add {number}.", entry_point=name,
                         reference=f"def {name}(x):\n    return x + {number}\n", tests=tests, eval_tests=tests))
    return made


def strip(record: dict) -> dict:
    return {key: strip(value) if isinstance(value, dict) else value
            for key, value in record.items() if key not in VARYING}


CONFIG = {"benchmark": "mbpp", "model": "stand-in"}


def test_ray_actors_give_the_same_records_as_this_process(tmp_path):
    here = run_tasks(tasks(), StandInWorker(), RunDir(tmp_path / "here"),
                     RunDir(tmp_path / "here").open(CONFIG, resume=False))
    on_ray = run_tasks(tasks(), StandInWorker(), RunDir(tmp_path / "ray"),
                       RunDir(tmp_path / "ray").open(CONFIG, resume=False), ray_address="local", ray_workers=2)
    assert [strip(record) for record in on_ray] == [strip(record) for record in here]
    assert [record["egcfg"]["pass"] for record in on_ray] == [True, False] * 3
    # both actors got work, and the results file holds every task once (in completion order)
    assert len({record["worker_pid"] for record in on_ray}) == 2
    streamed = [json.loads(line)["task_id"] for line in (tmp_path / "ray" / "results.jsonl").read_text().splitlines()]
    assert sorted(streamed, key=int) == [str(n) for n in range(1, 7)]
    assert not ray.is_initialized()   # the local instance this run started is shut down again


def egcfg(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "engine.cli.main", "bench", "accuracy", *argv],
                          capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.data
def test_tiny_model_on_ray_matches_the_in_process_run(data_dir, tiny_model_dir, tmp_path):
    common = ["mbpp", "--data", str(data_dir), "--model", str(tiny_model_dir), "--tasks", "11-13",
              "--max-new-tokens", "8", "--device", "cpu", "--threads", "1", "--json"]
    here = egcfg(*common, "--out", str(tmp_path / "here"))
    assert here.returncode == 0, here.stderr[-3000:]
    on_ray = egcfg(*common, "--out", str(tmp_path / "ray"), "--ray", "--workers", "2")
    assert on_ray.returncode == 0, on_ray.stderr[-3000:]

    def records(folder):
        rows = [json.loads(line) for line in (tmp_path / folder / "results.jsonl").read_text().splitlines()]
        return sorted((strip(row) for row in rows), key=lambda row: int(row["task_id"]))

    assert records("ray") == records("here")
    assert len(records("ray")) == 3
    assert json.loads(on_ray.stdout)["methods"]["egcfg"]["passed"] == json.loads(here.stdout)["methods"]["egcfg"]["passed"]


@pytest.mark.data
def test_a_model_that_cannot_load_in_an_actor_is_one_sentence(data_dir, tmp_path):
    result = egcfg("mbpp", "--data", str(data_dir), "--model", str(tmp_path / "no-model"), "--tasks", "11",
                   "--out", str(tmp_path / "run"), "--ray", "--workers", "1")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "egcfg: no model folder at" in result.stderr and "Traceback" not in result.stderr
