"""Executor throughput on MBPP reference solutions: each assert is its own run.

    EGCFG_DATA=../shared/data .venv/bin/python benchmarks/executor_bench.py --tasks 200 [--untraced]
        [--isolation auto|bubblewrap|limits] [--workers N] [--exclude 123,...]

Prints one JSON object: {runs, seconds, runs_per_second, isolation, traced, passed, workers, ...}.
The data file is parsed here directly (one program = `code`, tests = `test_list`, setup =
`test_setup_code`) so the benchmark depends on nothing but the executor.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.execution.executor import Executor, Job, Limits  # noqa: E402


def load_jobs(data: Path, count: int, traced: bool, exclude: set[int] = frozenset()) -> list[Job]:
    jobs = []
    with open(data / "mbpp.jsonl", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if row["task_id"] in exclude:
                continue
            jobs.append(Job(row["code"], tuple(row["test_list"]), row.get("test_setup_code") or "", traced))
            if len(jobs) >= count:
                break
    return jobs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--untraced", action="store_true")
    parser.add_argument("--isolation", default="auto", choices=["auto", "bubblewrap", "limits"])
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--data", default=os.environ.get("EGCFG_DATA"))
    parser.add_argument("--exclude", default="", help="comma-separated MBPP task ids to leave out")
    args = parser.parse_args(argv)
    if not args.data:
        print("executor_bench: set EGCFG_DATA or pass --data (a folder with mbpp.jsonl)", file=sys.stderr)
        return 2
    exclude = {int(t) for t in args.exclude.split(",") if t.strip()}
    jobs = load_jobs(Path(args.data), args.tasks, not args.untraced, exclude)
    with Executor(workers=args.workers, isolation=args.isolation, limits=Limits(test_seconds=10)) as executor:
        executor.map(jobs[:4])  # warm up the workers
        cpu_before, host_before = executor.cpu_seconds(), time.process_time()
        start = time.perf_counter()
        results = executor.map(jobs)
        seconds = time.perf_counter() - start
        host_cpu = time.process_time() - host_before
        cpu = executor.cpu_seconds() - cpu_before + host_cpu if cpu_before is not None else None
        workers = len(executor._pool.slots)
        runs = sum(r.total for r in results)
        failures = [(i, t.test, t.outcome, t.message) for i, r in enumerate(results) for t in r.tests if t.outcome != "pass"]
        print(json.dumps({
            "runs": runs,
            "seconds": round(seconds, 3),
            "runs_per_second": round(runs / seconds, 1),
            "isolation": executor.isolation,
            "traced": not args.untraced,
            "excluded_tasks": sorted(exclude),
            "passed": runs - len(failures),
            "workers": workers,
            # CPU seconds the sandboxes and this process used, and the rate N workers would reach on
            # N idle cores (the wall-clock rate depends on whatever else runs on the machine).
            "cpu_seconds": round(cpu, 3) if cpu is not None else None,
            "host_cpu_seconds": round(host_cpu, 3),
            "runs_per_second_idle_cores": round(runs / cpu * workers, 1) if cpu else None,
            "host_load_avg": os.getloadavg()[0],
            "cpu_count": os.cpu_count(),
            "process_cap": executor.process_cap,
            "first_failures": failures[:5],
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
