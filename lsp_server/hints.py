"""What each executed line did, compact enough for the end of the line (an inlay hint), and the
lens above each tested function. Pure: reads the TestRecords the diagnostics are made from.

A hint reads like the code: `total = 2, 6, 12`, `→ 12`, `raises ZeroDivisionError`. When every test
that ran the line did the same, it is said once; when they differ, each gets its number
(`t1: → 6 · t2: → 9`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from lsp_server.diagnostics import FunctionSpan, TestRecord, line_summary, tests_passed

MAX_VALUE = 24       # characters of one value
MAX_VALUES = 4       # values of one name (first ones, …, the last)
MAX_LABEL = 72       # characters of a whole hint
MAX_TESTS = 3        # tests named in one hint before "+N"


def cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _values(entries: list[tuple[str, str]]) -> str:
    shown: list[str] = []
    for text, _ in entries:
        if not shown or shown[-1] != text:
            shown.append(text)
    if len(shown) > MAX_VALUES:
        shown = shown[: MAX_VALUES - 1] + ["…", shown[-1]]
    return ", ".join(cut(v, MAX_VALUE) if v != "…" else v for v in shown)


def test_text(record: TestRecord, line: int) -> str:
    """What one test did on one line, compactly ("" when it did not run the line or it only ran)."""
    entry = record.lines.get(line)
    if entry is None:
        return ""
    parts = [f"{name} = {_values(values)}" for name, values in entry.values.items()]
    if entry.returns:
        parts.append(f"→ {_values(entry.returns)}")
    if entry.exception:
        parts.append(f"raises {entry.exception[0]}")
    return "; ".join(parts)


def line_hint(records: Sequence[TestRecord], line: int) -> str:
    """The hint for one line over all tests ("" for none)."""
    done = [(r.short, text) for r in records if (text := test_text(r, line))]
    if not done:
        return ""
    if len({text for _, text in done}) == 1:
        return cut(done[0][1], MAX_LABEL)
    shown = [f"{short}: {text}" for short, text in done[:MAX_TESTS]]
    more = f" · +{len(done) - MAX_TESTS}" if len(done) > MAX_TESTS else ""
    return cut(" · ".join(shown), MAX_LABEL - len(more)) + more


def line_tooltip(records: Sequence[TestRecord], line: int) -> str:
    """Every test's full summary of the line, one per line of text."""
    return "\n".join(f"{r.short} ({r.label}): {s}" for r in records if (s := line_summary(r, line)))


@dataclass(frozen=True)
class Lens:
    line: int            # 0-based line the lens sits above
    title: str
    command: str         # a server command (docs/protocol.md)
    arguments: dict


def function_lens(span: FunctionSpan, records: Sequence[TestRecord], uri: str) -> Lens:
    """"✓ 3/3 tests", "✗ 1/3 tests · Fix with EG-CFG", or "Complete with tests" above an empty body."""
    passed, total = tests_passed(records)
    body_line = span.body_line if span.body_line >= 0 else span.def_line + 1
    if span.empty:
        return Lens(span.def_line, f"Complete with tests ({total})", "egcfg.completeWithTests",
                    {"uri": uri, "line": body_line, "character": len(span.body_indent)})
    if passed == total:
        return Lens(span.def_line, f"✓ {passed}/{total} tests", "egcfg.showTrace", {"uri": uri, "line": body_line})
    return Lens(span.def_line, f"✗ {passed}/{total} tests · Fix with EG-CFG", "egcfg.regenerateFrom",
                {"uri": uri, "line": body_line})
