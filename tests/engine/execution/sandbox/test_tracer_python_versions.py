"""The tracer's modules on every CPython from 3.9 to 3.13: the sandbox may run the user's own
interpreter, so they must parse as 3.9 code, and the tracer must load the way the sandbox worker
loads it (its folder as a private package) and trace on each interpreter pyenv has here."""

from __future__ import annotations

import ast
import json
import os
import subprocess
from pathlib import Path

import pytest

SANDBOX_DIR = Path(__file__).resolve().parents[4] / "engine" / "execution" / "sandbox"
TRACER_MODULES = ["__init__.py", "tracer.py", "recorder.py", "reprs.py", "fingerprints.py", "settrace_backend.py",
                  "monitoring_backend.py"]
PYENV = Path(os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))) / "versions"
VERSIONS = ["3.9", "3.10", "3.11", "3.12", "3.13"]


def _interpreter(version: str) -> Path | None:
    """pyenv's newest X.Y.Z for version X.Y, or None."""
    if not PYENV.is_dir():
        return None
    found = sorted((p for p in PYENV.glob(f"{version}.*") if p.name.count(".") == 2 and (p / "bin" / "python").exists()),
                   key=lambda p: int(p.name.split(".")[2]))
    return found[-1] / "bin" / "python" if found else None


@pytest.mark.parametrize("name", TRACER_MODULES)
def test_each_module_is_python_3_9_code(name):
    source = (SANDBOX_DIR / name).read_text(encoding="utf-8")
    ast.parse(source, filename=name, feature_version=(3, 9))  # no match, no 3.10+ syntax
    if name != "__init__.py":
        assert source.lstrip().startswith('"""'), f"{name} opens with a docstring saying what it holds"
        assert "from __future__ import annotations" in source, name  # X | None annotations on 3.9
        assert "import engine" not in source and "from engine" not in source, name  # relative imports only


# Run the way the sandbox worker does it: the folder as a package of its own, then its tracer.
SCRIPT = """
import importlib, importlib.util, json, os, sys
folder = sys.argv[1]
spec = importlib.util.spec_from_file_location("_egcfg_sandbox", os.path.join(folder, "__init__.py"),
                                              submodule_search_locations=[folder])
package = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = package
spec.loader.exec_module(package)
tracer = importlib.import_module("_egcfg_sandbox.tracer")
g = {}
with tracer.Tracer({"<program>": "program", "<test>": "test"}) as t:
    exec(compile("def total(xs):\\n    s = 0\\n    for x in xs: s += x\\n    return s\\n", "<program>", "exec"), g)
    value = eval(compile("total([1, 2, 3, 4, 5])", "<test>", "eval"), g)
print(json.dumps({"value": value, "backend": type(t._backend).__name__, "trace": t.result(),
                  "engine_imported": any(name == "engine" or name.startswith("engine.") for name in sys.modules)}))
"""


@pytest.mark.parametrize("version", VERSIONS)
def test_tracer_loads_and_traces_like_the_sandbox_does(version):
    python = _interpreter(version)
    if python is None:
        pytest.skip(f"no Python {version} under {PYENV}")
    done = subprocess.run([str(python), "-I", "-c", SCRIPT, str(SANDBOX_DIR)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["value"] == 15
    assert not data["engine_imported"]
    minor = int(version.split(".")[1])
    assert data["backend"] == ("MonitoringBackend" if minor >= 12 else "SettraceBackend")
    events = [(e["kind"], e["line"], e.get("count"), e.get("values")) for e in data["trace"]["events"]
              if e["func"] == "total"]
    # loop compression: three iterations of the one-line loop, a skip for the fourth, the last one,
    # then the loop's exhausted check (the same events on every interpreter and back end)
    assert events == [
        ("call", 1, None, [["xs", "[1, 2, 3, 4, 5]", "list"]]),
        ("line", 2, None, [["s", "0", "int"]]),
        ("line", 3, None, [["s", "1", "int"], ["x", "1", "int"]]),
        ("line", 3, None, [["s", "3", "int"], ["x", "2", "int"]]),
        ("line", 3, None, [["s", "6", "int"], ["x", "3", "int"]]),
        ("skip", 3, 1, None),
        ("line", 3, None, [["s", "15", "int"], ["x", "5", "int"]]),
        ("line", 3, None, None),
        ("line", 4, None, None),
        ("return", 4, None, [["return", "15", "int"]]),
    ]
