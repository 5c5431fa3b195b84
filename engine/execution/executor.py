"""Run candidate programs against tests, in parallel, in a sandbox.

A pool of worker processes (one per core), each a fork server (engine/execution/sandbox/worker.py) inside
its own bubblewrap sandbox: no network, a read-only view of the host, a private /tmp, and no
capabilities (``--cap-drop ALL`` matters: run as root, bwrap otherwise leaves the sandbox every
capability in its user namespace, enough to remount the read-only host view read-write). Each test
runs in a fresh process in a fresh PID namespace (killing its PID 1 kills every daemon it left),
under rlimits (address space, CPU, file size, open files) and a per-worker cgroup (processes,
memory, one core) when the machine offers one. Without bubblewrap the same workers run on the
host under limits only (``isolation == "limits"``): no file-system or network isolation, and
without a PID namespace (``pid_namespace == "none"``) a candidate's ``kill(-1)`` reaches the
user's other processes.

Verdicts are decided here, from plain data, by engine/execution/verdict.py.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import queue
import secrets
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import asdict, dataclass
from typing import Sequence

from engine.execution import isolation as isolation_module
from engine.execution import interpreter, seccomp_filter, verdict
from engine.errors import UserError
from engine.execution.cgroups import Cgroup as _Cgroup
from engine.execution.cgroups import remove_stale as _remove_stale_cgroups
from engine.execution.trace import Trace

SANDBOX_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox")  # what runs inside
WORKER_SCRIPT = os.path.join(SANDBOX_DIR, "worker.py")
TRACER_SCRIPT = os.path.join(SANDBOX_DIR, "tracer.py")
SANDBOX_TMP = "/tmp"
NOBODY = 65534
STARTUP_SECONDS = 30.0
REPLY_MARGIN = 15.0  # seconds past a test's limit before the host gives up on a worker
_instance_ids = itertools.count()


@dataclass(frozen=True)
class Limits:
    test_seconds: float = 5.0  # wall clock per test
    job_seconds: float = 60.0  # wall clock for all tests of one job
    memory_mb: int = 1024  # address space per test process
    max_processes: int = 64  # processes per worker (pids cgroup, else RLIMIT_NPROC)
    output_keep: int = 4096  # bytes of stdout+stderr kept per test
    output_kill: int = 1 << 22  # past this much output the test is killed
    file_size_mb: int = 16


@dataclass(frozen=True)
class Job:
    program: str  # module source: imports, helpers, the function(s)
    tests: tuple[str, ...]  # each an `assert ...` statement or a block of statements
    setup: str = ""  # run after the program, before each test
    trace: bool = True
    # The program as the module of its package (engine/execution/project_run.py builds it): its
    # layout, and for kind "pytest" the files/node ids the project's own pytest runs in one session.
    project: dict | None = None


@dataclass
class TestResult:
    __test__ = False  # not a pytest test class

    test: str
    outcome: str  # "pass" | "fail" | "error" | "timeout"
    message: str
    trace: Trace | None
    output: str = ""
    seconds: float = 0.0
    details: dict | None = None  # a pytest session's summary (per test), for project_run to unpack


@dataclass
class JobResult:
    tests: list[TestResult]
    isolation: str

    @property
    def passed(self) -> int:
        return sum(1 for t in self.tests if t.outcome == "pass")

    @property
    def total(self) -> int:
        return len(self.tests)

    @property
    def all_passed(self) -> bool:
        return self.passed == self.total


class Executor:
    """Thread-safe pool of sandboxed fork-server workers. Use as a context manager, or close()."""

    def __init__(self, *, workers: int | None = None, limits: Limits = Limits(), isolation: str = "auto",
                 project_root: str | None = None, python=None, readonly_binds: Sequence[str] = ()):
        """``isolation``: auto | bubblewrap | landlock | limits (auto reads EGCFG_SANDBOX; see
        engine/execution/isolation.py). ``readonly_binds``: more host folders the tests need to read
        (test folders outside the project, data), shown read-only at the same path."""
        if project_root is not None:
            project_root = os.path.realpath(project_root)
            if not os.path.isdir(project_root):
                raise UserError(f"the project root {project_root} is not a folder")
        count = workers if workers is not None else (os.cpu_count() or 1)
        if count < 1:
            raise UserError("the executor needs at least one worker")
        self.limits = limits
        self.project_root = project_root
        # The project's interpreter (a path or an interpreter.Interpreter); None: egcfg's own.
        self.choice = isolation_module.choose(isolation)
        self.interpreter = _interpreter(python, self.choice.level)
        binds = self.interpreter.read_only_binds() if self.interpreter else isolation_module.own_interpreter_binds()
        self.view = isolation_module.readonly_view(project_root, binds, tuple(readonly_binds))
        self._pool = _Pool(count, limits, self.choice, project_root, self.interpreter, self.view)
        try:
            self._pool.start()
        except _WorkerError as error:
            self._pool.close()
            if self.choice.level != "bubblewrap" or isolation_module.requested_level(isolation) != "auto":
                raise UserError(f"the sandbox ({self.choice.level}) could not start: {error}") from None
            # auto: bubblewrap passed its probe but the workers did not start; Landlock or nothing.
            logging.getLogger("egcfg").warning("bubblewrap could not start (%s): trying Landlock", error)
            self.choice = isolation_module.choose("landlock")
            self._pool = _Pool(count, limits, self.choice, project_root, self.interpreter, self.view)
            self._pool.start()
        self.isolation = self.choice.level
        # Who the candidate runs as: uid 65534 in bubblewrap's user namespace; elsewhere root
        # switches to "nobody" when it can (see _can_run_as_nobody).
        self.run_as = "nobody" if self.isolation == "bubblewrap" or self._pool.worker_config("")["drop_uid"] is not None \
            else "current user"
        self.process_cap = self._pool.process_cap
        self.pid_namespace = self._pool.namespace
        self.tracer_error = self._pool.slots[0].tracer_error  # "" when traces are available
        self._finalizer = weakref.finalize(self, self._pool.close)

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._finalizer()

    def cpu_seconds(self) -> float | None:
        """CPU seconds the workers and everything they ran have used (cgroup accounting), or None."""
        used = [slot.cgroup.cpu_seconds() for slot in self._pool.slots]
        return None if any(u is None for u in used) else sum(used)

    def run(self, job: Job) -> JobResult:
        return self.map([job])[0]

    def map(self, jobs: Sequence[Job]) -> list[JobResult]:
        """All tests of all jobs, spread over the workers; results in order. Equality of the module's
        own objects, which cannot cross, is then decided inside (engine/execution/inside_compare.py)."""
        from engine.execution import inside_compare

        return inside_compare.settle(self, jobs, self.map_plain(jobs))

    def map_plain(self, jobs: Sequence[Job]) -> list[JobResult]:
        """All tests of all jobs, spread over the workers; results in order."""
        if not self._finalizer.alive:
            raise RuntimeError("the executor is closed")
        states = [_JobState(job, self.limits) for job in jobs]
        for state in states:
            for index, plan in enumerate(state.plans):
                if plan.error:
                    state.complete(index, TestResult(plan.test, "error", plan.error, None))
                else:
                    self._pool.submit(_Task(state, index))
        for state in states:
            state.done.wait()
        return [JobResult(state.results, self.isolation) for state in states]


def _interpreter(python, level: str = "auto"):
    """None (egcfg's own Python), or the probed project interpreter a path names (probed in the
    sandbox of ``level``)."""
    if python is None or python == "":
        return None
    found = python if isinstance(python, interpreter.Interpreter) else interpreter.probe(os.path.abspath(python), "setting", level)
    return None if found.is_own else found


def _python_argv(found) -> list[str]:
    """How the worker's interpreter starts: no user site, and (3.11+) no script folder on sys.path;
    on 3.9/3.10 the worker drops its own folder from sys.path itself."""
    if found is None:
        return [sys.executable, "-s", "-P"]
    return [found.executable, "-s"] + (["-P"] if tuple(found.version[:2]) >= (3, 11) else [])


def _readable_by_others(path: str) -> bool:
    """Whether a user with no special rights can read ``path`` (every folder on the way searchable)."""
    parts = os.path.realpath(path).rstrip("/").split("/")
    try:
        for depth in range(1, len(parts) + 1):
            folder = "/".join(parts[:depth]) or "/"
            mode = os.stat(folder).st_mode
            needed = 0o005 if depth == len(parts) else 0o001
            if mode & needed != needed:
                return False
    except OSError:
        return False
    return True


def _can_run_as_nobody(project_root: str | None) -> bool:
    """Under limits only, root runs candidates as 'nobody' when that user can still read the
    Python installation and the project (otherwise imports would fail) ."""
    needed = [os.path.dirname(os.__file__), os.path.realpath(sys.executable)] + ([project_root] if project_root else [])
    return os.geteuid() == 0 and all(_readable_by_others(p) for p in needed)


# ---------------------------------------------------------------------------------------------
# Jobs and tasks
# ---------------------------------------------------------------------------------------------


class _JobState:
    def __init__(self, job: Job, limits: Limits):
        if isinstance(job.tests, str):
            raise UserError("Job.tests must be a sequence of test strings, not one string")
        self.job, self.limits = job, limits
        shadowed = verdict.top_level_names(job.program) | verdict.top_level_names(job.setup)
        if job.project and job.project.get("kind") == "pytest":  # judged by pytest, in the sandbox
            self.plans = [verdict.Plan(test, "pytest") for test in job.tests]
        else:
            self.plans = [verdict.plan_test(test, shadowed) for test in job.tests]
        self.results: list[TestResult | None] = [None] * len(self.plans)
        self.remaining = len(self.plans)
        self.deadline: float | None = None
        self.lock = threading.Lock()
        self.done = threading.Event()
        if not self.plans:
            self.done.set()

    def time_left(self) -> float:
        """Seconds this job may still use; its clock starts when its first test starts."""
        with self.lock:
            now = time.monotonic()
            if self.deadline is None:
                self.deadline = now + self.limits.job_seconds
            return self.deadline - now

    def complete(self, index: int, result: TestResult) -> None:
        with self.lock:
            self.results[index] = result
            self.remaining -= 1
            if self.remaining == 0:
                self.done.set()


@dataclass
class _Task:
    state: _JobState
    index: int

    def message(self, timeout: float) -> dict:
        plan, job = self.state.plans[self.index], self.state.job
        message = {"program": job.program, "setup": job.setup, "kind": plan.kind, "trace": bool(job.trace),
                   "timeout": timeout}
        if job.project:
            message["project"] = job.project
            if plan.kind == "pytest" and not job.project.get("collect_only"):
                message["project"] = {**job.project, "canary": f"test_{secrets.token_hex(6)}"}
        if plan.kind == "block":
            message["test"] = plan.test
        elif plan.kind == "pytest":
            message["test"] = plan.test
        else:
            message["leaves"] = [[leaf.source, leaf.line, leaf.iterate, leaf.truth] for leaf in plan.leaves]
        return message


def _format_seconds(seconds: float) -> str:
    return f"{seconds:g}" if seconds >= 1 else f"{seconds:.2g}"


def _signal_name(number) -> str:
    try:
        return signal.Signals(number).name
    except (ValueError, TypeError):
        return f"signal {number}"


def scratch_env(scratch: str) -> dict[str, str]:
    """Where tests write: the scratch folder. Besides HOME and TMPDIR, the files that plugins of a
    project's pytest write beside the project by default (which is read-only in the sandbox):
    pytest-cov removes and writes .coverage there, hypothesis keeps its example database there."""
    return {"HOME": scratch, "TMPDIR": scratch, "COVERAGE_FILE": os.path.join(scratch, ".coverage"),
            "HYPOTHESIS_STORAGE_DIRECTORY": os.path.join(scratch, ".hypothesis")}


def to_test_result(plan: verdict.Plan, report: dict, timeout: float, limits: Limits, canary: str | None = None) -> TestResult:
    """The worker's report for one test -> a TestResult (the verdict is decided here)."""
    status = report.get("status")
    result = report.get("result") if isinstance(report.get("result"), dict) else None
    trace = None
    if result and isinstance(result.get("trace_json"), str):
        try:
            trace = Trace.from_dict(json.loads(result["trace_json"]))
        except (KeyError, TypeError, ValueError, AttributeError, RecursionError):
            trace = None
    output = report.get("output") if isinstance(report.get("output"), str) else ""
    seconds = float(report.get("seconds") or 0.0)
    if plan.kind == "pytest" and status == "result" and result is not None and isinstance(result.get("project"), str):
        return _pytest_result(plan, result["project"], output[: limits.output_keep], seconds, canary)
    outcome, message = _judge(plan, status, result, report, timeout, limits)
    return TestResult(plan.test, outcome, message, trace, output[: limits.output_keep], seconds)


