"""Language-server benchmark: N inline completions in a row on a tiny model over stdio, printing
one JSON object: the server's RSS growth, the delay between the engine's event and the client
receiving the streamed line (engineTime in egcfg/completionLine), and hover round trips on cached
traces (an upper bound of the server time).

    .venv/bin/python benchmarks/lsp_memory.py [--count 200] [--max-new-tokens 4]

Bars (docs/protocol.md / issue 4): RSS growth < 5 % over the run (measured after a warm-up),
first streamed line < 20 ms after the engine's event, hover < 100 ms with cached traces."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "lsp_server")]

from lsprotocol import types  # noqa: E402

from test_lsp_harness import open_doc, start, stop  # noqa: E402
from test_lsp_protocol import inline_params, make_project, ready  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else None


async def main(args) -> dict:
    from engine.generation.tiny import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="egcfg-lsp-bench-"))
    model = build_tiny_model(work / "tiny", arch="llama", seed=0)
    root = work / "project"
    root.mkdir()
    module = make_project(root)
    options = {"model": str(model), "device": "cpu", "preset": "baseline", "maxNewTokens": args.max_new_tokens,
               "debounceMs": 0}
    client, rec, drainer = await start(root, options, scripted=False)
    try:
        await ready(rec)
        pid = client._server.pid
        uri = open_doc(client, module)
        await rec.wait_for(lambda: rec.latest_diagnostics(uri), what="diagnostics")
        hover_ms = []
        for _ in range(20):
            started = time.perf_counter()
            await client.text_document_hover_async(types.HoverParams(
                text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=7, character=8)))
            hover_ms.append((time.perf_counter() - started) * 1000)
        warmup = min(20, args.count // 5)
        answered = 0
        rss_start = None
        started = time.perf_counter()
        for index in range(args.count):
            if index == warmup:
                rss_start = rss_mb(pid)
                rec.lines.clear()
            result = await client.text_document_inline_completion_async(inline_params(uri, 2, 4))
            answered += result is not None
        seconds = time.perf_counter() - started
        rss_end = rss_mb(pid)
        delays = [(received - payload["engineTime"]) * 1000 for received, payload in rec.lines]
        firsts = [(received - payload["engineTime"]) * 1000 for received, payload in rec.lines if payload["lineNo"] == 1]
        return {
            "benchmark": "lsp_memory", "model": "tiny-llama (random weights)", "completions": args.count,
            "warmup": warmup, "answered": answered, "seconds": round(seconds, 2),
            "rss_mb_after_warmup": round(rss_start, 1), "rss_mb_end": round(rss_end, 1),
            "rss_growth_pct": round(100 * (rss_end - rss_start) / rss_start, 2),
            "streamed_lines": len(delays),
            "line_delay_ms": {"p50": round(percentile(delays, 0.5), 2), "p95": round(percentile(delays, 0.95), 2),
                              "max": round(max(delays), 2)} if delays else None,
            "first_line_delay_ms": {"p50": round(percentile(firsts, 0.5), 2), "max": round(max(firsts), 2)} if firsts else None,
            "hover_roundtrip_ms": {"p50": round(percentile(hover_ms, 0.5), 2), "max": round(max(hover_ms), 2)},
        }
    finally:
        await stop(client, drainer)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--max-new-tokens", type=int, default=4)
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=1))
