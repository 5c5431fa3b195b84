"""The fork server that runs candidate programs (stdlib only; started by engine/execution/executor.py).

It runs inside bubblewrap (or, without it, directly on the host under resource limits only) and
talks to the host over its stdin/stdout with length-prefixed JSON frames. Per test:

    worker (fork server, trusted)
      └─ M  supervisor, trusted, runs no candidate code: unshares a PID namespace, enforces the
         │  wall-clock limit, drains output with caps, reads T's result, kills T, reports JSON
         └─ T  PID 1 of the new namespace, untrusted: rlimits, stdin=/dev/null, stdout/stderr to
               a capped pipe, runs program + setup + test under the tracer, sends one marshal
               frame on its result pipe

Killing T (PID 1) kills everything in its namespace: children, double-forked and setsid'd
daemons. Leaf values leave T as tagged plain data; M validates them and only JSON reaches the
host, which judges the verdict itself (engine/execution/verdict.py).
"""

import ast
import builtins
import ctypes
import gc
import json
import marshal
import os
import resource
import select
import signal
import struct
import sys
import time

# Captured before any candidate code runs: the runner must not depend on anything the candidate
# can patch (module attributes, builtins). Candidate code runs in forked copies only.
_PRISTINE_BUILTINS = dict(builtins.__dict__)
_write, _exit = os.write, os._exit
_dumps, _loads = marshal.dumps, marshal.loads
_monotonic = time.monotonic
_ModuleType = type(sys)
_type = type
_type_name = type.__dict__["__name__"].__get__
_type_mro = type.__dict__["__mro__"].__get__
_type_dict = type.__dict__["__dict__"].__get__
_exc_traceback = BaseException.__dict__["__traceback__"].__get__
_setrecursionlimit = sys.setrecursionlimit
_settrace = sys.settrace
_isinstance, _len, _str, _list = isinstance, len, str, list

CLONE_NEWUSER, CLONE_NEWPID = 0x10000000, 0x20000000
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 4, 36, 38
RESULT_MAGIC = b"EGR1"
RESULT_HEADER = 24  # magic (4) + nonce (16) + length (4)
MAX_RESULT = 32 << 20
MAX_TRACE_JSON = 8 << 20
SOFT_TIMEOUT_GRACE = 0.3  # seconds T gets to report a partial trace after the deadline
MAX_NODES, MAX_DEPTH, MAX_TEXT, MAX_INT_BITS = 200_000, 100, 4 << 20, 1 << 17
# Stdlib modules imported once here so each test does not pay for them.
PRELOAD = ("ast", "math", "re", "collections", "itertools", "functools", "heapq", "bisect", "string",
           "operator", "copy", "typing", "random", "io", "traceback", "array", "fractions")
TRUSTED_MODULES = frozenset({"collections", "enum", "os", "time", "builtins"})
# Methods the host-side skeleton relies on: a subclass overriding none of them compares exactly
# like its base type, so it may cross the boundary as that base type.
SEMANTIC_METHODS = frozenset({
    "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__hash__", "__bool__", "__len__",
    "__iter__", "__contains__", "__getitem__", "__float__", "__int__", "__index__", "__abs__",
    "__round__", "__neg__", "__pos__", "__str__", "__complex__", "__trunc__", "__add__", "__radd__",
    "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__", "__floordiv__", "__mod__",
    "__reversed__", "keys", "items", "values",
})

_libc = ctypes.CDLL(None, use_errno=True)


class TimeLimitExceeded(BaseException):
    """Raised in T by the supervisor's SIGUSR1 at the deadline, so a partial trace can be sent."""


class _Refused(Exception):
    """A value that cannot cross the sandbox boundary; the message is the test's failure message."""


# ---------------------------------------------------------------------------------------------
# Host protocol
# ---------------------------------------------------------------------------------------------


def read_exact(fd: int, size: int) -> bytes | None:
    chunks, remaining = [], size
    while remaining:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int):
    header = read_exact(fd, 4)
    if header is None:
        return None
    body = read_exact(fd, struct.unpack(">I", header)[0])
    return None if body is None else json.loads(body)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_frame(fd: int, message: dict) -> None:
    body = json.dumps(message).encode()
    write_all(fd, struct.pack(">I", len(body)) + body)


# ---------------------------------------------------------------------------------------------
# The fork server
# ---------------------------------------------------------------------------------------------


