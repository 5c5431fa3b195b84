"""A module's tests run the way pytest runs them: the fixture project (src/ layout, relative imports,
__future__, conftest fixtures, stateful doctests, values of many types) through the real sandbox,
through the server's folding (lsp_server.project_tests) and through `egcfg trace --pytest`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.execution import project_run
from engine.execution.executor import Executor, Limits
from lsp_server.discovery import candidate_test_files

REPO = Path(__file__).resolve().parents[3]
SHAPES = REPO / "tests" / "fixtures" / "projects" / "shapes"
CORE = SHAPES / "src" / "shapes" / "core.py"
UNDER_PYTEST = {"pass": 17, "skip": 1, "xfail": 1}  # what pytest itself reports for this module's tests


@pytest.fixture(scope="module")
def executor():
    with Executor(workers=2, limits=Limits(test_seconds=5.0, max_processes=project_run.PROCESSES),
                  project_root=str(SHAPES)) as pool:
        yield pool


def outcomes(run) -> dict:
    counts: dict = {}
    for test in run.tests:
        counts[test.outcome] = counts.get(test.outcome, 0) + 1
    return counts


def run_core(executor, text: str | None = None, **kwargs):
    text = CORE.read_text() if text is None else text
    files = candidate_test_files(str(CORE), text, str(SHAPES))
    return project_run.run_module(executor, str(CORE), text, str(SHAPES), files, **kwargs)


def test_the_fixture_project_gives_what_pytest_gives(executor):
    run = run_core(executor)
    assert run.problems == []
    assert outcomes(run) == UNDER_PYTEST, [(t.nodeid, t.outcome, t.message) for t in run.tests if t.outcome != "pass"]
    ids = {t.nodeid for t in run.tests}
    # parametrize, unittest, a class, the module's doctests (stateful counter, continuation lines)
    assert "tests/test_core.py::test_area[2-3-6]" in ids and "tests/test_core.py::AreaCase::test_each_side" in ids
    assert "src/shapes/core.py::shapes.core.counter" in ids and "src/shapes/core.py::shapes.core.area" in ids
    identity = next(t for t in run.tests if t.nodeid.endswith("test_the_module_is_the_module_of_its_package"))
    assert identity.outcome == "pass"


def test_the_editors_text_replaces_the_file_on_disk(executor):
    before = CORE.read_text()
    broken = before.replace("    return width * height\n", "    return width + height\n")
    run = run_core(executor, broken)
    by_id = {t.nodeid: t for t in run.tests}
    wrong = by_id["tests/test_core.py::test_area[2-3-6]"]
    assert wrong.outcome == "fail" and "5 == 6" in wrong.message
    assert by_id["tests/test_core.py::test_area[0-5-0]"].outcome == "fail"
    doctest = by_id["src/shapes/core.py::shapes.core.area"]
    assert doctest.outcome == "fail" and "Expected" in doctest.message and "5" in doctest.message
    assert by_id["tests/test_core.py::test_values_of_stdlib_types"].outcome == "pass"
    assert CORE.read_text() == before


def test_traces_show_the_modules_lines_as_the_program(executor):
    run = run_core(executor)
    test = next(t for t in run.tests if t.nodeid == "tests/test_core.py::test_area[2-3-6]")
    assert test.trace is not None
    program = [e for e in test.trace.events if e.file == "program"]
    area_line = CORE.read_text().splitlines().index("def area(width: float, height: float) -> float:") + 1
    assert any(e.kind == "call" and e.func == "area" and e.line == area_line for e in program)
    assert any(e.kind == "return" and e.values and e.values[0].repr == "6" for e in program)


def test_a_module_that_fails_to_import_is_reported_not_hidden(executor):
    text = CORE.read_text().replace("from .units import to_inches", "from .no_such_module import to_inches")
    run = run_core(executor, text)
    assert not any(t.outcome == "pass" for t in run.tests)
    assert any("no_such_module" in p for p in run.problems), run.problems


def make_slow_project(root: Path) -> Path:
    (root / "pkg").mkdir()
    (root / "pkg" / "__init__.py").write_text("")
    module = root / "pkg" / "waits.py"
    module.write_text("import time\n\ndef wait(seconds):\n    time.sleep(seconds)\n    return seconds\n")
    (root / "tests").mkdir()
    (root / "tests" / "test_waits.py").write_text(textwrap.dedent("""\
        from pkg.waits import wait

        def test_quick():
            assert wait(0) == 0

        def test_slow_but_correct():
            assert wait(1.6) == 1.6

        def test_hangs():
            assert wait(1000) == 1000
        """))
    return module


def test_a_slow_test_gets_a_measured_limit_and_a_hang_is_a_timeout(tmp_path):
    module = make_slow_project(tmp_path)
    slow = project_run.SlowTests()
    project_run_limit = project_run.SLOW_RETRY_SECONDS
    project_run.SLOW_RETRY_SECONDS = 4.0  # keep the hanging test's second chance short here
    try:
        with Executor(workers=2, limits=Limits(test_seconds=1.0), project_root=str(tmp_path)) as pool:
            files = [str(tmp_path / "tests" / "test_waits.py")]
            run = project_run.run_module(pool, str(module), module.read_text(), str(tmp_path), files, slow=slow)
            by_name = {t.name: t for t in run.tests}
            assert by_name["test_quick"].outcome == "pass"
            slow_one = by_name["test_slow_but_correct"]
            assert slow_one.outcome == "pass" and slow_one.limit > 1.6 + 1.0
            hang = by_name["test_hangs"]
            assert hang.outcome == "timeout" and "timed out after" in hang.message
            # the measured limit is remembered: the next run passes at once
            again = project_run.run_module(pool, str(module), module.read_text(), str(tmp_path), files, slow=slow)
            assert {t.name: t.outcome for t in again.tests}["test_slow_but_correct"] == "pass"
            assert slow.limit(run.layout.rootdir, slow_one.nodeid, 1.0) > 2.0
    finally:
        project_run.SLOW_RETRY_SECONDS = project_run_limit


def test_the_server_folds_tests_per_function(executor):
    from lsp_server.project_tests import analyse_project
    from lsp_server.settings import Settings

    text = CORE.read_text().replace("    return width * height\n", "    return width + height\n")

    def run(path, module_text, files):
        return project_run.run_module(executor, path, module_text, str(SHAPES), files)

    analysis = analyse_project(text, 1, str(CORE), str(SHAPES), Settings(), run, None)
    by_function = {r.span.name: r for r in analysis.runs}
    assert {"area", "counter", "day", "tags"} <= set(by_function)
    area = by_function["area"]
    assert area.passed < len(area.records)  # the parametrized cases that now fail, and the doctest
    assert any(n.severity == "error" and "t" in n.message for n in analysis.notes)
    assert by_function["day"].passed == len(by_function["day"].records) >= 1


def test_egcfg_trace_runs_the_module_with_pytest():
    done = subprocess.run([sys.executable, "-m", "engine.cli", "trace", str(CORE), "--pytest", "--json", "--no-trace"],
                          capture_output=True, text=True, cwd=str(REPO), timeout=240)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["passed"] == UNDER_PYTEST["pass"] and answer["total"] == UNDER_PYTEST["pass"]
    assert answer["skipped"] == UNDER_PYTEST["skip"] + UNDER_PYTEST["xfail"]
    assert answer["interpreter"].startswith("Python ")


def test_egcfg_complete_runs_candidates_as_the_module_of_their_package(tmp_path, tiny_model_dir):
    import os
    import shutil

    project = tmp_path / "shapes"
    shutil.copytree(SHAPES, project, ignore=shutil.ignore_patterns("__pycache__"))
    core = project / "src" / "shapes" / "core.py"
    text = core.read_text()
    core.write_text(text.replace("    if width < 0 or height < 0:\n        raise ValueError(\"negative side\")\n"
                                 "    return width * height\n", ""))
    identity = 'assert module_identity() == ("shapes.core", "shapes", "shapes.core", "shapes.units")'
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    done = subprocess.run([sys.executable, "-m", "engine.cli", "complete", f"{core}::area", "--test", identity,
                           "--test", "assert width_in_inches('5.08') == __import__('decimal').Decimal('2.00')",
                           "--model", str(tiny_model_dir), "--max-new-tokens", "1", "--preset", "editor", "--json"],
                          capture_output=True, text=True, cwd=str(tmp_path), env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    # relative imports, __future__ and __name__ work for the candidates: the two tests that do not
    # depend on the (one-token) body pass (the Decimal compared on the host); area's 2 doctests join them
    assert answer["total"] == 4 and answer["passed"] == 2, answer


def test_a_test_that_catches_its_time_limit_does_not_take_the_others_with_it(tmp_path):
    module = make_slow_project(tmp_path)
    (tmp_path / "tests" / "test_waits.py").write_text(textwrap.dedent("""\
        import unittest

        from pkg.waits import wait

        def test_before():
            assert wait(0) == 0

        class Loop(unittest.TestCase):
            def test_many_subtests(self):  # each subTest catches the time limit's exception
                for i in range(200):
                    with self.subTest(i=i):
                        wait(0.1)

        def test_after():
            assert wait(0) == 0
        """))
    saved = project_run.SLOW_RETRY_SECONDS
    project_run.SLOW_RETRY_SECONDS = 2.0
    try:
        with Executor(workers=1, limits=Limits(test_seconds=1.0), project_root=str(tmp_path)) as pool:
            run = project_run.run_module(pool, str(module), module.read_text(), str(tmp_path),
                                         [str(tmp_path / "tests" / "test_waits.py")], slow=project_run.SlowTests())
    finally:
        project_run.SLOW_RETRY_SECONDS = saved
    by_name = {t.name: t for t in run.tests}
    assert by_name["test_before"].outcome == "pass" and by_name["test_after"].outcome == "pass"
    assert by_name["Loop::test_many_subtests"].outcome == "timeout"
    assert run.seconds < 30


async def test_the_fixture_project_in_egcfg_serve(tmp_path):
    """The real server (no model needed for tests): opening the module runs its tests with pytest
    in the sandbox; every test attributed to a function passes; the status names the interpreter."""
    import shutil

    sys.path.insert(0, str(REPO / "tests" / "lsp_server"))
    from test_lsp_harness import open_doc, start, stop

    project = tmp_path / "shapes"
    shutil.copytree(SHAPES, project, ignore=shutil.ignore_patterns("__pycache__"))
    client, rec, drainer = await start(project, {"model": str(tmp_path / "no-model"), "debounceMs": 0}, scripted=False)
    try:
        uri = open_doc(client, project / "src" / "shapes" / "core.py")
        status = await rec.wait_for(lambda: next((s for s in reversed(rec.status) if s["message"].startswith("tests:")), None),
                                    timeout=120, what="test status")
        passed, total = status["message"].split()[1].split("/")
        assert passed == total and int(total) >= 15, status
        assert status["interpreter"].startswith("Python ")
        assert status["isolation"] in ("bubblewrap", "landlock")  # the level running them, for the status bar
        published = rec.latest_diagnostics(uri)
        assert published is None or not [d for d in published.diagnostics if d.severity in (1, 2)]
        # the editor's unsaved text replaces the file: a broken area() shows as errors in area()
        from lsprotocol import types

        text = (project / "src" / "shapes" / "core.py").read_text()
        broken = text.replace("    return width * height\n", "    return width + height\n")
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=broken)]))
        area_line = broken.splitlines().index("def area(width: float, height: float) -> float:")
        errors = await rec.wait_for(lambda: [d for d in (rec.latest_diagnostics(uri) or types.PublishDiagnosticsParams(uri, [])).diagnostics
                                             if d.severity == 1 and area_line <= d.range.start.line <= area_line + 15],
                                    timeout=120, what="errors in area")
        assert any("test_area" in d.message or "doctest" in d.message or "shapes.core.area" in d.message for d in errors), errors
    finally:
        await stop(client, drainer)


def test_named_tests_after_an_interrupted_one_still_run(tmp_path):
    module = make_slow_project(tmp_path)
    (tmp_path / "tests" / "test_waits.py").write_text(textwrap.dedent("""\
        import unittest

        from pkg.waits import wait

        class Loop(unittest.TestCase):
            def test_many_subtests(self):
                for i in range(200):
                    with self.subTest(i=i):
                        wait(0.1)

        def test_after():
            assert wait(0) == 0
        """))
    saved = project_run.SLOW_RETRY_SECONDS
    project_run.SLOW_RETRY_SECONDS = 1.5
    try:
        with Executor(workers=1, limits=Limits(test_seconds=1.0), project_root=str(tmp_path)) as pool:
            run = project_run.run_module(pool, str(module), module.read_text(), str(tmp_path),
                                         [str(tmp_path / "tests" / "test_waits.py")], slow=project_run.SlowTests(),
                                         nodeids=["tests/test_waits.py::Loop::test_many_subtests",
                                                  "tests/test_waits.py::test_after"])
    finally:
        project_run.SLOW_RETRY_SECONDS = saved
    assert {t.name: t.outcome for t in run.tests} == {"Loop::test_many_subtests": "timeout", "test_after": "pass"}


def test_plugins_that_write_beside_the_project_write_in_the_scratch_folder(tmp_path):
    """The project is read-only in the sandbox; pytest-cov (`--cov` without `--cov-append` removes
    and rewrites .coverage) and hypothesis (its example database) honour these variables, as this
    conftest does: without them the whole session failed on a read-only file system."""
    (tmp_path / "mod.py").write_text("def f():\n    return 1\n")
    (tmp_path / "conftest.py").write_text(textwrap.dedent("""\
        import os

        def pytest_configure(config):
            for variable, default in (("COVERAGE_FILE", ".coverage"), ("HYPOTHESIS_STORAGE_DIRECTORY", ".hypothesis")):
                path = os.environ.get(variable, default)
                assert not os.path.abspath(path).startswith(os.path.dirname(__file__) + os.sep), path
                if os.path.exists(path):
                    os.remove(path)
                with open(path, "w") as handle:
                    handle.write("data")
        """))
    (tmp_path / "test_mod.py").write_text("from mod import f\n\n\ndef test_f():\n    assert f() == 1\n")
    with Executor(workers=1, limits=Limits(test_seconds=5.0), project_root=str(tmp_path)) as pool:
        run = project_run.run_module(pool, str(tmp_path / "mod.py"), "def f():\n    return 1\n", str(tmp_path),
                                     [str(tmp_path / "test_mod.py")], trace=False)
    assert [t.outcome for t in run.tests] == ["pass"], run.problems
    assert not (tmp_path / ".coverage").exists()


def test_a_doctest_example_that_raises_says_what_and_where(tmp_path):
    module = tmp_path / "saves.py"
    module.write_text(textwrap.dedent('''\
        def save(path):
            """
            >>> total = 1
            >>> save('file.txt')
            'saved'
            """
            open(path, "w").write("x")   # the project folder is read-only in the sandbox
            return "saved"
        '''))
    with Executor(workers=1, limits=Limits(test_seconds=5.0), project_root=str(tmp_path)) as pool:
        run = project_run.run_module(pool, str(module), module.read_text(), str(tmp_path), [], trace=False)
    [test] = run.tests
    assert test.outcome == "error" and test.message.startswith(("OSError: [Errno 30]", "PermissionError")), test.message
    assert test.message.endswith("(in >>> save('file.txt'))"), test.message


@pytest.mark.parametrize("config, tests, expected", [
    ("", "def test_a():\n    assert f() == 1\n\n\ndef test_b():\n    assert f() == 2\n", {"test_a": "pass", "test_b": "fail"}),
    ("[pytest]\naddopts = -x\n", "def test_a():\n    assert f() == 2\n\n\ndef test_b():\n    assert f() == 1\n", {"test_a": "fail"}),
    ("[pytest]\naddopts = -k b\n", "def test_a():\n    assert f() == 2\n\n\ndef test_b():\n    assert f() == 1\n", {"test_b": "pass"}),
    ("", "import unittest\n\n\nclass T(unittest.TestCase):\n    def test_a(self):\n        self.assertEqual(f(), 1)\n", {"T::test_a": "pass"}),
    ("", "import pytest\n\n\n@pytest.fixture(autouse=True)\ndef only_marked(request):\n    if not request.node.get_closest_marker('unit'):\n"
         "        pytest.skip('not a unit test')\n\n\n@pytest.mark.unit\ndef test_a():\n    assert f() == 1\n", {"test_a": "pass"}),
], ids=["plain", "stop-at-first-failure", "keyword", "unittest-class", "autouse-skip"])
def test_egcfgs_own_test_in_a_session_changes_no_honest_verdict(tmp_path, config, tests, expected):
    """Each session carries a test of egcfg's that must fail (executor._check_canary): it never
    shows, and whatever the project's configuration does with it, honest verdicts stand."""
    (tmp_path / "mod.py").write_text("def f():\n    return 1\n")
    if config:
        (tmp_path / "pytest.ini").write_text(config)
    (tmp_path / "test_mod.py").write_text("from mod import f\n" + tests)
    with Executor(workers=1, limits=Limits(test_seconds=5.0), project_root=str(tmp_path)) as pool:
        run = project_run.run_module(pool, str(tmp_path / "mod.py"), "def f():\n    return 1\n", str(tmp_path),
                                     [str(tmp_path / "test_mod.py")], trace=False)
    assert {t.name: t.outcome for t in run.tests} == expected, (run.tests, run.problems)
    assert not run.problems


