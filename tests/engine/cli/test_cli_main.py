"""The `egcfg` command's wiring: built-in commands, `serve` found through the entry-point group
(the engine never names the language server), and a broken command that leaves the others working."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

from engine.cli import main as cli


def subcommands(parser) -> set[str]:
    action = next(a for a in parser._actions if a.dest == "command")
    return set(action.choices)


def test_serve_comes_from_the_entry_point_group():
    commands = subcommands(cli.build_parser())
    assert {"trace", "complete", "doctor", "bench", "dev", "serve"} <= commands
    assert ("serve",) in [path for path, _, _ in cli.plugin_commands()]


def test_a_plugin_whose_package_is_gone_is_left_out(monkeypatch):
    import importlib.metadata

    points = [SimpleNamespace(name="ghost", value="no_such_package_egcfg.cli")]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: points if group == cli.PLUGIN_GROUP else [])
    assert cli.plugin_commands() == []
    assert "ghost" not in subcommands(cli.build_parser())


def test_a_broken_command_says_so_and_the_others_still_run(monkeypatch, capsys):
    monkeypatch.setattr(cli, "COMMANDS", cli.COMMANDS + [(("broken",), "engine.no_such_module", "a broken one")])
    assert cli.main(["broken"]) == 2
    assert "this command cannot start (engine.no_such_module: ModuleNotFoundError" in capsys.readouterr().err
    assert "trace" in subcommands(cli.build_parser())


def test_python_dash_m_engine_cli_is_the_egcfg_command():
    done = subprocess.run([sys.executable, "-m", "engine.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert "serve" in done.stdout and "trace" in done.stdout