def main() -> int:
    config = json.loads(sys.argv[1])
    host_in, host_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)  # a stray print in this process cannot corrupt the protocol
    os.close(devnull)
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    # Not dumpable: T (same uid) cannot read or write this process's memory through /proc or ptrace.
    _libc.prctl(PR_SET_DUMPABLE, 0)
    tracer_class, tracer_error = _load_tracer(config.get("tracer"))
    for name in PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    if config.get("project_root"):
        sys.path.insert(0, config["project_root"])
    namespace = _probe_namespace(config)
    sys.setrecursionlimit(10_000)  # wipe() walks trees as deep as a path allows; T resets it to 1000
    config["tmp_mode"] = os.stat(config["tmp"]).st_mode & 0o7777
    gc.collect()
    gc.freeze()  # fewer copy-on-write page faults in the forked children
    write_frame(host_out, {"hello": True, "namespace": namespace, "pid": os.getpid(),
                           "tracer": tracer_class is not None, "tracer_error": tracer_error})
    while True:
        task = read_frame(host_in)
        if task is None:
            return 0
        report = run_task(task, config, namespace, tracer_class)
        report["id"] = task.get("id")
        write_frame(host_out, report)
        try:
            os.chmod(config["tmp"], config["tmp_mode"])  # the candidate may have locked it
        except OSError:
            pass
        wipe(config["tmp"], config.get("keep", ()))


SANDBOX_PACKAGE = "_egcfg_sandbox"  # this folder, loaded as a package of its own (no engine/ on sys.path)


def _load_sandbox_package(folder: str):
    """Load this folder as the package `_egcfg_sandbox`, so the modules here can import their
    siblings relatively without engine/ (or anything else of egcfg) being importable inside."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(SANDBOX_PACKAGE, os.path.join(folder, "__init__.py"),
                                                  submodule_search_locations=[folder])
    package = importlib.util.module_from_spec(spec)
    sys.modules[SANDBOX_PACKAGE] = package
    spec.loader.exec_module(package)
    return package


def _load_tracer(path):
    """The tracer (tracer.py beside this file, or the path the host names), imported as a module
    of the sandbox package; on failure tests still run, untraced."""
    if not path or not os.path.exists(path):
        return None, "tracer not available"
    try:
        import importlib

        folder = os.path.dirname(os.path.abspath(path))
        if SANDBOX_PACKAGE not in sys.modules:
            _load_sandbox_package(folder)
        name = os.path.splitext(os.path.basename(path))[0]
        module = importlib.import_module(f"{SANDBOX_PACKAGE}.{name}")
        return module.Tracer, ""
    except Exception as error:  # noqa: BLE001 - report it; tests still run untraced
        return None, f"{type(error).__name__}: {error}"[:300]


NAMESPACE_FLAGS = {"pid": CLONE_NEWPID, "user+pid": CLONE_NEWUSER | CLONE_NEWPID, "none": 0}
_SYS_CLONE = {"x86_64": 56, "aarch64": 220}.get(os.uname().machine)
_clone_state: list = []  # [syscall function] once probed and working, [None] when not


def _clone_available() -> bool:
    return bool(_clone_state and _clone_state[0] is not None)


def _raw_clone(flags: int) -> int:
    """fork() into new namespaces in one step: clone(flags | SIGCHLD) without a new stack, with
    CPython's own before/after-fork hooks (the GIL stays held: PyDLL). -1 when it fails."""
    api = ctypes.pythonapi
    api.PyOS_BeforeFork()
    pid = _clone_state[0](_SYS_CLONE, flags | signal.SIGCHLD, 0, 0, 0, 0)
    if pid == 0:
        api.PyOS_AfterFork_Child()
    else:
        api.PyOS_AfterFork_Parent()
    return pid


def _spawn(flags: int) -> int:
    """Start T (0 in the child): in new namespaces via clone() when set up, else a plain fork."""
    if _clone_available():
        return _raw_clone(flags)
    try:
        return os.fork()
    except OSError:
        return -1


def _setup_clone() -> None:
    if _SYS_CLONE is None:
        _clone_state.append(None)
        return
    syscall = ctypes.PyDLL(None).syscall
    syscall.restype = ctypes.c_long
    syscall.argtypes = [ctypes.c_long] * 6
    _clone_state.append(syscall)


