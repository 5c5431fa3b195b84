"""Partial code -> executable code, and de-duplication of candidates by their syntax tree.

Candidates are cut after a few lines, so they often end inside a block header (``for x in y:``),
an open bracket or a half-written string. ``make_executable`` repairs them minimally (METHOD.md step
2b): append ``pass`` where a body is missing, else drop the last line, and repeat. Code that already
compiles is returned unchanged.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
import warnings
from dataclasses import dataclass
from typing import Iterable

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
# Tokens that do not make a line "significant" (layout and comments only).
_LAYOUT = {tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.COMMENT, tokenize.ENDMARKER}


def compiles(code: str) -> bool:
    """True when ``code`` compiles as a module (stricter than ast.parse: also rejects `break` outside a loop...)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences and the like are not our concern here
            compile(code, "<program>", "exec", dont_inherit=True)
        return True
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return False


def make_executable(code: str) -> str | None:
    """The smallest repair of ``code`` that compiles, or None when nothing executable is left.

    Repairs, tried in order on the code that is left: append ``pass`` (one level deeper after a
    block header, else at the last statement's indentation), also closing open ``try`` blocks with
    ``finally: pass`` (keeps exceptions propagating, unlike ``except: pass``); if none compiles,
    drop the last line and try again. Line ends of the input are kept.
    """
    if compiles(code):
        return code
    newline = "\r\n" if "\r\n" in code else "\n"
    lines = _LINE_BREAK.split(code)
    while lines:
        while lines and not lines[-1].strip():
            lines.pop()  # trailing blank lines never help and never matter
        if not lines:
            break
        text = newline.join(lines)
        if compiles(text):
            return text
        for suffix in _completions(lines):
            attempt = newline.join(lines + suffix)
            if compiles(attempt):
                return attempt
        lines.pop()
    return None


@dataclass
class _LogicalLine:
    row: int  # 0-based index of its first physical line
    indent: str  # leading whitespace of that first line
    first: str  # first token
    last: str  # last significant token (":" for a block header)


def _logical_lines(text: str) -> list[_LogicalLine] | None:
    """Logical lines of ``text``, or None when its end is unfinished (open bracket, string, backslash)."""
    physical = text.split("\n")
    result: list[_LogicalLine] = []
    current: _LogicalLine | None = None
    depth = 0
    try:
        for token in tokenize.generate_tokens(io.StringIO(text + "\n").readline):
            if token.type == tokenize.NEWLINE:
                current = None
                continue
            if token.type in _LAYOUT:
                continue
            if token.type == tokenize.OP and token.string in "([{":
                depth += 1
            elif token.type == tokenize.OP and token.string in ")]}":
                depth -= 1
            if current is None:
                row = token.start[0] - 1
                line = physical[row] if row < len(physical) else ""
                current = _LogicalLine(row, line[: len(line) - len(line.lstrip())], token.string, token.string)
                result.append(current)
            current.last = token.string
    except (tokenize.TokenError, SyntaxError):  # IndentationError is a SyntaxError
        return None
    if depth > 0:
        return None
    return result


def _indent_unit(indent: str, logical: list[_LogicalLine]) -> str:
    """One indentation level, in the style the code already uses (tabs, or its smallest step of spaces)."""
    if "\t" in indent:
        return "\t"
    widths = [len(line.indent) for line in logical]
    steps = [after - before for before, after in zip(widths, widths[1:]) if after > before]
    return " " * min(max(min(steps, default=4), 1), 8)


def _completions(lines: list[str]) -> list[list[str]]:
    """Lines to append, smallest change first; each is checked by compiling."""
    logical = _logical_lines("\n".join(lines))
    if not logical:
        return []
    last = logical[-1]
    header = last.last == ":"
    if header and last.first == "match":  # a match statement's body is its cases
        unit = _indent_unit(last.indent, logical)
        base = [last.indent + unit + "case _:", last.indent + unit * 2 + "pass"]
    elif header:
        base = [last.indent + _indent_unit(last.indent, logical) + "pass"]
    else:
        base = [last.indent + "pass"]
    # `try:` headers whose handlers never started: everything after them is inside their body.
    closing: list[str] = []
    for index in reversed(range(len(logical))):  # innermost first
        line = logical[index]
        if line.first == "try" and line.last == ":":
            if all(len(other.indent) > len(line.indent) for other in logical[index + 1 :]):
                closing += [line.indent + "finally:", line.indent + _indent_unit(line.indent, logical) + "pass"]
    if not closing:
        return [base]
    if header:
        return [base, base + closing]
    return [base, closing, base + closing]


def normalise(code: str) -> str | None:
    """A canonical form of ``code``'s syntax tree: comments, blank lines, quote style and redundant
    ``pass`` statements do not matter. None when the code does not parse."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return None
    _drop_redundant_pass(tree)
    return ast.dump(tree, annotate_fields=True, include_attributes=False)


def _drop_redundant_pass(tree: ast.AST) -> None:
    """Remove ``pass`` from bodies that have other statements (a repaired candidate and the same
    code completed later then compare equal)."""
    for node in ast.walk(tree):
        for name in ("body", "orelse", "finalbody"):
            body = getattr(node, name, None)
            if isinstance(body, list) and len(body) > 1:
                kept = [stmt for stmt in body if not isinstance(stmt, ast.Pass)]
                body[:] = kept or body[:1]


def dedupe(codes: Iterable[str]) -> list[str]:
    """The first code of each normalised form, in the order given. Code that does not parse is
    compared by its text."""
    seen: set[tuple[str, str]] = set()
    unique = []
    for code in codes:
        form = normalise(code)
        key = ("ast", form) if form is not None else ("text", code.strip())
        if key not in seen:
            seen.add(key)
            unique.append(code)
    return unique
