"""Hostile candidate programs: none may pass, escape its limits, outlive its test or touch the host.

Every case checks: the verdict (never "pass"; usually a specific outcome), the time bound
(test_seconds + 2 s), that no process is left (host processes whose command line carries the
case's unique marker, and the worker cgroups' process counts) and, where it applies, that host
files and sockets were not touched (conftest.py's run_case). All cases run on both isolating
levels, bubblewrap and landlock (each skipped only where this machine lacks it); a representative
subset also runs under isolation="limits". test_containment.py holds issue 11's attacks.
"""

import os
import shutil
import socket
import time
import uuid
from pathlib import Path

import pytest

from containment_support import ISOLATING_LEVELS, LIMITS, REPO, level_available, versioned_executors
from engine.execution import executor as executor_module
from engine.execution.executor import Executor
NOT_PASS = {"fail", "error", "timeout"}
# A program that starts a long-lived process carrying the marker on its command line.
SLEEPER = "import os, sys\ndef sleeper():\n    os.execv('/bin/sh', ['/bin/sh', '-c', 'sleep 60; : ' + MARKER])\n"
UNDER_LIMITS_TOO: list = []  # the representative subset that also runs under isolation="limits"


def case(name, program, test="assert f() == 1", outcomes=NOT_PASS, message=None, limits_too=False):
    param = pytest.param(program, test, outcomes, message, id=name)
    if limits_too:
        UNDER_LIMITS_TOO.append(param)
    return param