def _probe_namespace(config) -> str:
    """Which PID-namespace recipe works here: "pid", "user+pid" or "none" (tried in a child)."""
    recipes = ["pid", "user+pid"]
    if config.get("drop_uid") is None:
        recipes.reverse()  # a user namespace also takes T's capabilities away
    if config.get("direct", True):
        _setup_clone()
    if config.get("force_namespace") == "none":  # tests of the fallback (only ever under bubblewrap)
        recipes = []
    for name in recipes:
        if _clone_available():
            pid = _raw_clone(NAMESPACE_FLAGS[name])
            if pid == 0:
                _exit(0)
            if pid < 0:
                continue
        else:
            pid = os.fork()
            if pid == 0:
                _exit(0 if _libc.unshare(NAMESPACE_FLAGS[name]) == 0 else 1)
        _, status = os.waitpid(pid, 0)
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            return name
    if _clone_available():
        _libc.prctl(PR_SET_CHILD_SUBREAPER, 1)  # no namespace: orphans come back to the worker
    return "none"


def wipe(directory: str, keep=()) -> None:
    """Empty the private scratch directory after every test (whatever the candidate left)."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        path = entry.path
        if path in keep:
            continue
        if any(k.startswith(path + "/") for k in keep):
            wipe(path, keep)
            continue
        _remove(path)


def _remove(path: str) -> None:
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, 0o700)  # the candidate may have made it unreadable
            for entry in os.scandir(path):
                _remove(entry.path)
            os.rmdir(path)
        else:
            os.unlink(path)
    except OSError:
        pass


_LEAF_CACHE: dict = {}


def _cached_leaves(task: dict):
    """Compiled leaves, cached in the fork server: every candidate of a task has the same tests.
    Leaves come from the host's parse of the user's test, never from the candidate."""
    if task.get("kind") != "assert":
        return None
    codes = []
    for source, line, *_ in task["leaves"]:
        key = (source, line)
        code = _LEAF_CACHE.get(key)
        if code is None:
            try:
                code = _compile_leaf(source, line)
            except Exception:  # noqa: BLE001 - let T compile it again and report the error
                return None
            if len(_LEAF_CACHE) > 4096:
                _LEAF_CACHE.clear()
            _LEAF_CACHE[key] = code
        codes.append(code)
    return codes


def run_task(task: dict, config: dict, namespace: str, tracer_class) -> dict:
    """Run one test in T and return the report. With a raw clone() the worker itself supervises T
    (saves a fork per test); otherwise a forked supervisor M unshares the namespace first."""
    task["compiled_leaves"] = _cached_leaves(task)
    if _clone_available():
        return supervise(task, config, namespace, tracer_class, direct=True)
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # M
        try:
            os.close(report_r)
            report = supervise(task, config, namespace, tracer_class)
            write_all(report_w, json.dumps(report).encode())
            _exit(0)
        finally:
            _exit(70)
    os.close(report_w)
    chunks = []
    while True:
        chunk = os.read(report_r, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(report_r)
    _, status = os.waitpid(pid, 0)
    try:
        return json.loads(b"".join(chunks))
    except ValueError:
        return {"status": "crash", "detail": "the sandbox supervisor died", "signal": _signal_of(status),
                "seconds": 0.0, "output": ""}


def _signal_of(status: int):
    return os.WTERMSIG(status) if os.WIFSIGNALED(status) else None


# ---------------------------------------------------------------------------------------------
# M: the supervisor
# ---------------------------------------------------------------------------------------------


def supervise(task: dict, config: dict, namespace: str, tracer_class, direct: bool = False) -> dict:
    flags = NAMESPACE_FLAGS[namespace]
    if not direct:  # this is M, a fresh process: unshare here, then T is PID 1 of the namespace
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if namespace == "none":
            _libc.prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans come back to M, which kills them
        elif _libc.unshare(flags) != 0:
            return {"status": "crash", "detail": "could not create a PID namespace", "seconds": 0.0, "output": ""}
        flags = 0
    limits = config["limits"]
    timeout = float(task["timeout"])
    nonce = os.urandom(16)
    out_r, out_w = os.pipe()
    res_r, res_w = os.pipe()
    start = _monotonic()
    pid = _spawn(flags)
    if pid == 0:  # T
        try:
            _child(task, config, out_w, res_w, nonce, tracer_class)
        finally:
            _exit(71)
    os.close(out_w)
    os.close(res_w)
    if pid < 0:
        os.close(out_r)
        os.close(res_r)
        return {"status": "crash", "detail": "could not start the test process", "seconds": 0.0, "output": ""}
    watch = _Watch(pid, out_r, res_r, nonce, limits)
    status = watch.run(start + timeout, soft=bool(task.get("trace")) and tracer_class is not None)
    seconds = _monotonic() - start
    watch.drain_output()
    exit_status = watch.kill(orphans=namespace == "none")
    report = {"status": status, "seconds": round(seconds, 6), "output": watch.output_text(),
              "output_bytes": watch.total_output, "signal": None, "exit_code": None}
    if exit_status is not None:
        report["signal"] = _signal_of(exit_status)
        report["exit_code"] = os.WEXITSTATUS(exit_status) if os.WIFEXITED(exit_status) else None
    if watch.payload is not None:
        try:
            report["result"] = clean_result(_loads(watch.payload))
        except Exception as error:  # noqa: BLE001 - anything malformed is the candidate's doing
            report["status"] = "bad_result" if status == "result" else status
            report["detail"] = f"malformed result ({type(error).__name__})"
    elif status == "noresult" and report["signal"] is not None:
        report["status"] = "crash"
    if watch.bad:
        report["detail"] = watch.bad
    return report


class _Watch:
    """M's view of T: output and result pipes, the clock, and the kill."""

    def __init__(self, pid, out_r, res_r, nonce, limits):
        self.pid, self.out_r, self.res_r, self.nonce = pid, out_r, res_r, nonce
        self.keep, self.kill_at = int(limits["output_keep"]), int(limits["output_kill"])
        self.output = bytearray()
        self.total_output = 0
        self.frame = bytearray()
        self.payload = None
        self.bad = ""
        self.exit_status = None
        for fd in (out_r, res_r):
            os.set_blocking(fd, False)

    def run(self, deadline: float, soft: bool) -> str:
        poller = select.poll()
        open_fds = {self.out_r, self.res_r}
        for fd in open_fds:
            poller.register(fd, select.POLLIN)
        try:
            pidfd = os.pidfd_open(self.pid)  # readable when T exits: no polling delay
            poller.register(pidfd, select.POLLIN)
        except (AttributeError, OSError):
            pidfd = -1
        try:
            return self._loop(poller, open_fds, pidfd, deadline, soft)
        finally:
            if pidfd >= 0:
                os.close(pidfd)

    def _loop(self, poller, open_fds, pidfd, deadline, soft) -> str:
        soft_sent = False
        while True:
            now = _monotonic()
            if now >= deadline:
                if soft and not soft_sent and self.exit_status is None:
                    soft_sent = True  # ask T for a partial trace; the verdict is "timeout" anyway
                    self._signal(signal.SIGUSR1)
                    deadline = now + SOFT_TIMEOUT_GRACE
                    continue
                return "timeout"
            if self.exit_status is None:
                reaped, status = os.waitpid(self.pid, os.WNOHANG)
                if reaped:
                    self.exit_status = status
            if self.exit_status is not None and self.res_r not in open_fds:
                return "timeout" if soft_sent else "noresult"
            wait = min(deadline - now, 0.05)
            for fd, _ in poller.poll(max(wait, 0) * 1000):
                if fd == pidfd:
                    poller.unregister(pidfd)
                    continue  # reaped at the top of the loop
                try:
                    data = os.read(fd, 1 << 16)
                except BlockingIOError:
                    continue
                if not data:
                    poller.unregister(fd)
                    open_fds.discard(fd)
                    continue
                if fd == self.out_r:
                    self._take_output(data)
                    if self.total_output > self.kill_at:
                        return "output_limit"
                    continue
                self.frame += data
                state = self._parse_frame()
                if state == "bad":
                    return "bad_result"
                if state == "done":
                    return "timeout" if soft_sent else "result"
            if self.exit_status is not None and self.res_r in open_fds:
                # T exited (no namespace: a daemon may keep the pipe open); read what is there.
                try:
                    data = os.read(self.res_r, 1 << 16)
                except BlockingIOError:
                    data = b""
                self.frame += data
                if self._parse_frame() == "done":
                    return "timeout" if soft_sent else "result"
                if not data:
                    return "timeout" if soft_sent else "noresult"

    def _parse_frame(self) -> str:
        if self.frame[:4] != RESULT_MAGIC[: len(self.frame)]:
            self.bad = "the program wrote to the result channel"
            return "bad"
        if len(self.frame) < RESULT_HEADER:
            return "more"
        if self.frame[:4] != RESULT_MAGIC or self.frame[4:20] != self.nonce:
            self.bad = "the program wrote to the result channel"
            return "bad"
        length = struct.unpack(">I", self.frame[20:24])[0]
        if length > MAX_RESULT:
            self.bad = "result too large"
            return "bad"
        if len(self.frame) < RESULT_HEADER + length:
            return "more"
        if len(self.frame) > RESULT_HEADER + length:
            self.bad = "the program wrote to the result channel"
            return "bad"
        self.payload = bytes(self.frame[RESULT_HEADER:])
        return "done"

    def _take_output(self, data: bytes) -> None:
        room = self.keep - len(self.output)
        if room > 0:
            self.output += data[:room]
        self.total_output += len(data)

    def drain_output(self) -> None:
        """Keep what T printed before it sent its result (bounded; daemons may still print)."""
        for _ in range(64):
            try:
                data = os.read(self.out_r, 1 << 16)
            except (BlockingIOError, OSError):
                return
            if not data:
                return
            self._take_output(data)

    def output_text(self) -> str:
        return bytes(self.output).decode("utf-8", "replace")

    def _signal(self, signum: int) -> None:
        if self.exit_status is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def kill(self, orphans: bool):
        """SIGKILL T: as PID 1 of its namespace, that kills every process in it."""
        if orphans:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._signal(signal.SIGKILL)
        if self.exit_status is None:
            _, self.exit_status = os.waitpid(self.pid, 0)
        if orphans:
            _kill_orphans()
        return self.exit_status


