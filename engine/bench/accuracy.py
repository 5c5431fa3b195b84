"""`egcfg bench accuracy`: score the engine on MBPP / sanitized MBPP / HumanEval, honestly.

For every task the engine answers twice: plain greedy decoding (gamma 0, no guidance: the baseline)
and EG-CFG. Guidance and the stopping rule see only the benchmark's public tests (Task.tests); the
ONE program the engine returns is scored on the held-out tests (Task.eval_tests) and, with --et, on
the extended tests, minus those the reference solution itself fails (listed in the report).

Per-task results stream into RUN_DIR/results.jsonl (one JSON line per task, flushed), so a killed
run continues with --resume; RUN_DIR/summary.json and summary.md are written at the end. With --ray
the tasks run on a Ray cluster (engine/bench/ray_runner.py), one actor per GPU holding the model.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from engine.errors import UserError
from engine.bench.scoring import METHODS, Answer, TaskEvaluator, summarize, summary_markdown

BENCHMARKS = ("mbpp", "mbpp-sanitized", "humaneval")
# The ET file that extends each benchmark (the ET loaders keep the base tests and add et_tests).
ET_DATASETS = {"mbpp": "mbpp-et", "mbpp-sanitized": "mbpp-et", "humaneval": "humaneval-et"}
# MBPP's test split as the literature uses it; tasks 1-10 are prompt material.
DEFAULT_TASKS = {"mbpp": "11-510"}
# A model this small cannot have learnt to code: whatever it scores is noise.
MEANINGFUL_PARAMETERS = 10_000_000
# Settings a resumed run must share with the run it continues (everything that changes answers).
CONFIG_KEYS = ("benchmark", "model", "preset", "gammas", "task_range", "et", "timeout", "test_timeout",
               "max_new_tokens")

RESULTS, CONFIG, SUMMARY_JSON, SUMMARY_MD = "results.jsonl", "config.json", "summary.json", "summary.md"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("benchmark", choices=BENCHMARKS, help="which benchmark to run")
    parser.add_argument("--data", metavar="PATH", default=os.environ.get("EGCFG_DATA"),
                        help="folder or file with the benchmark data, or hf:DATASET_ID (default: $EGCFG_DATA)")
    parser.add_argument("--model", metavar="ID_OR_DIR", required=True,
                        help="hub id or local folder of the model")
    parser.add_argument("--preset", choices=("editor", "paper"), default="editor",
                        help="agent grid for EG-CFG (default: editor)")
    parser.add_argument("--gamma", metavar="G", type=float, action="append",
                        help="guidance strength; repeat for several (default: the preset's)")
    parser.add_argument("--tasks", metavar="RANGE",
                        help="task numbers, e.g. 11-20,30 (default: MBPP 11-510, otherwise all)")
    parser.add_argument("--out", metavar="RUN_DIR",
                        help="folder for results.jsonl and the summary (default: runs/accuracy-BENCHMARK-TIME)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out, skipping tasks it already has")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    parser.add_argument("--et", metavar="PATH",
                        help="ET file (MBPP_ET_partial.jsonl, HumanEval_ET.jsonl) to score on as well")
    parser.add_argument("--ray", metavar="ADDRESS", nargs="?", const="local",
                        help="run tasks on a Ray cluster (no ADDRESS: start a local Ray instance)")
    parser.add_argument("--workers", metavar="N", type=int,
                        help="Ray actors (default: one per GPU, or 2 on CPU)")
    parser.add_argument("--timeout", metavar="S", type=float,
                        help="seconds the engine may spend on one answer; it then returns its best so far")
    parser.add_argument("--test-timeout", metavar="S", type=float, default=5.0,
                        help="seconds one test may run (default: 5)")
    parser.add_argument("--max-new-tokens", metavar="N", type=int,
                        help="cap on the tokens of one answer (default: the engine's)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where the model runs (default: auto)")
    parser.add_argument("--threads", metavar="N", type=int,
                        help="torch threads when the model runs on the CPU (default: torch's; with --ray: 1 per actor)")


# --- the run folder -------------------------------------------------------------------------------

class RunDir:
    """RUN_DIR: config.json (the settings), results.jsonl (one line per finished task), summary."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.results = self.path / RESULTS

    def open(self, config: dict[str, Any], resume: bool) -> dict[str, dict]:
        """Check the folder against `config` and return the results it already holds, by task id."""
        has_results = self.results.is_file() and self.results.stat().st_size > 0
        if has_results and not resume:
            raise UserError(f"{self.path} already holds results: pass --resume to continue that run, "
                            f"or choose another --out")
        config_file = self.path / CONFIG
        if has_results:   # without results there is nothing the settings could clash with
            self._check_config(config_file, config)
        self.path.mkdir(parents=True, exist_ok=True)
        config_file.write_text(json.dumps(config, indent=2) + "\n")
        return self._read_results() if has_results else {}

    def _check_config(self, config_file: Path, config: dict[str, Any]) -> None:
        try:
            previous = json.loads(config_file.read_text())
        except FileNotFoundError:
            raise UserError(f"{self.path} has results but no {CONFIG}, so it cannot be resumed safely: "
                            f"choose another --out") from None
        except (OSError, json.JSONDecodeError) as error:
            raise UserError(f"cannot read {config_file}: {error}") from None
        differences = [f"{key} was {previous.get(key)!r}, now {config.get(key)!r}"
                       for key in CONFIG_KEYS if previous.get(key) != config.get(key)]
        if differences:
            raise UserError(f"{self.path} holds a run with other settings ({'; '.join(differences)}): "
                            f"use the same settings to resume, or choose another --out")

    def _read_results(self) -> dict[str, dict]:
        """Records by task id. A torn last line (the run was killed while writing it) is dropped."""
        lines = self.results.read_text().split("\n")
        records: dict[str, dict] = {}
        kept = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                if number == len(lines):   # no newline after it: it was being written
                    break
                raise UserError(f"{self.results} line {number} is not valid JSON: fix or delete that line") from None
            records.setdefault(str(record["task_id"]), record)
            kept.append(line)
        if len(kept) != sum(1 for line in lines if line.strip()):
            self.results.write_text("".join(line + "\n" for line in kept))
        return records

    def append(self, record: dict[str, Any]) -> None:
        with self.results.open("a") as stream:
            stream.write(json.dumps(record) + "\n")
            stream.flush()
            os.fsync(stream.fileno())

    def write_summary(self, summary: dict[str, Any], markdown: str) -> None:
        (self.path / SUMMARY_JSON).write_text(json.dumps(summary, indent=2) + "\n")
        (self.path / SUMMARY_MD).write_text(markdown)