def test_a_module_that_warns_when_imported_is_judged_as_pytest_judges_it(tmp_path):
    """python-dateutil's zoneinfo: a deprecated module warns at import (stacklevel=2, naming its
    importer), under `filterwarnings = error`. egcfg's loader must not stand in for the importer,
    and a module with no doctests is not imported to look for some (which plain pytest never does)."""
    (tmp_path / "pyproject.toml").write_text('[tool.pytest.ini_options]\nfilterwarnings = ["error:old is deprecated"]\n')
    (tmp_path / "old.py").write_text('import warnings\nwarnings.warn("old is deprecated", DeprecationWarning, stacklevel=2)\n\n\n'
                                     'def f():\n    return 1\n')
    (tmp_path / "test_old.py").write_text(textwrap.dedent('''\
        import os
        import sys

        import pytest


        def test_import_names_this_file():
            sys.modules.pop("old", None)
            with pytest.warns(DeprecationWarning) as record:
                import old
            assert old.f() == 1
            assert [os.path.splitext(w.filename)[0] for w in record] == [os.path.splitext(__file__)[0]]
        '''))
    with Executor(workers=1, limits=Limits(test_seconds=5.0), project_root=str(tmp_path)) as pool:
        run = project_run.run_module(pool, str(tmp_path / "old.py"), (tmp_path / "old.py").read_text(), str(tmp_path),
                                     [str(tmp_path / "test_old.py")], trace=False)
    assert {t.name: t.outcome for t in run.tests} == {"test_import_names_this_file": "pass"}, (run.tests, run.problems)
    assert not run.problems


