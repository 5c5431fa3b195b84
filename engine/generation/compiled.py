"""A decode step that torch.compile can capture: one function holds the forward, the CFG mix and
the argmax, over a fixed-shape slot cache.

The eager step (decode.forward) grows its views of the cache by one slot per token, so every
step has new shapes; here the cache has a fixed capacity, chosen from a few size buckets, and a
step writes its keys and values at slot `slot` (a tensor, not a Python int) and attends every
slot under the row's mask. Shapes are then the same from one token to the next: inductor
compiles the step, and on a GPU it is captured as one CUDA graph (engine.generation.graphs: we
capture and replay it ourselves, which skips the per-call guards and checks of torch's
"reduce-overhead" mode; that mode stays available as `mode="reduce-overhead"`). On a CPU inductor
compiles it and tests use that. Attention in the step is `egcfg_decode` (engine.generation.attention):
grouped query heads read each key and value once.

    stepper = CompiledStep.shared(model, rows=2)   # one per model and row count
    token = stepper.step(kv, token, gamma=3.0)     # kv moves into the static buffers

One step (its buffers and its compiled code) serves every decoding of a model: a new step object per
decoding would make torch.compile guard on it and compile again, and after eight objects fall back
to eager for good. Decodings take turns on the buffers: the one that holds them keeps working in
place, and when another asks, the holder gets a copy of its cache back (`evict`).

The KV keeps working with every eager function (verify_draft, crop, drop_gap, prefills): its
layers are re-bound onto the static buffers, so both paths read and write the same memory.

bitsandbytes 4-bit layers compile on a GPU with bitsandbytes 0.50 or later and stay eager
elsewhere (see `compilable`).
"""

from __future__ import annotations

import logging
import time
import weakref
from contextlib import nullcontext

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from engine.errors import error_line
from engine.generation.attention import DECODE_ATTENTION, using_attention
from engine.generation.decode import _attn_implementation, cache_argument
from engine.generation.graphs import GraphedCall
from engine.generation.kv import KV

log = logging.getLogger("egcfg.compiled")

# One code object serves every step, compiled once per row count and bucket: up to 2 x 7 graphs,
# more than dynamo's default limit of 8 per code object (past it, it runs eager for good).
torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 32)

BUCKETS = (512, 1024, 2048, 4096, 8192, 16384, 32768)
MODES = ("graphs", "reduce-overhead", "default")   # graphs: inductor + our CUDA graph (GPU only)


def compile_function(function, mode: str | None, device: torch.device, compile: bool = True, context=None):
    """(the mode used, the callable a step calls): `mode` None picks "graphs" on a GPU and
    "default" (inductor alone) elsewhere. `context` (a no-argument factory of a context manager)
    is entered around every call that runs `function`; a CUDA graph's replay runs no Python and
    skips it."""
    if mode is None:
        mode = "graphs" if device.type == "cuda" else "default"
    if mode not in MODES:
        raise ValueError(f"unknown compile mode {mode!r}: one of {', '.join(MODES)}")
    if compile:
        function = CompiledOrEager(torch.compile(function, dynamic=False,
                                                 mode="reduce-overhead" if mode == "reduce-overhead" else "default"),
                                   function)
        if mode == "graphs" and device.type == "cuda":
            return mode, GraphedCall(function, context)
    return mode, function if context is None else _within(function, context)


class CompiledOrEager:
    """torch.compile's function, or after its first failure (a kernel inductor cannot build, an
    op dynamo cannot trace) the plain function for good, with why (`note`): a decoding must not
    fail because compiling its step did. A failure the plain function shares is raised by it."""

    def __init__(self, compiled, eager):
        self.compiled, self.eager = compiled, eager
        self.note = ""

    def __call__(self, *args):
        if not self.note:
            try:
                return self.compiled(*args)
            except Exception as error:
                self.note = f"compiled step not used: {error_line(error)}"
                log.warning("running the step eagerly: %s", self.note)
        return self.eager(*args)


def _within(function, context):
    def call(*args):
        with context():
            return function(*args)
    call.__wrapped__ = function
    return call


def step_attention(model):
    """The attention the compiled steps run under: egcfg_decode where the model uses sdpa."""
    return using_attention(model, DECODE_ATTENTION) if _attn_implementation(model) == "sdpa" else nullcontext()


def bucket_for(slots: int) -> int:
    for size in BUCKETS:
        if slots <= size:
            return size
    return slots