# --- progress on stderr ---------------------------------------------------------------------------

class Progress:
    """One status line on stderr, rewritten per task; silent unless stderr is a terminal."""

    def __init__(self, total: int, done: Sequence[dict], stream=sys.stderr):
        self.total, self.stream = total, stream
        self.enabled = stream.isatty()
        self.records = list(done)
        self.started = time.monotonic()
        self.new = 0

    def update(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        self.new += 1
        if not self.enabled:
            return
        count = len(self.records)
        width = 24
        filled = int(width * count / max(self.total, 1))
        rates = "  ".join(f"{method} {100.0 * sum(r[method]['pass'] for r in self.records) / count:5.1f}%"
                          for method in METHODS)
        per_task = (time.monotonic() - self.started) / self.new
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {count}/{self.total}  "
                          f"pass@1 {rates}  {per_task:.1f} s/task ")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.new:
            self.stream.write("\n")
            self.stream.flush()


# --- the engine as a solver -----------------------------------------------------------------------

def completion_task(task):
    """The engine's view of a benchmark task: only the public tests, never eval/ET tests.

    HumanEval: the prompt (imports, signature, docstring) is the code before the body. MBPP: the
    model writes the whole function from the text and the asserts, as in the paper, so no def line
    is given (taking it from the reference solution would leak the argument names)."""
    from engine.generation.events import CompletionTask

    is_code_prompt = re.search(rf"^\s*(async\s+)?def\s+{re.escape(task.entry_point)}\s*\(", task.prompt, re.M) is not None
    return CompletionTask(
        function_name=task.entry_point,
        source_before=task.prompt if is_code_prompt else "",
        instruction="" if is_code_prompt else task.prompt,
        tests=list(task.tests),
        setup=task.setup,
    )


