"""Executor behaviour: outcomes, messages, limits, both isolation levels, project imports, parallel map."""

import os
import shutil
import signal
import tempfile
import time

import pytest

from engine.errors import UserError
from engine.execution import executor as executor_module
from engine.execution.executor import Executor, Job, JobResult, Limits
from engine.execution.trace import Trace

HAVE_BWRAP = shutil.which("bwrap") is not None
LIMITS = Limits(test_seconds=2.0, job_seconds=20.0, memory_mb=512, output_keep=200, output_kill=100_000)
PROGRAM = "def f(x):\n    y = x + 1\n    return y\n\ndef g(x):\n    return 10 // x\n"


@pytest.fixture(scope="module")
def executor():
    with Executor(workers=2, limits=LIMITS) as ex:
        yield ex


@pytest.fixture(scope="module")
def limits_executor():
    with Executor(workers=2, limits=LIMITS, isolation="limits") as ex:
        yield ex


def run_one(ex, test, program=PROGRAM, **kw):
    result = ex.run(Job(program, (test,), **kw))
    assert isinstance(result, JobResult) and result.total == 1
    return result.tests[0]


def test_isolation_level_is_reported(executor, limits_executor):
    assert executor.isolation == ("bubblewrap" if HAVE_BWRAP else "limits")
    assert limits_executor.isolation == "limits"
    assert executor.process_cap and executor.pid_namespace in ("pid", "user+pid")
    assert executor.choice.level == executor.isolation and executor.choice.reason


@pytest.mark.parametrize("which", ["executor", "limits_executor"])
def test_outcomes_and_messages(request, which):
    ex = request.getfixturevalue(which)
    job = Job(PROGRAM, ("assert f(1) == 2", "assert f(1) == 5", "assert g(0) == 1", "while True: pass",
                        "assert f(1) == 2 and f(2) == 3"))
    result = ex.run(job)
    outcomes = [(t.outcome, t.message) for t in result.tests]
    assert outcomes == [
        ("pass", ""),
        ("fail", "returned 2, expected 5"),
        ("error", "ZeroDivisionError: integer division or modulo by zero (program line 6)"),
        ("timeout", "timed out after 2 s"),
        ("pass", ""),
    ]
    assert result.passed == 2 and result.total == 5 and not result.all_passed
    assert result.isolation == ex.isolation
    assert 1.9 < result.tests[3].seconds < 3.5


def test_traces_come_back_when_asked(executor):
    traced = run_one(executor, "assert f(1) == 2")
    untraced = run_one(executor, "assert f(1) == 2", trace=False)
    assert untraced.trace is None
    if not os.path.exists(executor_module.TRACER_SCRIPT):
        pytest.skip("engine/execution/sandbox/tracer.py is not there yet")
    assert isinstance(traced.trace, Trace)
    assert any(e.file == "program" and e.func == "f" for e in traced.trace.events)


def test_a_timed_out_test_still_reports_its_partial_trace(executor):
    if not os.path.exists(executor_module.TRACER_SCRIPT):
        pytest.skip("engine/execution/sandbox/tracer.py is not there yet")
    result = run_one(executor, "assert spin() == 1", program="def spin():\n    n = 0\n    while True:\n        n += 1\n")
    assert result.outcome == "timeout"
    assert result.trace is not None and any(e.func == "spin" for e in result.trace.events)


def test_block_tests(executor):
    job = Job(PROGRAM, ("x = f(1)\nassert x == 2", "x = f(1)\nassert x == 3", "g(0)", "def check(c):\n    assert c(1) == 2\ncheck(f)"))
    assert [(t.outcome, t.message) for t in executor.run(job).tests] == [
        ("pass", ""),
        ("fail", "AssertionError (test line 2)"),
        ("error", "ZeroDivisionError: integer division or modulo by zero (program line 6)"),
        ("pass", ""),
    ]


def test_program_errors(executor):
    syntax = run_one(executor, "assert f(1) == 2", program="def f(x):\n    return (\n")
    assert syntax.outcome == "error" and syntax.message.startswith("SyntaxError") and "program line" in syntax.message
    name = run_one(executor, "assert f(1) == 2", program="x = undefined_name\n")
    assert (name.outcome, name.message) == ("error", "NameError: name 'undefined_name' is not defined (program line 1)")
    bad_test = run_one(executor, "assert f(1) ==")
    assert bad_test.outcome == "error" and "test line 1" in bad_test.message


def test_candidate_module_is_a_real_module(executor):
    program = ("from __future__ import annotations\nfrom dataclasses import dataclass\nimport pickle\n"
               "@dataclass\nclass P:\n    x: int\ndef f():\n    return pickle.loads(pickle.dumps(P(3))).x\n")
    assert run_one(executor, "assert f() == 3", program=program).outcome == "pass"


def test_recursion_limit_is_pythons_default(executor):
    result = run_one(executor, "assert f() == 1000", program="import sys\ndef f():\n    return sys.getrecursionlimit()\n")
    assert result.outcome == "pass", result.message


