"""Which Python runs the project's tests, and what the sandbox must show of it.

egcfg itself (torch, the model) stays in its own environment; the tests run with the project's
interpreter and packages, chosen in this order: the editor's selected interpreter or a `python`
setting / `--python` flag (both arrive here as `python`), a `.venv` or `venv` at the workspace
root, else the interpreter running egcfg. The choice is probed once (a short stdlib script run in
that interpreter) and cached per executable and modification time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache

from engine.errors import UserError

OLDEST = (3, 9)
PROBE_SECONDS = 20.0
# Run inside the chosen interpreter (any CPython 3.9+): where it lives and what it can import.
_PROBE = r"""
import json, os, sys, sysconfig
try:
    import site
    site_dirs = list(site.getsitepackages())
except Exception:
    site_dirs = []
paths = [p for p in sys.path if p and os.path.isdir(p)]
try:
    from importlib import metadata
    pytest_version = metadata.version("pytest")
except Exception:
    pytest_version = ""
print(json.dumps({"version": list(sys.version_info[:3]), "implementation": sys.implementation.name,
                  "prefix": sys.prefix, "base_prefix": getattr(sys, "base_prefix", sys.prefix),
                  "exec_prefix": sys.exec_prefix, "executable": sys.executable,
                  "stdlib": sysconfig.get_paths().get("stdlib", ""), "site": site_dirs, "paths": paths,
                  "pytest": pytest_version}))
"""


@dataclass(frozen=True)
class Interpreter:
    executable: str                  # the path to run (a venv's bin/python, not the file it links to)
    version: tuple[int, ...]         # (3, 12, 1)
    prefix: str
    base_prefix: str
    paths: tuple[str, ...]           # its sys.path folders (stdlib, site-packages, .pth additions)
    site: tuple[str, ...]            # its site-packages folders
    pytest: str                      # the pytest version it can import, "" when none
    source: str                      # why it was chosen: "setting" | ".venv" | "venv" | "egcfg"

    @property
    def version_text(self) -> str:
        return ".".join(str(part) for part in self.version)

    @property
    def is_own(self) -> bool:
        """Whether this is the interpreter running egcfg (then nothing more needs mounting)."""
        return os.path.realpath(self.executable) == os.path.realpath(sys.executable) and self.prefix == sys.prefix

    def describe(self) -> str:
        why = {"setting": "the python setting", ".venv": "the workspace's .venv", "venv": "the workspace's venv",
               "egcfg": "egcfg's own; no project interpreter found"}.get(self.source, self.source)
        tests = f"pytest {self.pytest}" if self.pytest else "no pytest"
        return f"Python {self.version_text} at {self.executable} ({why}; {tests})"

    def read_only_binds(self) -> list[str]:
        """Folders the sandbox must show, read-only, for this interpreter to start and import its
        packages: its prefixes, the folder of the file its executable links to, and sys.path."""
        wanted = [self.prefix, self.base_prefix, os.path.dirname(os.path.abspath(self.executable)),
                  os.path.dirname(os.path.realpath(self.executable)), *self.site, *self.paths]
        kept: list[str] = []
        for path in sorted({os.path.realpath(p) for p in wanted if p and os.path.exists(p)}, key=len):
            if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
                kept.append(path)
        return kept

    def to_dict(self) -> dict:
        return {"executable": self.executable, "version": self.version_text, "source": self.source,
                "prefix": self.prefix, "pytest": self.pytest, "description": self.describe()}


def workspace_venv(workspace_root: str | None) -> tuple[str, str] | None:
    """(python path, ".venv"|"venv") of a virtual environment at the workspace root, if any."""
    if not workspace_root:
        return None
    for name in (".venv", "venv"):
        for binary in ("bin/python3", "bin/python", "Scripts/python.exe"):
            candidate = os.path.join(workspace_root, name, binary)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate, name
    return None


def select(workspace_root: str | None = None, python: str = "") -> Interpreter:
    """The interpreter the project's tests run with (see the module's docstring for the order).
    Raises UserError, one sentence, when a named interpreter cannot be used."""
    python = (python or "").strip()
    if python:
        path = os.path.expanduser(python)
        if not os.path.isabs(path) and workspace_root and os.sep in path:
            path = os.path.join(workspace_root, path)
        if os.path.isdir(path):  # a venv folder given instead of its python
            found = workspace_venv(os.path.dirname(path.rstrip("/"))) if os.path.basename(path.rstrip("/")) in (".venv", "venv") else None
            path = found[0] if found else os.path.join(path, "bin", "python")
        if not os.path.isabs(path):
            import shutil

            path = shutil.which(path) or path
        return probe(os.path.abspath(path), "setting")
    venv = workspace_venv(workspace_root)
    if venv is not None:
        return probe(os.path.abspath(venv[0]), venv[1])
    return probe(sys.executable, "egcfg")


def probe(executable: str, source: str) -> Interpreter:
    try:
        stamp = os.stat(executable).st_mtime_ns
    except OSError:
        raise UserError(f"the Python interpreter {executable} does not exist") from None
    return _probe(executable, stamp, source)


@lru_cache(maxsize=32)
def _probe(executable: str, stamp: int, source: str) -> Interpreter:
    if not os.access(executable, os.X_OK):
        raise UserError(f"the Python interpreter {executable} is not executable")
    try:
        done = subprocess.run([executable, "-I", "-c", _PROBE], capture_output=True, text=True,
                              timeout=PROBE_SECONDS, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"})
    except (OSError, subprocess.TimeoutExpired) as error:
        raise UserError(f"the Python interpreter {executable} could not be run: {error}") from None
    try:
        info = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        detail = (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
        raise UserError(f"{executable} is not a Python 3.9+ interpreter egcfg can use ({detail})") from None
    version = tuple(int(v) for v in info["version"])
    if info.get("implementation") != "cpython" or version[:2] < OLDEST:
        raise UserError(f"{executable} is {info.get('implementation')} {'.'.join(map(str, version))}: "
                        f"tests need CPython {OLDEST[0]}.{OLDEST[1]} or newer")
    return Interpreter(executable=executable, version=version, prefix=info["prefix"], base_prefix=info["base_prefix"],
                       paths=tuple(info.get("paths") or ()), site=tuple(info.get("site") or ()),
                       pytest=str(info.get("pytest") or ""), source=source)


def own() -> Interpreter:
    """The interpreter running egcfg, probed like any other."""
    return probe(sys.executable, "egcfg")
