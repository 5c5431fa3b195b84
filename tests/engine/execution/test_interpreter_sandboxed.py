"""A workspace's own interpreter is untrusted: choosing it (interpreter.select's probe) and parsing
with it (outline's helper) run it in the tests' sandbox, on each isolating level, and the sandbox
of its tests shows only the folders it needs (not what a `.pth` line names). Real attacks: a
`.venv/bin/python3` that is a shell script, a venv whose `.pth` import line writes a host file, a
`.pth` path line naming a folder with a secret. The `limits` level (the explicit opt-in with no
isolation) runs them on the host, as the controls show: the attacks are real."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest
from containment_support import ISOLATING_LEVELS, LIMITS, level_available

from engine.errors import UserError
from engine.execution import interpreter
from engine.execution.executor import Executor, Job
from engine.project import outline

LEVELS = pytest.mark.parametrize("level", ISOLATING_LEVELS)
SECRET_TEXT = "egcfg secret: a project's interpreter must not read this"
MODULE = 'def first(items):\n    """The first item."""\n    return items[0]\n'


def _base_python() -> str:
    """A real CPython to make venvs from: the system's 3.11 where there is one, else egcfg's base."""
    for candidate in ("/usr/bin/python3.11", getattr(sys, "_base_executable", ""), sys.executable):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.skip("no Python to make a venv with")


def _need(level: str) -> None:
    problem = level_available(level)
    if problem:
        pytest.skip(f"{level} is not available here: {problem}")


def _host_folder(tmp_path):
    """A host folder outside the project that anybody may write (so only the sandbox stops a write)."""
    folder = tmp_path / "host"
    folder.mkdir()
    folder.chmod(0o777)
    return folder


def _venv(root, pth: str = "", python: str | None = None):
    """A real venv at root/.venv (no pip: fast) with an optional .pth file; its python3 path."""
    subprocess.run([python or _base_python(), "-m", "venv", "--without-pip", str(root / ".venv")], check=True,
                   capture_output=True, timeout=120)
    (site,) = (root / ".venv" / "lib").glob("python3*/site-packages")
    if pth:
        (site / "zz_attack.pth").write_text(pth)
    return root / ".venv" / "bin" / "python3", site


def _shell_script_venv(root, marker):
    """.venv/bin/python3: a shell script that writes `marker` on the host, then runs a real Python."""
    script = root / ".venv" / "bin" / "python3"
    script.parent.mkdir(parents=True)
    script.write_text(f"#!/bin/sh\nid -u > {marker}\nexec {_base_python()} \"$@\"\n")
    script.chmod(0o755)
    return script


def _select(root, level):
    interpreter._probe.cache_clear()
    return interpreter.select(str(root), sandbox=level)


# --- S1: the probe and the outline helper never run the project's interpreter on the host ------


@LEVELS
def test_a_shell_script_python_writes_nothing_on_the_host(tmp_path, level):
    _need(level)
    root, marker = tmp_path / "project", _host_folder(tmp_path) / "PWNED"
    root.mkdir()
    script = _shell_script_venv(root, marker)
    try:
        chosen = _select(root, level)
    except UserError as error:  # one clear sentence is an acceptable answer too
        assert str(error).count("\n") == 0 and str(script) in str(error)
    else:
        assert chosen.source == ".venv" and chosen.executable == str(script) and chosen.version >= (3, 9)
    assert not marker.exists()
    # the helper that parses with the project's grammar runs it in the sandbox as well
    found = outline.functions(MODULE, str(script), (3, 99), sandbox=level)
    assert [f.name for f in found] == ["first"]
    assert not marker.exists()


def test_without_a_runner_outline_never_runs_the_projects_interpreter(tmp_path, monkeypatch):
    root, marker = tmp_path / "project", _host_folder(tmp_path) / "PWNED"
    root.mkdir()
    script = _shell_script_venv(root, marker)
    monkeypatch.setattr(outline, "_RUNNER", None)
    assert [f.name for f in outline.functions(MODULE, str(script), (3, 99), sandbox="limits")] == ["first"]
    assert not marker.exists()  # egcfg's own grammar answered


def test_control_at_limits_the_shell_script_runs_on_the_host(tmp_path):
    root, marker = tmp_path / "project", _host_folder(tmp_path) / "PWNED"
    root.mkdir()
    _shell_script_venv(root, marker)
    _select(root, "limits")
    assert marker.exists()  # the explicit opt-in keeps today's behaviour: the attack above is real


@LEVELS
def test_a_pth_import_line_runs_only_inside_the_sandbox(tmp_path, level):
    _need(level)
    root, marker = tmp_path / "project", _host_folder(tmp_path) / "PWNED"
    root.mkdir()
    python, _ = _venv(root, f"import os; open({str(marker)!r}, 'w').write(str(os.getuid()))\n")
    chosen = _select(root, level)
    assert chosen.source == ".venv" and chosen.prefix == str(root / ".venv") and not chosen.pytest
    assert not marker.exists()
    assert [f.name for f in outline.functions(MODULE, str(python), (3, 99), sandbox=level)] == ["first"]
    assert not marker.exists()


def test_control_at_limits_the_pth_import_line_runs_on_the_host(tmp_path):
    root, marker = tmp_path / "project", _host_folder(tmp_path) / "PWNED"
    root.mkdir()
    _venv(root, f"import os; open({str(marker)!r}, 'w').write(str(os.getuid()))\n")
    _select(root, "limits")
    assert marker.exists()


def test_auto_is_the_default_and_egcfgs_own_interpreter_is_probed_as_before():
    interpreter._probe.cache_clear()
    mine = interpreter.own()
    assert mine.trusted and mine.is_own and mine.version == tuple(sys.version_info[:3])
    assert sys.prefix in mine.read_only_binds() or any(sys.prefix.startswith(b + "/") for b in mine.read_only_binds())


# --- S2: the tests' sandbox shows what the interpreter needs, not what a .pth line names --------


@LEVELS
def test_a_pth_path_line_does_not_widen_the_tests_sandbox(tmp_path, level):
    _need(level)
    secret_folder = tmp_path / "userhome"
    secret_folder.mkdir()
    (secret_folder / "secret.txt").write_text(SECRET_TEXT)
    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    home = os.path.expanduser("~")
    python, site = _venv(root, f"{secret_folder}\n/\n{home}\n{os.path.dirname(home)}\n{root / 'src'}\n")
    (site / "egcfg_venv_marker.py").write_text("WHERE = 'venv'\n")
    chosen = _select(root, level)
    binds = chosen.read_only_binds()
    shown = lambda path: any(path == b or path.startswith(b.rstrip("/") + "/") for b in binds)  # noqa: E731
    assert not shown(str(secret_folder)) and "/" not in binds and home not in binds
    assert not any(home.startswith(b.rstrip("/") + "/") for b in binds)
    assert shown(str(root / ".venv")) and shown(os.path.realpath(str(site)))
    assert shown(str(root / "src"))  # a .pth line into the workspace (an editable install) is kept
    program = (f"import sys, egcfg_venv_marker\ndef f():\n    return open({str(secret_folder / 'secret.txt')!r}).read()\n"
               "def where():\n    return egcfg_venv_marker.WHERE, sys.prefix\n")
    with Executor(workers=1, limits=LIMITS, isolation=level, project_root=str(root), python=chosen) as ex:
        result = ex.run(Job(program, ("assert f() == 0", f"assert where() == ('venv', {str(root / '.venv')!r})"),
                            trace=False))
    secret, control = result.tests
    assert control.outcome == "pass", control.message
    assert secret.outcome == "error" and SECRET_TEXT not in secret.message + secret.output
    assert "FileNotFoundError" in secret.message or "PermissionError" in secret.message


def test_probe_paths_outside_the_interpreters_folders_are_not_believed(tmp_path):
    """What the probe reports is the interpreter's word: a prefix it claims outside the folders
    found on the host for it is not shown either."""
    secret_folder = tmp_path / "elsewhere"
    secret_folder.mkdir()
    fake = interpreter.Interpreter(executable=str(tmp_path / "bin" / "python3"), version=(3, 11, 0),
                                   prefix=str(secret_folder), base_prefix="/", paths=(str(secret_folder), "/"),
                                   site=(os.path.expanduser("~"),), pytest="", source=".venv", stdlib="/usr/lib/python3.11",
                                   view=(str(tmp_path / "bin"),), root="")
    (tmp_path / "bin").mkdir()
    assert [b for b in fake.read_only_binds() if not b.startswith("/usr/")] == [str(tmp_path / "bin")]


# --- the normal case ----------------------------------------------------------------------------


def _venv_with_pytest(root):
    """A real venv whose site-packages holds egcfg's own pytest (copied: no network, no pip)."""
    python, site = _venv(root)
    import pytest as own_pytest

    source = os.path.dirname(os.path.dirname(own_pytest.__file__))
    wanted = ("pytest", "_pytest", "pluggy", "iniconfig", "packaging", "pygments", "py")
    for entry in os.listdir(source):
        name = entry.split("-")[0].removesuffix(".py").lower()
        if name in wanted and (entry in wanted or entry == name + ".py" or entry.endswith(".dist-info")):
            copy = shutil.copytree if os.path.isdir(os.path.join(source, entry)) else shutil.copy2
            copy(os.path.join(source, entry), site / entry)
    return python, own_pytest.__version__


