"""A module's tests run the way pytest runs them, in the sandbox, with the project's interpreter.

One pytest session per module (the module's test files plus the module itself for its doctests)
runs in one sandboxed process: pytest is imported and configured once, the edited text is served
for the module's name, and every test has its own time limit inside the session. What that costs
and why it is the default: see docs/project-tests.md (a fresh pytest session per test costs 0.2 to
0.7 s, mostly collection and assertion rewriting; one session per module pays that once).

Time limits: a test that times out at the base limit is run again alone under a generous limit;
what it then takes (on the user's current code) is remembered per test, and later runs give it
twice that (plus a second). A timeout is always reported as a timeout.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Sequence

from engine.execution.trace import Trace
from engine.project.layout import ModuleLayout, module_layout

SESSION_MARGIN = 30.0        # seconds a session may take beyond the sum it is expected to need
SESSION_CAP = 600.0          # seconds one session may take at most
SLOW_RETRY_SECONDS = 120.0   # the limit a timed-out test gets when it is measured alone
PROCESSES = 512              # processes/threads per worker a project's tests may start (100-thread tests exist)
SESSION_MEMORY_FACTOR = 4    # a session's address space, in per-test limits (pytest + a module's tests)
PASSING = ("pass",)
NOT_RUN = ("skip", "xfail")


@dataclass
class ProjectTest:
    nodeid: str               # pytest's id: "tests/test_mathy.py::test_add[1-2]", "pkg/mathy.py::pkg.mathy.add"
    outcome: str              # pass | fail | error | timeout | skip | xfail
    message: str
    seconds: float
    file: str                 # the file the test is in (the module itself for a doctest)
    line: int                 # 1-based line of the test there (0 when unknown)
    trace: Trace | None = None
    limit: float = 0.0        # the time limit it ran under

    @property
    def name(self) -> str:
        """The part of the id after the file: "test_add[1-2]", "TestX::test_y", "pkg.mathy.add"."""
        return self.nodeid.split("::", 1)[1] if "::" in self.nodeid else self.nodeid

    @property
    def is_doctest(self) -> bool:
        return self.file.endswith(".py") and not os.path.basename(self.file).startswith("test") and "::" in self.nodeid \
            and "." in self.name and "[" not in self.name and not self.name.startswith("Test")


@dataclass
class ProjectRun:
    layout: ModuleLayout
    tests: list[ProjectTest] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)   # collection errors, a broken conftest ...
    collect_errors: list[tuple[str, str, bool]] = field(default_factory=list)  # (file or id, message, timed out)
    seconds: float = 0.0

    @property
    def ran(self) -> list[ProjectTest]:
        return [t for t in self.tests if t.outcome not in NOT_RUN]

    @property
    def passed(self) -> int:
        return sum(t.outcome in PASSING for t in self.ran)


class SlowTests:
    """Per test, the seconds it took on the user's code when measured alone (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seconds: dict[tuple[str, str], float] = {}

    def limit(self, rootdir: str, nodeid: str, base: float) -> float:
        with self._lock:
            measured = self._seconds.get((rootdir, nodeid))
        return base if measured is None else max(base, 2 * measured + 1.0)

    def record(self, rootdir: str, nodeid: str, seconds: float) -> None:
        with self._lock:
            self._seconds[(rootdir, nodeid)] = seconds

    def limits(self, rootdir: str, base: float) -> dict[str, float]:
        with self._lock:
            known = [(n, s) for (r, n), s in self._seconds.items() if r == rootdir]
        return {n: max(base, 2 * s + 1.0) for n, s in known}


SLOW = SlowTests()


def available(executor) -> bool:
    """Whether the executor's interpreter has pytest (else callers keep egcfg's own test reading)."""
    interpreter = getattr(executor, "interpreter", None)
    if interpreter is not None:
        return bool(interpreter.pytest)
    try:
        import pytest  # noqa: F401 - egcfg's own environment runs the tests

        return True
    except ImportError:
        return False


def may_have_doctests(text: str) -> bool:
    """Whether collecting the module's doctests can find any: otherwise it is not imported for them
    (a module that warns when imported, under the project's `filterwarnings = error`, would fail
    the collection that plain pytest never makes)."""
    return ">>>" in text


def project_dict(layout: ModuleLayout, test_files: Sequence[str], test_seconds: float, *,
                 nodeids: Sequence[str] = (), limits: dict | None = None, doctests: bool = True,
                 seconds: float | None = None, memory_mb: int = 0, select: Sequence[str] | None = None,
                 collect_only: bool = False) -> dict:
    """What the sandbox's project runner needs (plain data; see engine/execution/sandbox/project.py).
    `nodeids` are pytest's arguments; `select` keeps only those of everything collected."""
    return {**layout.to_dict(), "kind": "pytest", "test_files": [os.path.realpath(f) for f in test_files],
            "nodeids": list(nodeids), "doctests": doctests, "test_seconds": test_seconds,
            "limits": dict(limits or {}), "seconds": seconds or SESSION_CAP, "memory_mb": memory_mb,
            "select": None if select is None else list(select), "collect_only": collect_only}