def test_setup_runs_before_each_test(executor):
    job = Job(PROGRAM, ("assert f(BASE) == 11",), setup="BASE = 10\n")
    assert executor.run(job).tests[0].outcome == "pass"


def test_main_block_does_not_run_and_stdin_is_closed(executor):
    program = "import sys\ndef f():\n    return sys.stdin.read()\nif __name__ == '__main__':\n    raise SystemExit(3)\n"
    assert run_one(executor, "assert f() == ''", program=program).outcome == "pass"
    result = run_one(executor, "assert input() == 'x'", program="")
    assert result.outcome == "error" and result.message.startswith("EOFError")


def test_output_is_kept_up_to_a_cap(executor):
    result = run_one(executor, "assert f(1) == 2", program="print('hello')\n" + PROGRAM)
    assert result.outcome == "pass" and result.output == "hello\n"
    result = run_one(executor, "assert f(1) == 2", program="print('x' * 5000)\n" + PROGRAM)
    assert result.outcome == "pass" and result.output == "x" * LIMITS.output_keep


def test_output_past_the_hard_cap_is_killed(executor):
    start = time.monotonic()
    result = run_one(executor, "assert f(1) == 2", program="import sys\nwhile True:\n    sys.stdout.write('y' * 10000)\n")
    assert result.outcome == "error" and "printed more than 100000 bytes" in result.message
    assert time.monotonic() - start < LIMITS.test_seconds


def test_memory_limit(executor):
    result = run_one(executor, "assert f(1) == 2", program="x = bytearray(2 << 30)\n")
    assert result.outcome == "error" and "MemoryError" in result.message


def test_private_scratch_directory_is_wiped_between_tests():
    with Executor(workers=1, limits=LIMITS) as ex:
        private_tmp = ex.isolation == "bubblewrap"  # under limits only, /tmp is the host's
        left = "    open('/tmp/left.txt', 'w').write('x')\n" if private_tmp else ""
        program = "import os\ndef write():\n    open('scratch.txt', 'w').write('x')\n" + left + "    return os.listdir('.')\n"
        first = run_one(ex, "assert write() == ['scratch.txt']", program=program)
        second = run_one(ex, "assert __import__('os').listdir('.') == []", program="")
        assert (first.outcome, second.outcome) == ("pass", "pass")
        if private_tmp:
            assert run_one(ex, "assert not __import__('os').path.exists('/tmp/left.txt')", program="").outcome == "pass"


@pytest.fixture
def readable_project():
    """A project folder anyone can read (under limits only, root runs candidates as 'nobody')."""
    folder = tempfile.mkdtemp(prefix="egcfg-project-")
    os.chmod(folder, 0o755)
    with open(os.path.join(folder, "helpers_egcfg.py"), "w") as handle:
        handle.write("def double(x):\n    return 2 * x\n")
    yield folder
    shutil.rmtree(folder)


def test_project_root_is_importable(readable_project):
    for isolation in (["bubblewrap"] if HAVE_BWRAP else []) + ["limits"]:
        with Executor(workers=1, limits=LIMITS, isolation=isolation, project_root=readable_project) as ex:
            program = "from helpers_egcfg import double\ndef f(x):\n    return double(x) + 1\n"
            assert run_one(ex, "assert f(2) == 5", program=program).outcome == "pass", isolation
    with Executor(workers=1, limits=LIMITS) as ex:  # without project_root it is not importable
        result = run_one(ex, "assert f(2) == 5", program="from helpers_egcfg import double\n")
        assert result.outcome == "error" and "ModuleNotFoundError" in result.message


def test_map_returns_results_in_order_and_runs_in_parallel(executor):
    jobs = [Job(PROGRAM, (f"assert f({i}) == {i + 1}", f"assert f({i}) == 0")) for i in range(30)]
    results = executor.map(jobs)
    assert [[t.outcome for t in r.tests] for r in results] == [["pass", "fail"]] * 30
    assert results[7].tests[1].message == "returned 8, expected 0"
    # the tests of one job spread over both workers
    sleeper = Job("import time\ndef nap():\n    time.sleep(0.8)\n    return 1\n", ("assert nap() == 1",) * 2)
    start = time.monotonic()
    assert executor.run(sleeper).all_passed
    assert time.monotonic() - start < 1.5


def test_job_time_limit():
    limits = Limits(test_seconds=5.0, job_seconds=2.0, memory_mb=512)
    with Executor(workers=1, limits=limits) as ex:
        job = Job("import time\ndef nap():\n    time.sleep(1.2)\n    return 1\n", ("assert nap() == 1",) * 3)
        start = time.monotonic()
        result = ex.run(job)
        assert time.monotonic() - start < 3.5
        assert result.tests[0].outcome == "pass"
        assert result.tests[1].outcome == "timeout"  # cut short by what was left of the job's 2 s
        assert result.tests[2].outcome == "timeout" and "job time limit of 2 s" in result.tests[2].message


def test_dead_workers_are_restarted():
    with Executor(workers=1, limits=LIMITS) as ex:
        assert run_one(ex, "assert f(1) == 2").outcome == "pass"
        os.killpg(ex._pool.slots[0].process.pid, signal.SIGKILL)
        time.sleep(0.1)
        assert run_one(ex, "assert f(1) == 2").outcome == "pass"


