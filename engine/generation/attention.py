"""Attention functions the decode loop registers with transformers' AttentionInterface.

    egcfg_shared_prefix   one token of several rows that share their first P slots (the guided
                          pair): the shared keys and values are read once for all rows, each row's
                          own slots apart, and the two partial softmaxes merged by log-sum-exp
    egcfg_decode          one token per row, in the compiled steps: the query heads that share a
                          key/value head become that head's query positions, so sdpa reads each
                          key and value once instead of once per query head

The implementation is swapped in for one forward at a time (`using_attention`); anything a
function does not cover goes to sdpa unchanged.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

# Shared-prefix attention for one token of several rows (the 2-row guided step). Both rows hold the
# same head in slots [0, P): plain attention reads those keys and values once per row, and at a
# 2,000-token prompt the KV cache is as large as a small model's weights. Here every row's query
# is an extra query position of one attention over a single copy of the prefix; each row's own
# slots (signal, tail, code) are attended separately under its mask; the two partial softmaxes
# are merged with their log-sum-exps (flash-decoding's merge).

SHARED_PREFIX_ATTENTION = "egcfg_shared_prefix"
SHARED_PREFIX_KWARG = "egcfg_shared_prefix"


def partial_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T * scale) v and its log-sum-exp [b, h, m], q [b, h, m, d] against every slot of
    k/v [b, h, n, d] (same head count). On CPU torch's flash kernel (it returns the log-sum-exp);
    elsewhere two matmuls."""
    if query.device.type == "cpu":
        return _partial_attention_flash_cpu(query, key, value, scale)
    return _partial_attention_matmul(query, key, value, scale)


def _partial_attention_flash_cpu(query, key, value, scale) -> tuple[torch.Tensor, torch.Tensor]:
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(query, key, value, 0.0, False,
                                                                         scale=scale)[:2]
    return out, lse


def _partial_attention_matmul(query, key, value, scale) -> tuple[torch.Tensor, torch.Tensor]:
    scores = torch.matmul(query, key.transpose(-1, -2)).float() * scale
    lse = torch.logsumexp(scores, dim=-1)
    probs = torch.exp(scores - lse[..., None]).to(value.dtype)
    return torch.matmul(probs, value), lse


def shared_prefix_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, prefix: int,
                            own_from: Sequence[int], scaling: float) -> torch.Tensor:
    """Attention of one query token per row, query [rows, heads, 1, dim], over key/value
    [rows, kv_heads, slots, dim] where row r attends slots [0, prefix) and [own_from[r], slots).
    The prefix slots hold the same keys and values in every row: they are read from row 0 only.
    Returns [rows, 1, heads, dim], the layout of transformers' attention functions."""
    rows, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads
    q = query.reshape(rows, kv_heads, group, dim)
    # the prefix, read once: [1, kv_heads, rows * group, dim] queries against one row of keys
    q_shared = q.transpose(0, 1).reshape(1, kv_heads, rows * group, dim)
    shared_out, shared_lse = partial_attention(q_shared, key[0:1, :, :prefix], value[0:1, :, :prefix], scaling)
    shared_out = shared_out.view(kv_heads, rows, group, dim).transpose(0, 1)
    shared_lse = shared_lse.view(kv_heads, rows, group).transpose(0, 1)
    # each row's own slots (a masked gap, like the unconditional row's signal slots, is never read)
    own = [partial_attention(q[r : r + 1], key[r : r + 1, :, start:], value[r : r + 1, :, start:], scaling)
           for r, start in enumerate(own_from)]
    own_out = torch.cat([out for out, _ in own])
    own_lse = torch.cat([lse for _, lse in own])
    # merge: each part weighs exp(its lse - the total lse); for the prefix, sigmoid(shared - own)
    weight = torch.sigmoid(shared_lse - own_lse).to(own_out.dtype)[..., None]
    out = torch.lerp(own_out, shared_out, weight)
    return out.reshape(rows, 1, heads, dim)


