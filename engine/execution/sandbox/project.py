"""The edited module as the module of its package, and its tests run by the project's own pytest.

Runs inside the sandbox (stdlib only; CPython 3.9-3.13; loaded as ``_egcfg_sandbox.project``).

The module's text (the editor's unsaved text, or a candidate program) replaces its file through a
meta-path finder that serves that text for that module name only: ``__name__``, ``__package__``,
``__spec__`` and ``__file__`` are those of the real module, relative and absolute imports of the
package resolve on disk, ``from __future__`` and the module docstring behave as under Python, and
``if __name__ == "__main__"`` stays false. linecache holds the text too, so tracebacks, ``inspect``
and doctest read the served text rather than the file on disk.

Tests of a project run as pytest runs them: ``pytest.main`` on the module's test files (and the
module itself, for its doctests, which pytest runs with the standard library's DocTestParser,
DocTestRunner and OutputChecker), in the project's rootdir, with its configuration, conftest files
and plugins. A plugin records each test's outcome, message and trace (the tracer is started around
the test's call only) and enforces a per-test time limit with SIGALRM, so one slow test is a
timeout and the others still run.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import json
import linecache
import os
import signal
import sys
import time

PROGRAM = "program"
TEST = "test"
PROGRAM_FILE = "<program>"
MAX_MESSAGE = 600
MAX_TRACE_EVENTS = 400          # per test in a batch (a single test gets the tracer's default)
MAX_TRACES_TEXT = 12 << 20      # all traces of one batch together, as JSON text
PYTEST_ARGS = ("-p", "no:cacheprovider", "-q", "-o", "console_output_style=classic")


class TestTimeLimit(BaseException):
    """Raised in a test by SIGALRM at its time limit (a BaseException: `except Exception` in the
    test does not swallow it)."""

    __test__ = False


class SessionInterrupt(KeyboardInterrupt):
    """Raised when a test is still running ALARM_REPEAT s after its TestTimeLimit (something caught
    it: unittest's subTest does): pytest ends the session as interrupted, the tests done so far are
    reported, and the host runs the rest in a new session."""


ALARM_REPEAT = 1.0  # seconds between the first alarm and the interrupt of the session
_ALARMS = [0]       # alarms since the current limit was armed


# A module's `warnings.warn(..., stacklevel=2)` at import time names its importer: the warnings
# machinery skips import frames, those whose file name holds "importlib" and "_bootstrap". This
# loader's own frame must be skipped the same way, so it is compiled under such a name.
_LOADER = {}
exec(compile("def exec_module(self, module):\n    module.__file__ = self.path\n"
             "    exec(self.get_code(module.__name__), module.__dict__)\n",
             "<egcfg: importlib._bootstrap-like loader of the edited module>", "exec"), _LOADER)


class EditedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.InspectLoader):
    """Serves ``text`` as the source of module ``name`` (whose file is ``path``)."""

    def __init__(self, name: str, path: str, text: str, is_package: bool):
        self.name, self.path, self.text, self.package = name, path, text, is_package

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        spec = importlib.util.spec_from_loader(fullname, self, origin=self.path, is_package=self.package)
        spec.has_location = True  # __file__ = path
        if self.package:
            spec.submodule_search_locations = [os.path.dirname(self.path)]
        return spec

    def create_module(self, spec):
        return None

    exec_module = _LOADER["exec_module"]

    def get_code(self, fullname):
        # "<program>": the name the tracer and the error reports give the edited module's lines.
        return compile(self.text, PROGRAM_FILE, "exec", dont_inherit=True)

    def get_source(self, fullname):
        return self.text

    def is_package(self, fullname):
        return self.package

    def get_filename(self, fullname):
        return self.path


def install(project: dict, text: str) -> EditedModuleFinder:
    """Put the project's folders first on sys.path and serve ``text`` for the edited module."""
    for folder in reversed(project.get("sys_path") or []):
        if folder in sys.path:
            sys.path.remove(folder)
        sys.path.insert(0, folder)
    finder = EditedModuleFinder(project["name"], project["path"], text, bool(project.get("is_package")))
    sys.meta_path.insert(0, finder)
    lines = text.splitlines(True)
    for name in (project["path"], PROGRAM_FILE):  # no mtime: linecache never reloads them from disk
        linecache.cache[name] = (len(text), None, lines, name)
    sys.modules.pop(project["name"], None)
    return finder


def load_module(project: dict, text: str):
    """Import the edited module through the finder (its package's __init__ runs first, as in
    Python); the module object whose globals the tests use."""
    install(project, text)
    return importlib.import_module(project["name"])


class ModuleProgram:
    """The program of a task as the module of its package: load() imports it and returns its globals."""

    def __init__(self, project: dict, text: str):
        self.project, self.text = project, text

    def load(self) -> dict:
        return load_module(self.project, self.text).__dict__


def session_memory_mb(task: dict):
    """A pytest session holds a whole module's tests: its address-space limit is the project's
    (the host sets it; the worker's cgroup still bounds the memory actually used)."""
    project = task.get("project")
    if not project or task.get("kind") != "pytest":
        return None
    return int(project.get("memory_mb") or 0) or None


def trace_files(project: dict) -> dict:
    """Tracer file map: the edited module is the program; the tests are the test files."""
    files = {PROGRAM_FILE: PROGRAM, "<test>": TEST}
    for path in project.get("test_files") or []:
        files[path] = TEST
    return files


# ---------------------------------------------------------------------------------------------
# pytest, run in the sandbox
# ---------------------------------------------------------------------------------------------


class _Recorder:
    """A pytest plugin: each test's outcome, message, seconds and trace."""

    def __init__(self, project: dict, tracer_class, trace: bool):
        self.project = project
        self.tracer_class = tracer_class if trace else None
        self.files = trace_files(project)
        self.limits = {str(k): float(v) for k, v in (project.get("limits") or {}).items()}
        self.default_limit = float(project.get("test_seconds") or 5.0)
        self.results = {}      # nodeid -> dict
        self.order = []
        self.traces_left = MAX_TRACES_TEXT
        self.collect_errors = []
        self.internal_error = ""   # what pytest stopped on (its INTERNALERROR: a plugin or hook that raised)
        self.current = None
        self.escaped = set()   # tests whose program called pytest.skip/xfail/exit: failed, whatever follows
        self.pending = set()   # tests started whose deciding report has not arrived yet

    def pytest_sessionstart(self, session):
        # pytest's assertion rewriter (put first on sys.meta_path at configure time) would load the
        # edited module from disk, as a file named on the command line: serve the text first.
        for finder in [f for f in sys.meta_path if isinstance(f, EditedModuleFinder)]:
            sys.meta_path.remove(finder)
            sys.meta_path.insert(0, finder)

    # -- time limits ----------------------------------------------------------------------------
    def _limit(self, nodeid: str) -> float:
        return self.limits.get(nodeid, self.default_limit)

    def pytest_runtest_protocol(self, item, nextitem):
        self.current = item.nodeid
        self.order.append(item.nodeid)
        # An error until pytest reports how the test went: a test whose reports never arrive (the
        # program broke pytest's reporting, or this recorder's) did not pass.
        self.results[item.nodeid] = {"nodeid": item.nodeid, "outcome": "error", "seconds": 0.0,
                                     "message": "pytest reported no outcome for this test", "trace": None,
                                     "line": _item_line(item), "file": _item_file(item)}
        self.pending.add(item.nodeid)
        return None

    def _arm(self, nodeid: str) -> None:
        _ALARMS[0] = 0
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, self._limit(nodeid), ALARM_REPEAT)

    @staticmethod
    def _disarm() -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)

    # -- the call, traced -----------------------------------------------------------------------
    def runtest_call_wrapper(self):
        import pytest

        recorder = self

        @pytest.hookimpl(hookwrapper=True)
        def pytest_runtest_call(item):
            recorder._arm(item.nodeid)
            started = time.perf_counter()
            tracer = None
            if recorder.tracer_class is not None:
                try:
                    tracer = recorder.tracer_class(recorder.files, max_events=recorder.max_events())
                    tracer.start()
                except BaseException:  # noqa: BLE001 - run untraced rather than not at all
                    tracer = None
            try:
                outcome = yield
                recorder.note_program_escape(item.nodeid, outcome)
            finally:
                recorder._disarm()
                entry = recorder.results.get(item.nodeid)
                if entry is not None:
                    entry["seconds"] = round(time.perf_counter() - started, 6)
                if tracer is not None:
                    try:
                        tracer.stop()
                        recorder.keep_trace(item.nodeid, tracer.result())
                    except BaseException:  # noqa: BLE001 - a broken trace is no verdict
                        pass

        @pytest.hookimpl(hookwrapper=True)
        def pytest_runtest_setup(item):
            recorder._arm(item.nodeid)
            try:
                outcome = yield
                recorder.note_program_escape(item.nodeid, outcome)
            finally:
                recorder._disarm()

        @pytest.hookimpl(hookwrapper=True)
        def pytest_runtest_teardown(item):
            recorder._arm(item.nodeid)
            try:
                yield
            finally:
                recorder._disarm()

        @pytest.hookimpl(hookwrapper=True)
        def pytest_make_collect_report(collector):
            # Importing a test file (and with it the edited module) is bounded too.
            recorder._arm("")
            try:
                outcome = yield
                recorder.note_skipped_collection(collector, outcome)
            finally:
                recorder._disarm()

        return pytest_runtest_call, pytest_make_collect_report, pytest_runtest_setup, pytest_runtest_teardown

    def max_events(self) -> int:
        return 2000 if len(self.project.get("nodeids") or ()) == 1 else MAX_TRACE_EVENTS

    def keep_trace(self, nodeid: str, trace) -> None:
        try:
            text = json.dumps(trace, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError, RecursionError, OverflowError):
            return
        if len(text) > self.traces_left:
            return
        self.traces_left -= len(text)
        self.results[nodeid]["trace"] = text

    # -- outcomes -------------------------------------------------------------------------------
    def note_program_escape(self, nodeid: str, outcome) -> None:
        """pytest.skip/xfail/exit (or the exceptions behind them) raised from the program's own code
        is the program escaping its test: a failure, whatever pytest makes of it."""
        kind = _program_escape(_outcome_exception(outcome))
        entry = self.results.get(nodeid)
        if kind and entry is not None:
            entry["outcome"], entry["message"] = "fail", f"the program under test called pytest.{kind}()"
            self.escaped.add(nodeid)

    def note_skipped_collection(self, collector, outcome) -> None:
        """A module skipped from the program's own code while it was imported: a collection error."""
        try:
            report = outcome.get_result()
            longrepr = report.longrepr
            if report.skipped and type(longrepr) is tuple and str(longrepr[0]) == PROGRAM_FILE:
                self.collect_errors.append({"nodeid": report.nodeid, "timeout": False,
                                            "message": "the program under test skipped the module while it was imported"})
        except Exception:  # noqa: BLE001 - pytest's own report is what it is
            pass

    def pytest_runtest_logreport(self, report):
        entry = self.results.get(report.nodeid)
        if entry is None or report.nodeid in self.escaped:
            return
        if report.nodeid in self.pending and (report.when == "call" or report.skipped or report.failed):
            self.pending.discard(report.nodeid)  # the first report that decides: judged from here on
            entry["outcome"], entry["message"] = "pass", ""
        wasxfail = hasattr(report, "wasxfail")
        if report.when == "call":
            entry["seconds"] = round(float(getattr(report, "duration", 0.0) or entry["seconds"]), 6)
        if report.skipped and not wasxfail:
            if entry["outcome"] == "pass":
                entry["outcome"], entry["message"] = "skip", _skip_reason(report)
            return
        if wasxfail:  # xfail as expected (skipped+wasxfail), or xpass without strict (passed)
            if entry["outcome"] == "pass":
                entry["outcome"] = "xfail" if report.skipped else "pass"
                entry["message"] = "expected to fail: " + str(report.wasxfail)[:200] if report.skipped else ""
            return
        if report.failed and entry["outcome"] in ("pass", "skip", "xfail"):
            entry["outcome"], entry["message"] = self._failure(report)

    def _failure(self, report):
        kind, message = _crash(report)
        if kind.endswith("TestTimeLimit") or message.split("\n", 1)[0].split(" ", 1)[0].endswith("TestTimeLimit"):
            return "timeout", f"timed out after {_seconds(self._limit(report.nodeid))} s"
        if report.when != "call":
            return "error", f"{message} (in {report.when})"[:MAX_MESSAGE]
        if kind in ("AssertionError", "", "DocTestFailure") or kind.endswith("Failed"):
            return "fail", message
        return "error", message

    def pytest_internalerror(self, excrepr, excinfo):
        try:
            first = (str(excinfo.value).strip().splitlines() or [""])[0]
            self.internal_error = f"{excinfo.typename}: {first}"[:MAX_MESSAGE]
        except Exception:  # noqa: BLE001
            self.internal_error = str(excrepr).strip().splitlines()[-1][:MAX_MESSAGE] if str(excrepr).strip() else "internal error"

    def pytest_collectreport(self, report):
        if report.failed:
            text = _longrepr_text(report)
            if "TestTimeLimit" in text:
                message = f"timed out after {_seconds(self.default_limit)} s while importing"
            else:
                lines = [line for line in text.strip().splitlines() if line.strip()]
                message = (lines[-1] if lines else "could not be collected")[-MAX_MESSAGE:]
            self.collect_errors.append({"nodeid": report.nodeid, "message": message, "timeout": "TestTimeLimit" in text})

    def pytest_collection_finish(self, session):
        if not self.project.get("collect_only"):
            return
        for item in session.items:
            self.order.append(item.nodeid)
            self.results[item.nodeid] = {"nodeid": item.nodeid, "outcome": "collected", "message": "", "seconds": 0.0,
                                         "trace": None, "line": _item_line(item), "file": _item_file(item)}

    def summary(self) -> list:
        return [self.results[nodeid] for nodeid in self.order if nodeid in self.results]


