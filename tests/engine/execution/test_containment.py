"""Issue 11's attacks, on each isolating level (bubblewrap and landlock), with benign controls.

Host unix sockets (a listener in HOME, in /run/user/UID and inside the workspace, and an abstract
one), the user's files (the HOME sentinel, /etc/shadow, /root, /run, /mnt...), kernel settings
(/proc/sys), new namespaces, the kernel surface seccomp denies, identity and capabilities, signals
to host processes, and tampering with the in-sandbox reporting code (sys.modules, gc, frames,
class dictionaries; the runner's own frames, hooks, signal handlers, threads and finalizers, under
Python 3.11, 3.12 and 3.13; tests judged by the project's pytest). conftest.py's run_case checks the
common bars after each case.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import socket
import subprocess
import uuid
from pathlib import Path

import pytest
from containment_support import ISOLATING_LEVELS, LIMITS, level_available, versioned_executors

LEVELS = pytest.mark.parametrize("level", ISOLATING_LEVELS)
X86_64 = platform.machine() == "x86_64"
CONTAINED = "returned 'contained'"


def escape_case(name, body, x86_only=False):
    """A program whose f() returns 'escaped: ...' when any attempt worked, else 'contained'."""
    program = ("import os, sys, ctypes, errno, socket\nlibc = ctypes.CDLL(None, use_errno=True)\n"
               "def f():\n    worked = []\n" + "".join("    " + line + "\n" for line in body.splitlines())
               + "    return 'escaped: ' + repr(worked) if worked else 'contained'\n")
    marks = [pytest.mark.skipif(not X86_64, reason="x86_64 system call numbers")] if x86_only else []
    return pytest.param(program, id=name, marks=marks)


ESCAPES = [
    escape_case("read-home-sentinel", "try:\n    worked.append(open(SENTINEL).read())\nexcept OSError:\n    pass\n"
                "try:\n    worked.append(os.listdir(HOME_DIR))\nexcept OSError:\n    pass"),
    escape_case("write-home", "for path in (HOME_DIR + '/planted', HOME_DIR + '/.bashrc'):\n    try:\n"
                "        open(path, 'a').write('x')\n        worked.append(path)\n    except OSError:\n        pass"),
    escape_case("read-system-secrets", "for path in ('/etc/shadow', '/etc/gshadow', '/etc/sudoers', '/root/.bashrc', '/root/.ssh/id_rsa',\n"
                "             '/root/.aws/credentials', '/var/run/docker.sock', '/etc/ssh/ssh_host_rsa_key'):\n"
                "    try:\n        open(path, 'rb').read(1)\n        worked.append(path)\n    except OSError:\n        pass"),
    escape_case("list-private-folders", "for path in ('/home', '/run', '/var/run', '/mnt', '/media', '/srv', '/run/user', '/var/lib'):\n"
                "    try:\n        if os.listdir(path):\n            worked.append(path)\n    except OSError:\n        pass"),
    escape_case("write-kernel-settings", "for path in ('/proc/sys/kernel/core_pattern', '/proc/sys/vm/drop_caches', '/proc/sys/kernel/hostname'):\n"
                "    try:\n        current = open(path).read() if 'drop' not in path else '0\\n'\n"
                "        with open(path, 'w') as handle:\n            handle.write(current if 'drop' not in path else '1')\n"
                "        worked.append(path)\n    except OSError:\n        pass"),
    escape_case("new-namespaces", "for flag in (0x10000000, 0x00020000, 0x40000000, 0x20000000, 0x04000000, 0x08000000, 0x02000000):\n"
                "    pid = os.fork()\n    if pid == 0:\n        os._exit(0 if libc.unshare(flag) == 0 else 1)\n"
                "    if os.waitpid(pid, 0)[1] == 0:\n        worked.append(hex(flag))\n"
                "for ns in ('user', 'mnt', 'net', 'pid'):\n    try:\n        fd = os.open('/proc/self/ns/' + ns, os.O_RDONLY)\n"
                "        if libc.setns(fd, 0) == 0:\n            worked.append('setns ' + ns)\n    except OSError:\n        pass"),
    escape_case("mount-and-remount", "for args in ((b'none', b'/tmp', b'tmpfs', 0, None), (b'/', b'/', None, 0x1000 | 0x20 | 0x4000, None), (b'proc', b'/tmp', b'proc', 0, None)):\n"
                "    if libc.mount(*args) == 0:\n        worked.append(args[1])\n"
                "if libc.umount2(b'/proc', 2) == 0:\n    worked.append('umount')"),
    escape_case("kernel-surface", "calls = {'io_uring_setup': (425, 8, 0), 'keyctl': (250, 0, 0), 'add_key': (248, 0, 0), 'request_key': (249, 0, 0),\n"
                "         'bpf': (321, 0, 0), 'perf_event_open': (298, 0, 0), 'userfaultfd': (323, 0, 0), 'kexec_load': (246, 0, 0),\n"
                "         'pivot_root': (155, 0, 0), 'ptrace_attach_1': (101, 16, 1), 'process_vm_readv': (310, 1, 0),\n"
                "         'init_module': (175, 0, 0), 'open_by_handle_at': (304, 0, 0), 'clone3': (435, 0, 0)}\n"
                "for name, (number, a, b) in calls.items():\n    ctypes.set_errno(0)\n    result = libc.syscall(number, a, b, 0, 0, 0)\n"
                "    if result >= 0 or ctypes.get_errno() not in (errno.EPERM, errno.ENOSYS):\n        worked.append((name, result, ctypes.get_errno()))",
                x86_only=True),
    escape_case("socket-families", "for family, kind in ((40, 1), (16, 3), (17, 3), (1, 1), (1, 2), (38, 5), (31, 1)):\n"
                "    try:\n        socket.socket(family, kind).close()\n        worked.append(family)\n    except OSError:\n        pass"),
    escape_case("unix-socket-high-bits", "ctypes.set_errno(0)\nfd = libc.syscall(41, ctypes.c_long(0x100000001), 1, 0)\nif fd >= 0:\n    worked.append(fd)",
                x86_only=True),
    escape_case("privileges", "status = dict(line.split(':\\t', 1) for line in open('/proc/self/status').read().splitlines() if ':\\t' in line)\n"
                "for key in ('CapEff', 'CapPrm', 'CapAmb', 'CapInh'):\n    if int(status[key].strip(), 16):\n        worked.append(key)\n"
                "if status['NoNewPrivs'].strip() != '1':\n    worked.append('no NoNewPrivs')\n"
                "if status['Seccomp'].strip() != '2':\n    worked.append('no seccomp filter')\n"
                "for uid in (0, 1000):\n    try:\n        if uid == os.getuid():\n            continue\n        os.setuid(uid)\n        worked.append(('setuid', uid))\n    except OSError:\n        pass"),
    escape_case("ipc-objects", "libc.mq_open.restype = ctypes.c_int\n"
                "for name, call in (('shmget', lambda: libc.shmget(0x5EC, 4096, 0o1666)), ('msgget', lambda: libc.msgget(0x5ED, 0o1666)),\n"
                "                   ('semget', lambda: libc.semget(0x5EE, 1, 0o1666)), ('mq_open', lambda: libc.mq_open(b'/egcfg-q', 0o102, 0o666, None))):\n"
                "    if call() >= 0:\n        worked.append(name)"),
    escape_case("tty-injection", "import fcntl, termios\nfor fd in range(3):\n    try:\n        fcntl.ioctl(fd, termios.TIOCSTI, b'x')\n        worked.append(fd)\n    except OSError:\n        pass"),
]


@LEVELS
@pytest.mark.parametrize("program", ESCAPES)
def test_escapes_are_contained(sandboxes, run_case, level, program):
    run_case(sandboxes(level), program, "assert f() == 'escaped'", {"fail"}, CONTAINED)


@LEVELS
def test_the_candidate_is_an_unprivileged_user_under_bubblewrap(sandboxes, run_case, level):
    ex = sandboxes(level)
    program = "import os\ndef f():\n    return [os.getuid(), os.getgid(), os.getgroups()]\n"
    if level == "bubblewrap":
        run_case(ex, program, "assert f() == [65534, 65534, []]", {"pass"})
    else:  # as root on the host, the candidate becomes nobody when nobody can read the Python installation
        outcome = run_case(ex, program, "assert f() == [-1]", {"fail"})
        if os.geteuid() == 0 and ex.run_as == "nobody":
            assert "[65534, 65534, []]" in outcome.message


def _listener(path_or_name: str) -> socket.socket:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path_or_name)
    server.listen(5)
    server.settimeout(0.3)
    return server


@LEVELS
def test_no_host_unix_socket_is_reachable(sandboxes, run_case, level, temporary_home, tmp_path):
    """Listeners in HOME, in /run/user/UID and inside the workspace, and an abstract one: the
    candidate cannot create an AF_UNIX socket at all (seccomp), so none is reached."""
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "helpers_egcfg.py").write_text("VALUE = 1\n")
    os.chmod(tmp_path, 0o755)
    os.chmod(workspace, 0o755)
    run_user = f"/run/user/{os.getuid()}"
    made_run_user = not os.path.isdir(run_user)
    os.makedirs(run_user, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    paths = [str(temporary_home / f"agent-{tag}.sock"), f"{run_user}/egcfg-test-{tag}.sock", str(workspace / f"dev-{tag}.sock")]
    abstract = f"\0egcfg-test-{tag}"
    listeners = [_listener(p) for p in paths] + [_listener(abstract)]
    try:
        ex = sandboxes(level, project_root=str(workspace))
        targets = paths + [abstract]
        program = (f"import socket\nTARGETS = {targets!r}\ndef f():\n    reached = []\n    for target in TARGETS:\n"
                   "        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_SEQPACKET):\n            try:\n"
                   "                s = socket.socket(socket.AF_UNIX, kind)\n                s.settimeout(0.5)\n"
                   "                s.connect(target)\n                s.sendall(b'hello from the sandbox')\n"
                   "                reached.append(target)\n            except OSError:\n                pass\n"
                   "    import helpers_egcfg\n    return reached if reached else 'contained'\n")
        run_case(ex, program, "assert f() == 'escaped'", {"fail"}, CONTAINED)
        for server in listeners:
            with pytest.raises(socket.timeout):
                server.accept()
    finally:
        for server in listeners:
            server.close()
        for path in paths:
            if os.path.exists(path):
                os.unlink(path)
        if made_run_user:
            shutil.rmtree(run_user, ignore_errors=True)


@LEVELS
def test_host_processes_cannot_be_signalled(sandboxes, run_case, level):
    victim = subprocess.Popen(["sleep", "30"])
    try:
        program = (f"import os, signal\ndef f():\n    worked = []\n    for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGSTOP):\n"
                   f"        try:\n            os.kill({victim.pid}, sig)\n            worked.append(sig)\n        except OSError:\n"
                   f"            pass\n    return 'escaped' if worked else 'contained'\n")
        run_case(sandboxes(level), program, "assert f() == 'escaped'", {"fail"}, CONTAINED)
        assert victim.poll() is None
        with open(f"/proc/{victim.pid}/stat") as handle:
            assert handle.read().split(") ")[1][0] != "T"  # not stopped either
    finally:
        victim.kill()
        victim.wait()


# ---------------------------------------------------------------------------------------------
# Forged verdicts: tampering with the in-sandbox reporting code
# ---------------------------------------------------------------------------------------------

FORGER = ("import sys, gc, types, marshal\nSUSPECT = ('encode', 'serial', 'send', 'result', 'report', 'describe', 'dump', 'clean', 'leaf', 'judge', 'verdict', 'write', 'pack')\n"
          "def forged(*args, **kwargs):\n    return ('value', ('i', 1))\n"
          "def forge_ok(*args, **kwargs):\n    return 'ok'\n"
          "def suspicious(name):\n    return isinstance(name, str) and any(word in name.lower() for word in SUSPECT)\n")
TAMPERING = {
    "sys-modules": "for module in list(sys.modules.values()):\n    for name in list(getattr(module, '__dict__', {})):\n"
                   "        if suspicious(name) and callable(module.__dict__[name]):\n            try:\n                setattr(module, name, forged)\n"
                   "            except Exception:\n                pass\n",
    "gc-functions": "for obj in gc.get_objects():\n    if isinstance(obj, types.FunctionType) and suspicious(obj.__name__) and obj is not forged:\n"
                    "        try:\n            obj.__code__ = (forge_ok if 'block' in obj.__name__ else forged).__code__\n        except Exception:\n            pass\n"
                    "    elif isinstance(obj, dict):\n        for name in [n for n in obj if suspicious(n) and callable(obj[n])]:\n            obj[name] = forged\n",
    "frames": "def tamper_frames():\n    frame = sys._getframe(1)\n    while frame is not None:\n        for scope in (frame.f_globals, frame.f_locals):\n"
              "            for name in list(scope):\n                value = scope[name]\n                if suspicious(name) and callable(value):\n                    scope[name] = forged\n"
              "                elif isinstance(value, dict) and 'leaves' in value:\n                    for leaf in value['leaves'] or []:\n"
              "                        if isinstance(leaf, list) and len(leaf) == 4:\n                            leaf[3] = True\n"
              "                elif isinstance(value, (types.FunctionType, types.ModuleType)):\n                    target = value.__dict__ if isinstance(value, types.ModuleType) else value.__globals__\n"
              "                    for n in [n for n in target if suspicious(n) and callable(target[n])]:\n                        target[n] = forged\n"
              "        frame = frame.f_back\n",
    "classes-and-builtins": "import builtins, marshal, os, json\nfor cls in (type(None), bool, int, str, tuple, list, dict):\n    pass\n"
                            "builtins.type = lambda *a: tuple\nbuiltins.isinstance = lambda *a: True\nbuiltins.len = lambda *a: 1\n"
                            "marshal.dumps = lambda *a, **k: marshal.loads(b'')\nfor obj in gc.get_objects():\n"
                            "    if isinstance(obj, type) and obj.__name__ in ('Refused', 'TimeLimitExceeded'):\n        try:\n"
                            "            obj.__init__ = forged\n        except Exception:\n            pass\n",
}


def _tampering_parts(route: str, where: str) -> tuple[str, str]:
    """(module-level code, code at the start of f) that tampers in the program or in the call."""
    tamper = TAMPERING[route]
    if route == "frames":
        body = tamper + ("tamper_frames()\n" if where == "program" else "")
        call = "    tamper_frames()\n" if where == "call" else ""
    else:
        body = tamper if where == "program" else ""
        call = "".join("    " + line + "\n" for line in tamper.splitlines()) if where == "call" else ""
    return body, call


@LEVELS
@pytest.mark.parametrize("version", ["own", "3.12", "3.13"])
@pytest.mark.parametrize("where", ["program", "call"])
@pytest.mark.parametrize("route", sorted(TAMPERING))
def test_tampering_with_the_reporting_code_forges_no_pass(versioned, run_case, level, route, where, version):
    """f() returns 2 (or an object that cannot cross) after re-binding whatever looks like the
    reporting code; `assert f() == 1` (and a block test) must not pass."""
    body, call = _tampering_parts(route, where)
    program = FORGER + body + "class Yes:\n    def __eq__(self, other):\n        return True\n" \
        + "def f():\n" + call + "    return 2\n" + "def g():\n" + call + "    return Yes()\n"
    ex = versioned(level, version)
    for test in ("assert f() == 1", "x = f()\nassert x == 1", "assert g() == 1"):
        outcome = run_case(ex, program, test, {"fail", "error"})
        assert outcome.outcome != "pass"


# ---------------------------------------------------------------------------------------------
# Forged verdicts: the runner's own frames, hooks and finalizers (issue 11, gaps left by the seal)
# ---------------------------------------------------------------------------------------------

# Rewrites every local that looks like verdict state, in every frame below the caller, to a
# pass-like value: through f_locals (written through on 3.13), or from a hook whose changes 3.11
# and 3.12 write back.
REWRITER = """import sys, os, gc, signal, threading, marshal
NAMES = ('verdict', 'result', 'ok', 'passed', 'block', 'outcome', 'leaf', 'leaves', 'blobs', 'error', 'value', 'step',
         'request', 'saved', 'payload', 'body', 'interrupted', 'position', 'helped', 'message', 'kind', 'tag', 'steps',
         'flags', 'truth', 'iterate', 'described', 'size', 'done')
