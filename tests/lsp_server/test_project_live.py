"""Incremental pytest runs (lsp_server/project_live.py) through the real sandbox: the first session
learns whose tests are whose; after an edit only the edited function's and its callers' tests run,
selected by node id (a doctest too)."""

from __future__ import annotations

import textwrap

import pytest

from lsp_server.analysis import Caches
from lsp_server.backend import EngineBackend
from lsp_server.project_live import plan_project, run_full, run_stale
from lsp_server.settings import Settings

pytestmark = pytest.mark.timeout(240)

MODULE = textwrap.dedent('''\
    def double(x):
        """Twice x.

        >>> double(3)
        6
        """
        return 2 * x


    def quad(x):
        return double(double(x))


    def half(x):
        return x / 2
''')

TESTS = textwrap.dedent('''\
    from m import double, half, quad


    def test_double():
        assert double(2) == 4


    def test_quad():
        assert quad(1) == 4


    def test_half():
        assert half(4) == 2
''')


@pytest.fixture
def backend():
    engine = EngineBackend()
    yield engine
    engine.close()


def test_an_edit_reruns_only_the_tests_it_can_change(tmp_path, backend):
    (tmp_path / "m.py").write_text(MODULE)
    (tmp_path / "test_m.py").write_text(TESTS)
    settings, root, path = Settings(), str(tmp_path), str(tmp_path / "m.py")
    python = backend.interpreter(settings, root)
    sessions: list[tuple[str, ...]] = []

    def runner(text):
        def run(files, nodeids):
            sessions.append(tuple(nodeids))
            return backend.run_project(settings, root, path, text, files, nodeids=nodeids)
        return run

    read = lambda p: open(p).read()  # noqa: E731
    caches = Caches()
    first = plan_project(MODULE, 1, path, root, settings, read, python, caches, None)
    assert first.full
    done = run_full(first, runner(MODULE), caches, settings)
    if done is None:
        pytest.skip("the project's interpreter has no pytest")
    analysis, learned = done
    assert sessions == [()]
    assert {r.span.name: (r.passed, len(r.records)) for r in analysis.runs} == {"double": (2, 2), "quad": (1, 1), "half": (1, 1)}

    edited = MODULE.replace("return 2 * x", "return x + x")
    again = plan_project(edited, 2, path, root, settings, read, python, caches, learned)
    assert not again.full
    assert sorted(s.name for s in again.stale) == ["double", "quad"]          # half is reused
    assert [r.span.name for r in again.analysis.runs] == ["half"]
    runs = run_stale(again, again.stale[:1], runner(edited), caches, learned, settings)
    assert set(sessions[-1]) == {"test_m.py::test_double", "m.py::m.double"}  # its test and its doctest
    assert [(r.span.name, r.passed, len(r.records)) for r in runs] == [("double", 2, 2)]

    # lines added above: nothing runs, the cached values move with their function
    moved = "# a comment\n" + edited
    later = plan_project(moved, 3, path, root, settings, read, python, caches, learned)
    assert [s.name for s in later.stale] == ["quad"]                            # not run since the edit
    double = next(r for r in later.analysis.runs if r.span.name == "double")
    assert double.span.def_line == 1 and any(line == 7 for r in double.records for line in r.lines)