_ESCAPES: list = []  # [(pytest's exception class, word)], taken in run_pytest before any candidate code


def _outcome_exception(outcome):
    """The exception a hook call raised, from pluggy's result object (its API moved over versions)."""
    for name in ("exception", "excinfo"):
        try:
            value = getattr(outcome, name)
        except Exception:  # noqa: BLE001
            continue
        if isinstance(value, tuple):
            value = value[1] if len(value) > 1 else None
        if isinstance(value, BaseException):
            return value
    return None


def _program_escape(error) -> str:
    """"skip"/"xfail"/"exit" when ``error`` is pytest's and was raised inside the program's code."""
    if error is None:
        return ""
    kind = next((word for cls, word in _ESCAPES if isinstance(error, cls)), "")
    if not kind:
        return ""
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == PROGRAM_FILE:
            return kind
        tb = tb.tb_next
    return ""


def _on_alarm(signum, frame):
    _ALARMS[0] += 1
    if _ALARMS[0] == 1:
        raise TestTimeLimit()
    signal.setitimer(signal.ITIMER_REAL, 0)
    raise SessionInterrupt()


def _seconds(value: float) -> str:
    return f"{value:g}" if value >= 1 else f"{value:.2g}"


def _item_line(item) -> int:
    try:
        location = item.location  # (file relative to rootdir, 0-based line or None, name)
        return int(location[1]) + 1 if location[1] is not None else 0
    except Exception:  # noqa: BLE001
        return 0


