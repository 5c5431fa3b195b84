"""T, the untrusted per-test process: its setup (session, file descriptors, rlimits, uid) and the
run of program + setup + test (or the test's leaves) in the candidate module's globals, under the
tracer when asked. Its result leaves on the result channel as one marshal frame."""

from __future__ import annotations

import ast
import os
import resource
import signal
import sys

from . import project
from .channel import send_result
from .encode import encode_leaf
from .pristine import PRISTINE_BUILTINS, ModuleType, exc_traceback, is_instance, setrecursionlimit, settrace
from .pristine import exact_type as _type
from .pristine import length as _len
from .pristine import to_str as _str
from .pristine import type_name as _type_name
from .spawn import PR_SET_NO_NEW_PRIVS, PR_SET_PDEATHSIG, libc


class TimeLimitExceeded(BaseException):
    """Raised in T by the supervisor's SIGUSR1 at the deadline, so a partial trace can be sent."""


_LEAF_CACHE: dict = {}


def cached_leaves(task: dict):
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
                code = compile_leaf(source, line)
            except Exception:  # noqa: BLE001 - let T compile it again and report the error
                return None
            if len(_LEAF_CACHE) > 4096:
                _LEAF_CACHE.clear()
            _LEAF_CACHE[key] = code
        codes.append(code)
    return codes


def child(task, config, out_w, res_w, nonce, tracer_class) -> None:
    os.setsid()  # its own session and group: kill(0, ...) reaches only the candidate's processes
    _prepare_fds(out_w, res_w)
    _apply_limits(config, float(task["timeout"]))
    drop_uid = config.get("drop_uid")
    if drop_uid is not None:
        os.setgroups([])
        os.setgid(drop_uid)
        os.setuid(drop_uid)
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    # The candidate's own empty folder: the private /tmp may also hold mount points of host
    # folders bound back in (a checkout under /tmp), which are none of its business.
    os.makedirs(config["cwd"], exist_ok=True)
    os.chdir(config["cwd"])
    signal.signal(signal.SIGUSR1, _on_soft_timeout)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.setrecursionlimit(1000)  # Python's default, as the candidate would get on its own
    result = run_candidate(task, tracer_class)
    send_result(result, nonce)


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
    if task.get("project") and task["kind"] == "pytest":  # the project's own pytest runs the tests
        return project.run_pytest(task, tracer_class)
    # A real module, so code that looks itself up (dataclasses, pickle, typing) works.
    module = ModuleType("candidate")
    sys.modules["candidate"] = module
    namespace = module.__dict__
    namespace["__builtins__"] = dict(PRISTINE_BUILTINS)
    try:
        program = compile_(task["program"], "<program>", "exec", dont_inherit=True)
        if task.get("project"):  # the program is the module of its package, imported as Python would
            program = project.ModuleProgram(task["project"], task["program"])
        setup = compile_(task["setup"], "<test>", "exec", dont_inherit=True) if task.get("setup") else None
        if task["kind"] == "block":
            tests = [compile_(task["test"], "<test>", "exec", dont_inherit=True)]
        else:
            tests = task.get("compiled_leaves") or [compile_leaf(source, line) for source, line, _ in task["leaves"]]
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
            if task.get("project"):
                namespace = program.load()
            else:
                exec_(program, namespace)
            namespace["__builtins__"] = dict(PRISTINE_BUILTINS)  # the test sees unpatched builtins
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
        setrecursionlimit(10_000)
        if tracer is not None:
            try:
                tracer.__exit__(None, None, None)
                result["trace"] = tracer.result()
            except BaseException:  # noqa: BLE001 - a broken trace is no verdict
                result["trace"] = None
        settrace(None)
        for stream in (stdout, stderr):
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001 - the candidate may have closed it
                pass
    return result


def compile_leaf(source: str, line: int):
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
    if is_instance(error, SyntaxError):
        filename = error.filename if _type(error.filename) is str else ""
        file, line = filename.strip("<>"), error.lineno if _type(error.lineno) is int else 0
        message = error.msg if _type(error.msg) is str else message
    try:
        tb = exc_traceback(error)
        while tb is not None:
            name = tb.tb_frame.f_code.co_filename
            if name in ("<program>", "<test>"):
                file, line = name.strip("<>"), tb.tb_lineno
            tb = tb.tb_next
    except BaseException:  # noqa: BLE001
        pass
    return (kind[:100], message, file if file in ("program", "test") else "", line or 0)