ONE = compile('1', '<test>', 'eval')
def passlike(name, value):
    table = {'block': 'ok', 'error': None, 'outcome': ('value', 1), 'leaf': ('value', ('i', 1)), 'value': 1, 'helped': 1,
             'ok': True, 'passed': True, 'verdict': 'pass', 'request': ('sent', False), 'interrupted': False,
             'truth': True, 'iterate': False, 'tag': 'i', 'kind': int}
    if name == 'step' and isinstance(value, tuple) and len(value) == 5:
        return (value[0], 'leaf', ONE, False, True)
    return table.get(name, value)
def rewrite(frame):
    while frame is not None:
        try:
            scope = frame.f_locals
            for name in [n for n in list(scope) if n in NAMES]:
                scope[name] = passlike(name, scope[name])
        except Exception:
            pass
        frame = frame.f_back
def hook(frame, event, arg):
    rewrite(frame)
    return hook
"""
FRAME_ATTACKS = {
    "f-locals-write": "def attack():\n    rewrite(sys._getframe(1))\n",
    "trace-write-back": "def attack():\n    frame = sys._getframe(1)\n    while frame is not None:\n        frame.f_trace = hook\n"
                        "        frame.f_trace_opcodes = True\n        frame = frame.f_back\n    sys.settrace(hook)\n",
    "profile-write-back": "def attack():\n    sys.setprofile(hook)\n",
    "monitoring-callbacks": "def attack():\n    m = getattr(sys, 'monitoring', None)\n    if m is None:\n        return\n"
                            "    for tool in range(6):\n        try:\n            m.use_tool_id(tool, 'x')\n        except ValueError:\n"
                            "            continue\n        for e in (m.events.PY_START, m.events.LINE, m.events.CALL, m.events.PY_RETURN, m.events.INSTRUCTION):\n"
                            "            m.register_callback(tool, e, lambda *a: rewrite(sys._getframe(1)))\n"
                            "        m.set_events(tool, m.events.PY_START | m.events.LINE | m.events.CALL | m.events.PY_RETURN | m.events.INSTRUCTION)\n"
                            "        m.free_tool_id(tool)\n",
    "signal-handler": "def attack():\n    signal.signal(signal.SIGALRM, lambda s, frame: rewrite(frame))\n"
                      "    signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.0002)\n",
    "thread-rewrites": "def spin():\n    while True:\n        for frame in sys._current_frames().values():\n            rewrite(frame)\n"
                       "def attack():\n    if hasattr(threading, 'settrace_all_threads'):\n        threading.settrace_all_threads(hook)\n"
                       "    threading.Thread(target=spin, daemon=True).start()\n    import time\n    time.sleep(0.02)\n",
    "nonce-hunt": "def attack():\n    found = set()\n    frame = sys._getframe()\n    while frame is not None:\n"
                  "        for v in list(frame.f_locals.values()) + list(frame.f_code.co_consts):\n"
                  "            for x in (v if isinstance(v, tuple) else (v,)):\n                if isinstance(x, bytes) and len(x) == 16:\n"
                  "                    found.add(x)\n        frame = frame.f_back\n"
                  "    for o in gc.get_objects():\n        if isinstance(o, (list, tuple, dict)):\n"
                  "            for x in (o.values() if isinstance(o, dict) else o):\n                if isinstance(x, bytes) and len(x) == 16:\n"
                  "                    found.add(x)\n"
                  "    forged = [marshal.dumps(('step', 0, 'exec', None, False)), marshal.dumps(('step', 1, 'leaf', marshal.dumps(('value', ('i', 1))), False)),\n"
                  "              marshal.dumps(('step', 1, 'block', None, False)), marshal.dumps(('end', None)),\n"
                  "              marshal.dumps(('result', {'error': None, 'leaves': (marshal.dumps(('value', ('i', 1))),), 'block': 'ok', 'trace': None}))]\n"
                  "    for nonce in sorted(found) + [bytes(16), b'\\xa5' * 16]:\n        for p in forged:\n"
                  "            try:\n                os.write(3, b'EGR1' + nonce + len(p).to_bytes(4, 'big') + p)\n            except OSError:\n                pass\n"
                  "    os._exit(0)\n",
    "forged-records-on-every-fd": "def attack():\n    p = marshal.dumps(('result', {'error': None, 'leaves': (marshal.dumps(('value', ('i', 1))),), 'block': 'ok', 'trace': None}))\n"
                                  "    for fd in range(65):\n        try:\n            os.write(fd, b'EGR1' + bytes(16) + len(p).to_bytes(4, 'big') + p)\n"
                                  "        except OSError:\n            pass\n",
    "child-reports": "def attack():\n    if os.fork() == 0:\n        p = marshal.dumps(('step', 1, 'leaf', marshal.dumps(('value', ('i', 1))), False))\n"
                     "        for fd in range(65):\n            try:\n                os.write(fd, b'EGR1' + bytes(16) + len(p).to_bytes(4, 'big') + p)\n"
                     "            except OSError:\n                pass\n        os._exit(0)\n    os.wait()\n",
    "thread-writes-after": "def writer():\n    p = marshal.dumps(('end', None))\n    while True:\n        for fd in range(3, 65):\n"
                           "            try:\n                os.write(fd, b'EGR1' + bytes(16) + len(p).to_bytes(4, 'big') + p)\n"
                           "            except OSError:\n                pass\n"
                           "def attack():\n    threading.Thread(target=writer, daemon=True).start()\n",
    "atexit-and-exit": "import atexit\ndef attack():\n    atexit.register(lambda: os.write(3, b'EGR1' + bytes(20)))\n    sys.exit(0)\n",
    "code-replacement": "def attack():\n    def forged(*a, **k):\n        return ('value', ('i', 1))\n"
                        "    frame = sys._getframe(1)\n    while frame is not None:\n        for v in list(frame.f_globals.values()) + list(frame.f_locals.values()):\n"
                        "            if callable(getattr(v, '__code__', None)) or hasattr(v, '__code__'):\n                try:\n"
                        "                    v.__code__ = forged.__code__\n                except Exception:\n                    pass\n"
                        "        frame = frame.f_back\n",
}
# Objects whose Python code the report itself would run (the encoder, a generator's close).
VALUE_ATTACKS = {
    "metaclass-hash": ("class Meta(type):\n    def __hash__(cls):\n        rewrite(sys._getframe(1))\n        return 0\n"
                       "    def __eq__(cls, other):\n        rewrite(sys._getframe(1))\n        return True\nclass V(metaclass=Meta):\n    pass\n"
                       "def f():\n    return V()\n", "assert f() == 1"),
    "iter-rewrites": ("class V:\n    def __iter__(self):\n        rewrite(sys._getframe(1))\n        sys.settrace(hook)\n        return iter([2])\n"
                      "def f():\n    return V()\n", "assert sorted(f()) == [1]"),
    "truth-rewrites": ("class V:\n    def __bool__(self):\n        rewrite(sys._getframe(1))\n        sys.setprofile(hook)\n        return False\n"
                       "def f():\n    return V()\n", "assert f()"),
    "exception-str-rewrites": ("class E(Exception):\n    def __str__(self):\n        rewrite(sys._getframe(1))\n        sys.settrace(hook)\n        return 'e'\n"
                               "def f():\n    raise E()\n", "f()"),
    "generator-close-rewrites": ("def f():\n    try:\n        yield 2\n    finally:\n        rewrite(sys._getframe(1))\n", "assert f() == 1"),
    "del-rewrites": ("class D:\n    def __del__(self):\n        rewrite(sys._getframe(1))\nKEEP = []\n"
                     "def f():\n    KEEP.append([D() for _ in range(100)])\n    KEEP.clear()\n    return 2\n", "assert f() == 1"),
}
@pytest.fixture(scope="module")
def versioned():
    """One executor per (level, Python): the sandbox worker under 3.12 and 3.13 too (f_locals writes
    through on 3.13; sys.monitoring from 3.12)."""
    get, close = versioned_executors()
    yield get
    close()


VERSIONS = pytest.mark.parametrize("version", ["own", "3.12", "3.13"])


@LEVELS
@VERSIONS
@pytest.mark.parametrize("name", sorted(FRAME_ATTACKS))
def test_the_runners_frames_and_hooks_forge_no_pass(versioned, run_case, level, version, name):
    """f() returns 2 after an attack on the runner (its frames' locals, trace/profile/monitoring
    hooks, a signal handler or a thread rewriting them, the nonce hunted through frames and gc,
    guessed records on every descriptor, a child that reports, code replaced): `assert f() == 1`
    and a block test come out as fail or error, never pass."""
    program = REWRITER + FRAME_ATTACKS[name] + "def f():\n    attack()\n    return 2\n"
    ex = versioned(level, version)
    for test in ("assert f() == 1", "x = f()\nassert x == 1"):
        outcome = run_case(ex, program, test, {"fail", "error", "timeout"})
        assert outcome.outcome != "pass"


@LEVELS
@VERSIONS
@pytest.mark.parametrize("name", sorted(VALUE_ATTACKS))
def test_values_that_run_code_during_the_report_forge_no_pass(versioned, run_case, level, version, name):
    program, test = VALUE_ATTACKS[name]
    outcome = run_case(versioned(level, version), REWRITER + program, test, {"fail", "error", "timeout"})
    assert outcome.outcome != "pass"


@LEVELS
@VERSIONS
def test_benign_hooks_keep_working_across_steps(versioned, run_case, level, version):
    """The runner takes the candidate's hooks away only while it reports: a trace function, a
    signal handler and a generator set up by the program still work in the test's expression."""
    program = ("import sys, signal\nEVENTS = []\ndef tracer(frame, event, arg):\n    EVENTS.append(event)\n    return None\n"
               "sys.settrace(tracer)\nsignal.signal(signal.SIGUSR2, lambda *a: EVENTS.append('signal'))\n"
               "def gen():\n    yield 1\n    yield 2\nG = gen()\n"
               "def f():\n    import os\n    os.kill(os.getpid(), signal.SIGUSR2)\n    return [next(G), 'call' in EVENTS, 'signal' in EVENTS]\n")
    run_case(versioned(level, version), program, "assert f() == [1, True, True]", {"pass"})


