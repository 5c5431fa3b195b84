"""T, the untrusted per-test process: its setup (session, file descriptors, rlimits, uid) and the
run of program + setup + test (or the test's leaves) in the candidate module's globals, under the
tracer when asked, by the sealed runner (sealed.py), which sends each step's record to M."""

from __future__ import annotations

import ast
import gc
import os
import resource
import signal
import sys
import warnings

from . import confine, encode, project

with warnings.catch_warnings():  # its templates call string constants on purpose (sealed.py)
    warnings.simplefilter("ignore", SyntaxWarning)
    from . import sealed  # noqa: E402
from .channel import header_address, send_record, send_result
from .encode import TimeLimitExceeded
from .pristine import PRISTINE_BUILTINS, ModuleType, dumps, exit_now
from .spawn import PR_SET_NO_NEW_PRIVS, PR_SET_PDEATHSIG, libc

PACKAGE = __name__.rpartition(".")[0]  # _egcfg_sandbox: leaves sys.modules before candidate code runs


_LEAF_CACHE: dict = {}
_PREPARED: list = []  # [(confine.Prepared, the sealed runner's code)]
_PACKAGE_MODULES: list = [0, (), ()]  # [len(sys.modules) when listed, names taken out, the modules]
_STDIO: list = [False]  # fd 0 of the worker is /dev/null


def prepare(config: dict) -> None:
    """In the worker, before each test: what every T enforces or seals, built once (the Landlock
    ruleset and the seccomp program) or taken once (the encoder's sealed parts), and the names T
    removes from sys.modules (listed here: iterating sys.modules in T would touch, and so copy,
    a page per module)."""
    if not _PREPARED:
        header_address()  # the result header's page, mapped here so that every T inherits it
        run_code = sealed.build(encode.sealed_parts(), tuple(PRISTINE_BUILTINS.items()), TimeLimitExceeded,
                                extra_allowed=(_on_soft_timeout.__code__,),
                                our_handlers=(_on_soft_timeout, signal.default_int_handler))
        _PREPARED.append((confine.Prepared(config), run_code))
        # Once here rather than in every T (each costs T copied pages): fd 0 is the worker's
        # /dev/null already, and stdout flushes by line (what was printed before a crash shows up).
        _STDIO[0] = _is_devnull(0)
        try:
            sys.stdout.reconfigure(line_buffering=True)
        except (AttributeError, ValueError):
            pass
        # Inherited by every T: its soft-timeout handler (no one signals the worker itself), and
        # the limits that do not depend on the test (a first signal.signal or setrlimit in a fresh
        # child costs 60-120 microseconds of copied pages).
        signal.signal(signal.SIGUSR1, _on_soft_timeout)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _apply_fixed_limits(config)
    _unlist_package()


def _unlist_package() -> None:
    """This package's modules out of sys.modules (kept alive here), in the worker, so that T
    starts without them; T checks again in case something was imported since."""
    if _PACKAGE_MODULES[0] != len(sys.modules):
        names = tuple(name for name in sys.modules if name == PACKAGE or name.startswith(PACKAGE + "."))
        _PACKAGE_MODULES[2] += tuple(sys.modules.pop(name) for name in names)
        _PACKAGE_MODULES[:2] = [len(sys.modules), names]


def _is_devnull(fd: int) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(os.devnull))
    except OSError:
        return False


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


def child(task, config, out_w, res_w, tracer_class) -> None:
    os.setsid()  # its own session and group: kill(0, ...) reaches only the candidate's processes
    prepared = _PREPARED[0][0]
    try:  # first, while the prepared ruleset's descriptor is still open (_prepare_fds closes it)
        confine.enter_domain(prepared)
        domain_error = None
    except OSError as error:
        domain_error = error
    _prepare_fds(out_w, res_w)
    _apply_limits(config, float(task["timeout"]), project.session_memory_mb(task))
    drop_uid = config.get("drop_uid")
    if drop_uid is not None:
        os.setgroups([])
        os.setgid(drop_uid)
        os.setuid(drop_uid)
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    # The candidate's own empty folder: the private /tmp may also hold mount points of host
    # folders bound back in (a checkout under /tmp), which are none of its business.
    if not os.path.isdir(config["cwd"]):  # (mkdir of an existing folder would ask Landlock about its parent)
        os.makedirs(config["cwd"])
    os.chdir(config["cwd"])
    signal.signal(signal.SIGUSR1, _on_soft_timeout)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if domain_error is not None:
            raise domain_error
        confine.confine(prepared)
    except OSError as error:  # a promised protection is missing: run nothing
        refusal = ("SandboxError", f"the sandbox could not confine the test: {error}"[:300], "", 0)
        send_result({"error": refusal, "leaves": (), "block": None, "trace": None, "interrupted": False})
    sys.setrecursionlimit(1000)  # Python's default, as the candidate would get on its own
    if task.get("project") and task["kind"] == "pytest":  # the project's own pytest runs the tests
        send_result(project.run_pytest(task, tracer_class))
    _run_steps(task, tracer_class)


