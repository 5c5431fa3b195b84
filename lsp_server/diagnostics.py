"""What happened on each line of a function when its tests ran: plain notes the server turns into
diagnostics. Pure functions over the module text, the test cases and the executor's results.

The program the executor ran is the document's text itself, so a trace's "program" line N is the
document's line N - 1 (0-based)."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any, Sequence

from engine.project.testfile import TestCase, owning_test

MAX_MESSAGE = 400     # characters in one diagnostic's message
MAX_VALUES = 4        # distinct values of a variable shown per line and test (first ones + the last)


@dataclass(frozen=True)
class FunctionSpan:
    name: str
    def_line: int         # 0-based line of `def`
    end_line: int         # 0-based last line
    docstring: str | None
    docstring_line: int   # 1-based
    body_line: int = -1   # 0-based first line after the docstring (where a completion starts)
    body_indent: str = "    "
    empty: bool = False   # the body is only a docstring, `pass`, `...` or `raise NotImplementedError`


def functions_in(source: str, tree: ast.Module | None = None) -> list[FunctionSpan]:
    """Every function and method in a module that parses (raises SyntaxError otherwise)."""
    tree = tree or ast.parse(source)
    lines = source.splitlines()
    spans = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            doc_line = node.body[0].lineno if doc is not None else 0
            body = node.body[1:] if doc is not None else node.body
            body_line = body[0].lineno - 1 if body else (node.body[0].end_lineno or node.body[0].lineno)
            first = lines[node.body[0].lineno - 1] if node.body[0].lineno - 1 < len(lines) else ""
            indent = first[: len(first) - len(first.lstrip())]
            spans.append(FunctionSpan(node.name, node.lineno - 1, (node.end_lineno or node.lineno) - 1, doc, doc_line,
                                      body_line, indent, all(_placeholder(stmt) for stmt in body)))
    return sorted(spans, key=lambda s: s.def_line)


def _placeholder(stmt: ast.stmt) -> bool:
    """`pass`, `...` or `raise NotImplementedError`: a body still to be written."""
    if isinstance(stmt, ast.Pass):
        return True
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and stmt.value.value is Ellipsis:
        return True
    if isinstance(stmt, ast.Raise) and stmt.exc is not None:
        target = stmt.exc.func if isinstance(stmt.exc, ast.Call) else stmt.exc
        return isinstance(target, ast.Name) and target.id == "NotImplementedError"
    return False


@dataclass
class LineRecord:
    """One line's executions in one test."""

    runs: int = 0
    values: dict[str, list[tuple[str, str]]] = field(default_factory=dict)   # name -> [(repr, type)] after each run
    before: dict[str, list[str]] = field(default_factory=dict)               # name -> [repr before the run]
    returns: list[tuple[str, str]] = field(default_factory=list)
    exception: tuple[str, str] | None = None                                  # (type, message) raised here


@dataclass
class TestRecord:
    """One test's trace, folded into lines of one function."""

    label: str
    short: str                      # "t1"
    outcome: str                    # pass | fail | error | timeout
    message: str
    source: str                     # the test as run
    calls: list[str] = field(default_factory=list)       # "add(a=1, b=2)" for each call of the function
    returned: list[str] = field(default_factory=list)    # "3 (int)" for each return
    lines: dict[int, LineRecord] = field(default_factory=dict)   # 0-based document line -> record
    raised_at: int | None = None    # 0-based document line where the test's exception was raised
    truncated: bool = False


def tests_passed(records: Sequence[TestRecord]) -> tuple[int, int]:
    """(passed, total) in tests: egcfg's own reading has a record per assert of a test function."""
    tests = {owning_test(r.label) for r in records}
    failed = {owning_test(r.label) for r in records if r.outcome != "pass"}
    return len(tests - failed), len(tests)


def fold(span: FunctionSpan, case: TestCase, result: Any, short: str) -> TestRecord:
    """A test's result and trace, seen from one function's lines."""
    record = TestRecord(case.label, short, result.outcome, result.message or "", case.source)
    trace = result.trace
    if trace is None:
        return record
    record.truncated = bool(getattr(trace, "truncated", False))
    inside = range(span.def_line, span.end_line + 1)
    frames: dict[int, dict[str, str]] = {}   # depth -> last known value of each name
    for event in trace.events:
        if event.file != "program":
            continue
        line = event.line - 1
        if event.kind == "call" and event.func == span.name and line in inside:
            frames[event.depth] = {v.name: v.repr for v in event.values}
            record.calls.append(f"{span.name}({', '.join(f'{v.name}={v.repr}' for v in event.values)})")
            continue
        if line not in inside:
            continue
        if event.kind == "line":
            state = frames.setdefault(event.depth, {})
            entry = record.lines.setdefault(line, LineRecord())
            entry.runs += 1
            for value in event.values:
                entry.before.setdefault(value.name, []).append(state.get(value.name, ""))
                entry.values.setdefault(value.name, []).append((value.repr, value.type))
                state[value.name] = value.repr
        elif event.kind == "skip":
            record.lines.setdefault(line, LineRecord()).runs += event.count
        elif event.kind == "return":
            entry = record.lines.setdefault(line, LineRecord())
            for value in event.values:
                entry.returns.append((value.repr, value.type))
                if event.func == span.name:
                    record.returned.append(f"{value.repr} ({value.type})")
    record.raised_at = _raising_line(trace, inside) if result.outcome in ("error", "timeout") else None
    if record.raised_at is not None:
        exc = trace.exception()
        if exc is not None:
            record.lines.setdefault(record.raised_at, LineRecord()).exception = (exc.exc_type, exc.message)
    return record