def test_block_tests_follow_pythons_own_comparison(sandboxes, run_case):
    """The decision for objects whose __eq__ always says True: a single assert compares on the host
    (fail), a block test runs as Python runs it (pass, as under pytest)."""
    program = "class Yes:\n    def __eq__(self, other):\n        return True\ndef f():\n    return Yes()\n"
    ex = sandboxes("bubblewrap")
    run_case(ex, program, "assert f() == 1", {"fail"})
    run_case(ex, program, "x = f()\nassert x == 1", {"pass"})


# Tests judged by the project's own pytest inside the sandbox: the program escapes its test.
PYTEST_ATTACKS = {
    "pytest-skip": "import pytest\ndef f():\n    pytest.skip('not today')\n",
    "pytest-xfail": "import pytest\ndef f():\n    pytest.xfail('expected')\n",
    "pytest-exit": "import pytest\ndef f():\n    pytest.exit('done', returncode=0)\n",
    "skip-the-module": "import pytest\npytest.skip('no tests here', allow_module_level=True)\ndef f():\n    return 2\n",
    "patch-json": "import json\njson.dumps = lambda *a, **k: '{\"tests\": [{\"nodeid\": \"test_mod.py::test_f\", \"outcome\": \"pass\"}], \"collect_errors\": [], \"exit\": 0}'\n"
                  "def f():\n    return 2\n",
    "os-exit": "import os\ndef f():\n    os._exit(0)\n",
    "sys-exit": "import sys\ndef f():\n    sys.exit(0)\n",
    "forged-records-on-every-fd": "import marshal, os\ndef f():\n    p = marshal.dumps(('result', {'error': None, 'project': {'tests': "
                                  "[{'nodeid': 'test_mod.py::test_f', 'outcome': 'pass'}], 'collect_errors': [], 'exit': 0}}))\n"
                                  "    for fd in range(65):\n        try:\n            os.write(fd, b'EGR1' + bytes(16) + len(p).to_bytes(4, 'big') + p)\n"
                                  "        except OSError:\n            pass\n    return 2\n",
    "print-pass": "def f():\n    print('1 passed in 0.01s')\n    print('{\"outcome\": \"pass\"}')\n    return 2\n",
    "frames-rewrite": REWRITER + "def f():\n    rewrite(sys._getframe(1))\n    return 2\n",
    # generic patches of pytest itself from the module under test (the red team's): caught by
    # egcfg's canary tests, which no program can tell from the project's without their names
    "patch-runtest": "import _pytest.python\n_pytest.python.Function.runtest = lambda self: None\ndef f():\n    return 2\n",
    "patch-call-and-report": "import _pytest.runner\n_original = _pytest.runner.call_and_report\n"
                             "def _passing(item, when, log=True, **kw):\n    report = _original(item, when, log=False, **kw)\n"
                             "    report.outcome, report.longrepr = 'passed', None\n    item.ihook.pytest_runtest_logreport(report=report)\n"
                             "    return report\n_pytest.runner.call_and_report = _passing\ndef f():\n    return 2\n",
    "patch-makereport": "import _pytest.reports\n_original = _pytest.reports.TestReport.from_item_and_call\n"
                        "def _passing(item, call):\n    report = _original(item, call)\n    report.outcome, report.longrepr = 'passed', None\n"
                        "    return report\n_pytest.reports.TestReport.from_item_and_call = classmethod(lambda cls, item, call: _passing(item, call))\n"
                        "def f():\n    return 2\n",
}


