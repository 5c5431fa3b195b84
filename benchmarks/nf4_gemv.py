"""egcfg's NF4 kernel (engine/generation/nf4_gemv.py) against bitsandbytes' on the linear layers of
one decoder layer of a published shape, for 1-4 rows; prints one JSON object.

    python benchmarks/nf4_gemv.py                                  # qwen2.5-coder-7b, nested statistics
    python benchmarks/nf4_gemv.py --config deepseek-coder-6.7b --plain
    python benchmarks/nf4_gemv.py --dry-run                        # CPU: tiny shapes, the plumbing only

Each shape is stacked in enough copies (--stack-mb) that the weights do not stay in the L2 cache
between calls, as in a real step; a copy's time is the stack's time divided by the copies. Both
kernels are timed eagerly (launch overhead included) and replayed from a CUDA graph (device time,
as in the compiled step). `gbps` counts the bytes a call must read: packed weights, absmax, input.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from engine.errors import error_line  # noqa: E402
from engine.generation import nf4_gemv  # noqa: E402
from engine.generation.random_models import RANDOM_CONFIGS  # noqa: E402


def layer_shapes(config: str) -> dict[str, tuple[int, int]]:
    """(out, in) features of a decoder layer's linears."""
    shape = RANDOM_CONFIGS[config]
    hidden, inter = shape["hidden_size"], shape["intermediate_size"]
    kv = hidden // shape["num_attention_heads"] * shape["num_key_value_heads"]
    return {"q": (hidden, hidden), "k": (kv, hidden), "v": (kv, hidden), "o": (hidden, hidden),
            "gate": (inter, hidden), "up": (inter, hidden), "down": (hidden, inter)}


def build_stack(n: int, k: int, copies: int, device: str, nested: bool) -> torch.nn.ModuleList:
    import bitsandbytes as bnb

    layers = torch.nn.ModuleList()
    for _ in range(copies):
        layer = bnb.nn.Linear4bit(k, n, bias=False, compute_dtype=torch.bfloat16, quant_type="nf4", device="meta")
        dense = torch.randn(n, k, device=device, dtype=torch.bfloat16) / math.sqrt(k)
        layer.weight = bnb.nn.Params4bit(dense, requires_grad=False, quant_type="nf4",
                                         compress_statistics=nested).to(device)
        layers.append(layer)
    return layers


def read_bytes(t: nf4_gemv.NF4Tensors, rows: int) -> int:
    return t.packed.numel() + t.absmax.numel() * t.absmax.element_size() + rows * t.k * 2


def per_call_us(function, calls: int, repeats: int, cuda: bool) -> float:
    """Median over `repeats` of the time of `function()` (which makes `calls` calls), per call."""
    times = []
    for _ in range(repeats + 1):   # the first is a warm-up
        if cuda:
            torch.cuda.synchronize()
        begin = time.perf_counter()
        function()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - begin)
    return 1e6 * statistics.median(times[1:]) / calls


def graphed(function, cuda: bool):
    """`function` replayed from a CUDA graph (None off CUDA, or the capture's error as a string)."""
    if not cuda:
        return None
    try:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            function()   # warm-up outside the capture (allocations, autotuning, lazy init)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            function()
        return graph.replay
    except Exception as error:   # bitsandbytes' path may not be capturable: say so, time the rest
        return f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200] if str(error).strip() else ''}"


@torch.no_grad()
def measure_shape(name: str, n: int, k: int, args, device: str) -> dict:
    import bitsandbytes as bnb

    cuda = device == "cuda"
    one = build_stack(n, k, 1, device, not args.plain)
    bytes_one = read_bytes(nf4_gemv.nf4_tensors(one[0].weight), 1)
    copies = max(1, math.ceil(args.stack_mb * 2**20 / bytes_one)) if cuda else 2
    stack = build_stack(n, k, copies, device, not args.plain)
    report = nf4_gemv.use_nf4_gemv(stack)
    if not report.switched:   # off CUDA: the op's reference path, to exercise the plumbing
        for layer in stack:
            layer._egcfg_nf4 = nf4_gemv.nf4_tensors(layer.weight)
    out: dict = {"out_features": n, "in_features": k, "copies": copies, "switched": report.switched,
                 "reason": report.reason, "rows": {}}
    for rows in range(1, nf4_gemv.MAX_ROWS + 1):
        x = torch.randn(rows, k, device=device, dtype=torch.bfloat16)
        ours = lambda: [nf4_gemv.gemv_forward(layer, x) for layer in stack]   # noqa: E731
        theirs = lambda: [bnb.nn.Linear4bit.forward(layer, x) for layer in stack]   # noqa: E731
        expected, got = theirs()[0].float(), ours()[0].float()
        row: dict = {"max_error": round(((got - expected).abs().max() / expected.abs().max()).item(), 5)}
        for label, function in (("egcfg", ours), ("bitsandbytes", theirs)):
            row[f"{label}_eager_us"] = round(per_call_us(function, copies, args.repeats, cuda), 2)
            replay = graphed(function, cuda)
            if callable(replay):
                microseconds = per_call_us(replay, copies, args.repeats, cuda)
                row[f"{label}_graph_us"] = round(microseconds, 2)
                row[f"{label}_graph_gbps"] = round(read_bytes(stack[0]._egcfg_nf4, rows) / microseconds / 1e3, 1)
            elif replay is not None:
                row[f"{label}_graph_error"] = replay
        if "egcfg_graph_us" in row and "bitsandbytes_graph_us" in row:
            row["graph_speedup"] = round(row["bitsandbytes_graph_us"] / row["egcfg_graph_us"], 2)
        out["rows"][rows] = row
    if args.sweep:
        out["sweep"] = sweep(stack, k, device, args)
    del stack, one
    if cuda:
        torch.cuda.empty_cache()
    return out


