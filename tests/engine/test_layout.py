"""The engine's layout holds: rooms by responsibility, imports one way, modules of a readable size.

Read from the source with `ast` (nothing is imported), so a forbidden import fails here even when
it sits in a function that no other test calls."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENGINE = REPO / "engine"
SANDBOX = ENGINE / "execution" / "sandbox"
MAX_LINES = 800
# Inside the sandbox: the standard library, and the user's own pytest (loaded as their tests load it).
SANDBOX_MAY_LOAD = {"__future__", "pytest", "_pytest"}

# Each room and the rooms it may import (besides itself). Lower rooms never import higher ones.
ALLOWED = {
    "errors": set(),
    "project": {"errors"},
    "execution": {"errors", "project"},
    "generation": {"errors", "project", "execution"},
    "bench": {"errors", "project", "execution", "generation"},
    "cli": {"errors", "project", "execution", "generation", "bench"},
    "__init__": set(),
}


def engine_modules() -> list[Path]:
    return sorted(p for p in ENGINE.rglob("*.py") if "__pycache__" not in p.parts)


def room_of(path: Path) -> str:
    parts = path.relative_to(ENGINE).parts
    return parts[0][:-3] if len(parts) == 1 else parts[0]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path) -> list[tuple[int, str]]:
    """Absolute names of everything the module imports, relative imports resolved, plus the
    string arguments of importlib.import_module / __import__ (the CLI wires commands that way)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.append((node.lineno, prefix))
            found += [(node.lineno, f"{prefix}.{alias.name}") for alias in node.names if alias.name != "*"]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return found


def strings_naming(path: Path, word: str) -> list[int]:
    tree = ast.parse(path.read_text())
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith(word)]


def test_the_engine_has_rooms_and_almost_nothing_at_its_top():
    rooms = [p for p in ENGINE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()]
    top_modules = [p.name for p in ENGINE.glob("*.py")]
    assert len(rooms) >= 4, rooms
    assert len(top_modules) <= 3, top_modules
    assert set(top_modules) <= {"__init__.py", "errors.py"}, top_modules
    assert {room_of(p) for p in engine_modules()} <= set(ALLOWED), "a room without import rules"


def test_each_room_says_what_lives_there_and_what_it_may_import():
    for init in [*ENGINE.glob("*/__init__.py"), SANDBOX / "__init__.py"]:
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert doc, f"{init.relative_to(REPO)} has no opening docstring"
        assert "import" in doc.lower(), f"{init.relative_to(REPO)} does not say what it may import"


@pytest.mark.parametrize("path", engine_modules(), ids=lambda p: str(p.relative_to(ENGINE)))
def test_imports_go_one_way(path):
    room = room_of(path)
    bad = []
    for line, name in imported_names(path):
        if name == "lsp_server" or name.startswith("lsp_server."):
            bad.append(f"line {line}: {name} (the engine knows nothing of the language server)")
        if not name.startswith("engine."):
            continue
        target = name.split(".")[1]
        if target == "__version__":
            target = "__init__"
        if target != room and target not in ALLOWED[room]:
            bad.append(f"line {line}: {room} imports {name}")
    assert not bad, f"{path.relative_to(REPO)}: " + "; ".join(bad)


def test_no_engine_code_names_the_language_server():
    for path in engine_modules():
        assert not strings_naming(path, "lsp_server"), f"{path.relative_to(REPO)} names lsp_server"


@pytest.mark.parametrize("path", sorted(SANDBOX.glob("*.py")), ids=lambda p: p.name)
def test_sandbox_code_uses_only_the_standard_library_the_users_pytest_and_its_own_folder(path):
    tree = ast.parse(path.read_text())
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            if node.level > 1:
                bad.append(f"line {node.lineno}: reaches above the sandbox folder")
            continue
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        for name in names:
            top = name.split(".")[0]
            if top not in sys.stdlib_module_names and top not in SANDBOX_MAY_LOAD:
                bad.append(f"line {node.lineno}: imports {name}")
    assert not bad, f"{path.name}: " + "; ".join(bad)


def test_sandbox_modules_are_not_engine_imports():
    """Inside the sandbox only this folder is loaded (as `_egcfg_sandbox`): absolute engine imports
    would fail there, or worse, pull the host's engine into the candidate's process."""
    for path in SANDBOX.glob("*.py"):
        names = [name for _, name in imported_names(path)]
        assert not [n for n in names if n == "engine" or n.startswith("engine.") and not n.startswith(
            "engine.execution.sandbox")], path.name


@pytest.mark.parametrize("path", [*engine_modules(), *sorted((REPO / "lsp_server").rglob("*.py"))],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_is_too_long_to_read(path):
    lines = path.read_text().splitlines()
    if len(lines) <= MAX_LINES:
        return
    head = "\n".join(lines[:5]).lower()
    assert "one file" in head, (f"{path.relative_to(REPO)} has {len(lines)} lines (limit {MAX_LINES}) and its first "
                                "lines do not say why it must be one file")


def test_the_layout_checker_catches_a_wrong_way_import(tmp_path, monkeypatch):
    """The checker itself: an execution module importing generation is reported."""
    fake = tmp_path / "engine" / "execution" / "bad.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("from engine.generation import decode\nfrom . import verdict\n")
    monkeypatch.setattr(sys.modules[__name__], "ENGINE", tmp_path / "engine")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    with pytest.raises(AssertionError, match="execution imports engine.generation"):
        test_imports_go_one_way(fake)


@pytest.mark.parametrize("path", sorted(SANDBOX.glob("*.py")), ids=lambda p: p.name)
def test_sandbox_code_parses_as_python_3_9(path):
    """The sandbox runs under the project's own interpreter, 3.9 to 3.13: no newer grammar there."""
    ast.parse(path.read_text(), filename=str(path), feature_version=(3, 9))