@pytest.mark.parametrize("level", [*ISOLATING_LEVELS, "limits"])
def test_a_normal_venv_is_probed_with_its_version_and_pytest(tmp_path, level):
    if level != "limits":
        _need(level)
    root = tmp_path / "project"
    root.mkdir()
    python, pytest_version = _venv_with_pytest(root)
    base_version = subprocess.run([_base_python(), "-c", "import sys; print(*sys.version_info[:3])"],
                                  capture_output=True, text=True, check=True).stdout.split()
    started = time.monotonic()
    chosen = _select(root, level)
    seconds = time.monotonic() - started
    assert chosen.version == tuple(int(v) for v in base_version)
    assert chosen.pytest == pytest_version and chosen.source == ".venv" and chosen.executable == str(python)
    assert chosen.prefix == str(root / ".venv") and not chosen.trusted
    assert seconds < 10, f"the probe took {seconds:.1f} s"
    # the sandboxed helper imports pytest too (the view holds all it needs)
    done = interpreter.run_confined([str(python), "-I", "-c", "import pytest, sys; print(pytest.__version__, sys.prefix)"],
                                    view=interpreter.launch_view(str(python)), sandbox=level)
    assert done.stdout.decode().split() == [pytest_version, str(root / ".venv")], done.stderr.decode()[-300:]


