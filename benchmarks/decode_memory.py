"""What guided decoding allocates beyond the weights and the KV cache, at a long context, on the CPU.

The GPU suite measures peak memory of `decode.start` + `set_signal` + guided steps at a 4k context
(benchmarks/gpu/suite.py, measure_shape) against weights + KV (2 rows x 4,096 slots). This runs the
same sequence on a small random-weight model with real tensors, and reads every allocation of the
CPU allocator through torch's profiler (its allocation events carry the allocator's running total),
so the peak and what is still live after each phase are exact byte counts, not estimates.

    .venv/bin/python benchmarks/decode_memory.py [--config small] [--context 3600] [--signal 400] [--json]

Run it against another checkout of the engine (e.g. `git archive <commit> engine | tar -x -C DIR`)
with PYTHONPATH=DIR to compare before and after side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))   # after PYTHONPATH: another engine may come first


def allocator_trace(function):
    """Run `function()` under the profiler; (its result, [(time ns, running total bytes)]) where the
    running total counts from 0 at the start (frees of older tensors take it below 0)."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = function()

    def walk(nodes):
        for node in nodes:
            yield node
            yield from walk(node.children)

    events = sorted((n for n in walk(prof.profiler.kineto_results.experimental_event_tree())
                     if n.tag == _EventType.Allocation and n.extra_fields.device.type == "cpu"),
                    key=lambda n: n.start_time_ns)
    if not events:
        return result, []
    # the running total carries on from earlier profiled spans: count from what it was before the first event
    base = events[0].extra_fields.total_allocated - events[0].extra_fields.alloc_size
    return result, [(n.start_time_ns, n.extra_fields.total_allocated - base) for n in events]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="small", help="random config (default: %(default)s)")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--context", type=int, default=3600, help="prompt tokens (default: %(default)s)")
    parser.add_argument("--signal", type=int, default=400, help="signal tokens (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=8, help="guided steps (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prefill-chunk", type=int, default=0,
                        help="override decode.PREFILL_CHUNK (engines that have it; default: theirs)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    import engine.generation.decode as decode
    from engine.bench.speed import build_inputs
    from engine.generation.random_models import random_model

    torch.set_num_threads(args.threads)
    if args.prefill_chunk and hasattr(decode, "PREFILL_CHUNK"):
        decode.PREFILL_CHUNK = args.prefill_chunk
    loaded = random_model(args.config, device="cpu", dtype=args.dtype)
    model, tokenizer = loaded.model, loaded.tokenizer
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    prompt, i_dyn, signal = build_inputs(tokenizer, args.context, args.signal)
    text = model.config.get_text_config()
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    element = torch.empty((), dtype=model.dtype).element_size()
    kv_two_rows = 2 * 2 * text.num_hidden_layers * text.num_key_value_heads * head_dim * 4096 * element

    def phases(dec=None):
        """(name, function) of each phase; the state passes from one to the next."""
        state = {}

        def start():
            state["dec"] = decode.start(model, tokenizer, prompt, i_dyn, gamma=3.0, def_indent=-1, max_new_tokens=64,
                                        stop_ids=frozenset())

        def signal_():
            decode.set_signal(state["dec"], signal)

        def steps():
            token = state["dec"].pending
            for _ in range(args.steps):
                token = decode.decode_one_token(model, state["dec"].guided, token, 3.0)

        return state, [("start", start), ("set_signal", signal_), ("steps", steps)]

    with torch.inference_mode():
        state, todo = phases()
        for _, function in todo:   # warm-up: lazy imports, the attention functions' first calls
            function()
        del state
        state, todo = phases()
        live, peak, report_phases = 0, 0, {}
        for name, function in todo:
            _, trace = allocator_trace(function)
            inside = max((total for _, total in trace), default=0)
            net = trace[-1][1] if trace else 0
            report_phases[name] = {"peak_mb": round((live + inside) / 2**20, 2),
                                   "live_after_mb": round((live + net) / 2**20, 2)}
            peak = max(peak, live + inside)
            live += net
    dec = state["dec"]
    held = {id(t): t for kv in (vars(dec).get("uncond"), vars(dec).get("uncond_kv"), dec.guided, dec.head)
            if kv is not None for layer in kv.layers for t in (layer.buffer_keys, layer.buffer_values)}
    kv_live = sum(t.untyped_storage().nbytes() for t in held.values())
    report = {
        "benchmark": "benchmarks/decode_memory.py", "config": args.config, "dtype": args.dtype,
        "engine": str(Path(decode.__file__).resolve().parents[2]),
        "prompt_tokens": len(prompt), "signal_tokens": len(signal), "context_tokens": dec.guided.length,
        "weights_mb": round(weights / 2**20, 2), "kv_4k_two_rows_mb": round(kv_two_rows / 2**20, 2),
        "peak_allocated_mb": round(peak / 2**20, 2), "live_after_mb": round(live / 2**20, 2),
        "kv_buffers_held_mb": round(kv_live / 2**20, 2),
        "peak_over_weights_plus_kv": round((weights + peak) / (weights + kv_two_rows), 3),
        "peak_beyond_kv_over_kv": round((peak - kv_two_rows) / kv_two_rows, 3),
        "phases": report_phases, "prefill_chunk": getattr(decode, "PREFILL_CHUNK", None), "torch": torch.__version__, "threads": args.threads,
    }
    print(json.dumps(report, indent=None if args.json else 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