def _tampering_program(route: str, where: str) -> str:
    body, call = _tampering_parts(route, where)
    return FORGER + body + "def f():\n" + call + "    return 2\n"


PYTEST_ATTACKS.update({f"tampering-{route}-in-{where}": _tampering_program(route, where)
                       for route in TAMPERING for where in ("program", "call")})


@LEVELS
@pytest.mark.parametrize("name", sorted(PYTEST_ATTACKS))
def test_pytest_judged_tests_forge_no_pass(sandboxes, level, name, tmp_path):
    """The program escapes or breaks the pytest session that judges it (skip/xfail/exit, a patched
    json, exits, fake output, guessed records, rebound or rewritten reporting code): its test does
    not pass, and does not vanish without a problem reported."""
    from engine.execution import project_run

    root = tmp_path / "proj"
    root.mkdir()
    module = root / "mod.py"
    module.write_text("def f():\n    return 1\n")
    test_file = root / "test_mod.py"
    test_file.write_text("from mod import f\n\n\ndef test_f():\n    assert f() == 1\n")
    for path in (tmp_path, root):
        os.chmod(path, 0o755)
    ex = sandboxes(level, project_root=str(root))
    honest = project_run.run_module(ex, str(module), module.read_text(), str(root), [str(test_file)], trace=False)
    assert [t.outcome for t in honest.tests] == ["pass"], (honest.tests, honest.problems)
    run = project_run.run_module(ex, str(module), PYTEST_ATTACKS[name], str(root), [str(test_file)], trace=False)
    outcomes = [t.outcome for t in run.tests]
    assert "pass" not in outcomes and not {"skip", "xfail"} & set(outcomes), (run.tests, run.problems)
    assert outcomes or run.problems, "the test vanished without a problem reported"