def _pytest_result(plan: verdict.Plan, summary: str, output: str, seconds: float, canary: str | None = None) -> TestResult:
    """A pytest session's summary: details holds each test; the outcome is the session's."""
    try:
        details = json.loads(summary)
    except ValueError:
        return TestResult(plan.test, "error", "malformed pytest summary", None, output, seconds)
    if not isinstance(details, dict) or not isinstance(details.get("tests"), list):
        return TestResult(plan.test, "error", "malformed pytest summary", None, output, seconds)
    if canary:
        _check_canary(details, canary)
    failed = [t for t in details["tests"] if not isinstance(t, dict) or t.get("outcome") not in ("pass", "skip", "xfail")]
    problem = details.get("setup_error") or (details.get("collect_errors") and "collection failed")
    outcome = "pass" if not failed and not problem else "fail"
    return TestResult(plan.test, outcome, str(problem or ""), None, output, seconds, details)


FORGED = "the program changed how pytest reports results (a test that must fail passed): no verdict of this session stands"


def _check_canary(details: dict, canary: str) -> None:
    """Take egcfg's test (sandbox/project.py's _Canaries) out of the session's; when it passed, or
    vanished from a session in which nothing failed, every test of the session is an error."""
    tests, outcome = [], None
    for entry in details["tests"]:
        if isinstance(entry, dict) and isinstance(entry.get("nodeid"), str) and entry["nodeid"].endswith(f"::{canary}"):
            outcome = entry.get("outcome")
        else:
            tests.append(entry)
    failed = any(not isinstance(t, dict) or t.get("outcome") not in ("pass", "skip", "xfail") for t in tests)
    vanished = outcome is None and details.get("canary") is True and not failed and not details.get("interrupted")
    if outcome == "pass" or vanished:
        tests = [{**t, "outcome": "error", "message": FORGED} if isinstance(t, dict) else t for t in tests]
        details["setup_error"] = details.get("setup_error") or FORGED
    details["tests"] = tests


