"""The slot KV cache: preallocated buffers whose rows are separate sequences, with explicit RoPE
positions and a per-row slot mask (engine/generation/decode.py explains the layout of the guided pair).

    SlotLayer / KV       one layer's buffers; the batched cache with mask, positions, shared prefix
    empty_kv, branch     new caches: empty, or rows copied from one row of another
    row_view             a 1-row cache writing into one row of another (no copy)
    pair_with_gap        the guided pair (unconditional row with a masked gap where the signal goes),
                         optionally freeing the unconditional cache it was copied from, layer by layer
    drop_gap             the unconditional row on its own again
    merge_rows           rows of different lengths from several caches in one cache (gaps masked)
    ensure_room, crop    grow the buffers; forget the last slots
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from transformers.cache_utils import Cache, CacheLayerMixin
# ------------------------------------------------------------------------------------------------
# KV slots

class SlotLayer(CacheLayerMixin):
    """One layer's keys and values in buffers [rows, heads, capacity, dim], appended in place.

    transformers' DynamicLayer concatenates on every token (a copy of the whole cache per step);
    here a step writes only its own slots and returns views of the filled part."""

    is_sliding = False
    is_croppable = True

    def __init__(self, capacity: int, keys: torch.Tensor | None = None, values: torch.Tensor | None = None,
                 length: int = 0):
        self.buffer_keys, self.buffer_values = keys, values   # before the base class clears keys/values
        super().__init__()
        self.capacity = capacity
        self.length = length
        if keys is not None:
            self._adopt(keys, values)

    # The filled parts are views made when read: a compiled step moves `length` on every token of
    # every layer, and making two views per layer there cost ~110 us a step (28 layers, CPU host).
    @property
    def keys(self) -> torch.Tensor | None:
        return None if self.buffer_keys is None else self.buffer_keys[:, :, : self.length]

    @keys.setter
    def keys(self, value) -> None:
        _clear_only(value)

    @property
    def values(self) -> torch.Tensor | None:
        return None if self.buffer_values is None else self.buffer_values[:, :, : self.length]

    @values.setter
    def values(self, value) -> None:
        _clear_only(value)

    def _adopt(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        self.buffer_keys, self.buffer_values = keys, values
        self.capacity = keys.shape[2]
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        rows, heads, _, _ = key_states.shape
        self._adopt(key_states.new_zeros(rows, heads, self.capacity, key_states.shape[-1]),
                    value_states.new_zeros(rows, heads, self.capacity, value_states.shape[-1]))

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start, end = self.length, self.length + key_states.shape[-2]
        self.buffer_keys[:, :, start:end] = key_states
        self.buffer_values[:, :, start:end] = value_states
        self.length = end
        return self.keys, self.values

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return -1

    def crop(self, tokens_to_remove: int) -> None:
        self.length -= abs(tokens_to_remove)


def _clear_only(value) -> None:
    """transformers' base class sets keys/values to None; anything else would be a second copy of
    the buffers that `length` does not follow."""
    if value is not None:
        raise AttributeError("a SlotLayer's keys and values are views of its buffers: set buffer_keys/buffer_values")


@dataclass
class KV:
    """A batched KV cache whose rows are separate sequences.

    Every row has the same number of slots; `mask` says which slots each row attends to and
    `positions` is each row's next RoPE position (a row's positions need not equal its slots)."""

    layers: list[SlotLayer]
    mask: torch.Tensor        # [rows, capacity] bool
    positions: torch.Tensor   # [rows] long
    gaps: bool = False        # some row has masked slots: the 2-D mask must be passed to the model
    # Slot layout for shared-prefix attention (one token steps): slots [0, shared) hold the same
    # keys/values in every row; row r attends those and [own_from[r], length), nothing else.
    shared: int = 0
    own_from: tuple[int, ...] = ()
    cache: Cache = field(init=False, repr=False)

    def __post_init__(self):
        self.cache = Cache(layers=self.layers)

    @property
    def rows(self) -> int:
        return self.mask.shape[0]

    @property
    def length(self) -> int:
        return self.layers[0].length

    @property
    def capacity(self) -> int:
        return self.mask.shape[1]


def empty_kv(model, rows: int, capacity: int) -> KV:
    layers = [SlotLayer(capacity) for _ in range(model.config.get_text_config().num_hidden_layers)]
    device = model.device
    return KV(layers, torch.zeros(rows, capacity, dtype=torch.bool, device=device),
              torch.zeros(rows, dtype=torch.long, device=device))


def _new_buffers(like: torch.Tensor, rows: int, capacity: int) -> torch.Tensor:
    return like.new_zeros(rows, like.shape[1], capacity, like.shape[3])


def ensure_room(kv: KV, tokens: int) -> None:
    """Grow the buffers (copying the filled part) when `tokens` more slots do not fit."""
    needed = kv.length + tokens
    if needed <= kv.capacity:
        return
    capacity = max(needed + 64, 2 * kv.capacity)
    for layer in kv.layers:
        if layer.is_initialized:
            keys = _new_buffers(layer.buffer_keys, kv.rows, capacity)
            values = _new_buffers(layer.buffer_values, kv.rows, capacity)
            keys[:, :, : layer.length] = layer.keys
            values[:, :, : layer.length] = layer.values
            layer._adopt(keys, values)
        layer.capacity = capacity
    mask = kv.mask.new_zeros(kv.rows, capacity)
    mask[:, : kv.capacity] = kv.mask
    kv.mask = mask


def crop(kv: KV, length: int) -> None:
    """Forget every slot from `length` on (rejected draft tokens)."""
    removed = kv.length - length
    if removed <= 0:
        return
    for layer in kv.layers:
        layer.crop(-removed)
    kv.mask[:, length:] = False
    kv.positions -= removed


def branch(kv: KV, row: int, copies: int, room: int) -> KV:
    """`copies` independent rows, each a copy of `kv`'s row `row`, with `room` free slots."""
    length, capacity = kv.length, kv.length + room
    layers = []
    for layer in kv.layers:
        keys = _new_buffers(layer.buffer_keys, copies, capacity)
        values = _new_buffers(layer.buffer_values, copies, capacity)
        keys[:, :, :length] = layer.keys[row : row + 1]
        values[:, :, :length] = layer.values[row : row + 1]
        layers.append(SlotLayer(capacity, keys, values, length))
    mask = kv.mask.new_zeros(copies, capacity)
    mask[:, :length] = kv.mask[row, :length]
    return KV(layers, mask, kv.positions[row].repeat(copies), gaps=kv.gaps)


