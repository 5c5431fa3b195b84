"""The GPU suite's `rows:<config>` part: does a 2-row NF4 step cost what a 1-row one does?

On the H100 the 7B shape's compiled guided step (2 rows) took 13.5 ms and the greedy one (1 row)
7.8 ms; in bf16 the guided step took 10.3 ms. bitsandbytes 0.50 runs `bitsandbytes::gemm_4bit`
with its fused kernel for small row counts (M <= 4 always on CUDA) and dequantizes the whole weight
followed by a plain matmul otherwise. This part measures, for rows 1, 2, 3 and 4, one forward of
the shape's decoder layers, cut to a few (no KV cache, no LM head: the quantized weights' share
of a step), eager and compiled,
in NF4 and in bf16, and which bitsandbytes path each NF4 forward took:

    ops            bitsandbytes ops called in one eager forward, by name (a torch dispatch mode),
                   with the input shapes, dtypes and contiguity they were given
    cuda_paths     calls of the CUDA backend's fused kernel and of its dequantize + matmul
                   fallback (the backend's functions wrapped), eager and while compiling/recording

    from nf4_rows import measure_rows; measure_rows("qwen2.5-coder-7b", dry_run=False, save=print)
"""

from __future__ import annotations

import statistics
import time
from collections import Counter

ROWS = (1, 2, 3, 4)