CASES = [
    case("infinite-loop", "def f():\n    while True:\n        pass\n", outcomes={"timeout"}, message="timed out after 2 s", limits_too=True),
    case("infinite-recursion", "def f():\n    return f()\n", outcomes={"error"}, message="RecursionError", limits_too=True),
    case("memory-bomb", "def f():\n    x = []\n    while True:\n        x.append(b' ' * 10**8)\n", outcomes={"error"}, message="MemoryError", limits_too=True),
    case("fork-bomb", "import os\ndef f():\n    while True:\n        try:\n            os.fork()\n        except OSError:\n            pass\n",
         outcomes={"error", "timeout"}, limits_too=True),
    case("double-fork-daemon", SLEEPER + "def f():\n    if os.fork() == 0:\n        if os.fork() == 0:\n            sleeper()\n        os._exit(0)\n    os.wait()\n    return 2\n",
         outcomes={"fail"}, message="returned 2, expected 1", limits_too=True),
    case("setsid-daemon", SLEEPER + "def f():\n    if os.fork() == 0:\n        os.setsid()\n        sleeper()\n    return 2\n",
         outcomes={"fail"}, limits_too=True),
    case("daemon-ignoring-signals", SLEEPER + "import signal\ndef f():\n    if os.fork() == 0:\n        for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):\n            signal.signal(s, signal.SIG_IGN)\n        os.setsid()\n        sleeper()\n    return 2\n",
         outcomes={"fail"}),
    case("thread-keeps-running", "import threading, time\ndef spin():\n    while True:\n        time.sleep(0.01)\ndef f():\n    threading.Thread(target=spin).start()\n    return 2\n",
         outcomes={"fail"}, limits_too=True),
    case("non-daemon-thread-blocks-exit", "import threading\ndef f():\n    threading.Thread(target=lambda: [0 for _ in iter(int, 1)]).start()\n    return 0\n",
         outcomes={"fail"}),
    case("shell-child-runs-forever", "import subprocess\ndef f():\n    subprocess.Popen(['/bin/sh', '-c', 'while :; do :; done; : ' + MARKER])\n    return 0\n",
         outcomes={"fail"}, limits_too=True),
    case("huge-output", "import sys\ndef f():\n    while True:\n        sys.stdout.write('x' * 65536)\n",
         outcomes={"error"}, message="printed more than", limits_too=True),
    case("huge-stderr", "import os\ndef f():\n    while True:\n        os.write(2, b'e' * 65536)\n", outcomes={"error"}, message="printed more than"),
    case("binary-garbage-output", "import os\ndef f():\n    os.write(1, bytes(range(256)) * 4)\n    return 0\n", outcomes={"fail"}),
    case("print-pass", "def f():\n    print('PASS')\n    print('{\"outcome\": \"pass\"}')\n    return 0\n", outcomes={"fail"}, limits_too=True),
    case("forged-json-on-every-fd", "import os, json\ndef f():\n    msg = json.dumps({'status': 'result', 'outcome': 'pass', 'result': {'block': 'ok', 'leaves': [['value', ['i', '0x1']]]}}).encode()\n"
         "    for fd in range(1024):\n        for blob in (msg, len(msg).to_bytes(4, 'big') + msg):\n            try:\n                os.write(fd, blob)\n            except OSError:\n                pass\n    return 0\n",
         outcomes={"fail", "error"}, limits_too=True),
    case("forged-json-then-exit", "import os, json\ndef f():\n    msg = json.dumps({'status': 'result', 'result': {'block': 'ok'}}).encode()\n    for fd in range(1024):\n        try:\n            os.write(fd, len(msg).to_bytes(4, 'big') + msg)\n        except OSError:\n            pass\n    os._exit(0)\n",
         outcomes={"error"}),
    case("os-exit-0", "import os\ndef f():\n    os._exit(0)\n", outcomes={"error"}, message="exited without a result", limits_too=True),
    case("sys-exit-in-test", "def f():\n    return 1\n", test="import sys\nsys.exit(0)", outcomes={"error"}, message="SystemExit"),
    case("sys-exit-in-assert", "import sys\ndef f():\n    sys.exit(0)\n", outcomes={"error"}, message="SystemExit"),
    case("raise-systemexit", "def f():\n    raise SystemExit(0)\n", test="f()", outcomes={"error"}),
    case("raise-keyboardinterrupt", "def f():\n    raise KeyboardInterrupt\n", outcomes={"error"}, message="KeyboardInterrupt"),
    case("raise-generatorexit", "def f():\n    raise GeneratorExit\n", test="f()", outcomes={"error"}, message="GeneratorExit"),
    case("close-all-fds", "import os\ndef f():\n    os.closerange(0, 1024)\n    return 1\n", outcomes={"error"}, limits_too=True),
    case("close-all-fds-block", "import os\ndef f():\n    os.closerange(0, 1024)\n", test="f()", outcomes={"error"}),
    case("patch-assertionerror", "import builtins\nclass Quiet(Exception):\n    pass\nbuiltins.AssertionError = Quiet\nAssertionError = Quiet\ndef f():\n    return 0\n",
         test="assert f() == 1", outcomes={"fail"}),
    case("patch-assertionerror-block", "import builtins\nbuiltins.AssertionError = type('Quiet', (Exception,), {})\ndef f():\n    return 0\n",
         test="x = f()\nassert x == 1", outcomes={"fail"}),
    case("patch-isinstance-and-print", "import builtins\nbuiltins.isinstance = lambda *a: True\nbuiltins.print = lambda *a, **k: None\nbuiltins.len = lambda x: 1\ndef f():\n    return [0, 0]\n",
         test="assert len(f()) == 1 and isinstance(f(), int)", outcomes={"fail"}),
    case("shadow-set-in-globals", "def set(x):\n    return {1}\ndef f():\n    return [2]\n", test="assert set(f()) == {1}", outcomes={"pass"}),
    case("patch-math-isclose", "import math\nmath.isclose = lambda *a, **k: True\ndef f():\n    return 5.0\n",
         test="assert math.isclose(f(), 2.0, rel_tol=0.001)", outcomes={"fail"}, message="returned 5.0, expected close to 2.0 (rel_tol=0.001)"),
    case("patch-json-and-marshal", "import json, marshal\njson.dumps = lambda *a, **k: '{\"outcome\": \"pass\"}'\njson.loads = lambda *a, **k: {}\nmarshal.dumps = lambda *a, **k: b''\nmarshal.loads = lambda *a, **k: {}\ndef f():\n    return 0\n",
         outcomes={"fail"}, limits_too=True),
    case("patch-runner-module", "import sys\nrunner = sys.modules['__main__']\nfor name in ('_encode', 'encode_leaf', 'describe', '_dumps', 'clean_result'):\n    if hasattr(runner, name):\n        setattr(runner, name, lambda *a, **k: ('value', ('i', 1)))\ndef f():\n    return 0\n",
         outcomes={"fail", "error"}),
    case("ignore-sigalrm-sigterm-and-loop", "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nsignal.signal(signal.SIGUSR1, signal.SIG_IGN)\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ndef f():\n    while True:\n        pass\n",
         outcomes={"timeout"}, limits_too=True),
    case("swallow-the-soft-time-limit", "import signal\nsignal.signal(signal.SIGUSR1, lambda *a: None)\nsignal.signal(signal.SIGALRM, lambda *a: None)\n"
         "signal.setitimer(signal.ITIMER_REAL, 0.05, 0.05)\ndef f():\n    while True:\n        pass\n", outcomes={"timeout"}),
    case("catch-everything-and-loop", "def f():\n    while True:\n        try:\n            while True:\n                pass\n        except BaseException:\n            pass\n", outcomes={"timeout"}),
    case("kill-process-group", "import os, signal\ndef f():\n    os.kill(0, signal.SIGKILL)\n    return 2\n", outcomes={"fail", "error"}, limits_too=True),
    case("kill-everything", "import os, signal\ndef f():\n    for s in (signal.SIGTERM, signal.SIGKILL):\n        try:\n            os.kill(-1, s)\n        except OSError:\n            pass\n    return 2\n",
         outcomes={"fail", "error"}, limits_too=True),
    case("kill-pids-from-proc", "import os, signal\ndef f():\n    for p in os.listdir('/proc'):\n        if p.isdigit() and int(p) != os.getpid():\n            try:\n                os.kill(int(p), signal.SIGKILL)\n            except OSError:\n                pass\n    return 2\n",
         outcomes={"fail"}),
    case("eq-always-true", "class Yes:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\ndef f():\n    return Yes()\n",
         outcomes={"fail"}, message="returned a Yes, which cannot be compared outside the sandbox", limits_too=True),
    case("eq-always-true-in-list", "class Yes:\n    def __eq__(self, other):\n        return True\ndef f():\n    return [Yes(), Yes()]\n", test="assert f() == [1, 2]", outcomes={"fail"}),
    case("int-subclass-eq", "class I(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\ndef f():\n    return I(7)\n", outcomes={"fail"}),
    case("dict-subclass-items", "class D(dict):\n    def items(self):\n        return [('a', 1)]\n    def __eq__(self, o):\n        return True\ndef f():\n    return D(b=2)\n", test="assert f() == {'a': 1}", outcomes={"fail"}),
    case("eq-raises", "class Bad:\n    def __eq__(self, other):\n        raise RuntimeError('no')\ndef f():\n    return Bad()\n", outcomes={"fail"}),
    case("repr-raises", "class R:\n    def __repr__(self):\n        raise RuntimeError('no repr')\ndef f():\n    return [R()]\n", outcomes={"fail"}),
    case("repr-sleeps", "import time\nclass R:\n    def __repr__(self):\n        time.sleep(100)\n        return 'r'\ndef f():\n    return R()\n", outcomes={"fail", "timeout"}),
    case("repr-huge", "class R:\n    def __repr__(self):\n        return 'r' * 10**8\ndef f():\n    return R()\n", outcomes={"fail"}),
    case("repr-deep-recursion", "class R:\n    def __repr__(self):\n        return repr(R())\ndef f():\n    raise ValueError(R())\n", outcomes={"error"}),
    case("str-of-exception-sleeps", "import time\nclass E(Exception):\n    def __str__(self):\n        time.sleep(100)\n        return 'e'\ndef f():\n    raise E()\n", outcomes={"error", "timeout"}),
    case("del-exits", "import os\nclass D:\n    def __del__(self):\n        os._exit(0)\ndef f():\n    D()\n    return 1\n", outcomes={"error"}),
    case("del-forges-result", "import os\nclass D:\n    def __del__(self):\n        for fd in range(3, 64):\n            try:\n                os.write(fd, b'EGR1' + bytes(16) + (5).to_bytes(4, 'big') + b'\\x00' * 5)\n            except OSError:\n                pass\nkeep = [D() for _ in range(3)]\ndef f():\n    return 0\n",
         outcomes={"fail", "error"}),
    case("atexit-handler", "import atexit, os\natexit.register(lambda: os.write(1, b'PASS'))\ndef f():\n    return 0\n", outcomes={"fail"}),
    case("settrace-none", "import sys\ndef f():\n    sys.settrace(None)\n    return 0\n", outcomes={"fail"}),
    case("settrace-custom", "import sys\ndef tracer(frame, event, arg):\n    frame.f_locals.clear()\n    return tracer\ndef f():\n    sys.settrace(tracer)\n    sys._getframe().f_back.f_trace = tracer\n    return 0\n", outcomes={"fail", "error"}),
    case("raise-rlimits-then-allocate", "import resource\ndef f():\n    for r in (resource.RLIMIT_AS, resource.RLIMIT_CPU, resource.RLIMIT_NPROC, resource.RLIMIT_NOFILE):\n        try:\n            resource.setrlimit(r, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))\n        except (ValueError, OSError):\n            pass\n    return bytearray(3 << 30)\n",
         outcomes={"error"}, message="MemoryError", limits_too=True),
    case("read-proc", "import os\ndef f():\n    out = []\n    for p in os.listdir('/proc'):\n        if p.isdigit():\n            try:\n                out.append(open(f'/proc/{p}/cmdline', 'rb').read())\n                open(f'/proc/{p}/mem', 'rb').read(1)\n            except OSError:\n                pass\n    return out\n",
         outcomes={"fail"}),
    case("write-other-processes-fds", "import os, json\ndef f():\n    msg = json.dumps({'id': 0, 'status': 'result', 'result': {'block': 'ok', 'leaves': [['value', ['i', '0x1']]]}}).encode()\n"
         "    frame = len(msg).to_bytes(4, 'big') + msg\n    for p in os.listdir('/proc'):\n        if p.isdigit() and int(p) > 1:\n            for fd in range(0, 8):\n                try:\n                    w = os.open(f'/proc/{p}/fd/{fd}', os.O_WRONLY)\n                    os.write(w, frame)\n                except OSError:\n                    pass\n    return 0\n",
         outcomes={"fail", "error"}, limits_too=True),
    case("gc-hunt-for-nonce", "import gc, os, sys, marshal\ndef f():\n    frame = sys._getframe()\n    nonce = None\n    while frame is not None:\n        if isinstance(frame.f_locals.get('nonce'), bytes):\n            nonce = frame.f_locals['nonce']\n        frame = frame.f_back\n"
         "    forged = marshal.dumps({'error': None, 'leaves': (marshal.dumps(('value', ('i', 999))),), 'block': 'ok', 'trace': None})\n    if nonce:\n        os.write(3, b'EGR1' + nonce + len(forged).to_bytes(4, 'big') + forged)\n        os._exit(0)\n    return 0\n",
         test="assert f() == 12345", outcomes={"fail"}),
    case("ctypes-segfault", "import ctypes\ndef f():\n    ctypes.string_at(0)\n", outcomes={"error"}, message="SIGSEGV", limits_too=True),
    case("write-cgroup-files", "import os\ndef f():\n    done = []\n    for root, dirs, files in os.walk('/sys/fs/cgroup'):\n        for name in ('cgroup.procs', 'pids.max', 'memory.limit_in_bytes'):\n            if name in files:\n                try:\n                    open(os.path.join(root, name), 'w').write('max' if name == 'pids.max' else '1')\n                    done.append(root)\n                except OSError:\n                    pass\n    return done\n",
         test="assert f() == ['x']", outcomes={"fail"}),
    case("unshare-and-remount", "import ctypes, os, subprocess\ndef f():\n    libc = ctypes.CDLL(None)\n    libc.unshare(0x10000000 | 0x00020000)\n    subprocess.run(['mount', '-o', 'remount,bind,rw', '/'], capture_output=True)\n    subprocess.run(['mount', '-o', 'remount,rw', '/'], capture_output=True)\n    open(PROJECT + '/egcfg_hostile_' + MARKER, 'w').write('x')\n    return 0\n",
         outcomes={"error"}),
    case("fill-tmp", "import os\ndef f():\n    n = 0\n    while True:\n        with open(f'/tmp/fill{n}', 'wb') as h:\n            h.write(b'x' * (1 << 20) * 8)\n        n += 1\n", outcomes={"error", "timeout"}, limits_too=True),
    case("lock-scratch-directory", "import os\ndef f():\n    os.makedirs('a/b/c')\n    os.chmod('a/b', 0)\n    os.chmod('.', 0)\n    os.chmod('/tmp', 0)\n    return 0\n", outcomes={"fail", "error"}),
    case("very-deep-directory-tree", "import os, tempfile\ndef f():\n    os.chdir(tempfile.gettempdir())\n    for _ in range(1500):\n        os.mkdir('d')\n        os.chdir('d')\n    return 0\n", outcomes={"fail"}),
    case("huge-int", "def f():\n    return 7 ** 500000\n", outcomes={"fail"}),
    case("deeply-nested-list", "def f():\n    x = []\n    for _ in range(10000):\n        x = [x]\n    return x\n", outcomes={"fail"}),
    case("self-referential-list", "def f():\n    x = []\n    x.append(x)\n    return x\n", outcomes={"fail"}),
    case("endless-generator-for-set", "def f():\n    while True:\n        yield 1\n", test="assert set(f()) == {1}", outcomes={"timeout", "error"}),
    case("exec-yes-forever", "import os\ndef f():\n    os.execv('/bin/sh', ['/bin/sh', '-c', 'yes > /dev/null; : ' + MARKER])\n", outcomes={"timeout", "error"}),
    case("modify-test-globals-via-frames", "import sys\ndef f():\n    g = sys._getframe(1).f_globals\n    g['__builtins__']['len'] = lambda x: 1\n    return [1, 2, 3]\n", test="assert len(f()) == 1", outcomes={"fail"}),
]


