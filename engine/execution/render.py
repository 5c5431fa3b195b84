"""Traces as the compact text the model reads, one block per (candidate, test), within a budget.

A block looks like::

    # test: assert add_all([1, 2, 3]) == 6
    # outcome: fail: returned 7, expected 6
    call add_all(xs=[1, 2, 3])
      L2  total = 1  # total = 1 (int)
      L3  for x in xs:  # x = 1 (int)
      L4      total += x  # total = 2 (int)
      ... 1 more iteration(s) of L3-L4 ...
      L3  for x in xs:  # x = 3 (int)
      L5  return total  # return 7 (int)

Over budget, a block degrades in this order: fewer first iterations of loops, no types, no values
on lines, then lines dropped from the middle. The invocation, the outcome and the error stay.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from engine.execution.trace import Trace, TraceEvent, Value

__all__ = ["TestResultLike", "render_test", "render_blocks", "line_summary", "as_trace"]

BLOCK_SEPARATOR = "\n\n"
_INDENT = "  "


class TestResultLike(Protocol):
    """What the renderer needs from a test result (engine.execution.executor.TestResult has these)."""

    test: str
    outcome: str
    message: str
    trace: Any  # Trace, its dict form, or None


def as_trace(trace) -> Trace | None:
    if trace is None or isinstance(trace, Trace):
        return trace
    if isinstance(trace, dict):
        return Trace.from_dict(trace)
    raise TypeError(f"not a trace: {type(trace).__name__}")


# ---------------------------------------------------------------------------------------------
# Choosing the events to show
# ---------------------------------------------------------------------------------------------


def _visible_events(trace: Trace, test: str, outcome: str = "") -> list[TraceEvent]:
    """Leave out the scaffolding: the program's module-level run (unless it failed) and the test's
    own frame, whose line is already the invocation (a block test keeps its lines)."""
    test_lines = len(test.splitlines())
    shown = []
    in_program_module = False  # inside the run of the program's module (defs, class bodies, imports)
    module_events: list[TraceEvent] = []
    for event in trace.events:
        if event.depth == 0 and event.file == "program":
            in_program_module = event.kind not in ("return",)
            module_events.append(event)
            continue
        if in_program_module:
            module_events.append(event)
            continue
        if module_events:
            if any(e.kind == "exception" for e in module_events):  # the program did not even load
                shown.extend(module_events)
            module_events = []
        if event.depth == 0 and event.file == "test":
            if event.kind in ("call", "return"):
                continue
            if event.kind == "exception" and test_lines <= 1:
                continue  # the outcome line already says how a one-line test failed
            if event.kind in ("line", "skip") and (test_lines <= 1 or event.line > test_lines):
                continue
        shown.append(event)
    if any(e.kind == "exception" for e in module_events):
        shown.extend(module_events)
    if outcome == "timeout" and shown and shown[-1].kind == "exception":
        shown.pop()  # the sandbox's interruption at the deadline, not the program's error
    return shown


def _compress(events: list[TraceEvent], head: int) -> list[TraceEvent]:
    """Loop compression again, with fewer first iterations than the tracer kept (the same rules):
    per line, the first ``head`` executions stay; later ones form a run that keeps only the latest
    iteration (cut where a loop's head line repeats), preceded by skip events counting the rest.
    Skip events already in the trace add to the counts."""
    out: list[TraceEvent] = []
    counts: dict[tuple, int] = {}
    run: list[TraceEvent] = []
    last_head: dict[tuple, int] = {}  # loop-head line key -> index in run
    last_line: dict[tuple, int] = {}  # (file, func, depth) -> its latest line
    dropped: dict[tuple, list] = {}

    def flush():
        for count, event in sorted(dropped.values(), key=lambda item: (item[1].depth, item[1].line)):
            out.append(TraceEvent("skip", event.file, event.line, event.func, event.depth, count=count))
        out.extend(run)
        run.clear()
        last_head.clear()
        dropped.clear()

    def drop_front(n):
        for event in run[:n]:
            if event.kind == "line":
                _add_dropped(dropped, event, 1)
        del run[:n]
        for key in list(last_head):
            last_head[key] -= n
            if last_head[key] < 0:
                del last_head[key]

    for event in events:
        if event.kind == "skip":
            key = (event.file, event.func, "line", event.line)
            counts[key] = counts.get(key, 0) + event.count
            _add_dropped(dropped, event, event.count)
            continue
        if event.kind == "exception":  # errors are never compressed away here
            flush()
            out.append(event)
            continue
        key = (event.file, event.func, event.kind, event.line if event.kind == "line" else 0)
        seen = counts.get(key, 0) + 1
        counts[key] = seen
        frame = (event.file, event.func, event.depth)
        jumped_back = event.kind == "line" and event.line <= last_line.get(frame, 0)
        if event.kind == "line":
            last_line[frame] = event.line
        if seen <= head:
            flush()
            out.append(event)
            continue
        if jumped_back:
            start = last_head.get(key)
            if start:
                drop_front(start)
            last_head[key] = len(run)
        if len(run) >= 64:
            drop_front(len(run) - 63)
        run.append(event)
    flush()
    return out


def _add_dropped(dropped: dict, event: TraceEvent, count: int) -> None:
    key = (event.file, event.func, event.depth, event.line)
    entry = dropped.get(key)
    if entry is None:
        dropped[key] = [count, event]
    else:
        entry[0] += count


# ---------------------------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------------------------


@dataclass
class _Row:
    depth: int
    text: str  # without values
    values: list[Value] = field(default_factory=list)
    essential: bool = False  # never dropped: the error, the final return
    keep_values: bool = False  # values kept even when line values are dropped (call args, return)

    def render(self, values: bool, types: bool) -> str:
        indent = _INDENT * self.depth
        if not self.values or not (values or self.keep_values):
            return indent + self.text
        return indent + self.text + "  # " + ", ".join(_value_text(v, types) for v in self.values)


def _value_text(value: Value, types: bool) -> str:
    if value.name in ("return", "yield"):
        text = f"{value.name} {value.repr}"
    else:
        text = f"{value.name} = {value.repr}"
    return f"{text} ({value.type})" if types and value.type else text


class _Source:
    """Line texts of the program and the test, with a function's body indentation removed."""

    def __init__(self, program: str, test: str):
        self.lines = {"program": program.splitlines(), "test": test.splitlines()}

    def text(self, file: str, line: int) -> str:
        lines = self.lines.get(file, [])
        return lines[line - 1] if 0 < line <= len(lines) else ""

    def body_indent(self, file: str, def_line: int) -> int:
        """Indentation of a function's body: the def line's indentation plus one level."""
        header = self.text(file, def_line)
        return len(header) - len(header.lstrip()) + 4

    def line_text(self, file: str, line: int, base: int) -> str:
        raw = self.text(file, line).rstrip()
        leading = len(raw) - len(raw.lstrip())
        return raw[min(leading, base) :]


def _rows(events: list[TraceEvent], source: _Source) -> list[_Row]:
    rows: list[_Row] = []
    base_indent: dict[tuple, int] = {}  # (file, func) -> body indentation
    final_exception = next((i for i in range(len(events) - 1, -1, -1) if events[i].kind == "exception"), None)
    last_line_row: dict[int, tuple[int, int]] = {}  # depth -> (row index, line) of the latest line row
    i = 0
    while i < len(events):
        event = events[i]
        depth = max(event.depth - 1, 0)
        prefix = "T" if event.file == "test" else "L"
        if event.kind == "call":
            base_indent[(event.file, event.func)] = source.body_indent(event.file, event.line)
            arguments = ", ".join(f"{v.name}={v.repr}" for v in event.values)
            rows.append(_Row(depth, f"call {event.func}({arguments})", essential=event.depth <= 1))
        elif event.kind == "line":
            base = base_indent.get((event.file, event.func), 0 if event.func == "<module>" else 4)
            text = f"{prefix}{event.line}  {source.line_text(event.file, event.line, base)}"
            rows.append(_Row(depth + 1, text, list(event.values)))
            last_line_row[event.depth] = (len(rows) - 1, event.line)
        elif event.kind == "return":
            previous = last_line_row.get(event.depth)
            if previous and previous[0] == len(rows) - 1 and previous[1] == event.line:
                row = rows[-1]
                row.values.extend(event.values)
                row.keep_values = True
                row.essential = row.essential or event.depth <= 1
            else:
                rows.append(_Row(depth + 1, "", list(event.values), essential=event.depth <= 1, keep_values=True))
        elif event.kind == "exception":
            where = f"line {event.line}" if event.file == "program" else f"test line {event.line}"
            message = f": {event.message}" if event.message else ""
            rows.append(_Row(depth + 1, f"!! {event.exc_type}{message} ({where})", essential=i == final_exception))
        elif event.kind == "skip":
            j = i
            while j + 1 < len(events) and events[j + 1].kind == "skip" and events[j + 1].depth == event.depth:
                j += 1
            group = events[i : j + 1]
            lines = sorted({e.line for e in group if e.file == event.file})
            span = f"{prefix}{lines[0]}" + (f"-{prefix}{lines[-1]}" if len(lines) > 1 else "")
            count = max(e.count for e in group)
            rows.append(_Row(depth + 1, f"... {count} more iteration(s) of {span} ..."))
            i = j
        i += 1
    for row in rows:  # a return merged into no line row: text is the value alone
        if not row.text and row.values:
            row.text = "=> " + ", ".join(_value_text(v, True) for v in row.values)
            row.values = []
    return rows


# ---------------------------------------------------------------------------------------------
# Blocks and budgets
# ---------------------------------------------------------------------------------------------


def _header(result: TestResultLike) -> list[str]:
    test_lines = (result.test or "").strip("\n").splitlines() or [""]
    header = ["# test: " + test_lines[0]] + ["#       " + line for line in test_lines[1:]]
    outcome = result.outcome or "unknown"
    header.append(f"# outcome: {outcome}" + (f": {result.message}" if result.message else ""))
    return header


def _join(lines: list[str]) -> str:
    return "\n".join(lines)


def _levels():
    """Rendering settings from richest to most compact: (first iterations kept, values, types)."""
    for head in (3, 2, 1):
        yield head, True, True
    yield 1, True, False
    yield 1, False, False


def render_test(program: str, result: TestResultLike, budget: int = 1500) -> str:
    """One block: the invocation, the outcome (+ message) and the trace, at most ``budget`` chars."""
    header = _header(result)
    trace = as_trace(result.trace)
    if trace is None:
        return _fit_header(header, [], budget)
    source = _Source(program or "", result.test or "")
    visible = _visible_events(trace, result.test or "", result.outcome or "")
    note = ["... trace cut: too many events ..."] if trace.truncated else []
    rows: list[_Row] = []
    for head, values, types in _levels():
        rows = _rows(_compress(visible, head), source)
        lines = header + [row.render(values, types) for row in rows] + note
        text = _join(lines)
        if len(text) <= budget:
            return text
    return _drop_middle(header, rows, note, budget)


def _drop_middle(header: list[str], rows: list[_Row], note: list[str], budget: int) -> str:
    """Keep the first and last rows (and every essential row), dropping from the middle."""
    rendered = [row.render(False, False) for row in rows]
    essential = [row.essential for row in rows]

    def attempt(keep: int) -> list[str]:
        first, last = (keep + 1) // 2, keep // 2
        body, omitted = [], 0
        for index, line in enumerate(rendered):
            if index < first or index >= len(rendered) - last or essential[index]:
                if omitted:
                    body.append(f"... {omitted} line(s) omitted ...")
                    omitted = 0
                body.append(line)
            else:
                omitted += 1
        if omitted:
            body.append(f"... {omitted} line(s) omitted ...")
        return header + body + note

    low, high = 0, len(rendered)
    best = None
    while low <= high:
        middle = (low + high) // 2
        text = _join(attempt(middle))
        if len(text) <= budget:
            best, low = text, middle + 1
        else:
            high = middle - 1
    if best is not None:
        return best
    # Even the essential rows do not fit: keep the header and the error, shortened as needed.
    kept = [line for line, keep in zip(rendered, essential) if keep and line.lstrip().startswith("!!")]
    return _fit_header(header, kept, budget)


def _fit_header(header: list[str], tail: list[str], budget: int) -> str:
    """The last resort: shorten each line (the test, the outcome, the error) to share the budget;
    short lines get what they need, long ones split the rest."""
    lines = header + [line.strip() for line in tail]
    text = _join(lines)
    if len(text) <= budget:
        return text
    room = budget - (len(lines) - 1)  # the newlines
    if room <= len(lines):
        return text[: max(budget, 0)]
    allowance = [0] * len(lines)
    remaining, count = room, len(lines)
    for k in sorted(range(len(lines)), key=lambda k: len(lines[k])):
        allowance[k] = min(len(lines[k]), remaining // count)
        remaining -= allowance[k]
        count -= 1
    return _join([_cut(line, allowance[k]) for k, line in enumerate(lines)])[:budget]


def _cut(line: str, limit: int) -> str:
    if len(line) <= limit:
        return line
    if limit <= 3:
        return line[:limit]
    head = (limit - 3) * 2 // 3
    return line[:head] + "..." + line[len(line) - (limit - 3 - head) :]


def render_blocks(blocks: Sequence[tuple[str, TestResultLike]], budget: int = 6000) -> str:
    """Many (program, result) blocks sharing one budget: small blocks get what they need, the
    rest is split evenly among the larger ones."""
    if not blocks:
        return ""
    available = budget - len(BLOCK_SEPARATOR) * (len(blocks) - 1)
    if available <= 0:
        return ""
    natural = [len(render_test(program, result, budget=10**9)) for program, result in blocks]
    allowance = [0] * len(blocks)
    remaining, count = available, len(blocks)
    for index in sorted(range(len(blocks)), key=lambda k: natural[k]):
        allowance[index] = min(natural[index], remaining // count)
        remaining -= allowance[index]
        count -= 1
    texts = [render_test(program, result, allowance[k]) for k, (program, result) in enumerate(blocks)]
    return BLOCK_SEPARATOR.join(texts)


# ---------------------------------------------------------------------------------------------
# Per-line values for the language server
# ---------------------------------------------------------------------------------------------


def line_summary(program: str, trace) -> dict[int, list[Value]]:
    """Per program line: the values after its last execution (latest value of each variable the line
    changed), the arguments at a def line, the return value at a return line and, for a line that
    raised, a Value named "exception" (repr = message, type = exception type)."""
    trace = as_trace(trace)
    if trace is None:
        return {}
    line_count = len(program.splitlines())
    summary: dict[int, dict[str, Value]] = {}
    for event in trace.events:
        if event.file != "program" or not 0 < event.line <= line_count:
            continue
        if event.kind == "return" and event.func == "<module>":
            continue
        if event.kind in ("line", "call", "return"):
            slot = summary.setdefault(event.line, {})
            for value in event.values:
                slot.pop(value.name, None)
                slot[value.name] = value
        elif event.kind == "exception":
            slot = summary.setdefault(event.line, {})
            slot.pop("exception", None)
            slot["exception"] = Value("exception", event.message, event.exc_type)
    return {line: list(values.values()) for line, values in sorted(summary.items()) if values}