def _item_file(item) -> str:
    try:
        return str(item.path)
    except Exception:  # noqa: BLE001
        return ""


def _skip_reason(report) -> str:
    try:
        return str(report.longrepr[2])[:200]
    except Exception:  # noqa: BLE001
        return "skipped"


def _longrepr_text(report) -> str:
    try:
        return str(report.longreprtext or report.longrepr)
    except Exception:  # noqa: BLE001
        return "failed"


def _crash(report) -> tuple:
    """(exception type name, one-paragraph message) of a failed report."""
    longrepr = report.longrepr
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None:
        text = str(crash.message)
        kind = text.split(":", 1)[0].strip() if ":" in text.split("\n", 1)[0] else ""
        if kind.startswith("assert ") or " " in kind:
            kind = "AssertionError"
        line = f" (line {crash.lineno})" if getattr(crash, "lineno", 0) else ""
        return kind, (text.strip()[:MAX_MESSAGE - len(line)] + line)
    text = _longrepr_text(report).strip()
    if "UNEXPECTED EXCEPTION:" in text:  # a doctest example raised
        return _doctest_exception(text)
    kind = "DocTestFailure" if "Expected:" in text or "Got" in text else ""
    return kind, _doctest_message(text) if kind else text[-MAX_MESSAGE:]