def test_close_ends_every_process():
    ex = Executor(workers=2, limits=LIMITS)
    pids = [slot.process.pid for slot in ex._pool.slots]
    ex.close()
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    with pytest.raises(RuntimeError):
        ex.run(Job(PROGRAM, ("assert f(1) == 2",)))


def test_an_unreadable_project_keeps_the_current_user_under_limits(tmp_path, readable_project):
    os.chmod(tmp_path, 0o700)
    with Executor(workers=1, limits=LIMITS, isolation="limits", project_root=str(tmp_path)) as ex:
        assert ex.run_as != "nobody"
    with Executor(workers=1, limits=LIMITS, isolation="limits", project_root=readable_project) as ex:
        expected_nobody = os.geteuid() == 0 and executor_module._readable_by_others(os.path.dirname(os.__file__))
        assert (ex.run_as == "nobody") == expected_nobody


def test_concurrent_callers_share_the_pool(executor):
    import threading

    results = {}

    def call(n):
        results[n] = executor.map([Job(PROGRAM, (f"assert f({n}) == {n + 1}",) * 3) for _ in range(5)])

    threads = [threading.Thread(target=call, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results) == [0, 1, 2, 3]
    assert all(r.all_passed and r.total == 3 for rs in results.values() for r in rs)


def test_bad_arguments_are_user_errors(tmp_path):
    with pytest.raises(UserError):
        Executor(isolation="docker")
    with pytest.raises(UserError):
        Executor(project_root=str(tmp_path / "missing"))
    with pytest.raises(UserError):
        Executor(workers=1).run(Job(PROGRAM, "assert f(1) == 2"))


def test_generators_are_materialised_for_iterating_checks(executor):
    program = "def f(n):\n    return (i * i for i in range(n))\n"
    assert run_one(executor, "assert list(f(3)) == [0, 1, 4]", program=program).outcome == "pass"
    assert run_one(executor, "assert set(f(3)) == {0, 1, 4}", program=program).outcome == "pass"
    refused = run_one(executor, "assert f(3) == [0, 1, 4]", program=program)
    assert refused.outcome == "fail" and "returned a generator, which cannot be compared" in refused.message


def test_stdlib_subclasses_compare_as_their_base(executor):
    program = ("from collections import Counter, OrderedDict, namedtuple\nP = namedtuple('P', 'x y')\n"
               "def c():\n    return Counter('aab')\ndef p():\n    return P(1, 2)\n")
    assert run_one(executor, "assert c() == {'a': 2, 'b': 1}", program=program).outcome == "pass"
    assert run_one(executor, "assert p() == (1, 2)", program=program).outcome == "pass"


def test_folders_under_tmp_that_the_worker_needs_are_bound_into_the_sandbox(tmp_path):
    # A checkout (and its .venv) under /tmp would be hidden by the sandbox's private /tmp: such
    # folders are bound after the tmpfs, and a folder inside another bound one is not bound twice.
    from engine.execution import isolation

    checkout = tmp_path / "main"
    (checkout / "src").mkdir(parents=True)
    (checkout / ".venv").mkdir()
    view = isolation.readonly_view(str(checkout / "src"), [str(checkout), str(checkout / ".venv"), "/usr/lib"])
    assert set(view) == {isolation.SANDBOX_DIR, str(checkout)}  # /usr is part of the system view
    args = isolation.bwrap_args(["/opt/x", str(checkout)], "/tmp")
    tmpfs = args.index("/tmp", args.index("/dev/shm") + 1)
    assert args[tmpfs - 1] == "--tmpfs" and args.index(str(checkout)) > tmpfs and args.index("/opt/x") < tmpfs


def _descendants(pid: int) -> list[int]:
    found, queue = [], [pid]
    while queue:
        parent = queue.pop()
        try:
            with open(f"/proc/{parent}/task/{parent}/children") as handle:
                children = [int(p) for p in handle.read().split()]
        except OSError:
            continue
        found += children
        queue += children
    return found


@pytest.mark.parametrize("level", ["auto", "limits"])
def test_the_worker_does_not_leak_descriptors(level):
    # A pipe per test left open in the worker once filled its table (EMFILE in test processes,
    # and a fork that grew slower with every test).
    with Executor(workers=1, limits=LIMITS, isolation=level) as ex:
        def worker_fds() -> int:
            counts = []
            root = ex._pool.slots[0].process.pid
            for pid in [root] + _descendants(root):
                try:
                    if b"worker.py" in open(f"/proc/{pid}/cmdline", "rb").read():
                        counts.append(len(os.listdir(f"/proc/{pid}/fd")))
                except OSError:
                    continue
            assert counts, "no worker process found"
            return max(counts)

        run_one(ex, "assert f(1) == 2")
        before = worker_fds()
        results = ex.run(Job(PROGRAM, tuple(f"assert f({i}) == {i + 1}" for i in range(60))))
        assert results.all_passed
        assert worker_fds() <= before + 2