class EngineSolver:
    """Task -> Answer through `run_completion`: the baseline is the "baseline" preset (one greedy
    agent, gamma 0); EG-CFG is the chosen preset and gammas."""

    def __init__(self, model, executor, *, preset: str = "editor", gammas: Sequence[float] | None = None,
                 timeout: float | None = None, max_new_tokens: int | None = None):
        self.model, self.executor = model, executor
        self.preset, self.gammas = preset, list(gammas) if gammas else None
        self.timeout, self.max_new_tokens = timeout, max_new_tokens

    def solve(self, task, method: str) -> Answer:
        from engine.generation.agents import run_completion
        from engine.generation.events import AgentFinished, CancelToken, Finished

        options: dict[str, Any] = {"preset": "baseline"} if method == "baseline" else \
            {"preset": self.preset, "gammas": self.gammas}
        if self.max_new_tokens:
            options["max_new_tokens"] = self.max_new_tokens
        # Seeded per task and method, so an answer does not depend on which worker ran it or on
        # the tasks before it (the same results in this process and on Ray).
        options["seed"] = zlib.crc32(f"{task.task_id}/{method}".encode())
        cancel = CancelToken()
        timer = threading.Timer(self.timeout, cancel.cancel) if self.timeout else None
        reasons: dict[str, str] = {}
        final = None
        started = time.monotonic()
        if timer:
            timer.daemon = True
            timer.start()
        try:
            for event in run_completion(self.model, self.executor, completion_task(task), cancel=cancel, **options):
                if isinstance(event, AgentFinished):
                    reasons[event.agent] = event.reason
                elif isinstance(event, Finished):
                    final = event
        finally:
            if timer:
                timer.cancel()
        seconds = time.monotonic() - started
        if final is None:
            raise RuntimeError(f"the engine stopped without an answer for task {task.task_id}")
        body = final.body or ""
        status = reasons.get(final.agent, "none")
        if cancel.cancelled:
            status = "timeout"
        return Answer(
            code=final.code,
            agent=final.agent,
            solved=bool(final.solved),
            lines=len(body.splitlines()),
            tokens=len(self.model.tokenizer.encode(body, add_special_tokens=False)) if body else 0,
            seconds=round(seconds, 3),
            status=status,
        )


@dataclass
class EngineWorker:
    """Everything a worker needs to build its solver; plain data, so Ray can ship it to an actor."""
    model: str
    device: str = "auto"
    preset: str = "editor"
    gammas: list[float] | None = None
    timeout: float | None = None
    test_timeout: float = 5.0
    max_new_tokens: int | None = None
    # A Ray actor on a CPU-only cluster reserves one core: it then runs one model thread and one
    # sandbox process, instead of each actor taking every core of the machine.
    one_core_on_cpu: bool = False
    threads: int | None = None            # torch threads when the model runs on the CPU
    env: dict[str, str] = field(default_factory=dict)

    def __call__(self) -> TaskEvaluator:
        os.environ.update(self.env)
        import torch

        from engine.execution.executor import Executor, Limits
        from engine.generation.models import describe, load_model

        loaded = load_model(self.model, device=self.device)
        one_core = self.one_core_on_cpu and loaded.device == "cpu"
        threads = 1 if one_core else self.threads
        if threads and loaded.device == "cpu":
            torch.set_num_threads(threads)
        executor = Executor(workers=1 if one_core else None, limits=Limits(test_seconds=self.test_timeout))
        parameters = sum(parameter.numel() for parameter in loaded.model.parameters())
        solver = EngineSolver(loaded, executor, preset=self.preset, gammas=self.gammas,
                              timeout=self.timeout, max_new_tokens=self.max_new_tokens)
        info = {"device": loaded.device, "model_loaded": describe(loaded), "parameters": parameters,
                "random_weights": parameters < MEANINGFUL_PARAMETERS}
        return TaskEvaluator(solver, executor, info=info, close=executor.close)


# --- loading tasks --------------------------------------------------------------------------------

