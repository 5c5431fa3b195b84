"""Which tests can change outcome after an edit: a conservative call graph of one module.

The module is cut into its top-level statements ("units"): each def or class is a named unit, and
everything else (imports, constants, `if` blocks) is glue that every test depends on. A unit
depends on the units whose names it mentions (as a name or an attribute, so `self.helper()` and
`mod.helper()` count), transitively. A function's tests then depend on its own unit, the units its
tests mention, all of their dependencies and the glue. The fingerprint of that set (by source text,
not by position) keys the cached results: an edit that changes none of those texts keeps them.

Conservative when unsure: a unit that reaches names dynamically (`globals()`, `getattr`, `eval`, ...)
depends on every unit.
"""

from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass, field
from typing import Iterable

DYNAMIC = {"globals", "locals", "vars", "getattr", "eval", "exec", "__import__", "import_module", "modules",
           "__dict__", "setattr", "delattr"}


@dataclass
class Unit:
    name: str               # the def/class name; "" for glue
    start: int              # 0-based first line (decorators included)
    end: int                # 0-based last line
    source: str             # its text
    mentions: set[str] = field(default_factory=set)
    dynamic: bool = False


@dataclass
class ModuleGraph:
    units: list[Unit]
    glue_digest: str                                   # the text of every glue statement
    by_name: dict[str, list[int]]                      # top-level name -> unit indexes

    def unit_at(self, line: int) -> Unit | None:
        for unit in self.units:
            if unit.start <= line <= unit.end:
                return unit
        return None

    def closure(self, names: Iterable[str]) -> set[int]:
        """Indexes of the units named in `names` and of everything they reach."""
        todo = [i for name in names for i in self.by_name.get(name, ())]
        seen: set[int] = set()
        while todo:
            index = todo.pop()
            if index in seen:
                continue
            seen.add(index)
            unit = self.units[index]
            if unit.dynamic:
                return set(range(len(self.units)))
            todo += [i for name in unit.mentions for i in self.by_name.get(name, ())]
        return seen

    def fingerprint(self, function_line: int, extra_names: Iterable[str] = (), extra_text: str = "") -> str:
        """A digest of everything the tests of the function at `function_line` can depend on."""
        unit = self.unit_at(function_line)
        names = set(extra_names) | ({unit.name} if unit and unit.name else set())
        reached = self.closure(names)
        if unit is not None:
            reached.add(self.units.index(unit))
        digest = hashlib.sha1(self.glue_digest.encode())
        for index in sorted(reached):
            digest.update(b"\0unit\0" + self.units[index].source.encode())
        digest.update(b"\0tests\0" + extra_text.encode())
        return digest.hexdigest()


def names_in(node: ast.AST) -> set[str]:
    """Every name and attribute mentioned under `node` (and strings naming identifiers: `__all__`)."""
    found: set[str] = set()
    for child in ast.walk(node):
        if isinstance(child, ast.Name):
            found.add(child.id)
        elif isinstance(child, ast.Attribute):
            found.add(child.attr)
        elif isinstance(child, ast.alias):
            found.add((child.asname or child.name).split(".")[0])
    return found


def names_in_source(source: str) -> set[str]:
    """Names mentioned in a piece of code (a test); a piece that does not parse mentions nothing."""
    try:
        return names_in(ast.parse(source))
    except (SyntaxError, ValueError, RecursionError):
        return set()


def module_graph(text: str, tree: ast.Module | None = None) -> ModuleGraph:
    """The units of a module that parses (SyntaxError otherwise)."""
    tree = tree or ast.parse(text)
    lines = text.splitlines(keepends=True)
    units: list[Unit] = []
    glue: list[str] = []
    by_name: dict[str, list[int]] = {}
    for node in tree.body:
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]) - 1
        end = (node.end_lineno or node.lineno) - 1
        source = "".join(lines[start:end + 1])
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            mentions = names_in(node)
            units.append(Unit(node.name, start, end, source, mentions, bool(mentions & DYNAMIC)))
            by_name.setdefault(node.name, []).append(len(units) - 1)
            for inner in ast.walk(node):  # a method (or nested function) leads to its top-level unit
                if inner is not node and isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    by_name.setdefault(inner.name, []).append(len(units) - 1)
        else:
            glue.append(source)
            # names bound by glue (x = helper(), from m import y) lead to what it mentions
            for name in _bound_names(node):
                units.append(Unit(name, start, end, source, names_in(node) - {name}, False))
                by_name.setdefault(name, []).append(len(units) - 1)
    glue_digest = hashlib.sha1("\0".join(glue).encode()).hexdigest()
    return ModuleGraph(units, glue_digest, by_name)


def _bound_names(node: ast.stmt) -> set[str]:
    bound: set[str] = set()
    for child in ast.walk(node):
        if isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store):
            bound.add(child.id)
    return bound