def run_module(executor, module_path: str, text: str, workspace_root: str | None, test_files: Sequence[str], *,
               trace: bool = True, slow: SlowTests = SLOW, nodeids: Sequence[str] = ()) -> ProjectRun:
    """Every test of the module's test files, and the module's doctests, against `text` (only the
    tests `nodeids` names, doctests included, when given).

    The tests are collected once, then split into one share per worker, each share one pytest
    session, all in parallel. A session that stops early (a test that caught its interruption)
    leaves the rest of its share to a new session; one that dies as a whole is split in halves
    down to the test that kills it, which is reported alone."""
    started = time.monotonic()
    layout = module_layout(module_path, workspace_root)
    base = executor.limits.test_seconds
    limits = slow.limits(layout.rootdir, base)
    run = ProjectRun(layout)
    context = _Context(executor, layout, text, test_files, base, limits, trace)
    if nodeids:
        shares = [("nodeids", list(nodeids))]
    else:
        collected = context.collect(run)
        if collected is None:
            run.seconds = time.monotonic() - started
            return run
        shares = [("select", share) for share in _split(collected, _workers(executor))]
    order = {nodeid: index for index, (_, share) in enumerate(shares) for nodeid in share}
    tests = context.run_shares(shares, run)
    run.tests = sorted(tests, key=lambda t: order.get(t.nodeid, len(order)))
    _retry_timeouts(executor, run, text, test_files, base, trace, slow)
    if trace:
        _confirm_untraced(executor, run, text, test_files, base, limits)
    run.seconds = time.monotonic() - started
    return run


MIN_SHARE = 20  # tests: below this, splitting a module costs more than it saves


def _workers(executor) -> int:
    pool = getattr(executor, "_pool", None)
    return max(1, int(getattr(pool, "count", 0) or os.cpu_count() or 1))


