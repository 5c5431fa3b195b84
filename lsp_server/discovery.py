"""Finding the tests of the function at the cursor: which files to read, and reading them.

Where tests come from, in order: the function's own doctests; test files found by name next to
the module or under a `tests/` folder in any folder up to the workspace root (`test_<module>.py`,
`<module>_test.py`; a package's `__init__.py` goes by the package's name, and also beside its
folder); test files in those tests/ folders that import the module; files named by a `# egcfg: tests=PATH` comment in the module; files matching
the configured glob patterns. Turning a file's text into test cases is engine.project.testfile's job.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Callable, Iterable

from engine.errors import UserError
from engine.project.testfile import TestSuite, doctest_cases, module_names, tests_in_file

Reader = Callable[[str], "str | None"]  # path -> text (the open document's, or the file's), None if unreadable

MAX_TEST_FILES = 40          # candidate files read per function
MAX_SCANNED = 400            # test files whose imports are read when looking for the module's importers
IMPORT_LINE = re.compile(r"^[ \t]*(?:from[ \t]+(?P<source>[\w.]+)[ \t]+import[ \t]+(?P<names>\([^)]*\)|[^\n#;]+)"
                         r"|import[ \t]+(?P<modules>[^\n#;]+))", re.MULTILINE)
MAX_SEARCH_DEPTH = 4         # folders below a tests/ folder searched for test files
SKIP_DIRS = {".git", ".hg", ".venv", "venv", "node_modules", "__pycache__", ".tox", ".mypy_cache", "build", "dist"}
TESTS_COMMENT = re.compile(r"#\s*egcfg:\s*tests\s*=\s*(?P<paths>\S[^\n]*)")


# ------------------------------------------------------------------------------------------------
# Where the tests are

def import_root(module_path: str) -> str:
    """The folder from which the module's package is importable (the first without __init__.py)."""
    folder = Path(module_path).parent
    while (folder / "__init__.py").is_file() and folder != folder.parent:
        folder = folder.parent
    return str(folder)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def _walk_tests_folder(folder: Path, wanted: Callable[[str], bool], depth: int = 0) -> Iterable[Path]:
    """Files below a tests folder (MAX_SEARCH_DEPTH deep) whose names are `wanted`, in order."""
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return
    for entry in entries:
        if entry.is_file() and wanted(entry.name):
            yield entry
        elif entry.is_dir() and depth < MAX_SEARCH_DEPTH and entry.name not in SKIP_DIRS and not entry.name.startswith("."):
            yield from _walk_tests_folder(entry, wanted, depth + 1)


def _tests_folders(folder: Path, root: Path) -> list[Path]:
    """The tests/ and test/ folders from the module's folder up to the workspace root, nearest first."""
    found = []
    while True:
        found += [folder / name for name in ("tests", "test") if (folder / name).is_dir()]
        if folder == root or folder == folder.parent or not _inside(folder, root):
            return found
        folder = folder.parent


def _importers(module_path: str, root: Path, folders: list[Path]) -> list[Path]:
    """Test files in those folders that import the module (`import pkg.mod`, `from pkg.mod import
    x`, `from pkg import mod`): a project's tests are often named after what they test, not after
    the file (tabulate's test/test_output.py)."""
    wanted = module_names(module_path, str(root))
    if not wanted:
        return []
    pattern = re.compile(r"(test_.*|.*_test)\.py")
    files = (path for folder in folders for path in _walk_tests_folder(folder, pattern.fullmatch))
    package = Path(module_path).parent if Path(module_path).stem == "__init__" else None
    return [path for path in itertools.islice(files, MAX_SCANNED) if _imports(_imported(path), wanted, package)]


def _imports(names: frozenset[str], wanted: list[str], package: Path | None) -> bool:
    """Whether a file with these imported names (imported_names) imports the module."""
    for name in wanted:
        if name in names:  # import pkg.mod, from pkg import mod, import pkg (a package)
            return True
        if f"from:{name}" in names:
            if package is None:
                return True  # from pkg.mod import x
            # from pkg import x: the package's own x, unless x is a submodule (pkg/x.py, pkg/x/)
            taken = [n[len(name) + 1:] for n in names if n.startswith(name + ".") and "." not in n[len(name) + 1:]]
            if any(not (package / f"{x}.py").exists() and not (package / x).is_dir() for x in taken):
                return True
    return False


_IMPORTED: dict[tuple[str, int, int], frozenset[str]] = {}


def _imported(path: Path) -> frozenset[str]:
    """The names a file imports (imported_names), remembered per version of the file."""
    try:
        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        if key not in _IMPORTED:
            with open(path, encoding="utf-8", errors="replace") as handle:
                _IMPORTED[key] = imported_names(handle.read(1 << 16))
            if len(_IMPORTED) > 4 * MAX_SCANNED:
                _IMPORTED.pop(next(iter(_IMPORTED)))
        return _IMPORTED[key]
    except OSError:
        return frozenset()