def _kill_orphans() -> None:
    """Without a PID namespace M is a subreaper: kill and reap whatever T left behind."""
    for _ in range(1000):
        children = _children_of(os.getpid())
        for child in children:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            reaped, _ = os.waitpid(-1, 0 if children else os.WNOHANG)
        except ChildProcessError:
            return
        if not reaped and not children:
            return


def _children_of(parent: int) -> list[int]:
    found = []
    try:
        with open(f"/proc/{parent}/task/{parent}/children") as handle:
            found = [int(p) for p in handle.read().split()]
    except OSError:
        pass
    return found


# ---------------------------------------------------------------------------------------------
# Cleaning what T sent (M side): only plain data leaves M, as JSON
# ---------------------------------------------------------------------------------------------


def clean_result(raw) -> dict:
    if _type(raw) is not dict:
        raise ValueError("not a dict")
    result = {"error": clean_error(raw.get("error")), "leaves": [], "block": None, "trace_json": None,
              "interrupted": raw.get("interrupted") is True}
    block = raw.get("block")
    result["block"] = "ok" if block == "ok" else clean_error(block)
    leaves = raw.get("leaves") or []
    if _type(leaves) is not list or len(leaves) > 10_000:
        raise ValueError("bad leaves")
    budget = [MAX_NODES, MAX_TEXT]
    for leaf in leaves:
        if _type(leaf) is not tuple or not leaf:
            raise ValueError("bad leaf")
        if leaf[0] == "value" and len(leaf) == 2:
            result["leaves"].append(["value", to_json_value(leaf[1], budget, 0)])
        elif leaf[0] == "raise" and len(leaf) == 2:
            result["leaves"].append(["raise", clean_error(leaf[1])])
        elif leaf[0] == "refused" and len(leaf) == 2 and _type(leaf[1]) is str:
            result["leaves"].append(["refused", leaf[1][:300]])
        else:
            raise ValueError("bad leaf")
    result["trace_json"] = trace_json(raw.get("trace"))
    return result