def _judge(plan, status, result, report, timeout, limits) -> tuple[str, str]:
    if status == "timeout":
        return "timeout", f"timed out after {_format_seconds(timeout)} s"
    if status == "output_limit":
        return "error", f"printed more than {limits.output_kill} bytes of output"
    if status == "bad_result":
        return "error", str(report.get("detail") or "malformed result")[:200]
    if status == "crash":
        number = report.get("signal")
        if number == signal.SIGKILL:
            return "error", "killed (SIGKILL: out of memory?)"
        if number == signal.SIGXCPU:
            return "error", "CPU time limit exceeded"
        detail = report.get("detail")
        return "error", f"crashed with {_signal_name(number)}" if number else str(detail or "crashed")
    if status != "result" or result is None:
        return "error", "exited without a result (os._exit/sys.exit?)"
    if result.get("error"):
        return "error", verdict.describe_error(result["error"])
    if plan.kind == "block":
        return verdict.judge_block(result)
    if plan.kind == "pytest":
        return "error", "the pytest session sent no summary"
    leaves = result.get("leaves")
    if not isinstance(leaves, list):
        return "error", "malformed result"
    return verdict.judge_assert(plan, leaves)


# ---------------------------------------------------------------------------------------------
# The pool
# ---------------------------------------------------------------------------------------------