def compilable(model) -> tuple[bool, str]:
    """(whether the step is compiled for this model, why not). bitsandbytes 4-bit layers compile
    on a GPU with bitsandbytes 0.50 or later (measured on an H100, bitsandbytes 0.50.2 and torch
    2.11: the 7B shape's guided step went from 44 to 13.5 ms); elsewhere they stay eager."""
    if getattr(model, "is_loaded_in_4bit", False) or any(
            type(module).__name__ == "Linear4bit" for module in model.modules()):
        device = getattr(model, "device", None)
        if getattr(device, "type", None) == "cuda" and _bitsandbytes_version() >= (0, 50):
            return True, ""
        return False, "bitsandbytes 4-bit layers stay eager (they compile on a GPU with bitsandbytes 0.50 or later)"
    return True, ""


def _bitsandbytes_version() -> tuple[int, ...]:
    try:
        from importlib.metadata import version

        return tuple(int(part) for part in version("bitsandbytes").split(".")[:2])
    except Exception:   # not installed, or an odd version string
        return (0,)


def graph_status(model) -> dict:
    """How the model's compiled steps run so far: {step: "graph" | "compiled" | why the CUDA graph
    is not used} for the shared one-request steps (by rows) and the batch step."""
    steps = {f"rows={rows}": step.function for rows, step in model.__dict__.get("_egcfg_compiled_steps", {}).items()}
    batch = model.__dict__.get("_egcfg_batch_step")
    if batch is not None:
        steps["batch"] = batch.function
    return {name: step_status(function) for name, function in steps.items()}


def step_status(function) -> str:
    """"graph", "compiled", "eager", or why the graph or the compiled function is not used (a step's
    function as compile_function made it)."""
    graphed = isinstance(function, GraphedCall)
    inner = function.function if graphed else getattr(function, "__wrapped__", function)
    compiled_note = inner.note if isinstance(inner, CompiledOrEager) else ""
    if graphed and function.note:
        return function.note + (f"; {compiled_note}" if compiled_note else "")
    if compiled_note:
        return compiled_note
    return "graph" if graphed else "compiled" if isinstance(inner, CompiledOrEager) else "eager"


class _StaticLayer(CacheLayerMixin):
    is_sliding = False
    is_compileable = True

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, slot: torch.Tensor):
        super().__init__()
        self.keys, self.values, self.slot = keys, values, slot
        self.is_initialized = True

    def lazy_initialization(self, key_states, value_states) -> None:
        pass

    def update(self, key_states, value_states, *args, **kwargs):
        self.keys.index_copy_(2, self.slot, key_states)
        self.values.index_copy_(2, self.slot, value_states)
        return self.keys, self.values

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.keys.shape[2], 0

    def get_seq_length(self) -> int:
        return 0

    def get_max_length(self) -> int:
        return self.keys.shape[2]