def _not_plain(value):
    raise TypeError("not plain data")


def trace_json(trace) -> str | None:
    """The tracer's result as JSON text, or None if it is not plain data. The C encoder validates
    it (dict/list/str/int/float/bool/None only, finite floats, bounded ints and depth) quickly;
    the host rebuilds it with Trace.from_dict, which checks the shape."""
    if _type(trace) is not dict:
        return None
    try:
        text = json.dumps(trace, allow_nan=False, default=_not_plain, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError, OverflowError):
        return None
    return text if _len(text) <= MAX_TRACE_JSON else None


def clean_error(error):
    if error is None:
        return None
    if _type(error) is not tuple or len(error) != 4:
        raise ValueError("bad error")
    kind, message, file, line = error
    if not (_type(kind) is str and _type(message) is str and _type(file) is str and _type(line) is int):
        raise ValueError("bad error")
    return [kind[:100], message[:500], file[:20], line]


def to_json_value(value, budget, depth):
    """T's tagged tuples -> the JSON form verdict.decode() reads (strict: exact types only)."""
    budget[0] -= 1
    if budget[0] < 0 or depth > MAX_DEPTH or _type(value) is not tuple or not value:
        raise ValueError("bad value")
    tag = value[0]
    if tag == "n" and len(value) == 1:
        return ["n"]
    if len(value) == 2:
        item = value[1]
        kind = _type(item)
        if tag == "b" and kind is bool:
            return ["b", item]
        if tag == "i" and kind is int and item.bit_length() <= MAX_INT_BITS:
            return ["i", hex(item)]
        if tag == "f" and kind is float:
            return ["f", item.hex()]
        if tag in ("s", "y") and kind in (str, bytes) and (tag == "s") == (kind is str):
            budget[1] -= len(item)
            if budget[1] < 0:
                raise ValueError("too large")
            return ["s", item] if tag == "s" else ["y", item.hex()]
        if tag in ("l", "t", "S", "F") and kind is list:
            return [tag, [to_json_value(v, budget, depth + 1) for v in item]]
        if tag == "d" and kind is list:
            pairs = []
            for pair in item:
                if _type(pair) is not tuple or len(pair) != 2:
                    raise ValueError("bad pair")
                pairs.append([to_json_value(pair[0], budget, depth + 1), to_json_value(pair[1], budget, depth + 1)])
            return ["d", pairs]
    if tag == "c" and len(value) == 3 and _type(value[1]) is float and _type(value[2]) is float:
        return ["c", value[1].hex(), value[2].hex()]
    raise ValueError("bad value")