class _WorkerError(Exception):
    pass


class _Pool:
    def __init__(self, count: int, limits: Limits, choice: isolation_module.Choice, project_root: str | None,
                 interpreter=None, view: Sequence[str] = ()):
        self.count, self.limits, self.project_root = count, limits, project_root
        self.choice, self.view = choice, list(view)
        self.bwrap = choice.bwrap if choice.level == "bubblewrap" else None
        self.interpreter = interpreter
        self.isolation = choice.level
        self.tasks: queue.SimpleQueue = queue.SimpleQueue()
        self.slots: list[_Slot] = []
        self.threads: list[threading.Thread] = []
        self.closed = False
        self.process_cap = "none"
        self.namespace = "none"
        self.host_tmp: list[str] = []

    def start(self) -> None:
        instance = f"egcfg-{os.getpid()}-{next(_instance_ids)}"
        _remove_stale_cgroups()
        for number in range(self.count):
            cgroup = _Cgroup(f"{instance}-{number}", self.limits)
            self.slots.append(_Slot(self, number, cgroup))
        for slot in self.slots:
            slot.launch()
        for slot in self.slots:
            slot.await_hello()
        first = self.slots[0]
        first.cgroup.confirm_joined()
        self.namespace = first.namespace
        self.process_cap = self._describe_process_cap(first)
        for slot in self.slots:
            thread = threading.Thread(target=slot.serve, name=f"egcfg-executor-{slot.number}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def _describe_process_cap(self, slot: "_Slot") -> str:
        if slot.cgroup.pids:
            return f"pids cgroup ({slot.cgroup.version}): {self.limits.max_processes} processes per worker"
        nproc_enforced = (self.bwrap is None and os.geteuid() == 0) or os.geteuid() != 0
        if nproc_enforced:
            return f"RLIMIT_NPROC: {self.limits.max_processes}"
        return "none (root without a pids cgroup): the time limit bounds fork bombs"

    def worker_config(self, tmp: str) -> dict:
        level = self.choice.level
        root_drop = level != "bubblewrap" and _can_run_as_nobody(self.project_root)
        keep = [p for p in self.view if p.startswith(SANDBOX_TMP + "/")] if self.bwrap else []
        abi = self.choice.landlock_abi
        config = {
            "tmp": tmp,  # wiped after every test (but for `keep`)
            "cwd": os.path.join(tmp, "work") if self.bwrap else tmp,  # the candidate's working folder
            "keep": keep,
            "shm": "/dev/shm" if self.bwrap else "",  # bwrap's private one: emptied after every test too
            "project_root": self.project_root,
            "tracer": TRACER_SCRIPT,
            "limits": asdict(self.limits),
            "drop_uid": NOBODY if root_drop else None,
            "nproc": None,
            "user_namespace": level == "bubblewrap",  # per-test user namespaces only inside bwrap's
            # What T does to itself before candidate code (sandbox/confine.py).
            "deny_network": level == "landlock",
            "landlock_scope_abi": abi,  # T's own Landlock domain, on every level where the kernel has one
            "seccomp_bpf": self._seccomp(level, abi),
        }
        if level == "landlock" and tmp:
            config["landlock"] = isolation_module.landlock_rules(self.view, tmp, abi)
        return config

    @staticmethod
    def _landlock_launcher(rules: dict) -> list[str]:
        """egcfg's own Python applies the worker's Landlock domain, and a filter without what the
        worker itself needs (killing a test's process group, chmod to wipe what a test left), then
        execs the worker: nothing of the project's interpreter runs unconfined."""
        try:
            bpf = seccomp_filter.compiled_filter(network=False)
        except (seccomp_filter.SeccompUnavailable, OSError):
            bpf = b""  # as for the tests: the executor refuses the level elsewhere when it needs one
        return interpreter.landlock_launcher(rules, bpf, keep_capabilities=True)

    @staticmethod
    def _seccomp(level: str, abi: int) -> str | None:
        try:
            landlock = level == "landlock"
            bpf = seccomp_filter.compiled_filter(network=not landlock, signal_gap=landlock and abi < 6, metadata=landlock)
        except (seccomp_filter.SeccompUnavailable, OSError):
            if level == "landlock":
                raise
            return None  # bubblewrap's namespaces still hold; doctor says the filter is missing
        return bpf.hex()

    def command(self, slot: "_Slot") -> tuple[list[str], dict, str | None]:
        """argv, environment and cwd that start one worker."""
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
               "PYTHONDONTWRITEBYTECODE": "1"}
        python = _python_argv(self.interpreter) + [WORKER_SCRIPT]
        if self.bwrap:
            config = self.worker_config(SANDBOX_TMP)
            if not slot.cgroup.pids:
                config["nproc"] = self.limits.max_processes
            argv = [self.bwrap, *isolation_module.bwrap_args(self.view, SANDBOX_TMP), "--clearenv", "--chdir", SANDBOX_TMP]
            for key, value in {**env, **scratch_env(SANDBOX_TMP)}.items():
                argv += ["--setenv", key, value]
            argv += python + [json.dumps(config)]
            cwd = None
        else:
            tmp = tempfile.mkdtemp(prefix="egcfg-sandbox-")
            self.host_tmp.append(tmp)
            config = self.worker_config(tmp)
            if config["drop_uid"] is not None:
                os.chown(tmp, NOBODY, NOBODY)
            if not slot.cgroup.pids:
                config["nproc"] = self.limits.max_processes
            env.update(scratch_env(tmp))
            argv = python + [json.dumps(config)]
            if config.get("landlock"):  # the project's interpreter starts (its .pth lines run) already confined
                argv = self._landlock_launcher(config["landlock"]) + argv
            cwd = tmp
        env["EGCFG_CGROUP_PROCS"] = " ".join(slot.cgroup.procs_files)
        # Join the cgroups before exec, so every process of the sandbox is counted.
        wrapper = ["/bin/sh", "-c", 'for f in $EGCFG_CGROUP_PROCS; do echo $$ 2>/dev/null > "$f"; done; exec "$@"', "sh"]
        return wrapper + argv, env, cwd

    def submit(self, task: _Task) -> None:
        if self.closed:
            raise RuntimeError("the executor is closed")
        self.tasks.put(task)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for _ in self.slots:
            self.tasks.put(None)
        for slot in self.slots:
            slot.stop()
        for slot in self.slots:
            slot.cgroup.remove()
        for tmp in self.host_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        # Tasks still queued (close during map): complete them so no caller waits forever.
        while True:
            try:
                task = self.tasks.get_nowait()
            except queue.Empty:
                break
            if task is not None:
                plan = task.state.plans[task.index]
                task.state.complete(task.index, TestResult(plan.test, "error", "the executor was closed", None))


