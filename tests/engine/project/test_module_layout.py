"""Where a module sits in its project (import name, import root, rootdir) and which interpreter
runs its tests: pure functions of the files on disk."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from engine.errors import UserError
from engine.execution import interpreter
from engine.project.layout import find_rootdir, module_layout, module_name


def touch(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_src_layout_package_module(tmp_path):
    touch(tmp_path / "pyproject.toml", "[tool.pytest.ini_options]\npythonpath = ['src']\n")
    touch(tmp_path / "src" / "pkg" / "__init__.py")
    module = touch(tmp_path / "src" / "pkg" / "sub" / "mod.py")
    touch(tmp_path / "src" / "pkg" / "sub" / "__init__.py")
    layout = module_layout(str(module), str(tmp_path))
    assert (layout.name, layout.is_package) == ("pkg.sub.mod", False)
    assert layout.import_root == str(tmp_path / "src") and layout.rootdir == str(tmp_path)
    assert layout.sys_path == (str(tmp_path / "src"), str(tmp_path))


def test_a_package_init_and_a_top_level_module(tmp_path):
    init = touch(tmp_path / "pkg" / "__init__.py")
    assert module_name(str(init)) == ("pkg", True)
    single = touch(tmp_path / "script.py")
    assert module_name(str(single)) == ("script", False)
    assert module_layout(str(single), None).rootdir == str(tmp_path)


@pytest.mark.parametrize("name, text", [("pytest.ini", "[pytest]\n"), ("tox.ini", "[pytest]\n"),
                                        ("setup.cfg", "[tool:pytest]\n"), ("pyproject.toml", "[tool.pytest]\n")])
def test_the_rootdir_is_the_folder_of_the_nearest_pytest_configuration(tmp_path, name, text):
    touch(tmp_path / "outer" / name, text)
    touch(tmp_path / "outer" / "pyproject.toml.unrelated")
    inner = tmp_path / "outer" / "a" / "b"
    inner.mkdir(parents=True)
    assert find_rootdir(str(inner), str(tmp_path)) == str(tmp_path / "outer")


def test_a_pyproject_without_pytest_settings_is_not_a_rootdir(tmp_path):
    touch(tmp_path / "inner" / "pyproject.toml", "[project]\nname = 'x'\n")
    assert find_rootdir(str(tmp_path / "inner"), str(tmp_path)) == str(tmp_path)


def fake_venv(root: Path, name: str) -> Path:
    python = root / name / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.symlink_to(os.path.realpath(sys.executable))
    return python


def test_interpreter_order_setting_then_dot_venv_then_venv_then_egcfgs(tmp_path):
    assert interpreter.select(str(tmp_path)).source == "egcfg"
    fake_venv(tmp_path, "venv")
    assert interpreter.workspace_venv(str(tmp_path))[1] == "venv"
    fake_venv(tmp_path, ".venv")
    assert interpreter.workspace_venv(str(tmp_path))[1] == ".venv"
    chosen = interpreter.select(str(tmp_path), sys.executable)
    assert chosen.source == "setting" and chosen.executable == sys.executable
    with pytest.raises(UserError, match="does not exist"):
        interpreter.select(str(tmp_path), str(tmp_path / "missing" / "python"))


def test_a_non_python_is_refused_in_one_sentence(tmp_path):
    fake = touch(tmp_path / "python", "#!/bin/sh\necho not python\n")
    fake.chmod(0o755)
    with pytest.raises(UserError, match="not a Python 3.9"):
        interpreter.select(None, str(fake))


def test_serve_python_flag_is_the_settings_starting_value():
    from types import SimpleNamespace

    from lsp_server.cli import _initial_python
    from lsp_server.settings import Settings, parse_settings

    server = SimpleNamespace(settings=Settings())
    _initial_python(server, SimpleNamespace(python=" /x/bin/python "))
    assert server.settings.python == "/x/bin/python"
    assert parse_settings({"maxNewTokens": 5}, base=server.settings)[0].python == "/x/bin/python"
    assert parse_settings({"egcfg": {"python": "/y/bin/python"}}, base=server.settings)[0].python == "/y/bin/python"
    assert Settings(python="/z").sandbox_key() != Settings().sandbox_key()  # a new interpreter, a new executor
