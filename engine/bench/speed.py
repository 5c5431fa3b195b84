"""`egcfg bench speed`: what guidance costs per token, measured in one run on one model and input.

    greedy      one 1-row forward per token (the unconditional stream alone, gamma 0)
    guided      one 2-row forward per token (both streams batched, gamma 3), within a line
    refresh     per line: the conditional row re-prefilled (signal + tail + code) and the
                unconditional row copied out of the pair
    draft       verifying a candidate's first line (k tokens) in one forward, vs k guided steps
    hf_cache    transformers' DynamicCache stepped token by token (a sanity check of `greedy`)
    naive       the reference code's way (engine/generation/naive_reference.py): the conditional prompt
                prefilled from scratch every token, two separate forwards
    executor    one line's sandbox work: s candidates x the tests, traced

Bars: guided <= 1.3 x greedy per token; naive >= 10 x guided per token at a 2,000-token prompt.
On CPU a hidden-64 model measures Python overhead only; `--random-config small` (hidden 512,
8 layers, built at run time) makes the ratios mean something there.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import time
from pathlib import Path

from engine.errors import UserError
from engine.generation.models import DEFAULT_NF4_KERNEL, NF4_KERNELS

from engine.generation.random_models import RANDOM_CONFIGS  # noqa: E402  (names for --random-config)

SIGNAL_SAMPLE = """# candidate 1:
```python
    total = 0
    for x in xs:
```
# test: assert add_all([1, 2, 3]) == 6
# outcome: fail: returned None, expected 6
call add_all(xs=[1, 2, 3])
  L2  total = 0  # total = 0 (int)
  L3  for x in xs:  # x = 1 (int)
  L4      pass
  ... 2 more iteration(s) of L3-L4 ...
"""

PROGRAM = """def add_all(xs):
    total = 0
    for x in xs:
        total += x{variant}
    return total
"""
TESTS = ("assert add_all([1, 2, 3]) == 6", "assert add_all([]) == 0", "assert add_all(list(range(100))) == 4950")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", metavar="ID_OR_DIR", help="hub id or model folder (e.g. one from `egcfg dev tiny-model`)")
    source.add_argument("--random-config", choices=list(RANDOM_CONFIGS),
                        help="a random-weight model built at run time with the tiny tokenizer (small shapes, or "
                             "the published shapes of Qwen2.5-Coder 1.5B/7B and DeepSeek-Coder 6.7B)")
    parser.add_argument("--layers", type=int, default=0, help="cut a random config to this many layers (tests)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    parser.add_argument("--quantization", default="auto", choices=["auto", "4bit", "none"])
    parser.add_argument("--prompt-tokens", type=int, default=2000, help="prompt length (default: %(default)s)")
    parser.add_argument("--signal-tokens", type=int, default=400, help="execution signal length (default: %(default)s)")
    parser.add_argument("--tokens", type=int, default=32, help="timed tokens per measurement (default: %(default)s)")
    parser.add_argument("--naive-tokens", type=int, default=6, help="tokens timed for the naive loop (default: %(default)s)")
    parser.add_argument("--lines", type=int, default=4, help="line refreshes timed (default: %(default)s)")
    parser.add_argument("--no-executor", action="store_true", help="skip the sandbox timing")
    parser.add_argument("--compile", action="store_true",
                        help="also time the compiled decode step (torch.compile; CUDA graphs on a GPU) and check "
                             "that it picks the same tokens as the eager step (on a CPU, --dtype auto is then fp32)")
    parser.add_argument("--nf4-kernel", default=DEFAULT_NF4_KERNEL, choices=NF4_KERNELS,
                        help="4-bit: who multiplies 1-4 rows, our kernel (CUDA, checked against bitsandbytes "
                             "first), bitsandbytes', or auto: the faster per weight shape, timed at load "
                             "(default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


# ------------------------------------------------------------------------------------------------
# Inputs

def random_model(name: str, device: str, dtype: str, quantization: str = "none", layers: int | None = None,
                 nf4_kernel: str = DEFAULT_NF4_KERNEL):
    """A random-weight model of the named shape with the tiny model's offline tokenizer, as a LoadedModel."""
    from engine.generation.random_models import random_model as build

    return build(name, device=device, dtype=dtype, quantization=quantization, layers=layers, nf4_kernel=nf4_kernel)