# ---------------------------------------------------------------------------------------------
# Benign programs keep working on every level
# ---------------------------------------------------------------------------------------------

BENIGN = {
    "threads": ("import threading\ndef f():\n    out = []\n    ts = [threading.Thread(target=out.append, args=(i,)) for i in range(4)]\n"
               "    [t.start() for t in ts]\n    [t.join() for t in ts]\n    return sorted(out)\n", "[0, 1, 2, 3]"),
    "subprocess": ("import subprocess, sys\ndef f():\n    return subprocess.run([sys.executable, '-c', 'print(6 * 7)'], capture_output=True, text=True).stdout.strip()\n", "'42'"),
    "shell": ("import subprocess\ndef f():\n    return subprocess.run(['/bin/sh', '-c', 'echo $((2 + 3))'], capture_output=True, text=True).stdout.strip()\n", "'5'"),
    "multiprocessing-pool": ("import multiprocessing\ndef square(x):\n    return x * x\ndef f():\n    with multiprocessing.Pool(2) as pool:\n"
                             "        return pool.map(square, range(4))\n", "[0, 1, 4, 9]"),
    "multiprocessing-queue": ("import multiprocessing\ndef put(q):\n    q.put(7)\ndef f():\n    q = multiprocessing.Queue()\n"
                              "    p = multiprocessing.Process(target=put, args=(q,))\n    p.start()\n    v = q.get(timeout=5)\n    p.join()\n    return v\n", "7"),
    "socketpair": ("import socket\ndef f():\n    a, b = socket.socketpair()\n    a.sendall(b'ping')\n    return b.recv(4)\n", "b'ping'"),
    "read-stdlib-source": ("import os, json\ndef f():\n    return 'def dumps' in open(json.__file__.replace('__init__.py', '__init__.py')).read() and len(os.listdir(os.path.dirname(os.__file__))) > 100\n", "True"),
    "write-scratch": ("import os, tempfile\ndef f():\n    with tempfile.NamedTemporaryFile('w', delete=False) as h:\n        h.write('x')\n"
                      "    os.makedirs('sub/dir')\n    open('sub/dir/y', 'w').write('yy')\n    os.rename('sub/dir/y', 'sub/z')\n"
                      "    return [open(h.name).read(), open('sub/z').read()]\n", "['x', 'yy']"),
    "import-stdlib": ("import importlib\nNAMES = ('json', 'decimal', 'sqlite3', 'hashlib', 'zlib', 'asyncio', 'unittest', 'xml.etree.ElementTree', 'csv',\n"
                      "         'datetime', 'ctypes', 'ssl', 'lzma', 'bz2', 'uuid', 'email', 'http.client', 'zoneinfo', 'locale', 'tempfile')\n"
                      "def f():\n    return [n for n in NAMES if importlib.import_module(n) is None]\n", "[]"),
    "sqlite-in-memory": ("import sqlite3\ndef f():\n    c = sqlite3.connect(':memory:')\n    c.execute('create table t (x)')\n    c.execute('insert into t values (3)')\n"
                         "    return c.execute('select x * 2 from t').fetchone()[0]\n", "6"),
    "asyncio": ("import asyncio\nasync def g():\n    await asyncio.sleep(0)\n    return 9\ndef f():\n    return asyncio.run(g())\n", "9"),
}