def _split(nodeids: list[str], workers: int) -> list[list[str]]:
    """Contiguous shares of about equal size (tests of one file stay together, fixtures stay warm)."""
    count = max(1, min(workers, len(nodeids) // MIN_SHARE))
    size = -(-len(nodeids) // count) if nodeids else 0
    return [nodeids[i:i + size] for i in range(0, len(nodeids), size)] if nodeids else []


class _Context:
    """One module's run: what every session of it shares."""

    def __init__(self, executor, layout, text, test_files, base, limits, trace):
        self.executor, self.layout, self.text, self.files = executor, layout, text, test_files
        self.base, self.limits, self.trace = base, limits, trace

    def job(self, *, trace: bool, seconds: float, **selection):
        from engine.execution.executor import Job

        project = project_dict(self.layout, self.files, self.base, limits=self.limits, seconds=seconds,
                               doctests=may_have_doctests(self.text),
                               memory_mb=SESSION_MEMORY_FACTOR * self.executor.limits.memory_mb, **selection)
        return Job(program=self.text, tests=("pytest session",), project=project, trace=trace)

    def budget(self, nodeids) -> float:
        slow_ones = sum(self.limits.get(n, 0.0) for n in nodeids)
        return min(SESSION_CAP, self.executor.limits.job_seconds + SESSION_MARGIN + slow_ones)

    def collect(self, run: ProjectRun) -> list[str] | None:
        """The module's test ids (files and doctests), or None with the reason in run.problems."""
        result = self.executor.run(self.job(trace=False, seconds=self.budget(()), collect_only=True)).tests[0]
        if result.details is None:
            run.problems.append(f"the pytest session failed: {result.message or result.outcome}")
            return None
        run.problems += _problems(result.details, result.output)
        run.collect_errors = _collect_errors(result.details)
        return [t["nodeid"] for t in result.details.get("tests") or [] if isinstance(t, dict) and isinstance(t.get("nodeid"), str)]

    def run_shares(self, shares: list[tuple[str, list[str]]], run: ProjectRun) -> list[ProjectTest]:
        tests: list[ProjectTest] = []
        while shares:
            results = self.executor.map([self.job(trace=self.trace, seconds=self.budget(ids), **{kind: ids})
                                         for kind, ids in shares])
            left: list[tuple[str, list[str]]] = []
            for (kind, ids), result in zip(shares, results):
                outcome = result.tests[0]
                if outcome.details is None:  # the whole session died or ran out of time
                    if len(ids) == 1:
                        tests.append(ProjectTest(ids[0], "timeout" if outcome.outcome == "timeout" else "error",
                                                 outcome.message or outcome.outcome, outcome.seconds, "", 0,
                                                 limit=self.limits.get(ids[0], self.base)))
                    else:
                        half = len(ids) // 2
                        left += [(kind, ids[:half]), (kind, ids[half:])]
                    continue
                got = [t for t in _tests(outcome.details, self.base, self.limits) if t.nodeid in ids or kind == "nodeids"]
                tests += got
                if kind == "nodeids" and not run.problems:  # no collection step: its errors come from here
                    run.problems += _problems(outcome.details, outcome.output)
                    run.collect_errors = _collect_errors(outcome.details)
                elif outcome.details.get("exit") in (3, 4):  # pytest stopped in this share
                    run.problems += [p for p in _problems(outcome.details, outcome.output) if p not in run.problems]
                done = {t.nodeid for t in got}
                rest = [n for n in ids if n not in done]
                if rest and outcome.details.get("interrupted"):
                    left.append((kind, rest))
            shares = left
        return tests


def _confirm_untraced(executor, run: ProjectRun, text: str, test_files, base: float, limits: dict) -> None:
    """The verdict must not depend on the tracer (it keeps values alive a little longer, which a test
    of garbage collection can see): tests that failed traced run once more untraced, and that
    verdict stands; the traced run's trace is kept."""
    from engine.execution.executor import Job

    failed = [t for t in run.tests if t.outcome in ("fail", "error")]
    if not failed:
        return
    wanted = {t.nodeid: t for t in failed}
    project = project_dict(run.layout, test_files, base, nodeids=list(wanted), limits=limits, doctests=may_have_doctests(text),
                           seconds=min(SESSION_CAP, executor.limits.job_seconds + SESSION_MARGIN),
                           memory_mb=SESSION_MEMORY_FACTOR * executor.limits.memory_mb)
    result = executor.run(Job(program=text, tests=("pytest session",), project=project, trace=False)).tests[0]
    for again in _tests(result.details or {}, base, limits):
        before = wanted.get(again.nodeid)
        if before is not None and again.outcome != before.outcome:
            again.trace = before.trace
            run.tests[run.tests.index(before)] = again


def _tests(details: dict, base: float, limits: dict) -> list[ProjectTest]:
    out = []
    for entry in details.get("tests") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("nodeid"), str):
            continue
        trace = None
        if isinstance(entry.get("trace"), str):
            try:
                trace = Trace.from_dict(json.loads(entry["trace"]))
            except (KeyError, TypeError, ValueError, AttributeError, RecursionError):
                trace = None
        nodeid = entry["nodeid"]
        out.append(ProjectTest(nodeid, str(entry.get("outcome") or "error"), str(entry.get("message") or "")[:600],
                               float(entry.get("seconds") or 0.0), str(entry.get("file") or ""),
                               int(entry.get("line") or 0), trace, limits.get(nodeid, base)))
    return out


def _problems(details: dict, output: str = "") -> list[str]:
    problems = []
    if details.get("setup_error"):
        problems.append(f"pytest could not run: {details['setup_error']}")
    elif details.get("exit") in (3, 4):  # pytest's internal or usage error: whatever it ran is not the whole story
        kind = "an internal error" if details["exit"] == 3 else "a usage error"
        lines = [line.strip() for line in str(output or "").splitlines() if line.startswith("ERROR:") or "error:" in line]
        said = str(details.get("internal_error") or "") or (lines[-1] if lines else "")
        problems.append(f"pytest stopped with {kind} (exit status {details['exit']})" + (f": {said}"[:300] if said else ""))
    for nodeid, message, _ in _collect_errors(details):
        problems.append(f"{nodeid}: {message}"[:400])
    return problems


def _collect_errors(details: dict) -> list[tuple[str, str, bool]]:
    out = []
    for error in details.get("collect_errors") or []:
        if isinstance(error, dict):
            lines = str(error.get("message") or "").strip().splitlines()
            out.append((str(error.get("nodeid") or "collection"), (lines[-1] if lines else "could not be collected")[:400],
                        error.get("timeout") is True))
    return out


def _retry_timeouts(executor, run: ProjectRun, text: str, test_files, base: float, trace: bool, slow: SlowTests) -> None:
    """Each test that timed out at its limit runs alone under a generous one; its time is remembered."""
    from engine.execution.executor import Job

    timed_out = [t for t in run.tests if t.outcome == "timeout" and t.limit < SLOW_RETRY_SECONDS]
    if not timed_out:
        return
    jobs = [Job(program=text, tests=("pytest session",), trace=trace,
                project=project_dict(run.layout, test_files, base, nodeids=[t.nodeid], doctests=may_have_doctests(text),
                                     limits={t.nodeid: SLOW_RETRY_SECONDS}, seconds=SLOW_RETRY_SECONDS + SESSION_MARGIN,
                                     memory_mb=SESSION_MEMORY_FACTOR * executor.limits.memory_mb))
            for t in timed_out]
    for test, result in zip(timed_out, executor.map(jobs)):
        again = _tests(result.tests[0].details or {}, base, {test.nodeid: SLOW_RETRY_SECONDS})
        match = next((t for t in again if t.nodeid == test.nodeid), None)
        if match is None:
            continue
        if match.outcome != "timeout":
            slow.record(run.layout.rootdir, test.nodeid, match.seconds)
            match.limit = slow.limit(run.layout.rootdir, test.nodeid, base)
        run.tests[run.tests.index(test)] = match
