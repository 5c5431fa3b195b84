"""Where a module sits in its project, the way pytest sees it: its import name, the folder its
package is imported from (a `src/` layout included), the rootdir and the test files to run.

pytest itself reads the configuration inside the sandbox (`[tool.pytest.ini_options]`, pytest.ini,
tox.ini, setup.cfg: pythonpath, testpaths, import mode, addopts); this module only decides what to
hand it: the working folder (the folder of the nearest configuration file, else the workspace
root) and the files to collect.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

CONFIG_FILES = ("pytest.ini", ".pytest.ini", "pyproject.toml", "tox.ini", "setup.cfg")


@dataclass(frozen=True)
class ModuleLayout:
    path: str                 # the module's file (it may not exist yet: an unsaved buffer)
    name: str                 # dotted import name: "toolz.functoolz", "humanize.number", "mathy"
    is_package: bool          # an __init__.py (its name is the package's)
    import_root: str          # the folder on sys.path from which `name` imports
    rootdir: str              # where pytest starts (its working folder)
    sys_path: tuple[str, ...] = field(default=())  # folders put first on sys.path inside the sandbox

    def to_dict(self) -> dict:
        return {"path": self.path, "name": self.name, "is_package": self.is_package,
                "import_root": self.import_root, "rootdir": self.rootdir, "sys_path": list(self.sys_path)}


def import_root(module_path: str) -> str:
    """The first folder up from the module without an __init__.py (pytest's "prepend" basedir)."""
    folder = Path(module_path).resolve().parent
    while (folder / "__init__.py").is_file() and folder != folder.parent:
        folder = folder.parent
    return str(folder)


def module_name(module_path: str) -> tuple[str, bool]:
    """(dotted name, is_package) as pytest's prepend import mode would import the file."""
    path = Path(module_path).resolve()
    root = Path(import_root(str(path)))
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    return ".".join(parts) or path.stem, is_package


def _has_pytest_config(path: Path) -> bool:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    if path.name in ("pytest.ini", ".pytest.ini"):
        return True
    if path.name == "pyproject.toml":
        return "[tool.pytest" in text
    if path.name == "tox.ini":
        return "[pytest]" in text
    return "[tool:pytest]" in text  # setup.cfg


def find_rootdir(start: str, workspace_root: str | None) -> str:
    """The folder of the nearest pytest configuration at or above `start` (not above the workspace
    root), else the workspace root, else `start`."""
    folder = Path(start).resolve()
    top = Path(workspace_root).resolve() if workspace_root else None
    while True:
        if any(_has_pytest_config(folder / name) for name in CONFIG_FILES):
            return str(folder)
        if folder == top or folder == folder.parent:
            break
        folder = folder.parent
    return str(top) if top is not None else str(Path(start).resolve())


def module_layout(module_path: str, workspace_root: str | None) -> ModuleLayout:
    path = str(Path(module_path).resolve())
    name, is_package = module_name(path)
    base = import_root(path)
    rootdir = find_rootdir(os.path.dirname(path), workspace_root)
    sys_path = [base] + ([rootdir] if rootdir != base else [])
    return ModuleLayout(path, name, is_package, base, rootdir, tuple(sys_path))