@LEVELS
def test_the_sandboxed_run_has_no_network_no_writes_and_a_time_limit(tmp_path, level):
    _need(level)
    host = _host_folder(tmp_path)
    python = _base_python()
    probe = textwrap.dedent(f"""
        import os, socket
        found = []
        try:
            open({str(host / 'w')!r}, 'w').write('x'); found.append('wrote host')
        except OSError:
            pass
        try:
            socket.create_connection(('127.0.0.1', 9), timeout=1); found.append('connected')
        except OSError as error:
            pass
        print(found)
    """)
    done = interpreter.run_confined([python, "-I", "-c", probe], view=interpreter.launch_view(python), sandbox=level)
    assert done.stdout.decode().strip() == "[]" and done.level == level, (done.stdout, done.stderr.decode()[-300:])
    assert not (host / "w").exists()
    started = time.monotonic()
    slow = interpreter.run_confined([python, "-I", "-c", "import time; time.sleep(30)"],
                                    view=interpreter.launch_view(python), sandbox=level, timeout=1)
    assert slow.timed_out and time.monotonic() - started < 8


def test_the_executors_landlock_worker_runs_no_pth_line_on_the_host(tmp_path):
    """The worker starts under egcfg's launcher, confined before the project's interpreter runs a line."""
    _need("landlock")
    root, marker = tmp_path / "project", _host_folder(tmp_path) / "PWNED"
    root.mkdir()
    _venv(root, f"import os; open({str(marker)!r}, 'w').write(str(os.getuid()))\n")
    chosen = _select(root, "landlock")
    with Executor(workers=1, limits=LIMITS, isolation="landlock", project_root=str(root), python=chosen) as ex:
        assert ex.run(Job("def f():\n    return 1\n", ("assert f() == 1",), trace=False)).all_passed
    assert not marker.exists()


@LEVELS
def test_an_editable_sibling_is_hidden_named_and_shown_once_the_user_lists_it(tmp_path, level):
    """`pip install -e ../lib` puts a folder outside the workspace on the import path: the sandbox
    does not show it (it could be any folder), hidden_paths names it for the server to say so, and
    the readFolders setting (readonly_binds) shows it."""
    _need(level)
    lib = tmp_path / "lib"
    (lib / "sibling").mkdir(parents=True)
    (lib / "sibling" / "__init__.py").write_text("VALUE = 7\n")
    root = tmp_path / "app"
    root.mkdir()
    _venv(root, f"{lib}\n")
    chosen = _select(root, level)
    assert chosen.hidden_paths() == (str(lib.resolve()),) and chosen.hidden_paths([str(lib)]) == ()
    program, test = "import sibling\ndef f():\n    return sibling.VALUE\n", ("assert f() == 7",)
    with Executor(workers=1, limits=LIMITS, isolation=level, project_root=str(root), python=chosen) as ex:
        assert ex.run(Job(program, test, trace=False)).tests[0].outcome == "error"
    with Executor(workers=1, limits=LIMITS, isolation=level, project_root=str(root), python=chosen,
                  readonly_binds=[str(lib)]) as ex:
        assert ex.run(Job(program, test, trace=False)).all_passed