# ---------------------------------------------------------------------------------------------
# T: the untrusted child
# ---------------------------------------------------------------------------------------------


def _child(task, config, out_w, res_w, nonce, tracer_class) -> None:
    os.setsid()  # its own session and group: kill(0, ...) reaches only the candidate's processes
    _prepare_fds(out_w, res_w)
    _apply_limits(config, float(task["timeout"]))
    drop_uid = config.get("drop_uid")
    if drop_uid is not None:
        os.setgroups([])
        os.setgid(drop_uid)
        os.setuid(drop_uid)
    _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    # The candidate's own empty folder: the private /tmp may also hold mount points of host
    # folders bound back in (a checkout under /tmp), which are none of its business.
    os.makedirs(config["cwd"], exist_ok=True)
    os.chdir(config["cwd"])
    signal.signal(signal.SIGUSR1, _on_soft_timeout)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.setrecursionlimit(1000)  # Python's default, as the candidate would get on its own
    result = run_candidate(task, tracer_class)
    _send_result(result, nonce)


def _prepare_fds(out_w: int, res_w: int) -> None:
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out_w, 1)
    os.dup2(out_w, 2)
    os.dup2(res_w, 3)
    os.closerange(4, 1 << 16)
    sys.stdin = open(0, "r", closefd=False)
    try:  # line-buffered: what was printed before a crash or os._exit still shows up
        sys.stdout.reconfigure(line_buffering=True)
    except (AttributeError, ValueError):
        pass


def _apply_limits(config: dict, timeout: float) -> None:
    limits = config["limits"]
    memory = int(limits["memory_mb"]) << 20
    cpu = int(timeout) + 2
    file_size = int(limits["file_size_mb"]) << 20
    for which, value in ((resource.RLIMIT_AS, memory), (resource.RLIMIT_CPU, cpu),
                         (resource.RLIMIT_FSIZE, file_size), (resource.RLIMIT_NOFILE, 256),
                         (resource.RLIMIT_CORE, 0)):
        try:
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):
            pass
    if config.get("nproc"):
        try:
            resource.setrlimit(resource.RLIMIT_NPROC, (int(config["nproc"]),) * 2)
        except (ValueError, OSError):
            pass
    try:  # under memory pressure the candidate dies first
        fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
        try:
            os.write(fd, b"1000")
        finally:
            os.close(fd)
    except OSError:
        pass


def _on_soft_timeout(signum, frame):
    raise TimeLimitExceeded()


