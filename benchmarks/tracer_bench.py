"""Tracer overhead: MBPP-like programs run untraced and traced, each test in a forked process.

    EGCFG_DATA=../shared/data .venv/bin/python benchmarks/tracer_bench.py [--tasks 100] [--repeats 5]

Prints one JSON object: whole-run times untraced and traced (fork, run, marshal the result back,
like a sandbox test process), in-process CPU times over repeated runs, their ratios, and the mean
number of events per trace. The workload is the MBPP test split's reference solutions when
mbpp.jsonl is in --data (default EGCFG_DATA), else a few built-in MBPP-like functions. The tracer
is imported host side (engine.execution.sandbox.tracer) and uses this interpreter's back end: run
the script with a 3.12+ interpreter (pyenv's, say) to measure sys.monitoring, with 3.11 for settrace.
"""

from __future__ import annotations

import argparse
import json
import marshal
import os
import signal
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.execution.sandbox.tracer import Tracer  # noqa: E402

_BENCH_PROGRAMS = [
    (
        "def min_cost(cost, m, n):\n    tc = [[0] * 3 for _ in range(3)]\n    tc[0][0] = cost[0][0]\n"
        "    for i in range(1, m + 1):\n        tc[i][0] = tc[i - 1][0] + cost[i][0]\n"
        "    for j in range(1, n + 1):\n        tc[0][j] = tc[0][j - 1] + cost[0][j]\n"
        "    for i in range(1, m + 1):\n        for j in range(1, n + 1):\n"
        "            tc[i][j] = min(tc[i - 1][j - 1], tc[i - 1][j], tc[i][j - 1]) + cost[i][j]\n"
        "    return tc[m][n]\n",
        ["assert min_cost([[1, 2, 3], [4, 8, 2], [1, 5, 3]], 2, 2) == 8"],
    ),
    (
        "def is_not_prime(n):\n    result = False\n    for i in range(2, int(n ** 0.5) + 1):\n"
        "        if n % i == 0:\n            result = True\n    return result\n",
        ["assert is_not_prime(2) == False", "assert is_not_prime(35) == True", "assert is_not_prime(9973) == False"],
    ),
    (
        "def count_words(text):\n    counts = {}\n    for word in text.split():\n"
        "        counts[word] = counts.get(word, 0) + 1\n    best = max(counts, key=counts.get)\n    return best\n",
        ["assert count_words('a b a c b a ' * 20) == 'a'"],
    ),
    (
        "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
        ["assert fib(15) == 610"],
    ),
    (
        "def bubble(xs):\n    xs = list(xs)\n    for i in range(len(xs)):\n        for j in range(len(xs) - 1 - i):\n"
        "            if xs[j] > xs[j + 1]:\n                xs[j], xs[j + 1] = xs[j + 1], xs[j]\n    return xs\n",
        ["assert bubble([5, 3, 8, 1, 9, 2, 7, 4, 6, 0] * 3) == sorted([5, 3, 8, 1, 9, 2, 7, 4, 6, 0] * 3)"],
    ),
]


def _bench_tasks(data_dir, limit):
    """(program, setup, tests) triples: MBPP reference solutions when the data is there, else the
    built-in MBPP-like functions."""
    path = os.path.join(data_dir, "mbpp.jsonl") if data_dir else ""
    if path and os.path.exists(path):
        tasks = []
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                if 11 <= row["task_id"] <= 510:
                    tasks.append((row["code"].replace("\r\n", "\n"), row["test_setup_code"], row["test_list"]))
        return tasks[:limit], "mbpp test split, reference solutions"
    return [(p, "", t) for p, t in _BENCH_PROGRAMS], "built-in MBPP-like functions"


def _run_one(program, setup, test, traced):
    """Run a test like the sandbox does (program, setup, test), returning plain data."""
    g = {"__name__": "__candidate__"}
    outcome = "pass"
    tracer = Tracer({"<program>": "program", "<test>": "test"}) if traced else None
    if tracer:
        tracer.start()
    try:
        exec(compile(program, "<program>", "exec"), g)
        if setup:
            exec(compile(setup, "<test>", "exec"), g)
        exec(compile(test, "<test>", "exec"), g)
    except BaseException as error:  # noqa: BLE001 - a benchmark of arbitrary code
        outcome = type(error).__name__
    finally:
        if tracer:
            tracer.stop()
    return {"outcome": outcome, "trace": tracer.result() if tracer else None}


def _forked(function, *args):
    """function(*args) in a forked child (like a sandbox test process); its marshalled result."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read)
        try:
            signal.alarm(10)
            data = marshal.dumps(function(*args))
        except BaseException:  # noqa: BLE001
            data = marshal.dumps(None)
        with os.fdopen(write, "wb") as out:
            out.write(data)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as handle:
        data = handle.read()
    os.waitpid(pid, 0)
    return marshal.loads(data) if data else None


def _in_process_times(program, setup, tests, repeats):
    for test in tests:  # warm-up: the first import of a module the program uses is not charged to one side
        _run_one(program, setup, test, False)
    times = {}
    for traced in (False, True):
        start = time.process_time()  # CPU time: the machine is shared, wall time is noisy
        for _ in range(repeats):
            for test in tests:
                _run_one(program, setup, test, traced)
        times[traced] = time.process_time() - start
    return [times[False], times[True]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("EGCFG_DATA", ""), help="folder with mbpp.jsonl")
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5, help="in-process repetitions per task")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # MBPP references have invalid escape sequences (SyntaxWarning)
    tasks, source = _bench_tasks(args.data, args.tasks)

    whole = {False: 0.0, True: 0.0}
    runs = 0
    events = 0
    for program, setup, tests in tasks:
        for test in tests:
            for traced in (False, True):
                start = time.perf_counter()
                result = _forked(_run_one, program, setup, test, traced)
                whole[traced] += time.perf_counter() - start
                if traced and result and result["trace"]:
                    events += len(result["trace"]["events"])
            runs += 1
    untraced_in, traced_in = 0.0, 0.0
    for program, setup, tests in tasks:
        pair = _forked(_in_process_times, program, setup, tests, args.repeats)
        if pair:
            untraced_in += pair[0]
            traced_in += pair[1]
    report = {
        "python": sys.version.split()[0],
        "backend": "sys.monitoring" if hasattr(sys, "monitoring") else "sys.settrace",
        "workload": source,
        "tasks": len(tasks),
        "test_runs": runs,
        "whole_run_untraced_s": round(whole[False], 4),
        "whole_run_traced_s": round(whole[True], 4),
        "whole_run_ratio": round(whole[True] / whole[False], 2) if whole[False] else None,
        "traced_runs_per_s_one_core": round(runs / whole[True], 1) if whole[True] else None,
        "in_process_untraced_s": round(untraced_in, 4),
        "in_process_traced_s": round(traced_in, 4),
        "in_process_ratio": round(traced_in / untraced_in, 2) if untraced_in else None,
        "mean_events_per_trace": round(events / runs, 1) if runs else 0,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
