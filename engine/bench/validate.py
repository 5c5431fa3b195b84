"""`egcfg bench validate`: run every reference solution of a data set against its tests.

It checks the executor (sandbox, tracer, verdicts) on thousands of known-good programs, and it finds
the broken tests of a data set: the ones the reference itself fails. Each assert runs on its own, so
one broken assert does not hide the others.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Callable, Sequence

from engine.bench.datasets import NAMES, Task, load_tasks, select_tasks
from engine.errors import UserError
from engine.execution.sandbox.tracer import MAX_SECONDS as TRACER_MAX_SECONDS

# Default per-test limit, in seconds of CPU on an otherwise idle core. Measured with the references
# of HumanEval-ET: the slowest test a reference passes in time is HumanEval/55's recursive fib(35)
# (1.2 s of CPU); HumanEval/63's fibfib (2.5 s) and HumanEval/39 (11 s) are the "too slow" ones
# DATA.md lists. 1.7 s sits between them with a factor of about 1.4 on either side.
# MBPP's own references need more (MBPP/123: 2.4 s), and DATA.md flags no MBPP test as slow, so
# plain and sanitized MBPP get 5 s; MBPP-ET keeps 1.7 s, where DATA.md lists 123 as timing out.
BASE_TIMEOUT = {"mbpp": 5.0, "mbpp-sanitized": 5.0, "mbpp-et": 1.7, "humaneval": 1.7, "humaneval-et": 1.7}
# The tracer detaches after MAX_SECONDS of wall time, so tracing adds at most that.
TRACE_ALLOWANCE = TRACER_MAX_SECONDS

# Which tests a data set's references are checked against, unless --split says otherwise.
DEFAULT_SPLIT = {"mbpp": "public", "mbpp-sanitized": "public", "humaneval": "eval", "humaneval-et": "et", "mbpp-et": "et"}
SPLITS = {
    "public": lambda task: task.tests,
    "eval": lambda task: task.eval_tests,
    "et": lambda task: task.et_tests,
    "challenge": lambda task: task.challenge_tests,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", choices=NAMES, help="which data set")
    parser.add_argument("--data", metavar="PATH", default=os.environ.get("EGCFG_DATA"),
                        help="folder with the data files, one data file, or hf:DATASET_ID (default: $EGCFG_DATA)")
    parser.add_argument("--split", choices=sorted(SPLITS),
                        help="tests to run: public (MBPP asserts, HumanEval docstring examples), eval (scoring tests), "
                             "et (extended tests), challenge (MBPP challenge tests); default: what the data set is scored on")
    parser.add_argument("--tasks", metavar="RANGE", help="only these task numbers, e.g. 11-510 or 11-20,30")
    parser.add_argument("--timeout", type=float, default=None, metavar="S",
                        help="wall-clock seconds per test (default: 5 s of CPU for MBPP, 1.7 s for the others, stretched by how "
                             f"busy this machine is right now, plus {TRACE_ALLOWANCE:g} s when tracing)")
    parser.add_argument("--workers", type=int, default=None, metavar="N", help="sandbox workers (default: one per core)")
    parser.add_argument("--no-trace", action="store_true", help="run without the tracer")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--sandbox", choices=("auto", "bubblewrap", "landlock", "limits"), default="auto",
                        help="isolation of the tests (default auto: bubblewrap, else Landlock, else refuse; "
                             "limits = none, an explicit opt-in; EGCFG_SANDBOX sets the default)")


def main(args: argparse.Namespace) -> int:
    if not args.data:
        raise UserError("say where the data is: --data PATH (a folder or a file), or set EGCFG_DATA")
    if args.timeout is not None and args.timeout <= 0:
        raise UserError("--timeout must be a positive number of seconds")
    if args.workers is not None and args.workers < 1:
        raise UserError("--workers must be at least 1")
    split = args.split or DEFAULT_SPLIT[args.dataset]
    tasks = select_tasks(load_tasks(args.dataset, args.data), args.tasks)
    if not any(SPLITS[split](task) for task in tasks):
        raise UserError(f"no selected task of {args.dataset} has {split} tests")
    progress = _ProgressBar(sum(1 for task in tasks if SPLITS[split](task))) if sys.stderr.isatty() else None
    report = run_validation(tasks, dataset=args.dataset, split=split, trace=not args.no_trace, timeout=args.timeout,
                            workers=args.workers, progress=progress, isolation=args.sandbox)
    report = {"dataset": args.dataset, "data": str(args.data), "split": split, **report}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
    return 0


def run_validation(tasks: Sequence[Task], *, dataset: str, split: str, trace: bool = True, timeout: float | None = None,
                   workers: int | None = None, progress: Callable[[int], None] | None = None,
                   isolation: str = "auto") -> dict:
    """What the command does: choose the per-test limit, run every reference through a fresh
    executor, then run the tests that timed out (or lost their worker) again, one task at a time on
    one worker, under a limit measured again just before: a burst of load from other processes
    during the main run does not turn into a broken test, and the final verdict on slowness is
    taken on a machine whose load was just measured."""
    from engine.execution.executor import Executor  # imported here: `egcfg --help` stays cheap

    limit, slowdown = (timeout, None) if timeout else default_timeout(dataset, trace=trace)
    longest = max((len(SPLITS[split](task)) for task in tasks), default=1)

    def recheck(jobs):
        results = []
        for job in jobs:  # one task at a time, each under a limit measured just before it runs
            second, _ = (timeout, None) if timeout else default_timeout(dataset, trace=trace)
            with Executor(workers=1, limits=_limits(second, len(job.tests)), isolation=isolation) as quiet:
                results.append(quiet.run(job))
        return results

    with Executor(workers=workers, limits=_limits(limit, longest), isolation=isolation) as executor:
        report = validate(tasks, executor, split=split, trace=trace, progress=progress, recheck=recheck)
    return {"timeout": limit, "slowdown": slowdown, **report}


def _limits(test_seconds: float, tests_per_job: int):
    from engine.execution.executor import Limits

    return Limits(test_seconds=test_seconds, job_seconds=test_seconds * max(tests_per_job, 1) + 30)


def default_timeout(dataset: str, *, trace: bool) -> tuple[float, float]:
    """(seconds per test, slowdown): the data set's BASE_TIMEOUT stretched by how much slower than
    its CPU time a busy machine runs a process right now (a shared machine can be several times
    slower), plus TRACE_ALLOWANCE when tracing. The data's verdicts then do not depend on the load."""
    slowdown = machine_slowdown()
    return round(BASE_TIMEOUT[dataset] * slowdown + (TRACE_ALLOWANCE if trace else 0.0), 2), slowdown