def test_pytest_stopping_with_an_internal_error_is_a_problem_not_silence(tmp_path):
    """A project plugin that fails pytest's start (here: a conftest hook raising under the
    project's configuration) found no tests and said nothing: now the run says why."""
    (tmp_path / "mod.py").write_text("def f():\n    return 1\n")
    (tmp_path / "conftest.py").write_text("def pytest_collection_modifyitems(items):\n"
                                          "    raise RuntimeError('the plugin is broken')\n")
    (tmp_path / "test_mod.py").write_text("from mod import f\n\n\ndef test_f():\n    assert f() == 1\n")
    with Executor(workers=1, limits=Limits(test_seconds=5.0), project_root=str(tmp_path)) as pool:
        run = project_run.run_module(pool, str(tmp_path / "mod.py"), "def f():\n    return 1\n", str(tmp_path),
                                     [str(tmp_path / "test_mod.py")], trace=False)
    assert run.tests == [] and len(run.problems) == 1, run.problems
    assert run.problems[0].startswith("pytest stopped with an internal error (exit status 3): RuntimeError: the plugin is broken")


def test_the_projects_coverage_plugin_is_switched_off_in_the_sandbox(tmp_path):
    """wcwidth runs pytest with `--cov --cov-report=html`: coverage would fight egcfg's tracer and
    writes htmlcov/ beside the read-only project at the session's end. A stand-in pytest_cov
    (found as the real one is: by its module name) shows the session runs with --no-cov."""
    (tmp_path / "pytest_cov").mkdir()
    (tmp_path / "pytest_cov" / "__init__.py").write_text(textwrap.dedent('''\
        import os


        def pytest_addoption(parser):
            parser.addoption("--cov", action="store_true")
            parser.addoption("--no-cov", action="store_true")


        def pytest_sessionfinish(session):
            if session.config.getoption("--cov") and not session.config.getoption("--no-cov"):
                os.makedirs("htmlcov", exist_ok=True)   # the project folder: read-only in the sandbox
        '''))
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = -p pytest_cov --cov\n")
    (tmp_path / "mod.py").write_text("def f():\n    return 1\n")
    (tmp_path / "test_mod.py").write_text("from mod import f\n\n\ndef test_f():\n    assert f() == 1\n")
    with Executor(workers=1, limits=Limits(test_seconds=5.0), project_root=str(tmp_path)) as pool:
        run = project_run.run_module(pool, str(tmp_path / "mod.py"), "def f():\n    return 1\n", str(tmp_path),
                                     [str(tmp_path / "test_mod.py")], trace=False)
    assert {t.name: t.outcome for t in run.tests} == {"test_f": "pass"} and not run.problems, run.problems