@LEVELS
@pytest.mark.parametrize("name", sorted(BENIGN))
def test_benign_programs_pass(sandboxes, run_case, level, name):
    program, expected = BENIGN[name]
    # multiprocessing's locks live in /dev/shm, which under Landlock is the host's: not given
    outcomes = {"error"} if level == "landlock" and name.startswith("multiprocessing") else {"pass"}
    run_case(sandboxes(level), program, f"assert f() == {expected}", outcomes)


@LEVELS
def test_the_hosts_shared_memory_is_out_of_reach_and_a_tests_own_does_not_outlast_it(sandboxes, run_case, level):
    """/dev/shm holds other programs' shared memory (a browser's, the user's): under bubblewrap the
    test gets a private one, emptied after every test; under Landlock none at all."""
    secret = Path("/dev/shm") / f"egcfg-host-{uuid.uuid4().hex}"
    secret.write_text("host secret")
    secret.chmod(0o600)
    try:
        ex = sandboxes(level)
        program = ("import os\ndef f():\n    found = []\n    try:\n        names = os.listdir('/dev/shm')\n    except OSError:\n        names = []\n"
                   "    for name in names:\n"
                   "        try:\n            found.append(open('/dev/shm/' + name).read())\n        except OSError:\n            pass\n"
                   f"    try:\n        found.append(open({str(secret)!r}).read())\n    except OSError:\n        pass\n"
                   "    try:\n        open('/dev/shm/left-behind', 'w').write('x')\n    except OSError:\n        pass\n    return found\n")
        for _ in range(3):  # on 2 workers, one runs it twice: that run would see what the first left
            run_case(ex, program, "assert f() == []", {"pass"})
        assert secret.read_text() == "host secret" and not Path("/dev/shm/left-behind").exists()
    finally:
        secret.unlink()