@pytest.mark.parametrize("program, test, outcomes, message", CASES)
@pytest.mark.parametrize("level", ISOLATING_LEVELS)
def test_hostile_on_each_isolating_level(sandboxes, run_case, level, program, test, outcomes, message):
    ex = sandboxes(level)
    assert ex.isolation == level
    run_case(ex, program, test, outcomes, message)


LIMITS_CASES = UNDER_LIMITS_TOO


@pytest.mark.parametrize("program, test, outcomes, message", LIMITS_CASES)
def test_hostile_under_limits(sandboxes, run_case, program, test, outcomes, message):
    ex = sandboxes("limits")
    assert ex.isolation == "limits"
    if ex.pid_namespace == "none" and "os.kill(-1" in program:
        pytest.skip("no PID namespace here: kill(-1) would reach this test runner (use bubblewrap)")
    run_case(ex, program, test, outcomes, message)


ON_OTHER_PYTHONS = ["os-exit-0", "sys-exit-in-test", "sys-exit-in-assert", "atexit-handler", "print-pass",
                    "forged-json-on-every-fd", "forged-json-then-exit", "del-exits", "del-forges-result", "gc-hunt-for-nonce",
                    "settrace-none", "settrace-custom", "patch-assertionerror", "patch-assertionerror-block",
                    "patch-json-and-marshal", "eq-always-true", "thread-keeps-running", "kill-process-group",
                    "ignore-sigalrm-sigterm-and-loop", "swallow-the-soft-time-limit", "infinite-loop"]