def _run_steps(task: dict, tracer_class) -> None:
    """The task's steps, compiled before any candidate code runs, then the sealed runner. The
    worker's modules leave sys.modules first (``__main__`` becomes the candidate's module) and
    every object made so far is frozen out of the collector's lists, so candidate code finds
    none of the runner's functions through modules or ``gc.get_objects``/``get_referrers``."""
    module = ModuleType("candidate")  # a real module: code that looks itself up (dataclasses, pickle) works
    namespace = module.__dict__
    namespace["__builtins__"] = dict(PRISTINE_BUILTINS)
    steps = _steps(task)
    if type(steps) is not tuple:  # the program or the test does not compile: no candidate code runs
        sealed.send_compile_error(encode.describe(steps))
        send_result_end()
    tracer = None
    if bool(task.get("trace")) and tracer_class is not None:
        try:
            tracer = tracer_class({"<program>": "program", "<test>": "test"})
            tracer.__enter__()
        except Exception:  # noqa: BLE001 - run untraced rather than not at all
            tracer = None
    run = sealed.runner(_PREPARED[0][1])
    streams = (sys.stdout, sys.stderr)
    _unlist_package()
    sys.modules["candidate"] = sys.modules["__main__"] = module
    gc.freeze()  # everything made so far leaves the collector's lists (gc.get_objects/get_referrers)
    run(steps, [namespace, None, []], tracer, streams)  # [namespace, saved hooks, values the reports held]


def _steps(task: dict):
    """((position, kind, code, iterate, truth), ...): kind exec|load|setup|block|leaf; or the
    exception that compiling the program or the test raised."""
    loader = project.ModuleProgram(task["project"], task["program"]) if task.get("project") else None
    leaves = task.get("leaves") or ()
    try:
        steps = [("load", loader) if loader is not None else ("exec", compile(task["program"], "<program>", "exec",
                                                                             dont_inherit=True))]
        if task.get("setup"):
            steps.append(("setup", compile(task["setup"], "<test>", "exec", dont_inherit=True)))
        if task["kind"] == "block":
            steps.append(("block", compile(task.get("test") or "", "<test>", "exec", dont_inherit=True)))
        else:
            codes = task.get("compiled_leaves") or [compile_leaf(leaf[0], leaf[1]) for leaf in leaves]
            steps.extend(("leaf", code) for code in codes)
    except Exception as error:  # noqa: BLE001 - syntax errors of program or test
        return error
    flags = [(False, False)] * (len(steps) - len(leaves)) + [(bool(leaf[2]), bool(leaf[3])) for leaf in leaves]
    if task["kind"] == "block":
        flags = [(False, False)] * len(steps)
    return tuple((position, kind, code, iterate, truth)
                 for position, ((kind, code), (iterate, truth)) in enumerate(zip(steps, flags)))


def send_result_end() -> None:
    """After a compile error: the end record, then exit."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass
    send_record(dumps(("end", None)))
    exit_now(0)


def _prepare_fds(out_w: int, res_w: int) -> None:
    os.dup2(out_w, 1)
    os.dup2(out_w, 2)
    os.dup2(res_w, 3)
    # Close everything else BEFORE opening /dev/null: T may be born with a full descriptor table
    # (seen as EMFILE here about once in 8,000 runs), and needs only 0-3.
    os.closerange(4, 1 << 16)
    if _STDIO[0]:  # stdin is the worker's /dev/null, and sys.stdout was set up in prepare()
        return
    devnull = os.open(os.devnull, os.O_RDONLY)
    if devnull != 0:
        os.dup2(devnull, 0)
        os.close(devnull)
    sys.stdin = open(0, "r", closefd=False)
    try:  # line-buffered: what was printed before a crash or os._exit still shows up
        sys.stdout.reconfigure(line_buffering=True)
    except (AttributeError, ValueError):
        pass


def _apply_limits(config: dict, timeout: float, memory_mb=None) -> None:
    """T's own: memory, CPU time, descriptors (the worker's scratch wipe holds one per folder
    level, so it keeps more); the rest is set once in the worker, see prepare."""
    memory = int(memory_mb or config["limits"]["memory_mb"]) << 20
    cpu = int(timeout) + 2
    for which, value in ((resource.RLIMIT_AS, memory), (resource.RLIMIT_CPU, cpu), (resource.RLIMIT_NOFILE, 256)):
        try:
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):
            pass
    if config.get("nproc"):
        try:
            resource.setrlimit(resource.RLIMIT_NPROC, (int(config["nproc"]),) * 2)
        except (ValueError, OSError):
            pass


def _apply_fixed_limits(config: dict) -> None:
    """In the worker, inherited by every T: file size, no core files, and the first
    place for the OOM killer (the worker stays small; T is the one that grows)."""
    for which, value in ((resource.RLIMIT_FSIZE, int(config["limits"]["file_size_mb"]) << 20),
                         (resource.RLIMIT_CORE, 0)):
        try:
            resource.setrlimit(which, (value, value))
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


def compile_leaf(source: str, line: int):
    tree = ast.parse("(" + source + ")", "<test>", "eval")
    ast.increment_lineno(tree, line - 1)
    return compile(tree, "<test>", "eval", dont_inherit=True)
