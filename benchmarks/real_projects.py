"""Real projects' modules opened the way `egcfg serve` opens them: prints one JSON object per module.

Usage: python benchmarks/real_projects.py PROJECT_ROOT [PROJECT_ROOT ...] [--modules a.py,b.py]

Each PROJECT_ROOT is a checkout (an sdist unpacked) with its own `.venv` holding pytest and the
project's test requirements; nothing of it is shipped here. For every module of the project that
has a test file (found by the server's own discovery, lsp_server.discovery.candidate_test_files) or
doctests, the module's text is run as the server runs it (engine.execution.project_run.run_module,
with the interpreter the server would choose), and one line of JSON is printed: tests found, run,
passed, skipped, failing ids with messages, and seconds. A last line sums them up.

Getting the sources (PyPI sdists carry their tests):
    pip download --no-deps --no-binary :all: toolz humanize more-itertools -d DIR
    tar xzf ...; python3.12 -m venv ROOT/.venv; ROOT/.venv/bin/pip install pytest freezegun
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.execution import interpreter, project_run  # noqa: E402
from engine.execution.executor import Executor, Limits  # noqa: E402
from lsp_server.discovery import SKIP_DIRS, candidate_test_files  # noqa: E402


def modules_of(root: Path) -> list[Path]:
    """The project's own modules: .py files outside tests, docs, venvs and build folders."""
    found = []
    for path in sorted(root.rglob("*.py")):
        parts = set(path.relative_to(root).parts[:-1])
        if parts & (SKIP_DIRS | {"tests", "test", "docs", "doc", "scripts", "benchmarks"}) or any(p.startswith(".") for p in parts):
            continue
        if path.name.startswith(("test_", "conftest", "setup", "_build")) or path.name.endswith("_test.py"):
            continue
        found.append(path)
    return found


def has_doctests(text: str) -> bool:
    return ">>> " in text


def per_test_cost(executor, module: Path, text: str, root: Path, files, run, count: int) -> dict:
    """Seconds per test: one session for the whole module (what the server does) against one
    session per test, run one after the other on the same executor."""
    from engine.execution.executor import Job

    session = run.seconds / max(len(run.tests), 1)
    chosen = [t.nodeid for t in run.ran[:count]]
    started = time.monotonic()
    for nodeid in chosen:
        project = project_run.project_dict(run.layout, files, executor.limits.test_seconds, nodeids=[nodeid],
                                           memory_mb=project_run.SESSION_MEMORY_FACTOR * executor.limits.memory_mb)
        executor.run(Job(program=text, tests=("pytest session",), project=project, trace=False))
    alone = (time.monotonic() - started) / max(len(chosen), 1)
    return {"one_session_per_module": round(session, 4), "one_session_per_test": round(alone, 4), "tests_timed_alone": len(chosen)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="+")
    parser.add_argument("--modules", default="", help="comma-separated file names to keep (default: all with tests)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=5.0, help="base limit per test (the server's default)")
    parser.add_argument("--no-trace", action="store_true")
    parser.add_argument("--per-test-sessions", type=int, default=0, metavar="N",
                        help="also run the first N tests of each module each in a pytest session of its own "
                             "(the alternative design) and print the seconds per test of both side by side")
    args = parser.parse_args()
    wanted = {m for m in args.modules.split(",") if m}
    totals = {"modules": 0, "found": 0, "ran": 0, "passed": 0, "skipped": 0, "seconds": 0.0}
    per_module_pass = []
    for root_text in args.roots:
        root = Path(root_text).resolve()
        python = interpreter.select(str(root))
        limits = Limits(test_seconds=args.timeout, job_seconds=max(60.0, args.timeout * 4), max_processes=project_run.PROCESSES)
        with Executor(workers=args.workers, limits=limits, project_root=str(root), python=python) as executor:
            for module in modules_of(root):
                if wanted and module.name not in wanted and str(module.relative_to(root)) not in wanted:
                    continue
                text = module.read_text(encoding="utf-8")
                files = candidate_test_files(str(module), text, str(root))
                if not files and not has_doctests(text):
                    continue
                started = time.monotonic()
                run = project_run.run_module(executor, str(module), text, str(root), files, trace=not args.no_trace)
                seconds = time.monotonic() - started
                ran = run.ran
                skipped = len(run.tests) - len(ran)
                failing = [{"id": t.nodeid, "outcome": t.outcome, "message": t.message[:200]} for t in ran if t.outcome != "pass"]
                row = {"project": root.name, "module": str(module.relative_to(root)), "interpreter": python.version_text,
                       "test_files": [os.path.relpath(f, root) for f in files], "found": len(run.tests), "ran": len(ran),
                       "passed": run.passed, "skipped": skipped,
                       "pass_rate": round(run.passed / len(ran), 4) if ran else None,
                       "seconds": round(seconds, 2), "problems": run.problems[:5], "failing": failing[:10]}
                if args.per_test_sessions and ran:
                    row["cost_per_test"] = per_test_cost(executor, module, text, root, files, run, args.per_test_sessions)
                print(json.dumps(row), flush=True)
                totals["modules"] += 1
                totals["found"] += len(run.tests)
                totals["ran"] += len(ran)
                totals["passed"] += run.passed
                totals["skipped"] += skipped
                totals["seconds"] += seconds
                if ran:
                    per_module_pass.append(run.passed / len(ran))
    totals["seconds"] = round(totals["seconds"], 2)
    totals["pass_rate"] = round(totals["passed"] / totals["ran"], 4) if totals["ran"] else None
    totals["worst_module_pass_rate"] = round(min(per_module_pass), 4) if per_module_pass else None
    print(json.dumps({"total": totals}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