@pytest.fixture(scope="module")
def versioned():
    get, close = versioned_executors()
    yield get
    close()


@pytest.mark.parametrize("name", ON_OTHER_PYTHONS)
@pytest.mark.parametrize("version", ["3.12", "3.13"])
@pytest.mark.parametrize("level", ISOLATING_LEVELS)
def test_hostile_under_other_pythons(versioned, run_case, level, version, name):
    """The sandbox worker can run the project's interpreter: the exits, fake results, forged frames,
    hooks and patches hold there too."""
    (param,) = [c for c in CASES if c.id == name]
    run_case(versioned(level, version), *param.values)


def test_there_are_enough_hostile_cases():
    assert len(CASES) >= 40 and len(LIMITS_CASES) >= 15


WRITERS = {
    "project-root": "def f():\n    open(PROJECT + '/egcfg_hostile_' + MARKER, 'w').write('x')\n    return 1\n",
    "host-file-in-pytest-tmp": "def f():\n    open(VICTIM, 'w').write('changed')\n    return 1\n",
    "append-host-file": "import os\ndef f():\n    fd = os.open(VICTIM, os.O_WRONLY | os.O_APPEND)\n    os.write(fd, b'changed')\n    return 1\n",
    "etc": "def f():\n    open('/etc/egcfg_hostile_' + MARKER, 'w').write('x')\n    return 1\n",
}