class _Slot:
    """One worker process and the thread that feeds it."""

    def __init__(self, pool: _Pool, number: int, cgroup: "_Cgroup"):
        self.pool, self.number, self.cgroup = pool, number, cgroup
        self.process: subprocess.Popen | None = None
        self.buffer = bytearray()
        self.namespace = "none"
        self.tracer_error = ""
        self.lock = threading.Lock()
        self.next_id = itertools.count()

    def launch(self) -> None:
        argv, env, cwd = self.pool.command(self)
        self.buffer = bytearray()
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, env=env, cwd=cwd, start_new_session=True)

    def await_hello(self) -> None:
        hello = self.read_reply(time.monotonic() + STARTUP_SECONDS)
        if not hello or not hello.get("hello"):
            code = self.process.poll() if self.process else None
            self.kill()
            raise _WorkerError(f"the worker did not start (exit status {code})")
        self.namespace = hello.get("namespace", "none")
        self.tracer_error = "" if hello.get("tracer") else str(hello.get("tracer_error") or "tracer not available")

    def ensure_running(self) -> None:
        if self.process is None or self.process.poll() is not None:
            self.kill()
            self.cgroup.kill_all()
            self.launch()
            self.await_hello()

    def serve(self) -> None:
        while True:
            task = self.pool.tasks.get()
            if task is None or self.pool.closed:
                if task is not None:
                    plan = task.state.plans[task.index]
                    task.state.complete(task.index, TestResult(plan.test, "error", "the executor was closed", None))
                return
            try:
                result = self.execute(task)
            except Exception as error:  # noqa: BLE001 - never leave a caller waiting
                plan = task.state.plans[task.index]
                result = TestResult(plan.test, "error", f"executor failure: {type(error).__name__}: {error}", None)
            task.state.complete(task.index, result)

    def execute(self, task: _Task) -> TestResult:
        plan, limits = task.state.plans[task.index], self.pool.limits
        left = task.state.time_left()
        if left <= 0:
            return TestResult(plan.test, "timeout",
                              f"job time limit of {_format_seconds(limits.job_seconds)} s reached", None)
        timeout = min(limits.test_seconds, left)
        if plan.kind == "pytest":  # one session runs many tests, each under its own limit inside
            timeout = float(task.state.job.project.get("seconds") or limits.job_seconds)
        message = task.message(timeout)
        for attempt in range(2):
            try:
                with self.lock:
                    self.ensure_running()
                    message["id"] = next(self.next_id)
                    self.send(message)
            except (OSError, _WorkerError):
                self.kill()
                if attempt == 0:
                    continue  # the worker was already gone; the task never reached it
                return TestResult(plan.test, "error", "the sandbox worker could not be started", None)
            break
        reply = self.read_reply(time.monotonic() + timeout + REPLY_MARGIN)
        if reply is None or reply.get("id") != message["id"]:
            self.kill()
            return TestResult(plan.test, "error", "the sandbox worker died", None)
        if reply.get("retire"):  # the test changed what the worker keeps: a fresh sandbox for the next
            logging.getLogger("egcfg").warning("restarting a sandbox worker: %s", str(reply["retire"])[:200])
            self.kill()
        return to_test_result(plan, reply, timeout, limits, (message.get("project") or {}).get("canary"))

    def send(self, message: dict) -> None:
        body = json.dumps(message).encode()
        self.process.stdin.write(struct.pack(">I", len(body)) + body)
        self.process.stdin.flush()

    def read_reply(self, deadline: float) -> dict | None:
        """One frame from the worker, or None if it died or missed the deadline."""
        if self.process is None:
            return None
        fd = self.process.stdout.fileno()
        while True:
            if len(self.buffer) >= 4:
                size = struct.unpack(">I", self.buffer[:4])[0]
                if size > 256 << 20:
                    return None
                if len(self.buffer) >= 4 + size:
                    body = bytes(self.buffer[4 : 4 + size])
                    del self.buffer[: 4 + size]
                    try:
                        reply = json.loads(body)
                    except ValueError:
                        return None
                    return reply if isinstance(reply, dict) else None
            wait = deadline - time.monotonic()
            if wait <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], wait)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return None
            self.buffer += chunk

    def kill(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        interpreter.kill_session(process)  # bwrap and everything below it
        for stream in (process.stdin, process.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def stop(self) -> None:
        self.kill()
        self.cgroup.kill_all()
