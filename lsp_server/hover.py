"""The hover of a line: a Markdown table of what each test did there, then each test's call,
return value and outcome. Pure: reads the TestRecords the diagnostics were made from."""

from __future__ import annotations

from typing import Sequence

from lsp_server.diagnostics import FunctionSpan, TestRecord, summarise_values

OUTCOME_MARK = {"pass": "✅ pass", "fail": "❌ fail", "error": "💥 error", "timeout": "⏱ timeout"}


def _cell(text: str, limit: int = 80) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _code(text: str, limit: int = 80) -> str:
    text = _cell(text, limit)
    return f"`{text}`" if text else ""


def _before_after(record: TestRecord, line: int) -> tuple[str, str, str]:
    entry = record.lines.get(line)
    if entry is None:
        return "not run", "", ""
    before = ", ".join(f"{name}={_first_known(values)}" for name, values in entry.before.items() if _first_known(values))
    after = [f"{name}={summarise_values(values)}" for name, values in entry.values.items()]
    if entry.returns:
        after.append(f"return {summarise_values(entry.returns)}")
    if entry.exception:
        after.append(f"raised {entry.exception[0]}: {entry.exception[1]}")
    return f"{entry.runs}×", before, "; ".join(after)


def _first_known(values: list[str]) -> str:
    return next((v for v in values if v), "")


def hover_markdown(span: FunctionSpan, line: int, line_text: str, records: Sequence[TestRecord]) -> str:
    """Markdown for a hover on `line` (0-based) of `span`."""
    out = [f"**egcfg** · `{span.name}` line {line + 1}: `{_cell(line_text.strip(), 60)}`", ""]
    if not records:
        return "\n".join(out + ["No test calls this function."])
    out += ["| test | runs | before | after |", "|---|---|---|---|"]
    for record in records:
        runs, before, after = _before_after(record, line)
        out.append(f"| {record.short} {_cell(record.label, 40)} | {runs} | {_code(before)} | {_code(after)} |")
    out += ["", "| test | call | returned | outcome |", "|---|---|---|---|"]
    for record in records:
        call = record.calls[0] if record.calls else "(not called)"
        more = f" (+{len(record.calls) - 1} calls)" if len(record.calls) > 1 else ""
        returned = record.returned[-1] if record.returned else ""
        outcome = OUTCOME_MARK.get(record.outcome, record.outcome)
        if record.outcome != "pass" and record.message:
            outcome += f": {record.message}"
        out.append(f"| {record.short} | {_code(call)}{more} | {_code(returned)} | {_cell(outcome, 120)} |")
    if any(r.truncated for r in records):
        out += ["", "_Some traces were cut at the event cap; the final return or exception is kept._"]
    return "\n".join(out)