class CompiledStep:
    """A compiled one-token step over `rows` rows (1: greedy, 2: the guided pair)."""

    # Steps taken through any compiled step (this class and compiled_batch.BatchStep): counters
    # outside the compiled code (a forward hook on
    # the model runs inside it, where a changing Python int would make torch.compile recompile).
    forwards = 0
    row_tokens = 0
    seconds = 0.0        # wall time in `step`, which ends with the chosen token on the host

    @classmethod
    def shared(cls, model, rows: int) -> "CompiledStep":
        """The model's step for `rows` rows, made on first use (kept on the model, so it lives as
        long as the model does)."""
        steps = model.__dict__.setdefault("_egcfg_compiled_steps", {})
        if rows not in steps:
            steps[rows] = cls(model, rows, 1.0)
        return steps[rows]

    def __init__(self, model, rows: int, gamma: float, *, mode: str | None = None, compile: bool = True):
        self.model, self.rows = model, rows
        self.capacity = 0
        self.layers: list[_StaticLayer] = []
        device = model.device
        self.slot = torch.zeros(1, dtype=torch.long, device=device)
        self.ids = torch.zeros(rows, 1, dtype=torch.long, device=device)
        self.positions = torch.zeros(rows, 1, dtype=torch.long, device=device)
        self.gamma = torch.tensor(float(gamma), device=device)
        self.mask: torch.Tensor | None = None
        self.cache: Cache | None = None
        self.holder: weakref.ref | None = None   # the KV bound to the buffers now
        self.cache_kwarg = cache_argument(model)   # looked up outside the compiled function
        self.mode, self.function = compile_function(self._step, mode, device, compile,
                                                    context=lambda: step_attention(model))

    # -- buffers --------------------------------------------------------------------------------

    def _allocate(self, kv: KV, capacity: int) -> None:
        like = kv.layers[0].buffer_keys
        self.layers = []
        for layer in kv.layers:
            keys = layer.buffer_keys.new_zeros(self.rows, like.shape[1], capacity, like.shape[3])
            values = layer.buffer_values.new_zeros(self.rows, layer.buffer_values.shape[1], capacity,
                                                   layer.buffer_values.shape[3])
            for tensor in (keys, values):
                torch._dynamo.mark_static_address(tensor)
            self.layers.append(_StaticLayer(keys, values, self.slot))
        self.mask = torch.zeros(self.rows, capacity, dtype=torch.bool, device=like.device)
        torch._dynamo.mark_static_address(self.mask)
        self.cache = Cache(layers=self.layers)
        self.capacity = capacity
        if isinstance(self.function, GraphedCall):
            self.function.reset()   # the graph read the old buffers

    def adopt(self, kv: KV, room: int = 64) -> None:
        """Move `kv` into the static buffers (a bigger bucket when it no longer fits) and re-bind
        its layers and mask onto them."""
        if kv.rows != self.rows:
            raise ValueError(f"this step has {self.rows} rows, the cache {kv.rows}")
        self.evict()
        needed = bucket_for(kv.length + room)
        if needed > self.capacity:
            self._allocate(kv, needed)
        length = kv.length
        for static, layer in zip(self.layers, kv.layers):
            if layer.buffer_keys is not static.keys:
                static.keys[:, :, :length] = layer.buffer_keys[:, :, :length]
                static.values[:, :, :length] = layer.buffer_values[:, :, :length]
                static.keys[:, :, length:] = 0
                static.values[:, :, length:] = 0
                layer._adopt(static.keys, static.values)
        if kv.mask is not self.mask:
            self.mask.zero_()
            self.mask[:, : min(kv.capacity, self.capacity)] = kv.mask[:, : self.capacity]
            kv.mask = self.mask
        for layer in kv.layers:
            layer.capacity = self.capacity
        self.holder = weakref.ref(kv)

    def evict(self) -> None:
        """Give the KV bound to the buffers a copy of its own, so another can use them."""
        holder = self.holder() if self.holder is not None else None
        self.holder = None
        if holder is None or not self.holds(holder):
            return   # gone, or moved off the buffers by an eager function (ensure_room)
        for static, layer in zip(self.layers, holder.layers):
            layer._adopt(static.keys.clone(), static.values.clone())
        holder.mask = self.mask.clone()

    def holds(self, kv: KV) -> bool:
        return bool(self.layers) and kv.layers[0].buffer_keys is self.layers[0].keys and kv.mask is self.mask

    # -- the step -------------------------------------------------------------------------------

    def _step(self, ids, positions, mask, gamma):
        inputs = {"input_ids": ids, "position_ids": positions, "attention_mask": mask[:, None, None, :],
                  "use_cache": True, "logits_to_keep": 1, self.cache_kwarg: self.cache}
        logits = self.model(**inputs).logits[:, -1].float()
        logp = torch.log_softmax(logits, dim=-1)
        scores = logp[0] + gamma * (logp[1] - logp[0]) if self.rows == 2 else logp[0]
        return scores.argmax(-1)

    def step(self, kv: KV, token: int, gamma: float | None = None) -> int:
        """Feed `token` to every row of `kv`; the guided argmax of the next token (guidance
        strength `gamma`, or the one the step was made with)."""
        started = time.perf_counter()
        try:
            return self._step_in_place(kv, token, gamma)
        finally:
            CompiledStep.seconds += time.perf_counter() - started

    def _step_in_place(self, kv: KV, token: int, gamma: float | None) -> int:
        if not self.holds(kv) or kv.length + 1 > self.capacity:
            self.adopt(kv)
        if gamma is not None:
            self.gamma.fill_(float(gamma))
        CompiledStep.forwards += 1
        CompiledStep.row_tokens += self.rows
        slot = kv.length
        self.slot.fill_(slot)
        self.ids.fill_(token)
        self.positions.copy_(kv.positions[:, None])
        self.mask[:, slot] = True
        choice = self.function(self.ids, self.positions, self.mask, self.gamma)
        for layer in kv.layers:
            layer.length = slot + 1
        kv.positions += 1
        return int(choice)
