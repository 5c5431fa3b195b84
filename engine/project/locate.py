"""Finding the function to complete in a module's text, and the text around its body.

Works on modules that do not parse yet (an empty body with no docstring is a syntax error), because
that is exactly what an editor holds while the user waits for a completion."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from dataclasses import dataclass

from engine.errors import UserError

_DEF = re.compile(r"^(?P<indent>[ \t]*)(?:async[ \t]+)?def[ \t]+(?P<name>\w+)[ \t]*\(")


@dataclass(frozen=True)
class FunctionSite:
    name: str
    def_line: int  # 0-based line of `def`
    body_line: int  # 0-based line where the body (after the docstring) starts
    end_line: int  # 0-based line after the last line of the existing body
    indent: str  # the def's own indentation
    body_indent: str  # indentation the body uses
    source_before: str  # module text up to the body: imports, earlier code, def line, docstring, body so far
    source_after: str  # module text after the function

    @property
    def body(self) -> str:
        """The lines already written after the docstring (part of source_before)."""
        lines = self.source_before.splitlines(keepends=True)
        return "".join(lines[self.body_line :])


def _header_end(lines: list[str], def_line: int) -> int:
    """Index of the line that ends the def's signature (parentheses balanced, ending with ':')."""
    depth = 0
    for i in range(def_line, len(lines)):
        code = lines[i].split("#", 1)[0]
        depth += sum(code.count(c) for c in "([{") - sum(code.count(c) for c in ")]}")
        if depth <= 0 and code.rstrip().endswith(":"):
            return i
    raise UserError(f"the signature of the function on line {def_line + 1} never ends with ':'")


def _docstring_end(lines: list[str], start: int) -> int:
    """Line index just after a docstring starting at `start` (or `start` when there is none)."""
    i = start
    while i < len(lines) and not lines[i].strip():
        i += 1
    if i >= len(lines) or not re.match(r"^[ \t]*[rRuUbBfF]{0,2}(\"\"\"|'''|\"|')", lines[i]):
        return start
    text = "".join(lines[i:])
    try:
        tok = next(t for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type == tokenize.STRING)
    except (tokenize.TokenError, SyntaxError, StopIteration):
        return start  # an unterminated docstring: leave it to the body
    return i + tok.end[0]


def _indent_width(line: str) -> int:
    return len(line.expandtabs(4)) - len(line.expandtabs(4).lstrip())


def find_function(source: str, name: str | None = None, line: int | None = None) -> FunctionSite:
    """The function named `name`, or the innermost one containing 0-based `line` (an editor's cursor).

    With a cursor inside the body, the body so far ends at the cursor's line: the completion
    continues from there and replaces whatever of the old body followed it."""
    lines = source.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    found = None
    for i, text in enumerate(lines):
        match = _DEF.match(text)
        if not match:
            continue
        end = _function_end(lines, i, match.group("indent"))
        if name is not None and match.group("name") == name:
            found = (i, match, end)
            break
        if name is None and line is not None and _contains(lines, i, end, match.group("indent"), line):
            found = (i, match, end)  # keep looking: a nested def containing the line wins
    if found is None:
        if name is not None:
            raise UserError(f"there is no function named {name!r} in this file")
        raise UserError("the cursor is not inside a function")
    def_line, match, end = found
    header = _header_end(lines, def_line)
    body_line = _docstring_end(lines, header + 1)
    cut = end if line is None or line < body_line else min(max(line, body_line), end)
    indent = match.group("indent")
    return FunctionSite(
        name=match.group("name"),
        def_line=def_line,
        body_line=body_line,
        end_line=cut,
        indent=indent,
        body_indent=_body_indent(lines, header + 1, end, indent),
        source_before="".join(lines[:cut]),
        source_after="".join(lines[end:]),
    )


def _contains(lines: list[str], def_line: int, end: int, indent: str, line: int) -> bool:
    """Whether a cursor on `line` belongs to the function: inside it, or on blank lines right after
    it that are indented deeper than the def (where one types an empty body)."""
    if def_line <= line < end:
        return True
    if line < end or line >= len(lines) + 1:
        return False
    gap = lines[end : line + 1]
    if any(text.strip() for text in gap):
        return False
    cursor_text = lines[line] if line < len(lines) else ""
    return line == end or _indent_width(cursor_text.rstrip("\n")) > _indent_width(indent)


def _function_end(lines: list[str], def_line: int, indent: str) -> int:
    """Line index after the function: the first non-blank line indented no deeper than the def,
    after the header. Trailing blank lines belong to what follows."""
    header = _header_end(lines, def_line)
    last = header
    width = _indent_width(indent)
    for i in range(header + 1, len(lines)):
        text = lines[i]
        if not text.strip():
            continue
        if _indent_width(text) <= width and not text.lstrip().startswith("#"):
            break
        last = i
    return last + 1


def _body_indent(lines: list[str], start: int, end: int, indent: str) -> str:
    for i in range(start, end):
        if lines[i].strip():
            return lines[i][: len(lines[i]) - len(lines[i].lstrip())]
    return indent + "    "


def check_rest_parses(site: FunctionSite, path: str = "the file") -> None:
    """Raise a clear error when the module does not parse even with the function's body filled."""
    program = site.source_before + site.body_indent + "pass\n" + site.source_after
    try:
        ast.parse(program)
    except SyntaxError as error:
        raise UserError(
            f"{path} has a syntax error outside {site.name} (line {error.lineno}: {error.msg}); "
            "fix it first, since the tests import the whole module"
        ) from None