def load_benchmark(benchmark: str, data: str | None, tasks: str | None, et: str | None) -> list:
    from engine.bench.datasets import load_tasks, select_tasks

    if not data:
        raise UserError("no benchmark data: pass --data PATH (a folder like ../shared/data) or set EGCFG_DATA")
    selected = select_tasks(load_tasks(benchmark, data), tasks)
    if et:
        extended = {task.task_id: task.et_tests for task in load_tasks(ET_DATASETS[benchmark], et)}
        if not any(task.task_id in extended for task in selected):
            raise UserError(f"{et} has no ET tests for the selected {benchmark} tasks: is it the right ET file?")
        for task in selected:
            task.et_tests = list(extended.get(task.task_id, []))
    return selected


def run_config(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "benchmark": args.benchmark,
        "model": args.model,
        "preset": args.preset,
        "gammas": args.gamma,
        "task_range": args.tasks or DEFAULT_TASKS.get(args.benchmark, "all"),
        "et": Path(args.et).name if args.et else None,
        "timeout": args.timeout,
        "test_timeout": args.test_timeout,
        "max_new_tokens": args.max_new_tokens,
    }


def default_out(benchmark: str) -> Path:
    return Path("runs") / f"accuracy-{benchmark}-{time.strftime('%Y%m%d-%H%M%S')}"


# --- running tasks --------------------------------------------------------------------------------

def run_here(tasks: Sequence, worker: Callable[[], TaskEvaluator], on_record: Callable[[dict], None]) -> None:
    """Run the tasks one after another in this process."""
    evaluator = worker()
    try:
        for task in tasks:
            on_record(evaluator.evaluate(task))
    finally:
        evaluator.close()


def run_tasks(tasks: Sequence, worker: Callable[[], TaskEvaluator], run_dir: RunDir,
              done: dict[str, dict], *, ray_address: str | None = None, ray_workers: int | None = None,
              progress: Progress | None = None) -> list[dict]:
    """Run the tasks `done` lacks, streaming each record into the run folder; all records, in task order."""
    pending = [task for task in tasks if task.task_id not in done]
    records = dict(done)

    def on_record(record: dict) -> None:
        run_dir.append(record)
        records[str(record["task_id"])] = record
        if progress:
            progress.update(record)

    try:
        if pending and ray_address:
            from engine.bench.ray_runner import run_on_ray

            run_on_ray(pending, worker, on_record, address=ray_address, workers=ray_workers)
        elif pending:
            run_here(pending, worker, on_record)
    finally:
        if progress:
            progress.close()
    return [records[task.task_id] for task in tasks if task.task_id in records]


def main(args: argparse.Namespace) -> int:
    if args.resume and not args.out:
        raise UserError("--resume needs --out RUN_DIR naming the run to continue")
    if args.workers is not None and not args.ray:
        raise UserError("--workers sets the number of Ray actors: use it with --ray")
    if args.workers is not None and args.workers < 1:
        raise UserError("--workers must be at least 1")
    if args.threads is not None and args.threads < 1:
        raise UserError("--threads must be at least 1")
    tasks = load_benchmark(args.benchmark, args.data, args.tasks or DEFAULT_TASKS.get(args.benchmark), args.et)
    config = run_config(args)
    run_dir = RunDir(args.out or default_out(args.benchmark))
    done = {task_id: record for task_id, record in run_dir.open(config, args.resume).items()}
    worker = EngineWorker(
        model=args.model, device=args.device, preset=args.preset, gammas=args.gamma,
        timeout=args.timeout, test_timeout=args.test_timeout, max_new_tokens=args.max_new_tokens,
        one_core_on_cpu=bool(args.ray), threads=args.threads,
        env={key: value for key, value in os.environ.items()
             if key.startswith(("HF_", "EGCFG_", "TRANSFORMERS_", "TOKENIZERS_"))},
    )
    progress = Progress(len(tasks), [done[task.task_id] for task in tasks if task.task_id in done])
    try:
        records = run_tasks(tasks, worker, run_dir, done, ray_address=args.ray, ray_workers=args.workers,
                            progress=progress)
    except KeyboardInterrupt:
        print(f"egcfg: stopped; {progress.new} new task(s) saved in {run_dir.results}; continue with "
              f"--resume --out {run_dir.path}", file=sys.stderr)
        raise
    summary = summarize(records, config)
    summary["run_dir"] = str(run_dir.path)
    markdown = summary_markdown(summary, records)
    run_dir.write_summary(summary, markdown)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(markdown, end="")
    return 0