def run_candidate(task: dict, tracer_class) -> dict:
    """Program, setup and test (or leaves) in the candidate module's globals; plain-data result."""
    stdout, stderr = sys.stdout, sys.stderr
    compile_, exec_, eval_ = compile, exec, eval
    result = {"error": None, "leaves": [], "block": None, "trace": None, "interrupted": False}
    # A real module, so code that looks itself up (dataclasses, pickle, typing) works.
    module = _ModuleType("candidate")
    sys.modules["candidate"] = module
    namespace = module.__dict__
    namespace["__builtins__"] = dict(_PRISTINE_BUILTINS)
    try:
        program = compile_(task["program"], "<program>", "exec", dont_inherit=True)
        setup = compile_(task["setup"], "<test>", "exec", dont_inherit=True) if task.get("setup") else None
        if task["kind"] == "block":
            tests = [compile_(task["test"], "<test>", "exec", dont_inherit=True)]
        else:
            tests = task.get("compiled_leaves") or [_compile_leaf(source, line) for source, line, _ in task["leaves"]]
    except BaseException as error:  # noqa: BLE001 - syntax errors of program or test
        result["error"] = describe(error)
        return result
    tracer = None
    if task.get("trace") and tracer_class is not None:
        try:
            tracer = tracer_class({"<program>": "program", "<test>": "test"})
            tracer.__enter__()
        except BaseException:  # noqa: BLE001 - run untraced rather than not at all
            tracer = None
    try:
        try:
            exec_(program, namespace)
            namespace["__builtins__"] = dict(_PRISTINE_BUILTINS)  # the test sees unpatched builtins
            if setup is not None:
                exec_(setup, namespace)
        except BaseException as error:  # noqa: BLE001
            result["error"] = describe(error)
            result["interrupted"] = _type(error) is TimeLimitExceeded
        else:
            if task["kind"] == "block":
                result["block"] = _run_block(tests[0], namespace, exec_, result)
            else:
                _run_leaves(tests, task["leaves"], namespace, eval_, result)
    finally:
        _setrecursionlimit(10_000)
        if tracer is not None:
            try:
                tracer.__exit__(None, None, None)
                result["trace"] = tracer.result()
            except BaseException:  # noqa: BLE001 - a broken trace is no verdict
                result["trace"] = None
        _settrace(None)
        for stream in (stdout, stderr):
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001 - the candidate may have closed it
                pass
    return result


def _compile_leaf(source: str, line: int):
    tree = ast.parse("(" + source + ")", "<test>", "eval")
    ast.increment_lineno(tree, line - 1)
    return compile(tree, "<test>", "eval", dont_inherit=True)


def _run_block(code, namespace, exec_, result):
    try:
        exec_(code, namespace)
        return "ok"
    except BaseException as error:  # noqa: BLE001
        result["interrupted"] = _type(error) is TimeLimitExceeded
        return describe(error)


def _run_leaves(codes, leaves, namespace, eval_, result):
    out = result["leaves"]
    for code, (_, _, iterate, truth) in zip(codes, leaves):
        try:
            value = eval_(code, namespace)
            out.append(encode_leaf(value, iterate, truth))
        except TimeLimitExceeded as error:
            result["interrupted"] = True
            out.append(("raise", describe(error)))
            return
        except BaseException as error:  # noqa: BLE001
            out.append(("raise", describe(error)))


def describe(error) -> tuple:
    """(type name, bounded message, "program"|"test"|"", line) of an exception raised in T."""
    try:
        kind = _type_name(_type(error))
    except BaseException:  # noqa: BLE001
        kind = "Exception"
    if _type(error) is TimeLimitExceeded:
        return ("TimeoutError", "interrupted at the time limit", "", 0)
    try:
        message = _str(error)
        message = message if _type(message) is str else ""
    except BaseException:  # noqa: BLE001 - a __str__ that raises
        message = "<unprintable message>"
    if _len(message) > 300:
        message = message[:300] + "..."
    file, line = "", 0
    if _isinstance(error, SyntaxError):
        filename = error.filename if _type(error.filename) is str else ""
        file, line = filename.strip("<>"), error.lineno if _type(error.lineno) is int else 0
        message = error.msg if _type(error.msg) is str else message
    try:
        tb = _exc_traceback(error)
        while tb is not None:
            name = tb.tb_frame.f_code.co_filename
            if name in ("<program>", "<test>"):
                file, line = name.strip("<>"), tb.tb_lineno
            tb = tb.tb_next
    except BaseException:  # noqa: BLE001
        pass
    return (kind[:100], message, file if file in ("program", "test") else "", line or 0)