SWEEP_ROWS = (1, 2, 4)


def sweep(stack, k: int, device: str, args) -> dict:
    """Our kernel's CUDA-graph time per call with each of nf4_gemv.CANDIDATE_CONFIGS (what `auto`
    chooses from) and SWEEP_ONLY_CONFIGS: name -> rows -> us (or the error when a configuration gives another result than
    bitsandbytes, or does not compile)."""
    import bitsandbytes as bnb

    cuda = device == "cuda"
    defaults = [layer._egcfg_nf4 for layer in stack]
    out: dict = {}
    try:
        for config in nf4_gemv.CANDIDATE_CONFIGS + nf4_gemv.SWEEP_ONLY_CONFIGS:
            for layer, tensors in zip(stack, defaults):
                layer._egcfg_nf4 = tensors._replace(config=config)
            times: dict = {}
            for rows in SWEEP_ROWS:
                x = torch.randn(rows, k, device=device, dtype=torch.bfloat16)
                ours = lambda: [nf4_gemv.gemv_forward(layer, x) for layer in stack]   # noqa: E731
                expected = bnb.nn.Linear4bit.forward(stack[0], x).float()
                try:
                    error = ((ours()[0].float() - expected).abs().max() / expected.abs().max()).item()
                except Exception as failure:   # e.g. more registers or shared memory than the GPU has
                    times[rows] = error_line(failure, 160)
                    continue
                replay = graphed(ours, cuda)
                if error > nf4_gemv.CHECK_TOLERANCE:
                    times[rows] = f"differs from bitsandbytes by {error:.3g}"
                elif callable(replay):
                    times[rows] = round(per_call_us(replay, len(stack), args.repeats, cuda), 2)
                else:
                    times[rows] = replay
            out[config.name] = times
    finally:
        for layer, tensors in zip(stack, defaults):
            layer._egcfg_nf4 = tensors
    return out


def sweep_summary(shapes: dict) -> dict:
    """Per configuration, one decoder layer's time (the sum over its linears) for each row count, and
    the fastest configuration for each row count."""
    totals: dict = {}
    for name in next(iter(shapes.values()))["sweep"]:
        totals[name] = {}
        for rows in SWEEP_ROWS:
            times = [shape["sweep"][name][rows] for shape in shapes.values()]
            totals[name][rows] = round(sum(times), 1) if all(isinstance(t, float) for t in times) else None
    best = {rows: min((t[rows], name) for name, t in totals.items() if t[rows] is not None)
            for rows in SWEEP_ROWS if any(t[rows] is not None for t in totals.values())}
    fastest = {rows: {"config": name, "us": us} for rows, (us, name) in best.items()}
    return {"decoder_layer_us": totals, "fastest": fastest}


def decoder_layer_us(shapes: dict, rows: int, label: str) -> float | None:
    times = [shape["rows"][rows].get(f"{label}_graph_us") for shape in shapes.values()]
    return None if None in times else round(sum(times), 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="qwen2.5-coder-7b", choices=list(RANDOM_CONFIGS))
    parser.add_argument("--plain", action="store_true", help="fp32 absmax (real checkpoints) instead of nested")
    parser.add_argument("--stack-mb", type=float, default=256, help="weights per stacked shape (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--sweep", action="store_true",
                        help="also time our kernel with other block sizes and warp counts (about a minute more)")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes: checks the script runs")
    print(json.dumps(run(parser.parse_args())))
    return 0


def run(args: argparse.Namespace, save=None) -> dict:
    """The whole measurement (also the GPU suite's `kernel` part, which passes `save` to keep what
    is done when its time box ends)."""
    device = "cuda" if torch.cuda.is_available() and not args.dry_run else "cpu"
    shapes = {"q": (96, 128), "down": (64, 192)} if args.dry_run else layer_shapes(args.config)
    if args.dry_run:
        args.repeats = 2
    result: dict = {"config": "dry-run" if args.dry_run else args.config, "nested": not args.plain,
                    "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                    "torch": torch.__version__, "default_config": nf4_gemv.DEFAULT_CONFIG.name,
                    "shapes": {}}
    try:
        import bitsandbytes
        import triton

        result.update(bitsandbytes=bitsandbytes.__version__, triton=triton.__version__)
    except ImportError as error:
        result["missing"] = str(error)
    for name, (n, k) in shapes.items():
        result["shapes"][name] = measure_shape(name, n, k, args, device)
        if save:
            save(**result)
    # one decoder layer: the sum over its linears, per row count
    result["decoder_layer_graph_us"] = {rows: {label: decoder_layer_us(result["shapes"], rows, label)
                                               for label in ("egcfg", "bitsandbytes")}
                                        for rows in range(1, nf4_gemv.MAX_ROWS + 1)}
    if args.sweep and device == "cuda":
        result["sweep"] = sweep_summary(result["shapes"])
    if save:
        save(**result)
    return result


if __name__ == "__main__":
    sys.exit(main())