@pytest.mark.parametrize("where", sorted(WRITERS))
@pytest.mark.parametrize("isolation", [*ISOLATING_LEVELS, "limits"])
def test_writes_outside_the_scratch_directory_fail(sandboxes, run_case, where, isolation):
    ex = sandboxes(isolation)
    if isolation == "limits" and ex.run_as != "nobody":
        pytest.skip(f"under limits only this machine runs candidates as {ex.run_as} (nobody cannot read the "
                    "Python installation): no file-system protection without bubblewrap")
    outcome = run_case(ex, WRITERS[where], "assert f() == 1", {"error"})
    assert any(word in outcome.message for word in ("Read-only", "Permission", "No such file")), outcome.message
    assert not list(Path("/etc").glob("egcfg_hostile_*"))


@pytest.mark.parametrize("level", ISOLATING_LEVELS)
def test_writes_to_the_scratch_directory_work(sandboxes, run_case, level):
    ex = sandboxes(level)
    program = "import os, tempfile\ndef f():\n    open('here.txt', 'w').write('x')\n    open(os.path.join(tempfile.gettempdir(), 'there.txt'), 'w').write('y')\n    return 1\n"
    assert run_case(ex, program, "assert f() == 1", {"pass"}).outcome == "pass"


@pytest.mark.parametrize("level", ISOLATING_LEVELS)
def test_no_network(sandboxes, run_case, level):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    program = (f"import socket\ndef f():\n    s = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
               "    s.sendall(b'hello')\n    return 'connected'\n")
    outcome = run_case(sandboxes(level), program, "assert f() == 'connected'", {"error"})
    assert any(word in outcome.message for word in ("ConnectionRefused", "Network is unreachable", "OSError",
                                                    "PermissionError", "Address family"))
    with pytest.raises(socket.timeout):
        listener.accept()
    listener.close()


