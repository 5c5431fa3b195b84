"""Issue 11's attacks, on each isolating level (bubblewrap and landlock), with benign controls.

Host unix sockets (a listener in HOME, in /run/user/UID and inside the workspace, and an abstract
one), the user's files (the HOME sentinel, /etc/shadow, /root, /run, /mnt...), kernel settings
(/proc/sys), new namespaces, the kernel surface seccomp denies, identity and capabilities, signals
to host processes, and tampering with the in-sandbox reporting code (sys.modules, gc, frames,
class dictionaries). conftest.py's run_case checks the common bars after each case.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import socket
import subprocess
import uuid

import pytest
from containment_support import ISOLATING_LEVELS

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


@LEVELS
@pytest.mark.parametrize("where", ["program", "call"])
@pytest.mark.parametrize("route", sorted(TAMPERING))
def test_tampering_with_the_reporting_code_forges_no_pass(sandboxes, run_case, level, route, where):
    """f() returns 2 (or an object that cannot cross) after re-binding whatever looks like the
    reporting code; `assert f() == 1` (and a block test) must not pass."""
    tamper = TAMPERING[route]
    if route == "frames":
        body = tamper + ("tamper_frames()\n" if where == "program" else "")
        call = "    tamper_frames()\n" if where == "call" else ""
    else:
        body = tamper if where == "program" else ""
        call = "".join("    " + line + "\n" for line in tamper.splitlines()) if where == "call" else ""
    program = FORGER + body + "class Yes:\n    def __eq__(self, other):\n        return True\n" \
        + "def f():\n" + call + "    return 2\n" + "def g():\n" + call + "    return Yes()\n"
    ex = sandboxes(level)
    for test in ("assert f() == 1", "x = f()\nassert x == 1", "assert g() == 1"):
        outcome = run_case(ex, program, test, {"fail", "error"})
        assert outcome.outcome != "pass"


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
    run_case(sandboxes(level), program, f"assert f() == {expected}", {"pass"})


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