def imported_names(text: str) -> frozenset[str]:
    """`import a.b` -> a.b; `from a import b` -> "from:a" and a.b."""
    names = set()
    for match in IMPORT_LINE.finditer(text):
        if match["source"]:
            source = match["source"].lstrip(".")
            if source:
                names.add(f"from:{source}")
                for part in match["names"].strip("()").split(","):
                    name = part.split(" as ")[0].strip()
                    if name and name != "*":
                        names.add(f"{source}.{name}")
        else:
            names.update(part.split(" as ")[0].strip() for part in match["modules"].split(","))
    return frozenset(n for n in names if n)


def candidate_test_files(module_path: str, module_text: str, workspace_root: str | None,
                         patterns: Iterable[str] = ()) -> list[str]:
    """Test files for the module, nearest first, without duplicates (only files that exist)."""
    module = Path(module_path)
    package = module.stem == "__init__"   # a package's tests are named after the package
    stem = module.parent.name if package else module.stem
    names = {f"test_{stem}.py", f"{stem}_test.py"}
    root = Path(workspace_root) if workspace_root else module.parent
    found: list[Path] = []
    for text in TESTS_COMMENT.finditer(module_text):
        for entry in re.split(r"[,\s]+", text.group("paths").strip()):
            if entry:
                found.extend(_resolve_named(entry, module.parent, root))
    found += [module.parent / n for n in sorted(names)]
    if package:  # beside the package folder: inflection/__init__.py and test_inflection.py
        found += [module.parent.parent / n for n in sorted(names)]
    folders = _tests_folders(module.parent, root)
    for tests_dir in folders:
        found.extend(_walk_tests_folder(tests_dir, names.__contains__))
    found += _importers(module_path, root, folders)
    for pattern in patterns:
        found.extend(sorted(p for p in root.glob(pattern) if p.suffix == ".py"))
    unique: list[str] = []
    for path in found:
        if path.is_file() and path.resolve() != module.resolve() and str(path) not in unique:
            unique.append(str(path))
    return unique[:MAX_TEST_FILES]


def _resolve_named(entry: str, module_dir: Path, root: Path) -> list[Path]:
    """A `# egcfg: tests=PATH` entry: relative to the module's folder, else to the workspace root; globs allowed."""
    for base in (module_dir, root):
        if any(c in entry for c in "*?["):
            matches = sorted(base.glob(entry))
            if matches:
                return matches
        elif (base / entry).is_file():
            return [base / entry]
    return [module_dir / entry]  # missing: reported by the caller when it cannot be read


# ------------------------------------------------------------------------------------------------
# Everything for one function

def discover_tests(function: str, module_path: str | None, module_text: str, workspace_root: str | None,
                   docstring: str | None = None, docstring_line: int = 1, patterns: Iterable[str] = (),
                   read: Reader | None = None) -> TestSuite:
    """Every test case for `function` (doctests first, then test files nearest first)."""
    read = read or read_file
    suite = TestSuite(function)
    if docstring:
        cases, skipped = doctest_cases(docstring, module_path or "<module>", docstring_line, function)
        suite.cases += cases
        suite.skipped += skipped
    if not module_path:
        return suite
    modules = module_names(module_path, workspace_root)
    root = import_root(module_path)
    if workspace_root and Path(root).resolve() != Path(workspace_root).resolve():
        suite.setup = f"import sys as _egcfg_sys\n_egcfg_sys.path.insert(0, {root!r})"
    named = _named_paths(module_text, module_path, workspace_root)
    for path in candidate_test_files(module_path, module_text, workspace_root, patterns):
        text = read(path)
        if text is None:
            suite.problems.append(f"cannot read the test file {path}")
            continue
        suite.files.append(path)  # watched even when broken: fixing it must re-run the tests
        try:
            suite.include(tests_in_file(text, path, function, modules))
        except UserError as error:
            suite.problems.append(str(error))
    for missing in named:
        suite.problems.append(f"the test file {missing} named in '# egcfg: tests=' does not exist")
    return suite


def _named_paths(module_text: str, module_path: str, workspace_root: str | None) -> list[str]:
    """Entries of `# egcfg: tests=` comments that name no existing file (globs are not checked)."""
    bases = [Path(module_path).parent] + ([Path(workspace_root)] if workspace_root else [])
    out = []
    for match in TESTS_COMMENT.finditer(module_text):
        for entry in re.split(r"[,\s]+", match.group("paths").strip()):
            if entry and not any(c in entry for c in "*?[") and not any((b / entry).exists() for b in bases):
                out.append(entry)
    return out


def read_file(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