FALLBACK_CASES = ["fork-bomb", "double-fork-daemon", "setsid-daemon", "daemon-ignoring-signals", "thread-keeps-running",
                  "shell-child-runs-forever", "infinite-loop", "eq-always-true", "forged-json-on-every-fd", "os-exit-0"]


@pytest.fixture(scope="module", params=["supervisor-process", "no-pid-namespace"])
def fallback_sandbox(request):
    """The worker's fallbacks: a forked supervisor per test (no raw clone()), and no PID namespace
    at all (orphans are reaped by a subreaper). Only under bubblewrap: without a PID namespace a
    candidate's kill(-1) must not reach the host."""
    if level_available("bubblewrap"):
        pytest.skip("bubblewrap is not available here")
    overrides = {"direct": False} if request.param == "supervisor-process" else {"force_namespace": "none"}
    original = executor_module._Pool.worker_config
    mp = pytest.MonkeyPatch()
    mp.setattr(executor_module._Pool, "worker_config", lambda self, tmp: {**original(self, tmp), **overrides})
    ex = Executor(workers=2, limits=LIMITS, isolation="bubblewrap", project_root=str(REPO))
    mp.undo()
    assert ex.pid_namespace == ("none" if request.param == "no-pid-namespace" else "user+pid")
    yield ex
    ex.close()


@pytest.mark.parametrize("name", FALLBACK_CASES)
def test_hostile_under_the_fallbacks(fallback_sandbox, run_case, name):
    (param,) = [c for c in CASES if c.id == name]
    run_case(fallback_sandbox, *param.values)
