"""The views over the last test run that need no model: inlay hints with each line's values, a
lens per tested function, and the "regenerate from here" quick fix. Thin handlers over
lsp_server/hints.py; they read the analysis of the document's current text and never wait."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lsprotocol import types

from lsp_server.diagnostics import tests_passed
from lsp_server.hints import function_lens, line_hint, line_tooltip

if TYPE_CHECKING:
    from lsp_server.server import EgcfgServer

REGENERATE = "egcfg.regenerateFrom"


def inlay_hints(ls: "EgcfgServer", uri: str, first: int, last: int) -> list[types.InlayHint]:
    """One hint at the end of each executed line between `first` and `last` (0-based, inclusive)."""
    ls.live.visible[uri] = (first, last)
    analysis = ls.live.current(uri)
    if analysis is None or not ls.settings.value_hints:
        return []
    lines = analysis.text.splitlines()
    units = ls.workspace.position_codec.client_num_units   # the encoding agreed with the client
    hints = []
    for run in analysis.runs:
        if run.span.end_line < first or run.span.def_line > last:
            continue
        for line in range(max(run.span.def_line + 1, first), min(run.span.end_line, last) + 1):
            text = lines[line] if line < len(lines) else ""
            if not text.strip() or text.lstrip().startswith("#"):
                continue
            label = line_hint(run.records, line)
            if label:
                hints.append(types.InlayHint(
                    position=types.Position(line=line, character=units(text.rstrip())), label=label,
                    padding_left=True, tooltip=line_tooltip(run.records, line)))
    return hints


def code_lenses(ls: "EgcfgServer", uri: str) -> list[types.CodeLens]:
    analysis = ls.live.current(uri)
    if analysis is None:
        return []
    lenses = []
    for run in analysis.runs:
        lens = function_lens(run.span, run.records, uri)
        at = types.Position(line=lens.line, character=0)
        lenses.append(types.CodeLens(range=types.Range(start=at, end=at), command=types.Command(
            title=lens.title, command=lens.command, arguments=[lens.arguments])))
    return lenses


def code_actions(ls: "EgcfgServer", params: types.CodeActionParams) -> list[types.CodeAction]:
    """On a line of a function that fails a test: regenerate from that line (or the whole body,
    from the def line), keeping the lines above. A quick fix when an egcfg failure is in context."""
    uri, line = params.text_document.uri, params.range.start.line
    analysis = ls.live.current(uri)
    run = analysis.run_at(line) if analysis else None
    if run is None or all(r.outcome == "pass" for r in run.records):
        return []
    body_line = run.span.body_line if run.span.body_line >= 0 else run.span.def_line + 1
    start = max(line, body_line)
    failures = [d for d in params.context.diagnostics if d.source == "egcfg" and d.severity in (
        types.DiagnosticSeverity.Error, types.DiagnosticSeverity.Warning)]
    passed, total = tests_passed(run.records)
    title = (f"Regenerate {run.span.name} with EG-CFG ({passed}/{total} tests pass)" if start == body_line
             else f"Regenerate {run.span.name} from line {start + 1} with EG-CFG (keeps the lines above)")
    kind = types.CodeActionKind.QuickFix if failures else types.CodeActionKind.RefactorRewrite
    return [types.CodeAction(title=title, kind=kind, diagnostics=failures or None, is_preferred=bool(failures),
                             command=types.Command(title=title, command=REGENERATE,
                                                   arguments=[{"uri": uri, "line": start}]))]


def register_views(server: "EgcfgServer") -> None:
    @server.feature(types.TEXT_DOCUMENT_INLAY_HINT, types.InlayHintOptions(resolve_provider=False))
    def inlay_hint(ls: "EgcfgServer", params: types.InlayHintParams):
        return inlay_hints(ls, params.text_document.uri, params.range.start.line, params.range.end.line)

    @server.feature(types.TEXT_DOCUMENT_CODE_LENS, types.CodeLensOptions(resolve_provider=False))
    def code_lens(ls: "EgcfgServer", params: types.CodeLensParams):
        return code_lenses(ls, params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_CODE_ACTION, types.CodeActionOptions(
        code_action_kinds=[types.CodeActionKind.QuickFix, types.CodeActionKind.RefactorRewrite]))
    def code_action(ls: "EgcfgServer", params: types.CodeActionParams):
        return code_actions(ls, params)
