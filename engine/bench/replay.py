"""`egcfg bench replay`: what a committed line costs, on real line lengths, without real weights.

A random-weight model writes nonsense, so its lines never end where code lines do and its
candidates never agree. Replay runs the real agent loop (prompts, prefills, candidate rows, the
sandbox, signal refreshes, draft verification) on a benchmark task with the model's choices
steered by the task's reference solution:

    guided choice   teacher forcing: the guided line takes the reference's next token (the
                    forwards still run, so their cost is real)
    candidate rows  a freshly sampled row follows the reference's next lines with probability P
                    (--agreement, seeded per row); otherwise it writes the reference's line shapes
                    with the first word of every line sampled from the model (so it disagrees).
                    A row that follows keeps following, also when it is kept for the next line.

From one run it reports two schemes on the same tasks and seeds:

    paper   fresh candidates every line, one agent per forward (round-robin)
    fast    candidates whose first line was committed are kept (topped up by one line), and the
            live agents' steps share one forward

each with forwards_per_line, tokens_per_line (row-tokens the model processed per committed line,
prefills included), ms_per_line, first_line_ms, executor_ms_per_line, and peak_gpu_mb on a GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from engine.errors import UserError
from engine.generation.models import DEFAULT_NF4_KERNEL, NF4_KERNELS

SCHEMES = ("paper", "fast")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from engine.generation.random_models import RANDOM_CONFIGS

    parser.add_argument("benchmark", choices=["mbpp", "humaneval"])
    parser.add_argument("--data", metavar="DIR", help="benchmark data folder (default: $EGCFG_DATA)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", metavar="ID_OR_DIR", help="hub id or model folder")
    source.add_argument("--random-config", choices=list(RANDOM_CONFIGS), help="a random-weight model built at run time")
    parser.add_argument("--tasks", default="11-15", help="task numbers, e.g. 11-20 (default: %(default)s)")
    parser.add_argument("--agreement", type=float, default=0.5,
                        help="probability that a sampled candidate row follows the reference (default: %(default)s)")
    parser.add_argument("--preset", default="editor", help="agent preset (default: %(default)s)")
    parser.add_argument("--schemes", default="paper,fast", help="which schemes to run (default: %(default)s)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    parser.add_argument("--quantization", default="auto", choices=["auto", "4bit", "none"])
    parser.add_argument("--layers", type=int, default=0, help="cut a random config to this many layers")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile", action="store_true",
                        help="one-token steps compiled: the batched forward in the fast scheme, each guided step in the paper scheme")
    parser.add_argument("--nf4-kernel", default=DEFAULT_NF4_KERNEL, choices=NF4_KERNELS,
                        help="4-bit: who multiplies 1-4 rows, our kernel (CUDA, checked against bitsandbytes "
                             "first), bitsandbytes', or auto: the faster per weight shape, timed at load "
                             "(default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


# ------------------------------------------------------------------------------------------------
# Teacher: the reference steers the guided choice and the candidate rows

@dataclass
class Teacher:
    """What `run_completion(teacher=...)` reads: `force` (the reference's tokens for the guided
    choice) and `steer` (engine.generation.candidates.Steer for candidate rows)."""
    force: list[int]
    agreement: float
    sampleable: Any               # bool [vocab]: tokens a disagreeing row may sample (no newline, no stop)
    line_starts: set[int] = field(default_factory=set)   # reference positions of each line's first word

    def steer(self, dec, row, probs) -> int | None:
        import torch

        from engine.generation.candidates import draw_tokens

        position = len(dec.ids) + len(row.ids)
        if "follows" not in row.tag:
            draw = torch.rand(1, generator=row.generator)
            row.tag["follows"] = bool(draw.item() < self.agreement)
        if position >= len(self.force):
            return dec.tokenizer.eos_token_id if dec.tokenizer.eos_token_id in dec.stop_ids else min(dec.stop_ids)
        if row.tag["follows"] or position not in self.line_starts:
            return self.force[position]
        weights = probs.float() * self.sampleable[: probs.shape[0]].to(probs.device)
        weights[self.force[position]] = 0
        if float(weights.sum()) <= 0:
            weights = self.sampleable[: probs.shape[0]].to(probs.device).float()
        return draw_tokens(weights[None], [row.generator])[0]


def build_teacher(tokenizer, body: str, agreement: float, vocab: int, stop_ids) -> Teacher:
    import torch

    force = tokenizer.encode(body, add_special_tokens=False)
    texts = [tokenizer.decode([i], skip_special_tokens=False, clean_up_tokenization_spaces=False)
             for i in range(len(tokenizer))]
    sampleable = torch.zeros(vocab, dtype=torch.bool)
    sampleable[: len(texts)] = torch.tensor([bool(t.strip()) and "\n" not in t for t in texts])
    for stop in stop_ids:
        if stop < vocab:
            sampleable[stop] = False
    line_starts, at_start = set(), True
    for position, token in enumerate(force):
        text = texts[token] if token < len(texts) else ""
        if at_start and text.strip():
            line_starts.add(position)
            at_start = False
        if "\n" in text:
            at_start = not text.rsplit("\n", 1)[1].strip()
    return Teacher(force=force, agreement=agreement, sampleable=sampleable, line_starts=line_starts)


def reference_body(task, completion) -> str:
    """The text the engine writes for this task if it writes the reference solution."""
    reference = task.reference.rstrip() + "\n"
    if completion.source_before and reference.startswith(completion.source_before):
        return reference[len(completion.source_before):]
    return reference


# ------------------------------------------------------------------------------------------------
# Counting

class ForwardCounter:
    """Counts forwards, the row-tokens they process and where their time goes: eager forwards by
    hooks on the model (host time to issue them; on a GPU also their device time, from CUDA
    events, read once at the end), compiled steps by CompiledStep's own counters (inside compiled
    code the hooks do nothing: a Python number they changed would make torch.compile recompile)."""

    def __init__(self, model):
        import torch

        from engine.generation.compiled import CompiledStep

        self.steps = CompiledStep
        self.cuda = torch.cuda.is_available() and model.device.type == "cuda"
        self.eager_forwards = 0
        self.eager_tokens = 0
        self.prefills = 0              # eager forwards of more than one token a row
        self.host_seconds = 0.0        # issuing eager forwards (all of their time on a CPU)
        self.events: list = []         # (start, end) CUDA events of the eager forwards
        self.opened: float | None = None
        self.compiled_from = (CompiledStep.forwards, CompiledStep.row_tokens, CompiledStep.seconds)
        self.handles = [model.register_forward_pre_hook(self._before, with_kwargs=True),
                        model.register_forward_hook(self._after)]

    def _before(self, module, args, kwargs):
        import torch

        if torch.compiler.is_compiling():
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.eager_forwards += 1
        if ids is not None:
            self.eager_tokens += int(ids.numel())
            self.prefills += int(ids.dim() == 2 and ids.shape[1] > 1)
        if self.cuda:
            start = torch.cuda.Event(enable_timing=True)
            start.record()
            self.events.append([start, None])
        self.opened = time.perf_counter()

    def _after(self, module, args, output):
        import torch

        if torch.compiler.is_compiling() or self.opened is None:
            return
        self.host_seconds += time.perf_counter() - self.opened
        self.opened = None
        if self.cuda and self.events and self.events[-1][1] is None:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self.events[-1][1] = end

    @property
    def forwards(self) -> int:
        return self.eager_forwards + self.steps.forwards - self.compiled_from[0]

    @property
    def tokens(self) -> int:
        return self.eager_tokens + self.steps.row_tokens - self.compiled_from[1]

    def breakdown(self) -> dict:
        """Seconds by kind: issuing eager forwards, their device time (GPU only), compiled steps."""
        out = {"eager_forwards": self.eager_forwards, "prefills": self.prefills,
               "compiled_steps": self.steps.forwards - self.compiled_from[0],
               "eager_host_seconds": self.host_seconds,
               "compiled_step_seconds": self.steps.seconds - self.compiled_from[2]}
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            out["eager_gpu_seconds"] = sum(start.elapsed_time(end) for start, end in self.events
                                           if end is not None) / 1000
        return out

    def close(self):
        for handle in self.handles:
            handle.remove()


class TimedExecutor:
    """The executor, with the wall time of its map/run calls added up (sandbox work per line)."""

    def __init__(self, executor):
        self.executor = executor
        self.seconds = 0.0
        self.lock = threading.Lock()

    def _timed(self, name, *args, **kwargs):
        started = time.perf_counter()
        try:
            return getattr(self.executor, name)(*args, **kwargs)
        finally:
            with self.lock:
                self.seconds += time.perf_counter() - started

    def map(self, *args, **kwargs):
        return self._timed("map", *args, **kwargs)

    def run(self, *args, **kwargs):
        return self._timed("run", *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.executor, name)


# ------------------------------------------------------------------------------------------------
# One task, one scheme

def replay_task(loaded, executor, task, scheme: str, agreement: float, preset: str, seed: int,
                compile: bool = False, committed: list | None = None) -> dict:
    """One task under one scheme; its record. `committed` collects (agent, line number, text) of
    every committed line."""
    import torch

    from engine.bench.accuracy import completion_task
    from engine.generation import decode
    from engine.generation.agents import run_completion
    from engine.generation.events import AgentFinished, LineCommitted

    completion = completion_task(task)
    body = reference_body(task, completion)
    stop_ids = decode.stop_token_ids(loaded.tokenizer, loaded.model)
    vocab = loaded.model.get_output_embeddings().weight.shape[0]
    teacher = build_teacher(loaded.tokenizer, body, agreement, vocab, stop_ids)
    timed = TimedExecutor(executor)
    counter = ForwardCounter(loaded.model)
    cuda = loaded.model.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    lines, first_line, finished = 0, None, []
    started = time.perf_counter()
    try:
        for event in run_completion(loaded, timed, completion, preset=preset, fast=scheme == "fast",
                                    first_pass_wins=False, teacher=teacher, max_new_tokens=len(teacher.force) + 8,
                                    compile=compile,
                                    seed=zlib.crc32(f"{task.task_id}/{seed}".encode())):
            if isinstance(event, LineCommitted):
                lines += 1
                if committed is not None:
                    committed.append((event.agent, event.line_no, event.text))
                if first_line is None:
                    first_line = time.perf_counter() - started
            elif isinstance(event, AgentFinished):
                finished.append(event.reason)
    finally:
        counter.close()
    seconds = time.perf_counter() - started
    record = {"task": task.task_id, "scheme": scheme, "lines": lines, "forwards": counter.forwards,
              "tokens": counter.tokens, "seconds": seconds, **counter.breakdown(), "first_line_seconds": first_line or seconds,
              "executor_seconds": timed.seconds, "reference_tokens": len(teacher.force), "agents": finished}
    if cuda:
        record["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return record


def summarise(records: list[dict]) -> dict:
    lines = sum(r["lines"] for r in records) or 1
    out = {
        "tasks": len(records),
        "lines": sum(r["lines"] for r in records),
        "forwards_per_line": sum(r["forwards"] for r in records) / lines,
        "tokens_per_line": sum(r["tokens"] for r in records) / lines,
        "ms_per_line": 1000 * sum(r["seconds"] for r in records) / lines,
        "first_line_ms": 1000 * statistics.mean(r["first_line_seconds"] for r in records),
        "executor_ms_per_line": 1000 * sum(r["executor_seconds"] for r in records) / lines,
    }
    # where a line's time goes: issuing eager forwards (on a GPU also their device time), compiled
    # steps, the sandbox; what is left is the engine's own work between them and waiting on the GPU
    for key in ("eager_host", "eager_gpu", "compiled_step"):
        if any(f"{key}_seconds" in r for r in records):
            out[f"{key}_ms_per_line"] = 1000 * sum(r.get(f"{key}_seconds", 0.0) for r in records) / lines
    for key in ("prefills", "compiled_steps"):
        out[f"{key}_per_line"] = sum(r.get(key, 0) for r in records) / lines
    if any("peak_gpu_mb" in r for r in records):
        out["peak_gpu_mb"] = max(r.get("peak_gpu_mb", 0) for r in records)
    return {key: round(value, 3) if isinstance(value, float) else value for key, value in out.items()}


class Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, total: int):
        self.total, self.done = total, 0
        self.live = sys.stderr.isatty()

    def step(self, label: str) -> None:
        self.done += 1
        if self.live:
            filled = int(30 * self.done / max(1, self.total))
            sys.stderr.write(f"\rreplay [{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} {label:24}")
            sys.stderr.flush()

    def close(self) -> None:
        if self.live:
            sys.stderr.write("\n")


# ------------------------------------------------------------------------------------------------

def load(args):
    from engine.generation.random_models import random_model

    if args.random_config:
        quantization = "4bit" if args.quantization == "4bit" else "none"
        return random_model(args.random_config, device=args.device, dtype=args.dtype, quantization=quantization,
                            layers=args.layers or None, nf4_kernel=args.nf4_kernel)
    from engine.generation.models import load_model

    return load_model(args.model, device=args.device, quantization=args.quantization, dtype=args.dtype,
                      nf4_kernel=args.nf4_kernel)


def run(args) -> dict:
    import os

    import torch

    from engine.bench.accuracy import load_benchmark
    from engine.bench.speed import device_description
    from engine.execution.executor import Executor

    if not 0 <= args.agreement <= 1:
        raise UserError(f"--agreement must be between 0 and 1, got {args.agreement}")
    schemes = [s.strip() for s in args.schemes.split(",") if s.strip()]
    if not schemes or any(s not in SCHEMES for s in schemes):
        raise UserError(f"--schemes takes a comma-separated list of {', '.join(SCHEMES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    tasks = load_benchmark(args.benchmark, args.data or os.environ.get("EGCFG_DATA"), args.tasks, None)
    loaded = load(args)
    records: dict[str, list[dict]] = {scheme: [] for scheme in schemes}
    progress = Progress(len(tasks) * len(schemes))
    with Executor() as executor:
        for task in tasks:
            for scheme in schemes:   # alternating, so that drift on a shared machine hits both alike
                records[scheme].append(replay_task(loaded, executor, task, scheme, args.agreement, args.preset,
                                                   args.seed, args.compile))
                progress.step(f"{task.task_id} {scheme}")
    progress.close()
    report: dict[str, Any] = {"benchmark": args.benchmark, "tasks": args.tasks, "model": loaded.name,
                              "dtype": loaded.dtype, "quantized": loaded.quantized, "agreement": args.agreement,
                              "preset": args.preset, "compile": args.compile, **device_description(loaded.model)}
    if loaded.nf4_kernel is not None:
        report["nf4_kernel"] = loaded.nf4_kernel   # which kernel ran 1-4 rows, and its check against bitsandbytes
    if args.compile:
        from engine.generation.compiled import compilable, graph_status

        report["compiled"], why = compilable(loaded.model)
        if why:
            report["compile_note"] = why
        report["compiled_steps"] = graph_status(loaded.model)   # CUDA graph or not, per compiled step
    for scheme in schemes:
        report[scheme] = summarise(records[scheme])
    if "paper" in report and "fast" in report:
        paper, fast = report["paper"], report["fast"]
        report["fast_over_paper"] = {key: round(fast[key] / paper[key], 3) if paper[key] else None
                                     for key in ("forwards_per_line", "tokens_per_line", "ms_per_line", "first_line_ms")}
        report["bars"] = {"forwards_per_line <= 0.4 x paper": fast["forwards_per_line"] <= 0.4 * paper["forwards_per_line"],
                          "ms_per_line <= 0.6 x paper": fast["ms_per_line"] <= 0.6 * paper["ms_per_line"]}
    report["per_task"] = [r for scheme in schemes for r in records[scheme]]
    return report


def main(args: argparse.Namespace) -> int:
    report = run(args)
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            if key != "per_task":
                print(f"{key:20} {value}")
    return 0