def build_inputs(tokenizer, prompt_tokens: int, signal_tokens: int) -> tuple[list[int], int, list[int]]:
    """(prompt ids, i_dyn, signal ids): a head of real Python source up to the requested length,
    a short tail that opens the answer, and a signal made of rendered-trace text."""
    import inspect
    import textwrap

    tail = tokenizer.encode("Reply with the complete function in one Python code block.\n```python\n"
                            "def add_all(xs):\n", add_special_tokens=False)
    source = (inspect.getsource(textwrap) * (1 + prompt_tokens * 8 // len(inspect.getsource(textwrap))))
    head = tokenizer.encode(source[: prompt_tokens * 8], add_special_tokens=False)[: max(8, prompt_tokens - len(tail))]
    signal = tokenizer.encode(SIGNAL_SAMPLE * 40, add_special_tokens=False)[:signal_tokens]
    return head + tail, len(head), signal


def _naive_module():
    from engine.generation import naive_reference

    return naive_reference


def device_description(model) -> dict:
    import torch

    device = model.device
    info = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "python": platform.python_version(), "machine": platform.machine()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    else:
        info["cpu"] = _cpu_name()
        info["cpu_count"] = os.cpu_count()
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# ------------------------------------------------------------------------------------------------
# Timers

def _clock(model):
    """The timer: on CPU with one torch thread, this thread's CPU time (a shared machine's other
    load then does not count); otherwise wall time."""
    import torch

    if model.device.type == "cpu" and torch.get_num_threads() == 1:
        return time.thread_time
    return time.perf_counter


def _sync(model) -> None:
    import torch

    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)


def _timed(model, function) -> float:
    clock = _clock(model)
    _sync(model)
    start = clock()
    function()
    _sync(model)
    return clock() - start


def per_token_steps(model, kv, token: int, gamma: float, count: int) -> float:
    """Median seconds of `count` guided steps on `kv`, after one warm-up step (the median, because
    a shared machine adds spikes that have nothing to do with the step)."""
    from engine.generation import decode

    token = decode.decode_one_token(model, kv, token, gamma)
    clock, times = _clock(model), []
    for _ in range(count):
        _sync(model)
        start = clock()
        token = decode.decode_one_token(model, kv, token, gamma)   # argmax -> int synchronises
        times.append(clock() - start)
    return statistics.median(times)


def measure(loaded, prompt: list[int], i_dyn: int, signal: list[int], *, tokens: int, naive_tokens: int,
            lines: int) -> dict:
    import torch

    from engine.generation import decode

    model, tokenizer = loaded.model, loaded.tokenizer
    results: dict = {}
    with torch.inference_mode():
        # plain greedy: the unconditional stream alone
        greedy = decode.start(model, tokenizer, prompt, i_dyn, gamma=0, def_indent=-1, max_new_tokens=4 * tokens,
                              stop_ids=frozenset())
        results["greedy_ms_per_token"] = 1000 * per_token_steps(model, greedy.uncond, prompt[-1], 0.0, tokens)

        # guided: both streams in one 2-row forward
        guided = decode.start(model, tokenizer, prompt, i_dyn, gamma=3.0, def_indent=-1,
                              max_new_tokens=4 * tokens + 64 * lines, stop_ids=frozenset())
        decode.set_signal(guided, signal)
        results["guided_ms_per_token"] = 1000 * per_token_steps(model, guided.guided, prompt[-1], 3.0, tokens)

        # per-line refresh on a fresh state (the steps above fed tokens the state does not know about)
        state = decode.start(model, tokenizer, prompt, i_dyn, gamma=3.0, def_indent=-1,
                             max_new_tokens=64 * lines + 64, stop_ids=frozenset())
        refresh = []
        for _ in range(lines):
            refresh.append(_timed(model, lambda: decode.set_signal(state, signal)))
            # a one-token line (not timed), then the unconditional row is copied out of the pair
            state.ids.append(decode.decode_one_token(model, state.guided, state.pending, 3.0))
            refresh[-1] += _timed(model, lambda: decode.sync_unconditional(state))
        results["refresh_ms_per_line"] = 1000 * statistics.median(refresh)

        # a verified draft: k tokens in one forward
        draft_len = 12
        decode.set_signal(state, signal)
        draft = [state.pending] * draft_len
        results["draft_tokens"] = draft_len
        results["draft_verify_ms"] = 1000 * _timed(
            model, lambda: decode.verify_draft(model, state.guided, state.pending, draft, 3.0))

        # the naive reference
        naive = _naive_module()
        if naive is None:
            results["naive_ms_per_token"] = None
        else:
            naive.naive_tokens(model, prompt, signal, i_dyn, 3.0, 1)    # warm-up
            seconds = _timed(model, lambda: naive.naive_tokens(model, prompt, signal, i_dyn, 3.0, naive_tokens))
            results["naive_ms_per_token"] = 1000 * seconds / naive_tokens

        # transformers' own cache (DynamicCache, one torch.cat per token), stepped the same way
        from transformers import DynamicCache

        cache = DynamicCache()
        cache_kwarg = decode.cache_argument(model)
        model(input_ids=torch.tensor([prompt[:-1]], device=model.device), use_cache=True, **{cache_kwarg: cache})
        token, times, clock = prompt[-1], [], _clock(model)
        for _ in range(tokens + 1):
            _sync(model)
            begin = clock()
            out = model(input_ids=torch.tensor([[token]], device=model.device), use_cache=True, **{cache_kwarg: cache})
            token = int(out.logits[0, -1].argmax())
            times.append(clock() - begin)
        results["hf_cache_ms_per_token"] = 1000 * statistics.median(times[1:])
    return results


def measure_compiled(loaded, prompt: list[int], i_dyn: int, signal: list[int], *, tokens: int) -> dict:
    """The compiled step against the eager one from the same fresh states: guided (2 rows, gamma 3)
    and greedy (1 row); times per token (median, after the compile/warm-up steps) and whether the
    tokens are identical."""
    import torch

    from engine.generation import decode
    from engine.generation.compiled import CompiledStep, compilable, step_status

    model, tokenizer = loaded.model, loaded.tokenizer
    ok, why = compilable(model)
    if not ok:
        return {"compiled": False, "compiled_note": why}

    def state(gamma: float):
        dec = decode.start(model, tokenizer, prompt, i_dyn, gamma=gamma, def_indent=-1,
                           max_new_tokens=4 * tokens + 64, stop_ids=frozenset())
        if gamma:
            decode.set_signal(dec, signal)
        return dec, (dec.guided if gamma else dec.uncond)

    def run(gamma: float, step) -> tuple[list[int], float]:
        dec, kv = state(gamma)
        token, chosen, times, clock = dec.pending, [], [], _clock(model)
        for _ in range(tokens + 3):
            _sync(model)
            begin = clock()
            token = step(kv, token)
            times.append(clock() - begin)
            chosen.append(token)
        return chosen, statistics.median(times[3:])

    def eager_step(gamma: float, margins: list):
        def step(kv, token):
            ids = torch.full((kv.rows, 1), token, dtype=torch.long, device=kv.positions.device)
            scores = decode.cfg_scores(decode.forward(model, kv, ids)[:, -1], gamma)
            top = scores.topk(2).values
            margins.append(float(top[0] - top[1]))
            return int(scores.argmax())
        return step

    out: dict = {"compiled": True, "compile_mode": None}
    matches = ran_compiled = True
    with torch.inference_mode():
        for name, gamma, rows in (("guided", 3.0, 2), ("greedy", 0.0, 1)):
            margins: list[float] = []
            eager_tokens, eager = run(gamma, eager_step(gamma, margins))
            stepper = CompiledStep(model, rows, gamma)
            out["compile_mode"] = stepper.mode
            started = time.perf_counter()
            stepper.step(state(gamma)[1], prompt[-1])   # compile (and record the graph) once
            out[f"{name}_compile_s"] = time.perf_counter() - started
            compiled_tokens, compiled = run(gamma, stepper.step)
            # "graph" or "compiled", else why the step ran without them (a failed compile runs eagerly)
            out[f"{name}_step_status"] = status = step_status(stepper.function)
            ran_compiled = ran_compiled and status in ("graph", "compiled")
            out[f"{name}_eager_ms_per_token"] = 1000 * eager
            out[f"{name}_compiled_ms_per_token"] = 1000 * compiled
            differs = next((i for i, (a, b) in enumerate(zip(eager_tokens, compiled_tokens)) if a != b), None)
            if differs is not None:   # where they part, and how close the eager step's top two were there
                out[f"{name}_first_difference"] = differs
                out[f"{name}_eager_margin_there"] = margins[differs]
            matches = matches and compiled_tokens == eager_tokens
    out["compiled_ms_per_token"] = out["guided_compiled_ms_per_token"]
    out["eager_ms_per_token"] = out["guided_eager_ms_per_token"]
    out["compiled_speedup"] = out["eager_ms_per_token"] / out["compiled_ms_per_token"]
    out["compiled"] = ran_compiled
    out["compiled_matches_eager"] = matches and ran_compiled   # not true of a step that fell back to eager
    return out


def measure_executor(rows: int = 3, repeats: int = 3) -> dict:
    from engine.execution.executor import Executor, Job

    programs = [PROGRAM.format(variant=variant) for variant in ("", " * 1", " + 0")][:rows]
    jobs = [Job(program=program, tests=TESTS, trace=True) for program in programs]
    with Executor() as executor:
        executor.map(jobs)   # warm-up
        times = [_wall(lambda: executor.map(jobs)) for _ in range(repeats)]
        isolation = executor.isolation
    return {"executor_ms_per_line": 1000 * statistics.median(times), "executor_jobs": len(jobs),
            "executor_tests_per_job": len(TESTS), "executor_isolation": isolation}


def _wall(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def ratios(results: dict) -> dict:
    greedy, guided, naive = (results.get(k) for k in ("greedy_ms_per_token", "guided_ms_per_token", "naive_ms_per_token"))
    out = {"guided_over_greedy": guided / greedy if greedy else None,
           "naive_over_guided": naive / guided if naive and guided else None,
           "draft_speedup": (results["draft_tokens"] * guided / results["draft_verify_ms"])
           if results.get("draft_verify_ms") else None}
    for key in ("greedy", "guided", "naive", "hf_cache"):
        ms = results.get(f"{key}_ms_per_token")
        out[f"{key}_tokens_per_s"] = 1000 / ms if ms else None
    return out


def main(args: argparse.Namespace) -> int:
    import torch

    from engine.generation.models import choose_device

    if args.prompt_tokens < 16:
        raise UserError(f"--prompt-tokens must be at least 16, got {args.prompt_tokens}")
    if args.tokens < 1 or args.naive_tokens < 1 or args.lines < 1:
        raise UserError("--tokens, --naive-tokens and --lines must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.compile and args.dtype == "auto" and choose_device(args.device) == "cpu":
        # bf16 sums in another order (inductor vs eager) flip the near-ties of a random model's
        # flat logits (top-two margins of 0.002 were seen); fp32 makes the token check meaningful
        args.dtype = "fp32"
    if args.random_config:
        loaded = random_model(args.random_config, args.device, args.dtype,
                              "4bit" if args.quantization == "4bit" else "none", args.layers or None, args.nf4_kernel)
    else:
        from engine.generation.models import load_model

        loaded = load_model(args.model, device=args.device, quantization=args.quantization, dtype=args.dtype,
                            nf4_kernel=args.nf4_kernel)
    limit = getattr(loaded.model.config, "max_position_embeddings", None)
    if limit and args.prompt_tokens + args.signal_tokens + 512 > limit:
        raise UserError(f"--prompt-tokens {args.prompt_tokens} plus the signal does not fit the model's "
                        f"{limit} positions: use a shorter prompt")
    prompt, i_dyn, signal = build_inputs(loaded.tokenizer, args.prompt_tokens, args.signal_tokens)
    report = {"model": loaded.name, "dtype": loaded.dtype, "quantized": loaded.quantized,
              **device_description(loaded.model),
              "clock": "thread_cpu" if _clock(loaded.model) is time.thread_time else "wall",
              "prompt_tokens": len(prompt), "i_dyn": i_dyn, "signal_tokens": len(signal), "timed_tokens": args.tokens}
    if loaded.nf4_kernel is not None:
        report["nf4_kernel"] = loaded.nf4_kernel   # which kernel ran 1-4 rows, and its check against bitsandbytes
    report.update(measure(loaded, prompt, i_dyn, signal, tokens=args.tokens, naive_tokens=args.naive_tokens,
                          lines=args.lines))
    if args.compile:
        report.update(measure_compiled(loaded, prompt, i_dyn, signal, tokens=args.tokens))
    if not args.no_executor:
        report.update(measure_executor())
    report.update(ratios(report))
    report["bars"] = {
        "guided_over_greedy <= 1.3": report["guided_over_greedy"] is not None and report["guided_over_greedy"] <= 1.3,
        "naive_over_guided >= 10": report["naive_over_guided"] is not None and report["naive_over_guided"] >= 10,
    }
    for key, value in report.items():
        if isinstance(value, float):
            report[key] = round(value, 3)
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:28} {value}")
    return 0