def sync_device():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def median_ms(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        sync_device()
        begin = time.perf_counter()
        function()
        sync_device()
        times.append(time.perf_counter() - begin)
    return round(1000 * statistics.median(times), 3)


# Kernel names -> what they do, first match wins (names as CUDA reports them; lower-cased)
KERNEL_KINDS = (("nf4", ("gemm_4bit", "kgemm", "nf4", "dequantize")),
                ("attention", ("attention", "fmha", "flash", "sdpa", "softmax")),
                ("gemm", ("gemm", "gemv", "cutlass", "sm90_", "sm80_", "nvjet", "cublas", "matmul")),
                ("copy", ("copy", "index", "scatter", "cat", "fill")))


def kernel_kind(name: str) -> str:
    lower = name.lower()
    return next((kind for kind, words in KERNEL_KINDS if any(word in lower for word in words)), "other")


def device_profile(function, steps: int, top: int = 12) -> dict:
    """Where `function()`'s device time goes, per call, from the torch profiler: the total, by kind
    (KERNEL_KINDS) and the `top` kernels (name, launches a call, us a call). On a CPU the same from
    the CPU ops (the dry run tests the logic). Kernels inside a CUDA graph appear where the driver
    reports them; `kernels_seen` says whether any did."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    function()   # warm (a first call may compile or allocate)
    sync_device()
    with profile(activities=[ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]) as recorded:
        for _ in range(steps):
            function()
        sync_device()
    rows = []
    for event in recorded.key_averages():
        device_us = getattr(event, "self_device_time_total", None)
        if device_us is None:
            device_us = getattr(event, "self_cuda_time_total", 0)
        us = device_us if cuda else event.self_cpu_time_total
        if us > 0 and (not cuda or str(getattr(event, "device_type", "")).endswith("CUDA")):
            rows.append((event.key, event.count / steps, us / steps))
    rows.sort(key=lambda row: -row[2])
    by_kind: Counter = Counter()
    for name, _, us in rows:
        by_kind[kernel_kind(name)] += us
    return {"steps": steps, "kernels_seen": bool(rows), "device_us_per_call": round(sum(us for *_, us in rows), 1),
            "us_by_kind": {kind: round(us, 1) for kind, us in by_kind.most_common()},
            "top": [[name[:100], round(count, 2), round(us, 1)] for name, count, us in rows[:top]]}


def bnb_op_calls(function) -> dict:
    """bitsandbytes ops called by `function()`, by name, with what they were given."""
    from torch.utils._python_dispatch import TorchDispatchMode

    calls: Counter = Counter()
    inputs: dict[str, set] = {}

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = str(func)
            if name.startswith("bitsandbytes"):
                calls[name] += 1
                first = args[0] if args else None
                if hasattr(first, "shape"):
                    inputs.setdefault(name, set()).add(
                        f"{list(first.shape)} {str(first.dtype).replace('torch.', '')}"
                        f"{'' if first.is_contiguous() else ' non-contiguous'}")
            return func(*args, **(kwargs or {}))

    with Recorder():
        function()
    return {"calls": dict(calls), "inputs": {name: sorted(seen) for name, seen in inputs.items()}}


class CudaPaths:
    """Counts the CUDA backend's fused-kernel and dequantize-fallback calls of gemm_4bit (its
    module functions wrapped; absent on a machine without the CUDA backend)."""

    NAMES = ("_gemm_4bit_kernel_impl", "_dequant_linear_fallback")

    def __init__(self):
        self.counts: Counter = Counter()
        self.module = None
        try:
            from bitsandbytes.backends.cuda import ops as module
        except Exception:   # no CUDA backend here (CPU dry run)
            return
        if all(hasattr(module, name) for name in self.NAMES):
            self.module = module
            self.originals = {name: getattr(module, name) for name in self.NAMES}
            for name in self.NAMES:
                setattr(module, name, self._counted(name, self.originals[name]))

    def _counted(self, name, function):
        def wrapper(*args, **kwargs):
            rows = args[0].numel() // args[0].shape[-1] if args and hasattr(args[0], "shape") else None
            self.counts[f"{'fused' if name == '_gemm_4bit_kernel_impl' else 'dequantize'}:M={rows}"] += 1
            return function(*args, **kwargs)
        return wrapper

    def take(self) -> dict:
        counts, self.counts = dict(self.counts), Counter()
        return counts

    def close(self) -> None:
        if self.module is not None:
            for name, function in self.originals.items():
                setattr(self.module, name, function)


def measure_rows(config: str, dry_run: bool, save) -> None:
    import torch

    from engine.generation.random_models import random_model

    cuda = torch.cuda.is_available() and not dry_run
    config = "tiny" if dry_run else config
    layers = 2   # the per-layer cost is the question; fewer layers compile faster
    for name in ("cache_size_limit", "recompile_limit"):   # one graph per row count (dynamic=False)
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), 16))
    mode = "reduce-overhead" if cuda else "default"
    save(config=config, layers=layers, compile_mode=mode, rows=list(ROWS))
    paths = CudaPaths()
    try:
        # nf4: bitsandbytes' kernel throughout, projections separate (as the first runs measured);
        # nf4_egcfg: 1-4 rows through egcfg's own kernel (engine/generation/nf4_gemv.py); bf16: the
        # unquantized bound
        for precision in ("nf4", "nf4_egcfg", "bf16"):
            loaded = random_model(config, device="cuda" if cuda else "cpu", dtype="bf16",
                                  quantization="4bit" if precision.startswith("nf4") else "none", layers=layers,
                                  nf4_kernel="egcfg" if precision == "nf4_egcfg" else "bitsandbytes", join=False)
            if precision == "nf4_egcfg":
                save(nf4_egcfg_kernel=loaded.nf4_kernel)
            model = loaded.model
            result: dict = {}
            with torch.inference_mode():
                for rows in ROWS:
                    ids = torch.full((rows, 1), 7, dtype=torch.long, device=model.device)

                    def forward(ids=ids):   # the decoder layers only: the bf16 LM head would dominate 2 layers
                        return model.model(input_ids=ids, use_cache=False).last_hidden_state

                    entry: dict = {}
                    paths.take()
                    forward()
                    if precision == "nf4":
                        entry["ops"] = bnb_op_calls(forward)
                        entry["cuda_paths_eager"] = paths.take()
                    entry["eager_ms"] = median_ms(forward, 3 if dry_run else 10)
                    compiled = torch.compile(forward, mode=mode, dynamic=False)
                    begin = time.perf_counter()
                    compiled()
                    compiled()
                    sync_device()
                    entry["compile_s"] = round(time.perf_counter() - begin, 1)
                    if precision == "nf4":
                        entry["cuda_paths_compiled"] = paths.take()
                    entry["compiled_ms"] = median_ms(compiled, 3 if dry_run else 20)
                    entry["compiled_max_abs_difference"] = round(float((compiled().float() - forward().float()).abs().max()), 5)
                    result[str(rows)] = entry
                    save(**{precision: result})
            summary = {f"{precision}_compiled_ms_by_rows": {rows: result[rows]["compiled_ms"] for rows in result},
                       f"{precision}_eager_ms_by_rows": {rows: result[rows]["eager_ms"] for rows in result}}
            if "1" in result and "2" in result:
                summary[f"{precision}_compiled_2_over_1_rows"] = round(result["2"]["compiled_ms"] / result["1"]["compiled_ms"], 3)
            save(**summary)
            del model, loaded
            torch._dynamo.reset()
            if cuda:
                torch.cuda.empty_cache()
    finally:
        paths.close()