def _doctest_exception(text: str) -> tuple:
    """(type name, "OSError: [Errno 30] ... (in >>> open(...))") of a doctest example that raised:
    the traceback's last line and the example, not the tail of doctest's own frames."""
    lines = [line for line in text.splitlines() if line.strip()]
    marker = next(i for i, line in enumerate(lines) if "UNEXPECTED EXCEPTION:" in line)
    example = next((line.strip() for line in reversed(lines[:marker]) if ">>> " in line), "")
    example = example[example.index(">>> "):] if example else ""
    final = [line for line in lines[marker + 1:] if not line.startswith((" ", "Traceback"))]
    final = [line for line in final if not line.rstrip().endswith("UnexpectedException")] or [lines[marker]]
    kind = final[-1].split(":", 1)[0].strip() if ":" in final[-1] else ""
    kind = kind.rsplit(".", 1)[-1] if kind.replace(".", "").replace("_", "").isalnum() else ""
    where = f" (in {example})" if example else ""
    return kind, (final[-1].strip()[:MAX_MESSAGE - len(where)] + where)


def _doctest_message(text: str) -> str:
    """pytest's doctest failure report -> "Expected: ... Got: ..." (the example's essence)."""
    lines = [line for line in text.splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if line.strip().startswith("Expected:"):
            return " ".join(part.strip() for part in lines[max(0, index - 1):index + 6])[:MAX_MESSAGE]
    return lines[-1][:MAX_MESSAGE] if lines else "doctest failed"


def run_pytest(task: dict, tracer_class) -> dict:
    """All of the task's tests in one pytest session; a plain-data summary."""
    project = task["project"]
    result = {"error": None, "project": None, "trace": None}
    try:
        import pytest
    except BaseException as error:  # noqa: BLE001
        result["project"] = {"tests": [], "collect_errors": [], "exit": -1,
                             "setup_error": f"pytest does not import: {type(error).__name__}: {error}"[:MAX_MESSAGE]}
        return result
    try:
        from _pytest.outcomes import Exit, Skipped, XFailed

        _ESCAPES[:] = [(XFailed, "xfail"), (Skipped, "skip"), (Exit, "exit")]  # XFailed is a Failed, not a Skipped
    except ImportError:  # a pytest laid out otherwise: the escapes count as pytest counts them
        _ESCAPES[:] = []
    install(project, task["program"])
    rootdir = project.get("rootdir") or os.getcwd()
    try:
        os.chdir(rootdir)
    except OSError:
        pass
    recorder = _Recorder(project, tracer_class, bool(task.get("trace")))
    args = list(PYTEST_ARGS) + list(project.get("pytest_args") or []) + ["--rootdir", rootdir]
    if _has_module("pytest_cov"):  # the project's --cov: coverage would fight the tracer for the
        args.append("--no-cov")    # trace hooks, and writes its reports beside the (read-only) project
    targets = list(project.get("nodeids") or []) or list(project.get("test_files") or [])
    if project.get("doctests") and os.path.exists(project["path"]) and not project.get("nodeids"):
        targets.append(project["path"])
    status = -1
    setup_error = ""
    plugins = [recorder, _Wrapper(*recorder.runtest_call_wrapper())]
    if project.get("doctests"):  # also when nodeids select some of the module's doctests
        plugins.append(_ModuleDoctests(project["path"]))
    if project.get("select") is not None:  # a share of the module's tests (the host splits them)
        plugins.append(_Select(project["select"]))
    if project.get("collect_only"):
        args.append("--collect-only")
    canary = _Canaries(project["canary"]) if project.get("canary") and not project.get("collect_only") else None
    if canary is not None:
        plugins.append(canary.plugin())
    try:
        status = int(pytest.main(args + targets, plugins=plugins))
    except SystemExit as error:
        status = error.code if isinstance(error.code, int) else -1
    except BaseException as error:  # noqa: BLE001 - pytest itself failed (a broken conftest, say)
        setup_error = f"{type(error).__name__}: {error}"[:MAX_MESSAGE]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    interrupted = ""
    if _ALARMS[0] >= 2 and recorder.current in recorder.results:  # the session stopped inside this test
        interrupted = recorder.current
        entry = recorder.results[interrupted]
        entry["outcome"] = "timeout"
        entry["message"] = f"timed out after {_seconds(recorder._limit(interrupted))} s (and caught the interruption)"
    # Plain data: M turns it into JSON (the candidate may have patched this process's json module).
    result["project"] = {"tests": recorder.summary(), "collect_errors": recorder.collect_errors,
                         "exit": status if type(status) is int else -1, "setup_error": setup_error,
                         "interrupted": interrupted, "canary": canary is not None and canary.added,
                         "internal_error": recorder.internal_error}
    return result


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


class _Canaries:
    """A test of egcfg's, named by the host, last in the session (after -x has had its say), that
    fails. A program that makes pytest report what it wants (a patched `Function.runtest`, report
    hook or outcome) turns it into a pass, or drops it, and the host then trusts none of the
    session (executor._check_canary). Only a program written against its name could tell it from
    the project's tests: it stands in the first test module, beside them."""

    def __init__(self, name: str):
        self.name = name
        self.added = False

    def plugin(self):
        import pytest

        canary = self

        class Plugin:
            @pytest.hookimpl(trylast=True)  # after the project's own selection (-k, -m, plugins)
            def pytest_collection_modifyitems(self, session, config, items):
                canary.add(items)

        return Plugin()

    def add(self, items) -> None:
        import pytest

        module = next((item.getparent(pytest.Module) for item in items if isinstance(item, pytest.Function)
                       and item.getparent(pytest.Module) is not None), None)
        if module is None:  # doctests only: nothing for it to stand beside
            return

        def fails():
            raise AssertionError("a test that must fail")

        items.append(pytest.Function.from_parent(module, name=self.name, callobj=fails))
        self.added = True


class _Select:
    """Keeps only the named tests of what was collected (the files are collected as a whole)."""

    def __init__(self, nodeids):
        self.wanted = set(nodeids)

    def pytest_collection_modifyitems(self, session, config, items):
        items[:] = [item for item in items if item.nodeid in self.wanted]


class _ModuleDoctests:
    """The edited module's doctests (pytest's doctest plugin: the standard library's parser, runner
    and checker, with the doctest_optionflags of the project's configuration), whether or not the
    project runs pytest with --doctest-modules; the module's other contents are no tests."""

    def __init__(self, path: str):
        self.path = os.path.realpath(path)

    def _is_module(self, path) -> bool:
        return os.path.realpath(str(path)) == self.path

    def pytest_collect_file(self, parent, file_path):
        if self._is_module(file_path) and not parent.config.getoption("doctestmodules", False):
            from _pytest.doctest import DoctestModule

            return DoctestModule.from_parent(parent, path=file_path)
        return None

    def pytest_collection_modifyitems(self, session, config, items):
        from _pytest.doctest import DoctestItem

        items[:] = [item for item in items if isinstance(item, DoctestItem) or not self._is_module(_item_file(item))]


class _Wrapper:
    """Holds the hookwrapper as a plugin of its own (pytest registers objects, not functions)."""

    def __init__(self, call_hook, collect_hook, setup_hook, teardown_hook):
        self.pytest_runtest_call = call_hook
        self.pytest_make_collect_report = collect_hook
        self.pytest_runtest_setup = setup_hook
        self.pytest_runtest_teardown = teardown_hook