def machine_slowdown(samples: int = 5) -> float:
    """Wall-clock time over CPU time of a short pure-Python loop, the median of a few runs (1 on an
    idle machine, about 4 when four busy processes share each core)."""
    ratios = []
    for _ in range(samples):
        wall, cpu = time.perf_counter(), time.process_time()
        total = 0
        for number in range(300_000):
            total += number % 7
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        ratios.append(wall / cpu if cpu > 0 else 1.0)
    ratios.sort()
    return round(min(max(ratios[len(ratios) // 2], 1.0), 10.0), 2)


def _worth_rechecking(result) -> bool:
    """Outcomes that say more about the machine than about the test."""
    # "exited without a result" says nothing about the reference when it does not repeat (an EMFILE in
    # the test process's set-up once caused it); a reference that really exits fails its recheck too.
    return result.outcome == "timeout" or (
        result.outcome == "error"
        and result.message.startswith(("the sandbox worker", "executor failure", "exited without a result"))
    )


def validate(tasks: Sequence[Task], executor, *, split: str, trace: bool = True,
             progress: Callable[[int], None] | None = None,
             recheck: Callable[[list], list] | None = None) -> dict:
    """Run each task's reference against its ``split`` tests; the summary the command prints.
    ``recheck`` (jobs -> job results) runs timed-out tests again; its verdict is the final one."""
    from engine.execution.executor import Job

    tests_of = SPLITS[split]
    chosen = [task for task in tasks if tests_of(task)]
    jobs = [Job(program=task.reference, tests=tuple(tests_of(task)), setup=task.setup, trace=trace) for task in chosen]
    started = time.perf_counter()
    outcomes = [list(result.tests) for result in _run_all(executor, jobs, progress)]
    seconds = time.perf_counter() - started
    rechecked = recovered = 0
    if recheck is not None:
        suspects = [(t, [i for i, r in enumerate(results) if _worth_rechecking(r)]) for t, results in enumerate(outcomes)]
        suspects = [(t, indexes) for t, indexes in suspects if indexes]
        if suspects:
            again = recheck([Job(program=jobs[t].program, tests=tuple(jobs[t].tests[i] for i in indexes),
                                 setup=jobs[t].setup, trace=trace) for t, indexes in suspects])
            for (t, indexes), result in zip(suspects, again):
                for i, second in zip(indexes, result.tests):
                    rechecked += 1
                    recovered += second.outcome == "pass"
                    outcomes[t][i] = second
    broken = [{"task_id": task.task_id, "test": r.test, "outcome": r.outcome, "message": r.message}
              for task, results in zip(chosen, outcomes) for r in results if r.outcome != "pass"]
    total = sum(len(results) for results in outcomes)
    return {
        "tasks": len(chosen),
        "tasks_passing": sum(all(r.outcome == "pass" for r in results) for results in outcomes),
        "tests": total,
        "tests_passing": total - len(broken),
        "broken_tests": broken,
        "rechecked": rechecked,
        "recovered_on_recheck": recovered,
        "seconds": round(seconds, 2),
        "runs_per_second": round(total / seconds, 1) if seconds > 0 else None,
        "isolation": executor.isolation,
        "traced": trace,
        "tasks_without_tests": [task.task_id for task in tasks if not tests_of(task)],
    }


def _run_all(executor, jobs: list, progress: Callable[[int], None] | None) -> list:
    """All jobs through the executor. With a progress bar, jobs go in from a few threads (the
    executor is thread-safe and queues every test on its workers) so each finished job can be
    counted; without one, a single map call."""
    if progress is None:
        return executor.map(jobs)
    from concurrent.futures import ThreadPoolExecutor, as_completed

    results: list = [None] * len(jobs)
    with ThreadPoolExecutor(max_workers=4 * (os.cpu_count() or 1)) as threads:
        futures = {threads.submit(executor.run, job): index for index, job in enumerate(jobs)}
        for done, future in enumerate(as_completed(futures), 1):
            results[futures[future]] = future.result()
            progress(done)
    return results


class _ProgressBar:
    """``[#####.....] 120/974 tasks`` redrawn in place on stderr."""

    def __init__(self, total: int, width: int = 30):
        self.total, self.width, self.started = total, width, time.perf_counter()

    def __call__(self, done: int) -> None:
        filled = self.width * done // max(self.total, 1)
        elapsed = time.perf_counter() - self.started
        end = "\n" if done >= self.total else ""
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total} tasks {elapsed:5.1f} s{end}")
        sys.stderr.flush()


def format_report(report: dict) -> str:
    lines = [
        f"{report['dataset']} ({report['split']} tests, {report['data']})",
        f"tasks passing: {report['tasks_passing']}/{report['tasks']}",
        f"tests passing: {report['tests_passing']}/{report['tests']}",
        f"{report['seconds']} s, {report['runs_per_second']} runs/s, isolation {report['isolation']}, "
        f"{'traced' if report['traced'] else 'not traced'}, {report['timeout']:g} s per test"
        + (f" (machine {report['slowdown']:g}x slower than idle)" if (report.get("slowdown") or 1) > 1.05 else ""),
    ]
    if report.get("rechecked"):
        lines.append(f"timed-out or resultless tests run again alone: {report['rechecked']}, "
                     f"passed then: {report['recovered_on_recheck']}")
    if report["tasks_without_tests"]:
        lines.append(f"tasks without such tests: {len(report['tasks_without_tests'])}")
    if report["broken_tests"]:
        lines.append(f"tests the reference fails ({len(report['broken_tests'])}):")
        for item in report["broken_tests"]:
            test = item["test"].replace("\n", " ")
            if len(test) > 100:
                test = test[:97] + "..."
            lines.append(f"  {item['task_id']}: {item['outcome']}: {item['message']}  [{test}]")
    return "\n".join(lines)
