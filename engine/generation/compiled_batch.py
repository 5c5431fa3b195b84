"""Agents in one batch, compiled: the scheduler's one-token forward over the rows of several
caches (engine.generation.batching) as one fixed-shape function that torch.compile captures (CUDA
graphs on a GPU, inductor on a CPU).

Why: eager, a batched forward issues every layer's kernels from Python, and each request's
attention on its own (on the GPU run, MBPP replay, about 90 ms a forward for the 1.5B shape,
where the compiled one-token step took ~7 ms). Here the caches of the requests live as row ranges
of one static buffer per layer, [rows, heads, slots, dim]:

    rows   | guided pair (agent 0) | 3 candidate rows (agent 1) | free | pair (agent 2) | ...
    slots  | each row its own keys/values; the row's mask says what it attends; the last slot
           | is scratch: rows outside the step write there and nothing attends it

A step fills ids, positions and the write slot of the rows it feeds; every other row computes
too (the shape stays fixed) but writes only the scratch slot. A cache is bound to its rows: its
layers' buffers and its mask become views of the static ones, so the eager functions (prefills,
draft verification, crop, candidates) keep working on the same memory. A cache moves in once
(a copy) and stays while it is used; when its rows are needed for another, it gets a copy of its
own back (`evict`), as with the one-request step in engine.generation.compiled.

The rows and slots come in buckets, so a run compiles a handful of shapes, once per model.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from typing import Sequence

import torch
from transformers.cache_utils import Cache

from engine.generation.compiled import CompiledStep, _StaticLayer, bucket_for, compile_function, step_attention
from engine.generation.decode import Step, cache_argument
from engine.generation.graphs import GraphedCall
from engine.generation.kv import KV, ensure_room

ROW_BUCKETS = (4, 8, 16, 32, 64)


def rows_bucket(rows: int) -> int:
    for size in ROW_BUCKETS:
        if rows <= size:
            return size
    return rows


class _RowSlotLayer(_StaticLayer):
    """One layer of the static buffers: each row writes its new key and value at its own slot
    (`slot` is [rows] long here, one slot for all rows in the one-request step)."""

    def update(self, key_states, value_states, *args, **kwargs):
        rows, heads, _, dim = key_states.shape
        index = self.slot.view(rows, 1, 1, 1).expand(rows, heads, 1, dim)
        self.keys.scatter_(2, index, key_states)
        self.values.scatter_(2, index.expand(rows, value_states.shape[1], 1, value_states.shape[3]), value_states)
        return self.keys, self.values


@dataclass
class _Binding:
    kv: weakref.ref
    start: int
    rows: int
    keys_view: torch.Tensor     # what the cache's layer 0 holds while it is bound here
    mask_view: torch.Tensor


class BatchStep:
    """The compiled one-token forward over many caches' rows; one per model (`shared`)."""

    @classmethod
    def shared(cls, model) -> "BatchStep":
        step = model.__dict__.get("_egcfg_batch_step")
        if step is None:
            step = model.__dict__["_egcfg_batch_step"] = cls(model)
        return step

    def __init__(self, model, *, mode: str | None = None, compile: bool = True):
        self.model = model
        device = model.device
        self.rows = self.slots_total = 0
        self.layers: list[_RowSlotLayer] = []
        self.bindings: dict[int, _Binding] = {}   # id(kv) -> where it is bound
        self.cache: Cache | None = None
        self.cache_kwarg = cache_argument(model)
        self.mode, self.function = compile_function(self._forward, mode, device, compile,
                                                    context=lambda: step_attention(model))

    # -- buffers --------------------------------------------------------------------------------

    def _allocate(self, like: KV, rows: int, slots: int) -> None:
        """New static buffers (every bound cache first gets a copy of its own back)."""
        for key in list(self.bindings):
            self._evict(key)
        device = like.positions.device
        self.write_slots = torch.full((rows,), slots - 1, dtype=torch.long, device=device)
        self.layers = []
        for layer in like.layers:
            keys = layer.buffer_keys.new_zeros(rows, layer.buffer_keys.shape[1], slots, layer.buffer_keys.shape[3])
            values = layer.buffer_values.new_zeros(rows, layer.buffer_values.shape[1], slots,
                                                   layer.buffer_values.shape[3])
            for tensor in (keys, values):
                torch._dynamo.mark_static_address(tensor)
            self.layers.append(_RowSlotLayer(keys, values, self.write_slots))
        self.ids = torch.zeros(rows, 1, dtype=torch.long, device=device)
        self.positions = torch.zeros(rows, 1, dtype=torch.long, device=device)
        self.mask = torch.zeros(rows, slots, dtype=torch.bool, device=device)
        self.mask[:, slots - 1] = True      # free rows attend the scratch slot (no empty softmax)
        for tensor in (self.write_slots, self.ids, self.positions, self.mask):
            torch._dynamo.mark_static_address(tensor)
        self.cache = Cache(layers=self.layers)
        self.rows, self.slots_total = rows, slots
        if isinstance(self.function, GraphedCall):
            self.function.reset()   # the graph read the old buffers

    def holds(self, kv: KV) -> bool:
        binding = self.bindings.get(id(kv))
        return (binding is not None and binding.kv() is kv and kv.layers[0].buffer_keys is binding.keys_view
                and kv.mask is binding.mask_view)

    def _evict(self, key: int) -> None:
        binding = self.bindings.pop(key)
        kv = binding.kv()
        # unless it is gone or an eager function (ensure_room) moved it off the buffers: its copy
        if kv is not None and kv.layers[0].buffer_keys is binding.keys_view and kv.mask is binding.mask_view:
            for layer in kv.layers:
                layer._adopt(layer.buffer_keys.clone(), layer.buffer_values.clone())
            kv.mask = kv.mask.clone()
        end = binding.start + binding.rows
        self.mask[binding.start:end] = False
        self.mask[binding.start:end, self.slots_total - 1] = True

    def _bind(self, kv: KV, start: int) -> None:
        end, length, room = start + kv.rows, kv.length, self.slots_total - 1
        for static, layer in zip(self.layers, kv.layers):
            static.keys[start:end, :, :length] = layer.buffer_keys[:, :, :length]
            static.values[start:end, :, :length] = layer.buffer_values[:, :, :length]
            layer._adopt(static.keys[start:end, :, :room], static.values[start:end, :, :room])
        self.mask[start:end] = False
        width = min(kv.capacity, room)
        self.mask[start:end, :width] = kv.mask[:, :width]
        kv.mask = self.mask[start:end, :room]
        self.bindings[id(kv)] = _Binding(weakref.ref(kv), start, kv.rows, kv.layers[0].buffer_keys, kv.mask)

    def place(self, kvs: Sequence[KV]) -> list[int]:
        """Bind every cache to rows of the static buffers (those already bound stay where they
        are); their first rows."""
        for key in [key for key, binding in self.bindings.items() if binding.kv() is None]:
            self._evict(key)
        needed_rows = sum(kv.rows for kv in kvs)
        needed_slots = bucket_for(max(kv.length for kv in kvs) + 64 + 1)
        if needed_rows > self.rows or needed_slots > self.slots_total:
            self._allocate(kvs[0], max(rows_bucket(needed_rows), self.rows),
                           max(needed_slots, self.slots_total))
        wanted = {id(kv) for kv in kvs}
        for kv in kvs:
            if id(kv) in self.bindings and not self.holds(kv):
                self._evict(id(kv))
        for kv in kvs:
            if self.holds(kv):
                continue
            # rows nobody is bound to first; else rows of caches this step does not feed
            start = _first_fit(self._taken(lambda key: True), kv.rows)
            if start is None:
                start = _first_fit(self._taken(lambda key: key in wanted), kv.rows)
            if start is None:   # fragmented: everyone out, then in again in order
                for key in list(self.bindings):
                    self._evict(key)
                return self._place_in_order(kvs)
            for key, binding in list(self.bindings.items()):   # whoever sat there gets its copy back
                if binding.start < start + kv.rows and start < binding.start + binding.rows:
                    self._evict(key)
            self._bind(kv, start)
        return [self.bindings[id(kv)].start for kv in kvs]

    def _taken(self, counts) -> list[bool]:
        taken = [False] * self.rows
        for key, binding in self.bindings.items():
            if counts(key):
                taken[binding.start:binding.start + binding.rows] = [True] * binding.rows
        return taken

    def _place_in_order(self, kvs: Sequence[KV]) -> list[int]:
        starts, start = [], 0
        for kv in kvs:
            self._bind(kv, start)
            starts.append(start)
            start += kv.rows
        return starts

    # -- the step -------------------------------------------------------------------------------

    def _forward(self, ids, positions, mask):
        inputs = {"input_ids": ids, "position_ids": positions, "attention_mask": mask[:, None, None, :],
                  "use_cache": True, "logits_to_keep": 1, self.cache_kwarg: self.cache}
        return self.model(**inputs).logits[:, -1].float()

    def forward(self, steps: Sequence[Step]) -> list[torch.Tensor]:
        """One forward for every request; each gets its last logits [rows, vocab] (fp32)."""
        kvs = [step.kv for step in steps]
        if len({id(kv) for kv in kvs}) != len(kvs):
            raise ValueError("a cache appears twice in one batched step")
        started = time.perf_counter()
        for kv in kvs:
            ensure_room(kv, 1)   # a bound cache that outgrew its slots moves off; `place` takes it back bigger
        starts = self.place(kvs)
        scratch = self.slots_total - 1
        self.write_slots.fill_(scratch)
        for kv, step, start in zip(kvs, steps, starts):
            end = start + kv.rows
            slot = kv.length
            kv.mask[:, slot] = True
            self.ids[start:end] = step.ids
            self.positions[start:end, 0] = kv.positions
            self.write_slots[start:end] = slot
        logits = self.function(self.ids, self.positions, self.mask)
        out = []
        for kv, start in zip(kvs, starts):
            for layer in kv.layers:
                layer.length += 1
            kv.positions += 1
            out.append(logits[start:start + kv.rows].clone())   # a CUDA graph's output is overwritten next step
        CompiledStep.forwards += 1
        CompiledStep.row_tokens += sum(kv.rows for kv in kvs)
        CompiledStep.seconds += time.perf_counter() - started   # on a GPU: the time to issue it
        return out


def _first_fit(used: list[bool], rows: int) -> int | None:
    run = 0
    for index, taken in enumerate(used):
        run = 0 if taken else run + 1
        if run == rows:
            return index - rows + 1
    return None


def forward_steps(model, steps: Sequence[Step]) -> list[torch.Tensor]:
    """engine.generation.batching.forward_steps through the model's compiled batch step."""
    return BatchStep.shared(model).forward(steps)