def _shared_prefix_applies(module, query, key, value, layout, dropout: float, kwargs) -> bool:
    """The cases `shared_prefix_attention` covers; everything else goes to sdpa unchanged."""
    if not layout:
        return False
    prefix, own_from = layout
    rows, heads, q_length, dim = query.shape
    return (prefix > 0 and q_length == 1 and len(own_from) == rows and key.shape[0] == value.shape[0] == rows
            and all(prefix <= start < key.shape[2] for start in own_from) and heads % key.shape[1] == 0
            and value.shape[-1] == dim and not dropout and not (module is not None and module.training)
            and kwargs.get("softcap") is None and kwargs.get("sliding_window") is None
            and kwargs.get("position_bias") is None and kwargs.get("sinks") is None)


def shared_prefix_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                                    scaling: float | None = None, **kwargs):
    """transformers' attention-function signature: shared-prefix attention when the call carries
    the slot layout (prefix, own_from) and the case is covered, else sdpa with the mask."""
    layout = kwargs.pop(SHARED_PREFIX_KWARG, None)
    if _shared_prefix_applies(module, query, key, value, layout, dropout, kwargs):
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        return shared_prefix_attention(query, key, value, layout[0], layout[1], scale), None
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                  **kwargs)


AttentionInterface.register(SHARED_PREFIX_ATTENTION, shared_prefix_attention_forward)
ALL_MASK_ATTENTION_FUNCTIONS.register(SHARED_PREFIX_ATTENTION, sdpa_mask)   # same masks as sdpa


# Grouped-query attention for one token per row under torch.compile. transformers' sdpa function
# folds the query heads of a key/value head into query positions for one token (`pack_gqa`) only
# when not compiling; compiled, it copies every key and value once per query head (`repeat_kv`).
# On the H200 that copy and the attention over it took 2.2 of the 7B guided step's 8.6 ms on the
# GPU (benchmarks/results/gpu-nvidia-h200-20261126-234726.json, `guided_compiled_profile`).

DECODE_ATTENTION = "egcfg_decode"


def _decode_applies(module, query, key, value, attention_mask, dropout: float, kwargs) -> bool:
    groups = getattr(module, "num_key_value_groups", 1)
    return (query.shape[2] == 1 and groups > 1 and query.shape[1] == key.shape[1] * groups
            and (attention_mask is None or (attention_mask.dim() == 4 and attention_mask.shape[1] == 1))
            and not dropout and not (module is not None and module.training)
            and all(kwargs.get(name) is None for name in ("softcap", "sliding_window", "position_bias", "sinks")))


def decode_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                             scaling: float | None = None, **kwargs):
    """transformers' attention-function signature: one token per row, query [rows, heads, 1, dim],
    as sdpa over [rows, kv_heads, group, dim] queries (a mask shared by the heads broadcasts);
    returns [rows, 1, heads, dim]. Other cases go to sdpa unchanged."""
    if not _decode_applies(module, query, key, value, attention_mask, dropout, kwargs):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    rows, heads, _, dim = query.shape
    packed = query.reshape(rows, key.shape[1], heads // key.shape[1], dim)
    out = torch.nn.functional.scaled_dot_product_attention(packed, key, value, attn_mask=attention_mask,
                                                           scale=scaling)
    return out.reshape(rows, heads, 1, value.shape[-1]).transpose(1, 2).contiguous(), None


AttentionInterface.register(DECODE_ATTENTION, decode_attention_forward)
ALL_MASK_ATTENTION_FUNCTIONS.register(DECODE_ATTENTION, sdpa_mask)


@contextmanager
def using_attention(model, name: str):
    """The model's forwards inside use the attention function `name` (transformers picks it from
    the config on every call; forwards on a model are serialised by
    engine.generation.agents.model_lock)."""
    config = model.config
    previous, config._attn_implementation = config._attn_implementation, name
    try:
        yield
    finally:
        config._attn_implementation = previous


def _with_shared_prefix(model, layout: tuple[int, tuple[int, ...]], inputs: dict):
    """One forward with the shared-prefix attention."""
    with using_attention(model, SHARED_PREFIX_ATTENTION):
        return model(**inputs, **{SHARED_PREFIX_KWARG: layout})

