"""A workspace with its own .venv on Python 3.12, holding a package egcfg's environment lacks and a
module in 3.12-only syntax (PEP 695): the interpreter is chosen, the module is parsed with its
grammar, and every test passes in `egcfg serve` (the real server, sandbox and interpreter)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.execution import interpreter
from engine.project import outline

PY312 = Path.home() / ".pyenv" / "versions" / "3.12.1" / "bin" / "python"
LOCAL_INDEX = Path("/opt/pypi/simple")  # this machine's offline package index, when there is one
DEPENDENCY = "egcfg_probe_localdep"
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "lsp_server"))  # the server test harness

MODULE = textwrap.dedent('''\
    """Generic helpers written for Python 3.12."""

    from __future__ import annotations

    from egcfg_probe_localdep import double

    type Pair[T] = tuple[T, T]


    def first[T](items: list[T]) -> T:
        """The first item.

        >>> first([3, 4])
        3
        """
        return items[0]


    def doubled_pair[T: int](value: T) -> Pair[int]:
        return (double(value), double(value))


    class Box[T]:
        def __init__(self, item: T) -> None:
            self.item = item

        def get(self) -> T:
            return self.item
    ''')

TESTS = textwrap.dedent('''\
    import pytest

    from typedutil.core import Box, doubled_pair, first


    @pytest.mark.parametrize("items, expected", [([1, 2], 1), (["a"], "a")])
    def test_first(items, expected):
        assert first(items) == expected


    def test_doubled_pair():
        assert doubled_pair(4) == (8, 8)


    def test_box():
        assert Box(5).get() == 5
    ''')


def _pip_install(pip: Path, *args: str) -> None:
    attempts = [["--index-url", LOCAL_INDEX.as_uri()]] if LOCAL_INDEX.is_dir() else []
    attempts.append([])
    for extra in attempts:
        done = subprocess.run([str(pip), "install", "-q", *extra, *args], capture_output=True, text=True, timeout=300)
        if done.returncode == 0:
            return
    pytest.skip(f"could not install {args} into the test venv: {done.stderr.strip()[-300:]}")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    if not PY312.exists():
        pytest.skip("needs CPython 3.12 (pyenv 3.12.1)")
    root = tmp_path_factory.mktemp("ws312")
    subprocess.run([str(PY312), "-m", "venv", str(root / ".venv")], check=True, timeout=120)
    _pip_install(root / ".venv" / "bin" / "pip", "pytest")
    # A small local package, built into a wheel here and installed offline into the venv only.
    source = tmp_path_factory.mktemp("localdep")
    (source / DEPENDENCY).mkdir()
    (source / DEPENDENCY / "__init__.py").write_text("def double(x):\n    return 2 * x\n")
    (source / "pyproject.toml").write_text(textwrap.dedent(f'''\
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{DEPENDENCY}"
        version = "1.0"

        [tool.setuptools]
        packages = ["{DEPENDENCY}"]
        '''))
    wheels = source / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(wheels), str(source)], check=True, timeout=300, capture_output=True)
    subprocess.run([str(root / ".venv" / "bin" / "pip"), "install", "-q", "--no-index", *map(str, wheels.glob("*.whl"))],
                   check=True, timeout=300, capture_output=True)
    (root / "typedutil").mkdir()
    (root / "typedutil" / "__init__.py").write_text("")
    (root / "typedutil" / "core.py").write_text(MODULE)
    (root / "tests").mkdir()
    (root / "tests" / "test_core.py").write_text(TESTS)
    return root


def test_the_workspace_venv_is_chosen_and_described(workspace):
    chosen = interpreter.select(str(workspace))
    assert chosen.version[:2] == (3, 12) and chosen.source == ".venv" and chosen.pytest
    assert chosen.executable.startswith(str(workspace / ".venv"))
    assert "3.12" in chosen.describe() and ".venv" in chosen.describe()
    binds = chosen.read_only_binds()
    assert any(str(workspace / ".venv") == b or str(workspace / ".venv").startswith(b + "/") for b in binds)
    # a setting names another interpreter; a missing one is one clear sentence
    assert interpreter.select(str(workspace), sys.executable).source == "setting"
    with pytest.raises(Exception, match="does not exist"):
        interpreter.select(str(workspace), str(workspace / "no-such-python"))


def test_egcfgs_own_environment_lacks_the_package():
    import importlib.util

    assert importlib.util.find_spec(DEPENDENCY) is None


def test_the_module_parses_with_the_projects_grammar(workspace):
    chosen = interpreter.select(str(workspace))
    if sys.version_info < (3, 12):  # egcfg's own Python cannot read it
        with pytest.raises(SyntaxError):
            outline.functions(MODULE)
    found = {f.name: f for f in outline.functions(MODULE, chosen.executable, chosen.version)}
    assert {"first", "doubled_pair", "__init__", "get"} <= set(found)
    assert found["first"].docstring is not None and found["first"].def_line == 9
    with pytest.raises(SyntaxError) as error:
        outline.functions("def broken(:\n", chosen.executable, chosen.version)
    assert error.value.lineno == 1


async def test_all_its_tests_pass_in_egcfg_serve(workspace):
    from test_lsp_harness import open_doc, start, stop

    client, rec, drainer = await start(workspace, {"model": str(workspace / "no-model"), "debounceMs": 0}, scripted=False)
    try:
        module = workspace / "typedutil" / "core.py"
        uri = open_doc(client, module)
        status = await rec.wait_for(lambda: next((s for s in reversed(rec.status)
                                                  if s["message"].startswith("tests:")), None),
                                    timeout=120, what="test status")
        assert status["message"] == "tests: 5/5 pass", status
        assert "3.12" in status["interpreter"] and ".venv" in status["interpreter"]
        published = rec.latest_diagnostics(uri)
        assert published is None or not [d for d in published.diagnostics if d.severity in (1, 2)]
    finally:
        await stop(client, drainer)
    assert os.path.exists(workspace / ".venv")


PY313 = Path.home() / ".pyenv" / "versions" / "3.13.0" / "bin" / "python"


def test_the_fixture_project_passes_on_python_3_13_too(tmp_path):
    """The sandbox's code (worker, tracer on sys.monitoring, project runner, encoders) on 3.13."""
    if not PY313.exists():
        pytest.skip("needs CPython 3.13 (pyenv 3.13.0)")
    import json

    subprocess.run([str(PY313), "-m", "venv", str(tmp_path / "venv313")], check=True, timeout=120)
    _pip_install(tmp_path / "venv313" / "bin" / "pip", "pytest")
    core = HERE.parents[1] / "fixtures" / "projects" / "shapes" / "src" / "shapes" / "core.py"
    python = str(tmp_path / "venv313" / "bin" / "python")
    done = subprocess.run([sys.executable, "-m", "engine.cli", "trace", str(core), "--pytest", "--json", "--python", python],
                          capture_output=True, text=True, timeout=300, cwd=str(HERE.parents[2]))
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert "3.13" in answer["interpreter"] and answer["passed"] == answer["total"] == 17
    traced = [t for t in answer["tests"] if t["trace"] and any(e["file"] == "program" for e in t["trace"]["events"])]
    assert len(traced) >= 10  # sys.monitoring traces the module's lines
    plain = subprocess.run([sys.executable, "-m", "engine.cli", "trace", str(core), "--json", "--python", python,
                            "--test", "assert favourite() is Color.RED", "--test", "assert Point(1, 2) == Point(1, 2)",
                            "--test", "assert third(3) == __import__('fractions').Fraction(1)"],
                           capture_output=True, text=True, timeout=300, cwd=str(HERE.parents[2]))
    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout)["passed"] == 3