def test_a_test_that_plants_a_look_alike_project_under_tmp_gets_the_worker_replaced(tmp_path):
    """A project under /tmp is bound inside bwrap's scratch /tmp, below folders bwrap made there:
    a test that renames one and plants its own project in its place must not reach the next test."""
    if level_available("bubblewrap"):
        pytest.skip("bubblewrap is not available here")
    from engine.execution.executor import Executor, Job

    root = tmp_path / "proj"
    root.mkdir()
    (root / "mod.py").write_text("def g():\n    return 'real'\n")
    top = "/" + "/".join(str(root).split("/")[1:3])      # e.g. /tmp/pytest-of-user: made by bwrap
    assert top.startswith("/tmp/") and top != str(root)
    plant = (f"import os\ndef f():\n    os.rename({top!r}, '/tmp/moved')\n    os.makedirs({str(root)!r})\n"
             f"    open({str(root / 'mod.py')!r}, 'w').write('def g():\\n    return \\'planted\\'\\n')\n    return 1\n")
    reader = f"import sys\nsys.path.insert(0, {str(root)!r})\nimport mod\ndef f():\n    return mod.g()\n"
    with Executor(workers=1, limits=LIMITS, isolation="bubblewrap", project_root=str(root)) as ex:
        assert ex.run(Job(reader, ("assert f() == 'real'",), trace=False)).tests[0].outcome == "pass"
        assert ex.run(Job(plant, ("assert f() == 1",), trace=False)).tests[0].outcome == "pass"  # it did rename
        after = ex.run(Job(reader, ("assert f() == 'real'",), trace=False)).tests[0]
        assert after.outcome == "pass", after.message
    assert (root / "mod.py").read_text() == "def g():\n    return 'real'\n"


