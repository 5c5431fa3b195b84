"""`egcfg bench accuracy` end to end: the real executor on the real data, and a tiny random-weight
model through the real engine (its accuracy is meaningless; the plumbing is what is tested)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.bench.accuracy import load_benchmark
from engine.bench.scoring import Answer, evaluate_task, find_broken_tests, summarize, summary_markdown

PER_TASK_FIELDS = {"agent", "solved", "lines", "tokens", "seconds", "status", "code",
                   "guidance", "eval", "et", "pass", "et_pass"}


def egcfg(*argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "engine.cli.main", "bench", "accuracy", *argv],
                          capture_output=True, text=True, timeout=timeout, env=env)


class Reference:
    """A stand-in solver that returns the reference solution (no model)."""

    def solve(self, task, method):
        return Answer(code=task.reference, agent="reference", solved=True, lines=1, tokens=1, seconds=0.0)


@pytest.mark.data
def test_et_tests_the_reference_fails_are_excluded_and_listed(data_dir, executor):
    # MBPP-ET task 83 compares against an unquoted string; 75 expects another output format.
    tasks = load_benchmark("mbpp", str(data_dir), "75,83", str(data_dir / "MBPP_ET_partial.jsonl"))
    for task in tasks:
        broken = find_broken_tests(task, executor)
        assert broken, f"task {task.task_id}: expected ET tests that the reference fails"
        assert all(test.test == task.et_tests[test.index] for test in broken)
    records = [evaluate_task(task, Reference(), executor) for task in tasks]
    for record in records:
        # the reference passes every remaining ET test, so its ET score is a pass
        assert record["egcfg"]["et_pass"] is True and record["egcfg"]["pass"] is True
        assert record["egcfg"]["et"][1] == record["et_total"] - len(record["et_broken"])
    summary = summarize(records, {"benchmark": "mbpp"})
    assert {test["task_id"] for test in summary["et_broken_tests"]} == {"75", "83"}
    assert summary["methods"]["egcfg"]["et_pass_at_1"] == 100.0
    assert "ET tests excluded because the reference solution fails them" in summary_markdown(summary)


@pytest.mark.data
def test_wrong_programs_fail_through_the_real_executor(data_dir, executor):
    class Wrong:
        def solve(self, task, method):
            return Answer(code=f"def {task.entry_point}(*args):\n    return None\n", agent="w",
                          solved=False, lines=2, tokens=9, seconds=0.0)

    task = load_benchmark("humaneval", str(data_dir), "0", None)[0]
    record = evaluate_task(task, Wrong(), executor)
    assert record["egcfg"]["pass"] is False and record["egcfg"]["eval"][0] < record["egcfg"]["eval"][1]


def tiny_run_args(data_dir, tiny_model_dir, out) -> list[str]:
    return ["mbpp", "--data", str(data_dir), "--model", str(tiny_model_dir), "--tasks", "11-15",
            "--et", str(data_dir / "MBPP_ET_partial.jsonl"), "--out", str(out), "--json",
            "--max-new-tokens", "8", "--device", "cpu", "--threads", "1"]


@pytest.fixture(scope="module")
def tiny_run(data_dir, tiny_model_dir, tmp_path_factory):
    """One uninterrupted run over MBPP 11-15 with the tiny model: (run folder, stdout summary)."""
    out = tmp_path_factory.mktemp("accuracy") / "run"
    result = egcfg(*tiny_run_args(data_dir, tiny_model_dir, out))
    assert result.returncode == 0, result.stderr[-3000:]
    return out, json.loads(result.stdout)


def without_timings(value):
    """Records and summaries with the wall-clock fields removed (everything else is deterministic)."""
    if isinstance(value, dict):
        return {key: without_timings(item) for key, item in value.items()
                if key not in ("seconds", "seconds_per_task", "run_dir")}
    if isinstance(value, list):
        return [without_timings(item) for item in value]
    return value


def read_records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


@pytest.mark.data
def test_cli_runs_mbpp_end_to_end_with_a_tiny_model(tiny_run):
    out, summary = tiny_run
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["tasks"] == 5 and summary["benchmark"] == "mbpp" and summary["device"] == "cpu"
    assert summary["random_weights"] is True and "meaningless" in summary["note"]
    for method in ("baseline", "egcfg"):
        assert summary["methods"][method]["tasks"] == 5
    records = read_records(out)
    assert [record["task_id"] for record in records] == ["11", "12", "13", "14", "15"]
    for record in records:
        for method in ("baseline", "egcfg"):
            entry = record[method]
            assert PER_TASK_FIELDS <= set(entry)
            assert entry["guidance"][1] == 3 and entry["eval"][1] == 3
            assert entry["agent"]
    # tasks 11, 12 and 14 have MBPP-ET tests in the partial file, 13 and 15 do not
    assert [record["et_total"] > 0 for record in records] == [True, True, False, True, False]
    assert summary["methods"]["egcfg"]["et_tasks"] == 3
    table = (out / "summary.md").read_text()
    assert "| pass@1, base tests |" in table and "meaningless" in table and "## Per task" in table


@pytest.mark.data
def test_resuming_a_finished_run_runs_nothing(tiny_run, data_dir, tiny_model_dir):
    out, summary = tiny_run
    again = egcfg(*tiny_run_args(data_dir, tiny_model_dir, out), "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["methods"] == summary["methods"]
    assert len(read_records(out)) == 5

    # Other settings on the same folder: one clear sentence, exit status 2.
    clash = egcfg(*tiny_run_args(data_dir, tiny_model_dir, out), "--resume", "--preset", "paper")
    assert clash.returncode == 2 and "other settings" in clash.stderr and "Traceback" not in clash.stderr


@pytest.mark.data
def test_a_killed_run_resumes_to_the_same_results(tiny_run, data_dir, tiny_model_dir, tmp_path):
    full_out, full_summary = tiny_run
    out = tmp_path / "killed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "engine.cli.main", "bench", "accuracy",
                                *tiny_run_args(data_dir, tiny_model_dir, out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                               start_new_session=True)
    results = out / "results.jsonl"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if results.is_file() and results.read_text().count("\n") >= 2:
                break
            time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGKILL)   # the run and its sandbox workers, mid-task
        process.wait()
    kept = results.read_text().count("\n")
    assert 2 <= kept < 5, "the run should have been killed after 2 of its 5 tasks"

    resumed = egcfg(*tiny_run_args(data_dir, tiny_model_dir, out), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert without_timings(read_records(out)) == without_timings(read_records(full_out))
    assert without_timings(json.loads(resumed.stdout)) == without_timings(full_summary)


@pytest.mark.data
def test_bad_input_is_one_sentence(data_dir, tmp_path):
    result = egcfg("mbpp", "--data", str(data_dir), "--model", str(tmp_path / "no-model"),
                   "--tasks", "20-11", "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and "runs backwards" in result.stderr
    assert "Traceback" not in result.stderr
    result = egcfg("mbpp", "--data", str(data_dir), "--model", str(tmp_path / "no-model"),
                   "--tasks", "11", "--out", str(tmp_path / "run2"))
    assert result.returncode == 2 and "Traceback" not in result.stderr and "no-model" in result.stderr
