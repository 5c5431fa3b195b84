"""How fast values come back in a real module: the language server (real sandbox, no model needed)
opens more-itertools' recipes.py with its own tests, then takes a one-line edit to one function and
a save. Prints one JSON object.

    .venv/bin/python benchmarks/lsp_edit_latency.py [--sdist PATH] [--function tail] [--repeat 3]

The module comes from more-itertools' source distribution, fetched with
`pip download --no-deps --no-binary :all: more-itertools` into build/bench/ (gitignored) when no
--sdist is given; nothing of it is committed.

The server runs the module's tests the way the project does: with pytest when the project's
interpreter has it (egcfg's .venv does, so that is what this measures by default: one session
learns whose tests are whose, then edits rerun tests by node id), else with egcfg's own reading of
the tests (`--python /usr/bin/python3`, an interpreter without pytest, measures that path).

Figures (seconds, from the client's side):
- open_first_values_s: didOpen -> the first publishDiagnostics carrying a value;
- open_all_values_s: didOpen -> every tested function's values published (the full session).
  Before the incremental runs (issue 13), every save waited for a run this long before anything
  was republished;
- edit_function_republished_s: the edit (didChange + didSave) -> the first publish of the new
  version carrying values on the edited function's lines (a fresh run: its fingerprint changed);
- edit_all_done_s: the edit -> the run for the new version finished (callers included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "lsp_server")]

from lsprotocol import types  # noqa: E402

from test_lsp_harness import open_doc, start, stop  # noqa: E402

BENCH_DIR = REPO / "build" / "bench"


def fetch_sdist() -> Path:
    found = sorted(BENCH_DIR.glob("more_itertools-*.tar.gz"))
    if not found:
        BENCH_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        "-d", str(BENCH_DIR), "more-itertools"], check=True, stdout=sys.stderr)
        found = sorted(BENCH_DIR.glob("more_itertools-*.tar.gz"))
    return found[-1]


def unpack(sdist: Path, into: Path) -> Path:
    with tarfile.open(sdist) as archive:
        archive.extractall(into, filter="data")
    return next(into.glob("more_itertools-*"))


def function_lines(text: str, name: str) -> tuple[int, int, int]:
    """(def line, the line to edit: its first body statement after the docstring, last line)."""
    import ast

    node = next(n for n in ast.parse(text).body if isinstance(n, ast.FunctionDef) and n.name == name)
    body = node.body[1:] if ast.get_docstring(node) is not None else node.body
    return node.lineno - 1, body[0].lineno - 1, node.end_lineno - 1


def values_on(published, first: int, last: int) -> bool:
    return any(first <= d.range.start.line <= last and d.severity == types.DiagnosticSeverity.Hint
               for d in published.diagnostics)


async def one_round(root: Path, module: Path, function: str, python: str = "") -> dict:
    text = module.read_text()
    def_line, edit_line, end_line = function_lines(text, function)
    options = {"model": str(root / "no-model"), "debounceMs": 300, "testSeconds": 10}
    if python:
        options["python"] = python
    client, rec, drainer = await start(root, options, scripted=False)
    try:
        await rec.wait_for(lambda: any(s["state"] == "error" for s in rec.status), what="no model")
        opened = time.monotonic()
        uri = open_doc(client, module)
        hints = asyncio.ensure_future(client.text_document_inlay_hint_async(types.InlayHintParams(  # asked first
            text_document=types.TextDocumentIdentifier(uri=uri),
            range=types.Range(start=types.Position(line=0, character=0), end=types.Position(line=60, character=0)))))
        await rec.wait_for(lambda: (d := rec.latest_diagnostics(uri)) and any(
            x.severity == types.DiagnosticSeverity.Hint for x in d.diagnostics), timeout=120, what="first values")
        first_values = time.monotonic() - opened
        await hints
        done = await rec.wait_for(lambda: next((s for s in rec.status[::-1] if s["message"].startswith("tests: ")), None),
                                  timeout=600, what="every function's values")
        all_values = time.monotonic() - opened
        tests = int(done["message"].split("/")[1].split()[0])
        diagnostics_before = len(rec.latest_diagnostics(uri).diagnostics)

        # the one-line edit (same meaning, new text: its fingerprint changes) and a save
        old = text.splitlines()[edit_line]
        statuses = len(rec.status)
        start_at = types.Position(line=edit_line, character=len(old))
        edited = time.monotonic()
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
            content_changes=[types.TextDocumentContentChangePartial(
                range=types.Range(start=start_at, end=start_at), text="  # edited")]))
        client.text_document_did_save(types.DidSaveTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri)))
        await rec.wait_for(lambda: (d := rec.latest_diagnostics(uri)) and d.version == 2 and values_on(
            d, def_line, end_line), timeout=120, what="the edited function's values")
        republished = time.monotonic() - edited
        await rec.wait_for(lambda: any(s["message"].startswith("tests: ") for s in rec.status[statuses:]),
                           timeout=600, what="the edit's run to finish")
        all_done = time.monotonic() - edited
        return {"open_first_values_s": round(first_values, 3), "open_all_values_s": round(all_values, 3),
                "edit_function_republished_s": round(republished, 3), "edit_all_done_s": round(all_done, 3),
                "tests": tests, "diagnostics": diagnostics_before, "module_lines": len(text.splitlines())}
    finally:
        await stop(client, drainer)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sdist", type=Path, help="more-itertools source distribution (default: fetched)")
    parser.add_argument("--function", default="tail", help="the function whose line is edited")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--python", default="", help="the project's interpreter (one without pytest: egcfg's own test reading)")
    args = parser.parse_args()
    sdist = args.sdist or fetch_sdist()
    rounds = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="egcfg-edit-bench-") as scratch:
            root = unpack(sdist, Path(scratch))
            rounds.append(await one_round(root, root / "more_itertools" / "recipes.py", args.function, args.python))
    figures = {key: statistics.median(r[key] for r in rounds) for key in rounds[0] if key.endswith("_s")}
    print(json.dumps({"module": f"{sdist.name}:more_itertools/recipes.py", "edited_function": args.function,
                      "python": args.python or "(the server's choice)",
                      "module_lines": rounds[0]["module_lines"], "tests": rounds[0]["tests"],
                      "median": figures, "rounds": rounds, "cpus": __import__("os").cpu_count()}, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