def encode_leaf(value, iterate: bool, truth: bool = False) -> tuple:
    """("value", tagged) for plain data; ("refused", message) for anything else."""
    budget = [MAX_NODES, MAX_TEXT]
    try:
        return ("value", _encode(value, budget, 0))
    except _Refused as refused:
        if truth:  # only its truth is tested: a candidate could have returned True just as well
            return ("value", _encode(True if value else False, [MAX_NODES, MAX_TEXT], 0))
        if not iterate:
            return ("refused", refused.args[0])
    except RecursionError:
        return ("refused", "returned a value too deeply nested to compare outside the sandbox")
    # The skeleton iterates this leaf (set(f(x)), sorted(...)): do what that call would do here.
    items = _list(value)
    try:
        return ("value", ("l", [_encode(item, [MAX_NODES, MAX_TEXT], 1) for item in items]))
    except _Refused as refused:
        return ("refused", refused.args[0])


_EXACT = {type(None): "n", bool: "b", int: "i", float: "f", complex: "c", str: "s", bytes: "y",
          list: "l", tuple: "t", set: "S", frozenset: "F", dict: "d"}
_BASE_ORDER = (bool, int, float, complex, str, bytes, list, tuple, dict, set, frozenset)


def _encode(value, budget, depth):
    budget[0] -= 1
    if budget[0] < 0 or depth > MAX_DEPTH:
        raise _Refused("returned a value too large to compare outside the sandbox")
    kind = _type(value)
    tag = _EXACT.get(kind)
    if tag is None:
        value, tag = _as_base(value, kind)
    if tag in ("n",):
        return ("n",)
    if tag in ("b", "f"):
        return (tag, value)
    if tag == "i":
        if value.bit_length() > MAX_INT_BITS:
            raise _Refused("returned an integer too large to compare outside the sandbox")
        return ("i", value)
    if tag == "c":
        return ("c", value.real, value.imag)
    if tag in ("s", "y"):
        budget[1] -= _len(value)
        if budget[1] < 0:
            raise _Refused("returned a value too large to compare outside the sandbox")
        return (tag, value)
    if tag == "d":
        return ("d", [(_encode(k, budget, depth + 1), _encode(v, budget, depth + 1)) for k, v in dict.items(value)])
    return (tag, [_encode(item, budget, depth + 1) for item in value])


def _as_base(value, kind):
    """A subclass of a builtin crosses as its base type when that changes nothing the host does."""
    try:
        mro = _type_mro(kind)
    except BaseException:  # noqa: BLE001
        mro = ()
    for base in _BASE_ORDER:
        if base in mro:
            if all(_harmless(cls) for cls in mro[: mro.index(base)]):
                return _convert(value, base), _EXACT[base]
            break
    try:
        name = _type_name(kind)
    except BaseException:  # noqa: BLE001
        name = "object"
    article = "an" if name[:1].lower() in "aeiou" else "a"
    raise _Refused(f"returned {article} {name[:60]}, which cannot be compared outside the sandbox")


def _harmless(cls) -> bool:
    try:
        attributes = _type_dict(cls)
        module = attributes.get("__module__")
        if _type(module) is str and module.split(".")[0] in TRUSTED_MODULES:
            return True
        return not any(name in attributes for name in SEMANTIC_METHODS)
    except BaseException:  # noqa: BLE001
        return False


def _convert(value, base):
    """Copy through the base type's own C methods, never the subclass's."""
    if base is dict:
        return dict(dict.items(value))
    if base is list:
        return list.copy(value)
    if base is tuple:
        return tuple.__getitem__(value, slice(None))
    if base in (set, frozenset):
        return base.copy(value)
    if base is str:
        return str.__str__(value)
    if base is bytes:
        return bytes.__getitem__(value, slice(None))
    if base is int:
        return int.__index__(value)
    if base is float:
        return float.__float__(value)
    if base is complex:
        return complex(complex.__dict__["real"].__get__(value), complex.__dict__["imag"].__get__(value))
    return value


def _send_result(result: dict, nonce: bytes) -> None:
    try:
        payload = _dumps(result)
    except BaseException:  # noqa: BLE001 - e.g. an odd trace: send the verdict without it
        result["trace"] = None
        payload = _dumps(result)
    data = RESULT_MAGIC + nonce + struct.pack(">I", _len(payload)) + payload
    view = memoryview(data)
    while view:
        view = view[_write(3, view):]
    _exit(0)


if __name__ == "__main__":
    sys.exit(main())