@LEVELS
def test_loopback_inside_bubblewraps_network_namespace(sandboxes, run_case, level):
    """Under bubblewrap a test may talk to itself over loopback (its own empty network namespace);
    under Landlock there is no such namespace, so no TCP or UDP socket at all."""
    program = ("import socket, threading\ndef f():\n    server = socket.socket()\n    server.bind(('127.0.0.1', 0))\n    server.listen(1)\n"
               "    port = server.getsockname()[1]\n    threading.Thread(target=lambda: server.accept()[0].sendall(b'hi'), daemon=True).start()\n"
               "    client = socket.create_connection(('127.0.0.1', port), timeout=2)\n    return client.recv(2)\n")
    expected = {"pass"} if level == "bubblewrap" else {"error"}
    run_case(sandboxes(level), program, "assert f() == b'hi'", expected)


def test_landlock_level_closes_signals_and_abstract_sockets_by_scope_or_seccomp():
    """Where Landlock cannot scope signals (ABI < 6), the filter denies kill() of process groups
    and of every process; at ABI 6+ the candidate gets a domain of its own."""
    from engine.execution import seccomp_filter

    assert len(seccomp_filter.compiled_filter(False, True, True)) > len(seccomp_filter.compiled_filter(False, False, True))
    if signal.SIGKILL:  # the scope itself is exercised by test_host_processes_cannot_be_signalled
        assert seccomp_filter.available() == ""
