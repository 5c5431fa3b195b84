"""The GPU suite behind benchmarks/gpu/run: every part in its own process with its own time box,
so one part that fails or overruns (out of memory, a compile that takes too long) costs only
itself; each part writes its JSON after every measurement, and what it wrote counts.

Parts (random weights in the published shapes, engine.generation.random_models):

    env                        GPU, driver, versions
    shape:<config>:<precision> forward latency at 1, 2, 4, 6 rows at a 2,000-token context;
                               guided (2-row, gamma 3) and greedy ms per token, eager and compiled
                               (with whether the compiled tokens equal the eager ones), the guided
                               step's device time by kernel, and the guided step compiled in torch's
                               reduce-overhead mode for comparison;
                               peak GPU memory of guided decoding at a 4k context against
                               weights + KV (2 rows x 4,096 slots)
    mem:<config>:<precision>   the shape part's memory figures alone, with the peak and what stays
                               allocated after each phase (start, set_signal, steps)
    rows:<config>              one forward at 1, 2, 3, 4 rows (the decoder layers cut to 2, no cache),
                               eager and compiled, NF4 and bf16, and which bitsandbytes path each
                               NF4 forward took (benchmarks/gpu/nf4_rows.py)
    replay:<config>:<precision> bench replay on MBPP tasks, fast against paper (tasks one by one,
                               the summary rewritten after each)
    replay:<config>:<precision>:compile
                               the fast scheme with compiled guided steps, after an uncounted
                               warm-up task that compiles them and one more uncounted task under
                               a sampling profiler of every thread (`host_profile`)

    python3 benchmarks/gpu/suite.py [--budget 450] [--out FILE] [--data DIR] [--dry-run]

--dry-run runs the same parts on the CPU with the tiny shape and short contexts (tests the logic).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(Path(__file__).resolve().parent))  # nf4_rows, host_profile beside this file

from host_profile import HostSampler  # noqa: E402
from nf4_rows import device_profile, median_ms, sync_device  # noqa: E402 - the timing helpers both files use

# (part, seconds): the plan for one H100/H200 run of under 8 minutes (the parent adds ~10 s). The
# H100 run (gpu-nvidia-h100-80gb-hbm3-20261126-*.json) measured the shapes; the H200 runs
# (gpu-nvidia-h200-20261126-*.json) met the memory and replay bars, found egcfg's NF4 kernel slower
# than bitsandbytes' under CUDA graphs, and profiled the 7B guided step: 8.6 ms on the GPU (NF4
# 5.8, attention 2.2) of 13.0 ms. This plan measures what changed since: the compiled steps as our
# own CUDA graphs (no per-call guards) with grouped-query decode attention and joined projections,
# against torch's reduce-overhead mode in the same process (the 150 tokens/s bar); then the same
# step with each weight shape on the faster kernel as timed at load (nf4-auto: its load report
# holds bitsandbytes' and each of our configurations' time per shape); then the compiled replay on
# 10 MBPP tasks (eager on the same tasks after, as far as its time box allows).
# Earlier parts stay available through --parts (e.g. kernel:qwen2.5-coder-7b=80,
# rows:qwen2.5-coder-7b=80, mem:qwen2.5-coder-7b:nf4=25, shape:qwen2.5-coder-7b:nf4-egcfg=175).
PLAN = [
    ("env", 20),
    ("shape:qwen2.5-coder-7b:nf4", 165),
    ("shape:qwen2.5-coder-7b:nf4-auto", 135),
    ("replay:qwen2.5-coder-1.5b:nf4:compile", 120),
]
KINDS = ("shape", "mem", "rows", "replay", "kernel")
DRY_PLAN = [("env", 30), ("kernel:tiny", 60), ("shape:tiny:bf16", 200), ("shape:tiny:nf4", 200),
            ("mem:tiny:bf16", 60), ("rows:tiny", 200), ("replay:tiny:bf16", 150), ("replay:tiny:fp32:compile", 150)]


# ------------------------------------------------------------------------------------------------
# The parent: runs the parts, merges what they wrote

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, help="seconds for all parts (default: 440; with --dry-run, the dry "
                        "plan's sum)")
    parser.add_argument("--out", help="result file (default: benchmarks/results/gpu-<gpu>-<time>.json)")
    parser.add_argument("--data", default=os.environ.get("EGCFG_DATA") or str(ROOT / ".gpu-data"),
                        help="benchmark data folder with mbpp.jsonl (default: $EGCFG_DATA or .gpu-data)")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes: check the suite's logic")
    parser.add_argument("--parts", help="run only these parts, each PART=SECONDS, comma-separated "
                        "(e.g. replay:qwen2.5-coder-7b:nf4=150); env always runs first")
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--part-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.part:
        return run_part(args.part, Path(args.part_out), args)
    started = time.monotonic()
    plan = parse_parts(args.parts) if args.parts else DRY_PLAN if args.dry_run else PLAN
    if args.budget is None:
        args.budget = float(sum(seconds for _, seconds in DRY_PLAN)) if args.dry_run else 440.0
    report: dict = {"suite": "benchmarks/gpu/run", "dry_run": args.dry_run, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                                   time.gmtime()),
                    "budget_s": args.budget, "parts": {}}
    out = Path(args.out) if args.out else None
    scale = args.budget / sum(seconds for _, seconds in plan)
    for part, seconds in plan:
        left = args.budget - (time.monotonic() - started)
        box = min(seconds * max(scale, 1.0) if args.dry_run else seconds * scale, left)
        if box < 10:
            report["parts"][part] = {"status": "skipped", "why": "the time budget ran out"}
            continue
        report["parts"][part] = run_boxed(part, box, args)
        if out is None and part == "env":
            out = default_out(report["parts"]["env"], args.dry_run)
        write(out, report)
        print(f"[gpu suite] {part}: {report['parts'][part].get('status')} "
              f"({report['parts'][part].get('seconds', 0):.0f} s)", file=sys.stderr, flush=True)
    report["seconds"] = round(time.monotonic() - started, 1)
    out = out or default_out({}, args.dry_run)
    write(out, report)
    print(out)
    return 0


def parse_parts(text: str) -> list[tuple[str, float]]:
    """`PART=SECONDS,...` -> the plan, with `env` first (the result file is named after its GPU; an
    `env=SECONDS` given sets its box). Every part is checked here, before a GPU second is spent."""
    plan = [("env", 20.0)]
    for item in filter(None, (piece.strip() for piece in text.split(","))):
        part, _, seconds = item.partition("=")
        try:
            box = float(seconds)
        except ValueError:
            raise SystemExit(f"--parts: {item!r} needs =SECONDS (a number), e.g. {part}=60") from None
        if part == "env":
            plan[0] = ("env", box)
            continue
        problem = part_problem(part)
        if problem:
            raise SystemExit(f"--parts: {problem}")
        plan.append((part, box))
    return plan


PRECISIONS = ("nf4", "nf4-egcfg", "nf4-auto", "nf4-separate", "bf16", "fp32")


def part_problem(part: str) -> str:
    """Why `part` is not a part this suite can run ("" when it is)."""
    from engine.generation.random_models import RANDOM_CONFIGS

    usage = (f"expected KIND:CONFIG[:PRECISION[:compile]] with KIND one of {', '.join(KINDS)}, a CONFIG of "
             f"{', '.join(RANDOM_CONFIGS)} and a PRECISION of {', '.join(PRECISIONS)}, got {part!r}")
    kind, *rest = part.split(":")
    if kind == "env" and not rest:
        return ""
    if kind not in KINDS or not rest or rest[0] not in RANDOM_CONFIGS:
        return usage
    needs_precision = kind in ("shape", "mem", "replay")
    if needs_precision and (len(rest) < 2 or rest[1] not in PRECISIONS):
        return usage
    if len(rest) > (3 if kind == "replay" else 2 if needs_precision else 1) or rest[2:] not in ([], ["compile"]):
        return usage
    return ""


def run_boxed(part: str, seconds: float, args) -> dict:
    """Run one part in a child process, killed after `seconds`; its last JSON is the result."""
    target = Path(os.environ.get("TMPDIR", "/tmp")) / f"egcfg-gpu-part-{os.getpid()}-{re.sub(r'[^a-z0-9.]+', '_', part)}.json"
    target.unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--part", part, "--part-out", str(target),
               "--data", args.data] + (["--dry-run"] if args.dry_run else [])
    started = time.monotonic()
    try:
        finished = subprocess.run(command, timeout=seconds, capture_output=True, text=True)
        status = "ok" if finished.returncode == 0 else f"failed (exit {finished.returncode})"
        tail = finished.stderr[-1500:]
    except subprocess.TimeoutExpired as expired:
        status = f"stopped at its {seconds:.0f} s time box"
        tail = (expired.stderr or b"")[-1500:].decode("utf-8", "replace") if isinstance(expired.stderr, bytes) \
            else (expired.stderr or "")[-1500:]
    result = json.loads(target.read_text()) if target.exists() else {}
    result.update(status=status, seconds=round(time.monotonic() - started, 1))
    if status != "ok":
        result["stderr_tail"] = tail
    target.unlink(missing_ok=True)
    return result


def default_out(env: dict, dry_run: bool) -> Path:
    name = env.get("gpu") or ("cpu-dry-run" if dry_run else "no-gpu")
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    folder = ROOT / "benchmarks" / "results" if not dry_run else Path(os.environ.get("TMPDIR", "/tmp"))
    return folder / f"gpu-{slug}-{time.strftime('%Y%m%d-%H%M%S')}.json"


def write(path: Path | None, data: dict) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=1, default=str))
    temporary.replace(path)


# ------------------------------------------------------------------------------------------------
# Parts (child processes)

def run_part(part: str, out: Path, args) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    kind, *rest = part.split(":")
    record: dict = {"part": part}

    def save(**values):
        record.update(values)
        write(out, record)

    if kind == "env":
        save(**environment())
    elif kind == "shape":
        measure_shape(rest[0], rest[1], args.dry_run, save)
    elif kind == "mem":
        measure_memory_only(rest[0], rest[1], args.dry_run, save)
    elif kind == "rows":
        from nf4_rows import measure_rows

        measure_rows(rest[0], args.dry_run, save)
    elif kind == "replay":
        measure_replay(rest[0], rest[1], args.data, args.dry_run, save, compile=rest[2:] == ["compile"])
    elif kind == "kernel":   # benchmarks/nf4_gemv.py: egcfg's NF4 kernel against bitsandbytes', per linear
        sys.path.insert(0, str(ROOT / "benchmarks"))
        import nf4_gemv as kernel_bench

        kernel_bench.run(argparse.Namespace(config=rest[0], plain=False, stack_mb=256, repeats=20, sweep=True,
                                            dry_run=args.dry_run), save)
    else:
        raise SystemExit(f"unknown part {part}")
    return 0


def environment() -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    for name in ("transformers", "bitsandbytes", "accelerate", "tokenizers"):
        try:
            info[name] = __import__(name).__version__
        except Exception as error:   # a missing package is a finding, not a crash
            info[name] = f"missing ({type(error).__name__})"
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu_memory_mb=round(props.total_memory / 2**20), multiprocessors=props.multi_processor_count)
        try:
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception:
            pass
    return info


def _load(config: str, precision: str, dry_run: bool, save=None):
    """A random model of the shape; precision nf4 (as the engine loads 4-bit on a GPU: bitsandbytes'
    kernel, sibling projections joined), nf4-egcfg (1-4 rows through egcfg's Triton kernel where it
    passes its check), nf4-auto (per weight shape the faster of the two, timed at load: the load
    report holds every shape's times), nf4-separate (projections not joined), bf16 or fp32."""
    from engine.generation.random_models import random_model

    device = "cpu" if dry_run else "cuda"
    quantization = "4bit" if precision.startswith("nf4") else "none"
    loaded = random_model(config, device=device, dtype="fp32" if precision == "fp32" else "bf16",
                          quantization=quantization, layers=None,
                          nf4_kernel={"nf4-egcfg": "egcfg", "nf4-auto": "auto"}.get(precision),
                          join=precision != "nf4-separate")
    if save is not None and loaded.nf4_kernel is not None:
        save(nf4_kernel=loaded.nf4_kernel)
    return loaded


def measure_shape(config: str, precision: str, dry_run: bool, save) -> None:
    import torch

    from engine.bench.speed import build_inputs
    from engine.generation import decode
    from engine.generation.compiled import CompiledStep, step_status

    context, signal_tokens, tokens = (96, 24, 6) if dry_run else (2000, 400, 32)
    cuda = torch.cuda.is_available() and not dry_run
    started = time.perf_counter()
    loaded = _load(config, precision, dry_run, save)
    model, tokenizer = loaded.model, loaded.tokenizer
    sync_device()
    weights_mb = torch.cuda.memory_allocated() / 2**20 if cuda else sum(
        p.numel() * p.element_size() for p in model.parameters()) / 2**20
    save(config=config, precision=precision, build_s=round(time.perf_counter() - started, 1),
         weights_mb=round(weights_mb), parameters=sum(p.numel() for p in model.parameters()))
    prompt, i_dyn, signal = build_inputs(tokenizer, context, signal_tokens)

    # nf4-auto is the second 7B part of a plan: its weights and memory are nf4's, and its load
    # spends time timing the kernels, so it measures only what the kernel choice changes: the
    # guided step, eager and compiled
    second = precision == "nf4-auto"
    with torch.inference_mode():
        # one-token forward latency, rows x 2,000-token context
        base = decode.prefill(model, prompt[:-1], room=64)
        latency = {}
        for rows in () if second else (1, 2, 4, 6):
            kv = decode.branch(base, 0, rows, room=64)
            ids = torch.full((rows, 1), prompt[-1], dtype=torch.long, device=model.device)

            def step(kv=kv, ids=ids):
                decode.forward(model, kv, ids)
                decode.crop(kv, kv.length - 1)
            step()
            latency[str(rows)] = round(median_ms(step, 3 if dry_run else 10), 3)
        del base
        save(forward_ms_by_rows=latency or None, context_tokens=len(prompt))

        # guided (2 rows) and greedy (1 row), eager, then compiled from the same fresh states
        def fresh(gamma):
            dec = decode.start(model, tokenizer, prompt, i_dyn, gamma=gamma, def_indent=-1,
                               max_new_tokens=4 * tokens + 64, stop_ids=frozenset())
            if gamma:
                decode.set_signal(dec, signal)
            return dec, (dec.guided if gamma else dec.uncond)

        def tokens_and_ms(gamma, step):
            dec, kv = fresh(gamma)
            token, chosen, times = dec.pending, [], []
            for _ in range(tokens + 2):
                sync_device()
                begin = time.perf_counter()
                token = step(kv, token)
                sync_device()
                times.append(time.perf_counter() - begin)
                chosen.append(token)
            return chosen, 1000 * statistics.median(times[2:])

        def eager_step(gamma, margins):
            def step(kv, token):
                ids = torch.full((kv.rows, 1), token, dtype=torch.long, device=kv.positions.device)
                scores = decode.cfg_scores(decode.forward(model, kv, ids)[:, -1], gamma)
                top = scores.topk(2).values
                margins.append(float(top[0] - top[1]))
                return int(scores.argmax())
            return step

        eager, margins = {}, {}
        for name, gamma in (("guided", 3.0),) if second else (("guided", 3.0), ("greedy", 0.0)):
            margins[name] = []
            eager[name] = tokens_and_ms(gamma, eager_step(gamma, margins[name]))
            save(**{f"{name}_eager_ms_per_token": round(eager[name][1], 3),
                    f"{name}_eager_tokens_per_s": round(1000 / eager[name][1], 1)})
        if latency:
            del step, kv, ids   # the last latency cache (6 rows x 2,064 slots) would count in the peak
        if not second:
            measure_memory(model, tokenizer, weights_mb, cuda, dry_run, save)

        # compiled last: a compile that overruns the time box loses only its own figures. The
        # default mode (inductor + our CUDA graph), then torch's reduce-overhead for comparison.
        runs = (("guided", "guided", 3.0, 2, None), ("greedy", "greedy", 0.0, 1, None),
                ("guided_reduce_overhead", "guided", 3.0, 2, "reduce-overhead"))
        for name, base, gamma, rows, mode in runs[:1] if second else runs:
            try:
                stepper = CompiledStep(model, rows, gamma, mode=mode)
                begin = time.perf_counter()
                stepper.step(fresh(gamma)[1], prompt[-1])
                sync_device()
                compile_s = time.perf_counter() - begin
                chosen, ms = tokens_and_ms(gamma, stepper.step)
                save(**{f"{name}_compile_s": round(compile_s, 1), f"{name}_compiled_ms_per_token": round(ms, 3),
                        f"{name}_compiled_tokens_per_s": round(1000 / ms, 1),
                        f"{name}_compiled_speedup": round(eager[base][1] / ms, 2),
                        f"{name}_compiled_matches_eager": chosen == eager[base][0],
                        f"{name}_first_difference": next((i for i, (a, b) in enumerate(zip(chosen, eager[base][0]))
                                                          if a != b), None),
                        f"{name}_eager_min_margin": round(min(margins[base]), 5),
                        f"{name}_compile_mode": stepper.mode,
                        f"{name}_step_status": step_status(stepper.function)})
                if name == "guided":   # where a step's device time goes, compiled and eager
                    profile_steps(stepper.step, eager_step(gamma, []), fresh, gamma, prompt[-1], dry_run, save)
            except Exception as error:   # e.g. a 4-bit layer that does not compile: say so, go on
                save(**{f"{name}_compiled_error": f"{type(error).__name__}: {str(error)[:300]}"})
            torch.compiler.reset() if hasattr(torch, "compiler") else None


def profile_steps(compiled, eager, fresh, gamma: float, token: int, dry_run: bool, save) -> None:
    """The guided step's device time by kernel, compiled and eager (nf4_rows.device_profile), each
    from a fresh decoding; a profiler that fails says so and costs only this figure."""
    for name, step in (("compiled", compiled), ("eager", eager)):
        kv = fresh(gamma)[1]
        try:
            save(**{f"guided_{name}_profile": device_profile(lambda: step(kv, token), 3 if dry_run else 8)})
        except Exception as error:
            save(**{f"guided_{name}_profile": {"error": f"{type(error).__name__}: {str(error)[:300]}"}})


def measure_memory(model, tokenizer, weights_mb: float, cuda: bool, dry_run: bool, save) -> None:
    """Peak memory of guided decoding at a 4k context (3,600-token prompt, 400-token signal, 8
    guided steps) against weights + KV (2 rows x 4,096 slots), with the peak and what stays
    allocated after each phase: `start` (prefills), `set_signal` (the pair and the conditional
    prefill), `steps`. On the CPU (--dry-run) the allocator's own count, relative to the start."""
    import torch

    from engine.bench.speed import build_inputs
    from engine.generation import decode

    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    long_prompt, long_i_dyn, long_signal = build_inputs(tokenizer, 96 if dry_run else 3600, 24 if dry_run else 400)
    state: dict = {}

    def start():
        state["dec"] = decode.start(model, tokenizer, long_prompt, long_i_dyn, gamma=3.0, def_indent=-1,
                                    max_new_tokens=64, stop_ids=frozenset())

    def signal():
        decode.set_signal(state["dec"], long_signal)

    def steps():
        token = state["dec"].pending
        for _ in range(8):
            token = decode.decode_one_token(model, state["dec"].guided, token, 3.0)

    phases, peak_mb = {}, 0.0
    trace = _cpu_allocator_trace() if not cuda else None
    live = 0.0
    with torch.inference_mode():
        for name, function in (("start", start), ("set_signal", signal), ("steps", steps)):
            if cuda:
                sync_device()
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated() / 2**20
                function()
                sync_device()
                phase = {"allocated_before_mb": round(before), "peak_mb": round(torch.cuda.max_memory_allocated() / 2**20),
                         "allocated_after_mb": round(torch.cuda.memory_allocated() / 2**20)}
            else:
                _, totals = trace(function)
                phase = {"allocated_before_mb": round(live, 2),
                         "peak_mb": round(live + max((t for _, t in totals), default=0) / 2**20, 2),
                         "allocated_after_mb": round(live + (totals[-1][1] if totals else 0) / 2**20, 2)}
                live = phase["allocated_after_mb"]
            phases[name] = phase
            peak_mb = max(peak_mb, phase["peak_mb"])
    dec = state.pop("dec")
    text = model.config.get_text_config()
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    element = 2 if model.dtype in (torch.bfloat16, torch.float16) else 4
    kv_mb = 2 * 2 * text.num_hidden_layers * text.num_key_value_heads * head_dim * 4096 * element / 2**20
    if not cuda:   # the CPU count starts at 0 with the weights already there
        peak_mb += weights_mb
    save(kv_4k_two_rows_mb=round(kv_mb, 2), context_4k_tokens=dec.guided.length, memory_phases=phases,
         prefill_chunk=getattr(decode, "PREFILL_CHUNK", None),
         peak_gpu_mb=round(peak_mb) if cuda else None, peak_cpu_mb=None if cuda else round(peak_mb, 2),
         peak_over_weights_plus_kv=round(peak_mb / (weights_mb + kv_mb), 3))
    del dec


def _cpu_allocator_trace():
    """benchmarks/decode_memory.py's reader of the CPU allocator's running total."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("decode_memory", ROOT / "benchmarks" / "decode_memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.allocator_trace


def measure_memory_only(config: str, precision: str, dry_run: bool, save) -> None:
    """The memory figures of a shape part alone (loading the model and one 4k decode: seconds)."""
    import torch

    cuda = torch.cuda.is_available() and not dry_run
    started = time.perf_counter()
    loaded = _load(config, precision, dry_run, save)
    sync_device()
    weights_mb = torch.cuda.memory_allocated() / 2**20 if cuda else sum(
        p.numel() * p.element_size() for p in loaded.model.parameters()) / 2**20
    save(config=config, precision=precision, build_s=round(time.perf_counter() - started, 1),
         weights_mb=round(weights_mb))
    measure_memory(loaded.model, loaded.tokenizer, weights_mb, cuda, dry_run, save)


def measure_replay(config: str, precision: str, data: str, dry_run: bool, save, compile: bool = False) -> None:
    """bench replay on MBPP, fast against paper, eager. With `compile`: the fast scheme with its
    guided steps compiled on 10 tasks (MBPP 12-21), after a warm-up task that is not counted (it
    compiles the batched step); then the same tasks eager, as far as the time box allows, and the
    compiled figures again over just those tasks (`fast_compiled_same_tasks`), for a comparison
    on the same lines. Every cache goes into one size bucket (4,096 slots) and the batched step
    has at least 16 rows, so the measured tasks compile nothing. Each scheme's summary says where
    a line's time goes (eager forwards: host and GPU time; compiled steps; the sandbox)."""
    import torch

    from engine.bench.accuracy import load_benchmark
    from engine.bench.replay import replay_task, summarise
    from engine.errors import UserError
    from engine.execution.executor import Executor
    from engine.generation import compiled, compiled_batch

    tasks = load_benchmark("mbpp", data, "11-12" if dry_run and compile else "11" if dry_run else
                           "11-21" if compile else "11-20", None)
    loaded = _load(config, precision, dry_run, save)
    if dry_run:
        torch.set_num_threads(1)
    # scheme name -> (scheme, compiled steps), in the order they run
    schemes = {"fast_compiled": ("fast", True), "fast": ("fast", False)} if compile else \
        {"paper": ("paper", False), "fast": ("fast", False)}
    records: dict[str, list] = {name: [] for name in schemes}
    try:
        executor = Executor()
    except UserError as error:
        # A GPU machine lent for benchmarks may offer no sandbox (no bwrap, no Landlock); it is
        # thrown away afterwards and runs MBPP's own tests, so the resource limits alone will do.
        save(isolation_note=f"no sandbox here ({error}); ran with --sandbox limits")
        executor = Executor(isolation="limits")

    def save_records():
        summaries = {name: summarise(records[name]) for name in schemes if records[name]}
        if compile and records["fast"]:
            done = {record["task"] for record in records["fast"]}
            summaries["fast_compiled_same_tasks"] = summarise([r for r in records["fast_compiled"] if r["task"] in done])
        save(config=config, precision=precision, tasks_done={name: len(records[name]) for name in schemes},
             **summaries, isolation=executor.isolation,
             per_task={name: [{key: (round(value, 4) if isinstance(value, float) else value)
                               for key, value in record.items() if key != "agents"}
                              for record in records[name]] for name in schemes})

    with executor:
        if compile:
            ok, why = compiled.compilable(loaded.model)
            save(config=config, precision=precision, compile=True, compiled=ok, compile_note=why or None)
            if not dry_run:   # one bucket of slots (and of rows, for the batched step): no compile while timed
                compiled.BUCKETS = tuple(size for size in compiled.BUCKETS if size >= 4096)
                compiled_batch.ROW_BUCKETS = tuple(size for size in compiled_batch.ROW_BUCKETS if size >= 16)
            begin = time.perf_counter()
            warm = replay_task(loaded, executor, tasks[0], "fast", 0.5, "editor", 0, compile=True)
            save(warmup_task=tasks[0].task_id, warmup_s=round(time.perf_counter() - begin, 1),
                 warmup_lines=warm["lines"], buckets=list(compiled.BUCKETS),
                 compiled_steps=compiled.graph_status(loaded.model))
            tasks = tasks[1:]
            # one compiled task again under the sampling profiler (not counted): where the host
            # time between forwards goes, in every thread
            if tasks:
                with HostSampler() as sampler:
                    replay_task(loaded, executor, tasks[0], "fast", 0.5, "editor", 0, compile=True)
                save(host_profile_task=tasks[0].task_id, host_profile=sampler.report())
            for name, (scheme, compiled_steps) in schemes.items():   # all compiled tasks first: the bar's figure
                for task in tasks:
                    records[name].append(replay_task(loaded, executor, task, scheme, 0.5, "editor", 0,
                                                     compile=compiled_steps))
                    save_records()
            return
        for task in tasks:
            for name, (scheme, compiled_steps) in schemes.items():
                records[name].append(replay_task(loaded, executor, task, scheme, 0.5, "editor", 0,
                                                 compile=compiled_steps))
            save_records()

if __name__ == "__main__":
    sys.exit(main())
