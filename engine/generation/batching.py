"""Agents in one batch: several step requests (each a slot cache and one token per row) in one
forward pass.

Every request keeps its own cache: its rows have their own lengths, masks and RoPE positions,
and the guided pair its shared-prefix layout. The forward runs the model once over all rows
stacked: the projections, MLPs and the LM head see one batch (on a memory-bound GPU, reading the
weights once for every agent is the saving), and attention is computed request by request
against that request's own cache, through an attention function registered with transformers:

    rows      | request 0 (guided pair) | request 1 (3 candidate rows) | request 2 (greedy row)
    weights   |                  one pass over all 6 rows
    attention | shared-prefix, 2 rows   | sdpa with its slot mask      | sdpa

`forward_steps([Step, ...])` returns each request's last logits, as `decode.forward` would have
one by one (same keys, values and masks; only the batch shape of the matmuls differs).
"""

from __future__ import annotations

from typing import Sequence

import torch
from transformers import AttentionInterface
from transformers.cache_utils import Cache, CacheLayerMixin
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from engine.generation.attention import _shared_prefix_applies, shared_prefix_attention, using_attention
from engine.generation.decode import Step, _attn_implementation, cache_argument, ensure_room, forward

GROUPED_ATTENTION = "egcfg_grouped"
GROUPS_KWARG = "egcfg_groups"


class _GroupedLayer(CacheLayerMixin):
    """Layer `index` of every request's cache: the new keys and values are split by rows and
    appended to each cache; the attention function then reads each cache's views."""

    is_sliding = False
    is_compileable = False

    def __init__(self, index: int, groups: "_Groups"):
        super().__init__()
        self.index, self.groups = index, groups
        self.is_initialized = True
        self.parts: list[tuple[torch.Tensor, torch.Tensor]] = []

    def lazy_initialization(self, key_states, value_states) -> None:   # never needed: caches exist
        pass

    def update(self, key_states, value_states, *args, **kwargs):
        self.parts = [step.kv.layers[self.index].update(key_states[start:end], value_states[start:end])
                      for step, (start, end) in zip(self.groups.steps, self.groups.spans)]
        return key_states, value_states

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return query_length, 0

    def get_seq_length(self) -> int:
        return 0

    def get_max_length(self) -> int:
        return -1


class _Groups:
    def __init__(self, steps: Sequence[Step], layers: int, shared_prefix: bool):
        self.steps = list(steps)
        self.spans, start = [], 0
        for step in self.steps:
            self.spans.append((start, start + step.kv.rows))
            start += step.kv.rows
        self.shared_prefix = shared_prefix
        self.cache = Cache(layers=[_GroupedLayer(index, self) for index in range(layers)])


def grouped_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                              scaling: float | None = None, **kwargs):
    """transformers' attention-function signature; `key`/`value` are ignored: each request
    attends its own cache's slots (under its mask, or shared-prefix for a guided pair)."""
    groups: _Groups = kwargs.pop(GROUPS_KWARG)
    layer = groups.cache.layers[module.layer_idx]
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    outputs = []
    for step, (start, end), (keys, values) in zip(groups.steps, groups.spans, layer.parts):
        q, kv = query[start:end], step.kv
        layout = (kv.shared, kv.own_from) if kv.shared > 0 and kv.rows > 1 else None
        if groups.shared_prefix and _shared_prefix_applies(module, q, keys, values, layout, dropout, kwargs):
            outputs.append(shared_prefix_attention(q, keys, values, kv.shared, kv.own_from, scale))
            continue
        mask = kv.mask[:, None, None, : keys.shape[2]] if kv.gaps else None
        out, _ = sdpa_attention_forward(module, q, keys, values, mask, dropout=dropout, scaling=scaling, **kwargs)
        outputs.append(out)
    return torch.cat(outputs), None


AttentionInterface.register(GROUPED_ATTENTION, grouped_attention_forward)
# No mask function is registered for it: transformers then builds no mask (each request has its own).


def forward_steps(model, steps: Sequence[Step]) -> list[torch.Tensor]:
    """One forward for every request; each gets its last logits [rows, vocab] (fp32)."""
    if len(steps) == 1:
        return [forward(model, steps[0].kv, steps[0].ids)[:, -1]]
    for step in steps:
        ensure_room(step.kv, 1)
        step.kv.mask[:, step.kv.length] = True
    groups = _Groups(steps, len(steps[0].kv.layers), _attn_implementation(model) == "sdpa")
    ids = torch.cat([step.ids for step in steps])
    positions = torch.cat([step.kv.positions[:, None] for step in steps])
    inputs = {"input_ids": ids, "position_ids": positions, "use_cache": True, "logits_to_keep": 1,
              cache_argument(model): groups.cache, GROUPS_KWARG: groups}
    with using_attention(model, GROUPED_ATTENTION):
        logits = model(**inputs).logits[:, -1].float()
    for step in steps:
        step.kv.positions += 1
    return [logits[start:end] for start, end in groups.spans]
