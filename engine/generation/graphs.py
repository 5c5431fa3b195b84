"""A compiled step replayed as a CUDA graph we capture ourselves.

torch.compile's "reduce-overhead" mode records CUDA graphs too, but every call still evaluates
dynamo's guards over the whole model and cudagraph trees' checks of its inputs before the replay.
On the H200 the 7B guided step spent 8.6 ms on the GPU and took 13.0 ms
(benchmarks/results/gpu-nvidia-h200-20261126-234726.json); on a CPU, for 28 layers, the guards
alone take about 1.1 ms a call. A compiled step's inputs are static buffers filled in place, so the
compiled function (inductor, without cudagraphs) can be captured once for a set of buffers and then
only replayed: one driver call between the filled inputs and the kernels.

    call = GraphedCall(compiled_function, context=lambda: step_attention(model))
    out = call(ids, positions, mask)   # the first call (or new tensors) captures; then replays

`context` (optional) is entered around every call that runs the function (warm-up, capture,
fallback), not around a replay, which runs no Python: setting the model's attention on its config
and back costs ~25 us a step on a CPU host (benchmarks/step_host.py).

The tensors given must be the same objects on every call (the graph reads their memory), and so
must everything else the function reads (the model's weights, the static caches): a new tensor in
the arguments captures again, and `reset()` drops the graph when other buffers were reallocated.
The output is the graph's own memory, overwritten by the next replay: use it or copy it first.

A capture that fails, or whose replay disagrees with the compiled function on the same inputs, is
not used: the call falls back to the function for good and says why (`note`); the steps pass
compiled.CompiledOrEager, which itself falls back to the plain step if compiling fails.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Callable, ContextManager

import torch

log = logging.getLogger("egcfg.graphs")

WARM_CALLS = 2   # before capturing: compile, autotune and let the allocator settle (torch's advice)


class GraphedCall:
    def __init__(self, function: Callable[..., torch.Tensor], context: Callable[[], ContextManager] | None = None):
        self.function = function
        self.context = context or nullcontext
        self.graph: torch.cuda.CUDAGraph | None = None
        self.inputs: tuple = ()
        self.output: torch.Tensor | None = None
        self.captures = 0
        self.note = ""   # why calls go to the function itself ("" while graphs are used)

    def reset(self) -> None:
        self.graph, self.inputs, self.output = None, (), None

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        if self.note:
            return self._run(args)
        if self.graph is None or len(args) != len(self.inputs) or any(a is not b for a, b in zip(args, self.inputs)):
            return self._capture(args)
        self.graph.replay()
        return self.output

    def _run(self, args: tuple) -> torch.Tensor:
        with self.context():
            return self.function(*args)

    def _capture(self, args: tuple) -> torch.Tensor:
        """Warm up, capture, replay once and compare with the warm-up's result (a step writes the
        same keys and values at the same slots for the same inputs, so running it again is
        harmless). Returns the result for these inputs either way."""
        self.reset()
        try:
            with self.context():
                graph, output = _capture(self.function, args)
        except Exception as error:   # no CUDA, or a kernel that cannot be captured: slower, still right
            self.note = f"CUDA graph not used: {type(error).__name__}: {str(error)[:200]}"
            log.warning("compiled step without a CUDA graph: %s", self.note)
            return self._run(args)
        self.graph, self.inputs, self.output = graph, args, output
        self.captures += 1
        return output


def _capture(function, args: tuple) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(WARM_CALLS):
            expected = function(*args)
    torch.cuda.current_stream().wait_stream(stream)
    expected = expected.clone()
    graph = torch.cuda.CUDAGraph()
    # thread_local: the agents' other threads may use the GPU meanwhile (on their own streams)
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        output = function(*args)
    graph.replay()
    if not _same(output, expected):
        raise RuntimeError("its replay differs from the compiled function on the same inputs")
    return graph, output


def _same(got: torch.Tensor, expected: torch.Tensor) -> bool:
    """Equal for integer results (a chosen token); for logits within a rounding of the largest."""
    if got.shape != expected.shape or got.dtype != expected.dtype:
        return False
    if not got.is_floating_point():
        return bool(torch.equal(got, expected))
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    return bool(torch.isfinite(got).all()) and float((got - expected).abs().max()) <= 1e-3 * max(scale, 1.0)