def _raising_line(trace: Any, inside: range) -> int | None:
    """The deepest program line of the exception that ended the test, if it is in the function."""
    final = trace.exception()
    if final is None:
        return None
    best = None
    for event in trace.events:
        if (event.kind == "exception" and event.file == "program" and event.exc_type == final.exc_type
                and event.message == final.message and (best is None or event.depth >= best.depth)):
            best = event
    if best is None or best.line - 1 not in inside:
        return None
    return best.line - 1


def fold_all(span: FunctionSpan, cases: Sequence[TestCase], results: Sequence[Any]) -> list[TestRecord]:
    return [fold(span, case, result, f"t{i + 1}") for i, (case, result) in enumerate(zip(cases, results))]


# ------------------------------------------------------------------------------------------------
# Notes: the diagnostics without LSP types

@dataclass(frozen=True)
class Note:
    line: int            # 0-based document line
    severity: str        # "value" (what the line did: hint or information by setting) | "warning" | "error"
    message: str
    start: int = 0       # columns (characters)
    end: int = 0         # 0: to the end of the line's text


def summarise_values(entries: list[tuple[str, str]]) -> str:
    """"6 (int)" or "0, 1, 3 … 6 (int)": consecutive repeats dropped, long runs shortened."""
    reprs: list[str] = []
    for text, _ in entries:
        if not reprs or reprs[-1] != text:
            reprs.append(text)
    types = {t for _, t in entries}
    shown = reprs if len(reprs) <= MAX_VALUES else reprs[: MAX_VALUES - 1] + ["…", reprs[-1]]
    kind = types.pop() if len(types) == 1 else "/".join(sorted(types))
    return f"{', '.join(shown)} ({kind})"


def line_summary(record: TestRecord, line: int) -> str:
    """What one test did on one line: "total=6 (int)", "returns 3 (int)", "ran 4×"."""
    entry = record.lines.get(line)
    if entry is None:
        return ""
    parts = [f"{name}={summarise_values(values)}" for name, values in entry.values.items()]
    if entry.returns:
        parts.append(f"returns {summarise_values(entry.returns)}")
    if entry.exception:
        parts.append(f"raises {entry.exception[0]}")
    if not parts:
        parts.append("ran")
    if entry.runs > 1:
        parts.append(f"{entry.runs}×")
    return " ".join(parts)


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def notes_for_function(span: FunctionSpan, records: Sequence[TestRecord], lines: Sequence[str],
                       values: bool = True) -> list[Note]:
    """Value notes with each line's values per test, and an error (or, for a timeout, a warning)
    note per failing test."""
    notes: list[Note] = []
    if values:
        for line in range(span.def_line + 1, span.end_line + 1):
            text = lines[line] if line < len(lines) else ""
            if not text.strip() or text.strip().startswith("#"):
                continue
            parts = [f"{r.short}: {s}" for r in records if (s := line_summary(r, line))]
            if parts:
                notes.append(Note(line, "value", _clip(" | ".join(parts)), *_text_columns(text)))
    for record in records:
        if record.outcome == "pass":
            continue
        notes.append(_failure_note(span, record, lines))
    return notes


def _failure_note(span: FunctionSpan, record: TestRecord, lines: Sequence[str]) -> Note:
    name = f"{record.short} ({record.label})"
    message = record.message or record.outcome
    if record.raised_at is not None:
        line = record.raised_at
        text = f"{name} raised here: {message}"
    else:
        line = span.def_line
        verb = {"fail": "failed", "timeout": "timed out", "error": "errored"}.get(record.outcome, record.outcome)
        text = f"{name} {verb}: {message}" if message != record.outcome else f"{name} {verb}"
        if record.outcome == "fail" and record.returned:
            text += f" (returned {record.returned[-1]})" if "return" not in message else ""
    severity = "warning" if record.outcome == "timeout" else "error"
    return Note(line, severity, _clip(text), *_text_columns(lines[line] if line < len(lines) else ""))


def _text_columns(text: str) -> tuple[int, int]:
    stripped = text.rstrip()
    start = len(stripped) - len(stripped.lstrip())
    return start, max(len(stripped), start + 1)


def syntax_note(error: SyntaxError, lines: Sequence[str]) -> Note:
    line = max(0, min((error.lineno or 1) - 1, max(len(lines) - 1, 0)))
    return Note(line, "error", f"not valid Python ({error.msg}): the tests run once the module parses")