def row_view(kv: KV, row: int) -> KV:
    """A 1-row KV that writes straight into row `row` of `kv`'s buffers (no copy)."""
    layers = [SlotLayer(layer.capacity, layer.buffer_keys[row : row + 1], layer.buffer_values[row : row + 1],
                        layer.length) for layer in kv.layers]
    return KV(layers, kv.mask[row : row + 1], kv.positions[row : row + 1], gaps=False)


def pair_with_gap(uncond: KV, head_len: int, gap: int, room: int, release: bool = False) -> KV:
    """Two rows: row 0 = `uncond` with `gap` masked slots after the head, row 1 = the head only
    (its signal + tail + code are prefilled next, through `row_view`). Lengths are aligned:
    both rows end at uncond.length + gap once row 1 is filled. `release`: `uncond` is not used
    again; each of its layers is freed as soon as it is copied (the peak then holds the pair and
    one layer of it, not both caches whole)."""
    length = uncond.length + gap
    capacity = length + room
    layers = []
    mask = uncond.mask.new_zeros(2, capacity)
    mask[:, :head_len] = True
    mask[0, head_len + gap : length] = True
    positions = torch.stack([uncond.positions[0], uncond.positions[0].new_tensor(head_len)])
    for layer in uncond.layers:
        keys = _new_buffers(layer.buffer_keys, 2, capacity)
        values = _new_buffers(layer.buffer_values, 2, capacity)
        for target in (keys, values):
            source = layer.keys if target is keys else layer.values
            target[:, :, :head_len] = source[0:1, :, :head_len]
            target[0, :, head_len + gap : length] = source[0, :, head_len:]
        layers.append(SlotLayer(capacity, keys, values, length))
        if release:
            release_layer(layer)
    return KV(layers, mask, positions, gaps=gap > 0, shared=head_len, own_from=(head_len + gap, head_len))


def release_layer(layer: SlotLayer) -> None:
    """Drop a layer's buffers (a cache whose contents were moved elsewhere); using it afterwards
    is an error, not stale data."""
    layer.buffer_keys = layer.buffer_values = None
    layer.length, layer.capacity = 0, 0
    layer.is_initialized = False


def drop_gap(pair: KV, head_len: int, gap: int, room: int) -> KV:
    """Row 0 of a pair, without its masked gap: the unconditional stream on its own again."""
    length = pair.length - gap
    capacity = length + room
    layers = []
    for layer in pair.layers:
        keys = _new_buffers(layer.buffer_keys, 1, capacity)
        values = _new_buffers(layer.buffer_values, 1, capacity)
        for target, source in ((keys, layer.keys), (values, layer.values)):
            target[0, :, :head_len] = source[0, :, :head_len]
            target[0, :, head_len:length] = source[0, :, head_len + gap :]
        layers.append(SlotLayer(capacity, keys, values, length))
    mask = pair.mask.new_zeros(1, capacity)
    mask[:, :length] = True
    return KV(layers, mask, pair.positions[0:1].clone())



def merge_rows(parts: Sequence[tuple[KV, int, int, int]], room: int) -> KV:
    """One cache whose row i is row `parts[i][1]` of cache `parts[i][0]`, keeping its first
    `parts[i][2]` slots (with their mask) and continuing at RoPE position `parts[i][3]`. Rows
    shorter than the longest get masked slots up to the common length, so every row appends at the
    same slot from then on (rows of different lengths in one batch)."""
    length = max(part[2] for part in parts)
    capacity = length + room
    first = parts[0][0]
    layers = []
    for index in range(len(first.layers)):
        like = first.layers[index].buffer_keys
        keys = _new_buffers(like, len(parts), capacity)
        values = _new_buffers(first.layers[index].buffer_values, len(parts), capacity)
        for target, (kv, row, filled, _) in enumerate(parts):
            layer = kv.layers[index]
            keys[target, :, :filled] = layer.buffer_keys[row, :, :filled]
            values[target, :, :filled] = layer.buffer_values[row, :, :filled]
        layers.append(SlotLayer(capacity, keys, values, length))
    mask = first.mask.new_zeros(len(parts), capacity)
    for target, (kv, row, filled, _) in enumerate(parts):
        mask[target, :filled] = kv.mask[row, :filled]
    positions = torch.tensor([part[3] for part in parts], dtype=torch.long, device=first.positions.device)
    gaps = bool((~mask[:, :length]).any())
    return KV(layers, mask, positions, gaps=gaps)
