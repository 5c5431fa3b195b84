"""The guided decode loop (METHOD.md step 2), in the style of gpt-fast's generate.py: a handful of
short functions over explicit tensors and positions, readable top to bottom.

    KV slots            `KV`: a batched KV cache in preallocated buffers whose rows are separate
                        sequences, with explicit RoPE positions and a per-row slot mask
    forward passes      `forward`, `prefill`, `decode_one_token`, `cfg_scores`
    attention           `shared_prefix_attention`: the 2-row step reads the shared head's KV once
    the state           `Decoding`: prompt, caches, the code written so far (token ids + text)
    one line            `set_signal` (conditional stream re-prefilled), `guided_line`
                        (2-row CFG steps, optional draft verification), line/function-end checks
    candidates          `sample_candidates`: s rows branched from the unconditional cache

How the two streams share one batched forward. The prompt is head + tail + code, the signal goes
between head and tail (at i_dyn). Both rows keep the head's KV in slots [0, P); the conditional row
has the signal in slots [P, P+S), which the unconditional row masks out; from P+S on both rows hold
the tail, the code so far and every new token in the same slots, each with its own positions (RoPE
keys stay valid wherever the slot is), so every token is one forward of a 2-row batch:

    slot       0 .. P-1 | P .. P+S-1 | P+S ...
    row 0      head     | (masked)   | tail + code      positions 0.., then P..
    row 1      head     | signal     | tail + code      positions 0.., P.., then P+S..

Per line the signal changes: the head's KV (prefilled once) and the unconditional row are copied
into a new pair of rows and only the conditional row's signal + tail + code is prefilled. The
unconditional stream is never re-prefilled; candidates branch from it. In a one-token step the
rows' queries attend the head's slots together (one copy read, `shared_prefix_attention`) and each
row's own slots apart, so the unconditional row never reads the masked signal. The last token written is
always "pending": sampled but not yet fed, so both rows feed it together in the next step.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from transformers import AttentionInterface
from transformers.cache_utils import Cache, CacheLayerMixin
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

FENCE = "```"


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
        super().__init__()
        self.capacity = capacity
        self.buffer_keys, self.buffer_values = keys, values
        self.length = length
        if keys is not None:
            self._adopt(keys, values)

    def _adopt(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        self.buffer_keys, self.buffer_values = keys, values
        self.capacity = keys.shape[2]
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True
        self._refresh_views()

    def _refresh_views(self) -> None:
        self.keys = self.buffer_keys[:, :, : self.length]
        self.values = self.buffer_values[:, :, : self.length]

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
        self._refresh_views()
        return self.keys, self.values

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return -1

    def crop(self, tokens_to_remove: int) -> None:
        self.length -= abs(tokens_to_remove)
        self._refresh_views()


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


def pair_with_gap(uncond: KV, head_len: int, gap: int, room: int) -> KV:
    """Two rows: row 0 = `uncond` with `gap` masked slots after the head, row 1 = the head only
    (its signal + tail + code are prefilled next, through `row_view`). Lengths are aligned:
    both rows end at uncond.length + gap once row 1 is filled."""
    length = uncond.length + gap
    capacity = length + room
    layers = []
    for layer in uncond.layers:
        keys = _new_buffers(layer.buffer_keys, 2, capacity)
        values = _new_buffers(layer.buffer_values, 2, capacity)
        for target in (keys, values):
            source = layer.keys if target is keys else layer.values
            target[:, :, :head_len] = source[0:1, :, :head_len]
            target[0, :, head_len + gap : length] = source[0, :, head_len:]
        layers.append(SlotLayer(capacity, keys, values, length))
    mask = uncond.mask.new_zeros(2, capacity)
    mask[:, :head_len] = True
    mask[0, head_len + gap : length] = True
    positions = torch.stack([uncond.positions[0], uncond.positions[0].new_tensor(head_len)])
    return KV(layers, mask, positions, gaps=gap > 0, shared=head_len, own_from=(head_len + gap, head_len))


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


# ------------------------------------------------------------------------------------------------
# Forward passes

def forward(model, kv: KV, ids: torch.Tensor, *, all_logits: bool = False) -> torch.Tensor:
    """Feed ids [rows, k] into the next k slots of every row; logits [rows, k or 1, vocab] (fp32)."""
    rows, k = ids.shape
    ensure_room(kv, k)
    start = kv.length
    kv.mask[:, start : start + k] = True
    positions = kv.positions[:, None] + torch.arange(k, device=kv.positions.device)
    inputs = dict(input_ids=ids, position_ids=positions, past_key_values=kv.cache, use_cache=True,
                  attention_mask=_attention_mask(model, kv, start + k, k), logits_to_keep=0 if all_logits else 1)
    if k == 1 and rows > 1 and kv.shared > 0 and len(kv.own_from) == rows and _attn_implementation(model) == "sdpa":
        out = _with_shared_prefix(model, (kv.shared, kv.own_from), inputs)
    else:
        out = model(**inputs)
    kv.positions += k
    return out.logits.float()


def _attn_implementation(model) -> str:
    return getattr(model.config, "_attn_implementation", "") or ""


def _attention_mask(model, kv: KV, length: int, k: int) -> torch.Tensor | None:
    """None without gaps (the model's own causal mask); else the 2-D slot mask. For one token under
    sdpa, the ready 4-D boolean view [rows, 1, 1, slots] (saves building a mask every step)."""
    if not kv.gaps:
        return None
    if k == 1 and getattr(model.config, "_attn_implementation", "") == "sdpa":
        return kv.mask[:, None, None, :length]
    return kv.mask[:, :length]


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


def _with_shared_prefix(model, layout: tuple[int, tuple[int, ...]], inputs: dict):
    """One forward with the shared-prefix attention: the implementation is swapped for this call
    only (transformers picks the attention function from the config on every call; forwards on a
    model are serialised by engine.generation.agents.model_lock)."""
    config = model.config
    previous, config._attn_implementation = config._attn_implementation, SHARED_PREFIX_ATTENTION
    try:
        return model(**inputs, **{SHARED_PREFIX_KWARG: layout})
    finally:
        config._attn_implementation = previous


def prefill(model, ids: Sequence[int], room: int = 0) -> KV:
    """A 1-row KV holding `ids` (nothing pending: the caller decides what comes next)."""
    kv = empty_kv(model, 1, len(ids) + room)
    if ids:
        forward(model, kv, torch.tensor([list(ids)], device=model.device))
    return kv


def cfg_scores(logits: torch.Tensor, gamma: float) -> torch.Tensor:
    """Guided log-probabilities from [rows, ..., vocab] logits.

    2 rows (unconditional, conditional): log P(w|p_sol) + gamma * (log P(w|p_dyn) - log P(w|p_sol)).
    1 row: that row's log-probabilities (gamma 0 runs only p_sol, gamma 1 only p_dyn)."""
    logp = torch.log_softmax(logits, dim=-1)
    if logp.shape[0] == 1:
        return logp[0]
    return logp[0] + gamma * (logp[1] - logp[0])


def decode_one_token(model, kv: KV, token: int, gamma: float) -> int:
    """Feed `token` to every row of `kv`; the guided argmax of the next token."""
    ids = torch.full((kv.rows, 1), token, dtype=torch.long, device=kv.positions.device)
    return int(cfg_scores(forward(model, kv, ids)[:, -1], gamma).argmax())


def verify_draft(model, kv: KV, token: int, draft: Sequence[int], gamma: float) -> list[int]:
    """Feed `token` + draft[:-1] in one forward and keep the longest prefix of the draft that the
    guided argmax agrees with, plus the argmax's own token at the first disagreement: exactly the
    tokens greedy guided decoding would have produced one by one. The caller owns the returned
    tokens (the last one is pending; the slots of rejected draft tokens are dropped)."""
    fed = [token, *draft[:-1]]
    start = kv.length
    ids = torch.tensor([fed] * kv.rows, device=kv.positions.device)
    best = cfg_scores(forward(model, kv, ids, all_logits=True), gamma).argmax(-1).tolist()
    accepted = []
    for guess, choice in zip(draft, best):
        accepted.append(choice)
        if choice != guess:
            break
    crop(kv, start + len(accepted))   # fed: token + accepted[:-1]
    return accepted


# ------------------------------------------------------------------------------------------------
# Where lines and the function end

def indent_width(line: str) -> int:
    expanded = line.expandtabs(4)
    return len(expanded) - len(expanded.lstrip())


def leaves_function(line: str, def_indent: int) -> bool:
    """A line (complete or partial) that is not part of the function body: it has content at the
    def's indentation or less, or it is a code fence. Blank lines never leave."""
    content = line.strip()
    if not content:
        return False
    if content.startswith(FENCE):
        return True
    return def_indent >= 0 and indent_width(line) <= def_indent


def def_indent_of(source: str, function_name: str) -> int:
    """Indentation width of the last `def function_name` line in `source`; -1 when there is none
    (then only EOS, a code fence or the token cap end the function)."""
    found = -1
    for line in source.splitlines():
        stripped = line.lstrip()
        for keyword in ("def ", "async def "):
            if stripped.startswith(keyword) and stripped[len(keyword):].lstrip().startswith(function_name + "(") \
                    and function_name:
                found = indent_width(line)
    return found


def stop_token_ids(tokenizer, model) -> frozenset[int]:
    """EOS ids of the tokenizer and generation config, and every other special token (a chat
    marker in the middle of code means the model has left the code)."""
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    for source in (tokenizer.eos_token_id, getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif source:
            ids.update(int(i) for i in source)
    return frozenset(ids)


# ------------------------------------------------------------------------------------------------
# The state of one agent's decoding

class Cancelled(Exception):
    """The caller's cancel token fired; raised between forward passes."""


@dataclass
class LineEnd:
    """What `guided_line` stopped at."""
    lines: list[str]          # lines committed by this call (without their newline)
    stop: str = ""            # "" (the line ended, more to come) | "complete" | "token_cap"
    why: str = ""             # for a stop: "dedent" | "eos" | "fence" | "cap"
    drafted: int = 0          # tokens taken from a verified draft
    tokens: int = 0           # tokens decoded by this call


@dataclass
class Decoding:
    """One agent's decoding state. `ids` are the tokens written after the prompt; the text of the
    code written so far is `text`, of which `text[:committed]` is whole lines."""

    model: Any
    tokenizer: Any
    prompt_ids: list[int]
    head_len: int             # i_dyn: the signal is inserted before prompt_ids[head_len]
    gamma: float
    def_indent: int
    stop_ids: frozenset[int]
    max_new_tokens: int
    uncond: KV                # p_sol + code, everything but the pending token
    head: KV | None = None    # KV of prompt_ids[:head_len] (kept for the conditional refreshes)
    guided: KV | None = None  # the KV the current line is decoded with
    signal_len: int = 0       # signal tokens in `guided`'s conditional row
    uncond_fed: int = 0       # context tokens in `uncond` (it lags within a line when gamma == 1)
    ids: list[int] = field(default_factory=list)
    text: str = ""
    committed: int = 0
    anchor: str = ""          # decoded text of the last prompt token (see code_text)
    cancel: Callable[[], bool] | None = None

    @property
    def pending(self) -> int:
        return self.ids[-1] if self.ids else self.prompt_ids[-1]

    @property
    def context(self) -> list[int]:
        return self.prompt_ids + self.ids

    @property
    def partial_line(self) -> str:
        return self.text[self.committed :]

    @property
    def code(self) -> str:
        """Whole lines written so far."""
        return self.text[: self.committed]

    @property
    def room(self) -> int:
        """Slots a line may still need: every remaining token plus a draft's worth."""
        return self.max_new_tokens - len(self.ids) + 64


def code_text(tokenizer, anchor_id: int, anchor: str, ids: Sequence[int]) -> str:
    """Text of `ids` as they read after the prompt: decoded with the last prompt token in front
    (sentencepiece tokenizers drop a leading space when a piece is decoded alone)."""
    text = tokenizer.decode([anchor_id, *ids], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    return text[len(anchor):] if text.startswith(anchor) else tokenizer.decode(
        list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


@torch.inference_mode()
def prefill_head(model, prompt_ids: Sequence[int], head_len: int) -> KV:
    """KV of the prompt's head (before i_dyn). Never written to: every user copies it."""
    return prefill(model, list(prompt_ids)[: max(1, min(head_len, len(prompt_ids) - 1))])


@torch.inference_mode()
def start(model, tokenizer, prompt_ids: Sequence[int], head_len: int, *, gamma: float, def_indent: int,
          max_new_tokens: int = 512, stop_ids: frozenset[int] | None = None,
          cancel: Callable[[], bool] | None = None, head: KV | None = None) -> Decoding:
    """Prefill the prompt (everything but its last token, which is pending). The head before
    i_dyn is prefilled once and kept when the conditional stream will be needed (gamma != 0);
    pass `head` (from `prefill_head`) to share it between agents with the same prompt."""
    prompt_ids = list(prompt_ids)
    if len(prompt_ids) < 2:
        raise ValueError("the prompt needs at least two tokens")
    head_len = max(1, min(head_len, len(prompt_ids) - 1))
    if gamma != 0 or head is not None:
        head = head if head is not None else prefill_head(model, prompt_ids, head_len)
        uncond = branch(head, 0, 1, room=len(prompt_ids) + max_new_tokens + 64)
        if prompt_ids[head_len:-1]:
            forward(model, uncond, torch.tensor([prompt_ids[head_len:-1]], device=model.device))
    else:
        uncond = prefill(model, prompt_ids[:-1], room=max_new_tokens + 64)
    anchor = tokenizer.decode([prompt_ids[-1]], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    dec = Decoding(model=model, tokenizer=tokenizer, prompt_ids=prompt_ids, head_len=head_len, gamma=gamma,
                   def_indent=def_indent, stop_ids=stop_ids if stop_ids is not None else stop_token_ids(tokenizer, model),
                   max_new_tokens=max_new_tokens, uncond=uncond, head=head, anchor=anchor, cancel=cancel)
    dec.uncond_fed = len(prompt_ids) - 1
    dec.guided = uncond if gamma == 0 else None
    return dec


@torch.inference_mode()
def set_signal(dec: Decoding, signal: Sequence[int]) -> None:
    """Build the KV the next line is decoded with: the conditional row is re-prefilled with
    head + signal + tail + code (the head's KV is reused), the unconditional row is copied.
    gamma 0 decodes p_sol alone and gamma 1 p_dyn alone (one row each)."""
    if dec.gamma == 0:
        dec.guided = dec.uncond
        return
    _check_cancel(dec)
    signal = list(signal)
    cond_ids = signal + dec.context[dec.head_len : -1]
    if dec.gamma == 1:
        dec.guided = branch(dec.head, 0, 1, room=len(cond_ids) + dec.room)
        target = dec.guided
    else:
        dec.guided = pair_with_gap(dec.uncond, dec.head_len, len(signal), room=dec.room)
        target = row_view(dec.guided, 1)   # writes into row 1 of the pair, positions included
        for layer in target.layers:
            layer.length = dec.head_len
            layer._refresh_views()
    if cond_ids:
        forward(dec.model, target, torch.tensor([cond_ids], device=dec.model.device))
    dec.signal_len = len(signal)


@torch.inference_mode()
def sync_unconditional(dec: Decoding) -> None:
    """After a line: bring the unconditional stream up to date (all context but the pending token)."""
    if dec.gamma == 0:
        pass                      # the line was decoded on the unconditional stream itself
    elif dec.guided is not None and dec.guided.rows == 2:
        dec.uncond = drop_gap(dec.guided, dec.head_len, dec.signal_len, room=dec.room)
    else:                         # gamma 1: the unconditional row sat the line out; catch up in one forward
        missing = dec.context[dec.uncond_fed : -1]
        if missing:
            forward(dec.model, dec.uncond, torch.tensor([missing], device=dec.model.device))
    dec.uncond_fed = len(dec.context) - 1
    dec.guided = dec.uncond if dec.gamma == 0 else None


def _check_cancel(dec: Decoding) -> None:
    if dec.cancel is not None and dec.cancel():
        raise Cancelled()


def push_token(dec: Decoding, token: int, committed: list[str]) -> tuple[str, str] | None:
    """Append one decoded token; commit the lines it completes into `committed`. Returns
    (stop, why) when the function is over, else None."""
    if token in dec.stop_ids:
        return "complete", "eos"
    dec.ids.append(token)
    dec.text = code_text(dec.tokenizer, dec.prompt_ids[-1], dec.anchor, dec.ids)
    while True:
        newline = dec.text.find("\n", dec.committed)
        if newline < 0:
            break
        line = dec.text[dec.committed : newline]
        if leaves_function(line, dec.def_indent):
            return "complete", "fence" if line.strip().startswith(FENCE) else "dedent"
        committed.append(line)
        dec.committed = newline + 1
    if leaves_function(dec.partial_line, dec.def_indent):   # known before its newline arrives
        return "complete", "fence" if dec.partial_line.strip().startswith(FENCE) else "dedent"
    return None


@torch.inference_mode()
def guided_line(dec: Decoding, draft: Sequence[int] = ()) -> LineEnd:
    """Decode greedily with guidance until a token completes a line, the function ends, or the
    token cap is hit. A draft (a candidate's first line) is verified in one forward first."""
    if dec.guided is None:
        set_signal(dec, [])
    kv, end = dec.guided, LineEnd(lines=[])
    queue: list[int] = []
    budget = dec.max_new_tokens - len(dec.ids)
    if draft and budget > 1:
        _check_cancel(dec)
        queue = verify_draft(dec.model, kv, dec.pending, list(draft)[: budget], dec.gamma)
        end.drafted = len(queue) - 1
    while True:
        if not queue:
            if len(dec.ids) >= dec.max_new_tokens:
                end.stop, end.why = "token_cap", "cap"
                return end
            _check_cancel(dec)
            queue = [decode_one_token(dec.model, kv, dec.pending, dec.gamma)]
        token = queue.pop(0)
        end.tokens += 1
        stopped = push_token(dec, token, end.lines)
        if stopped:
            end.stop, end.why = stopped
            return end
        if any(line.strip() for line in end.lines):   # blank lines do not refresh the signal
            if queue:   # a verified draft ran past the line's end: forget the slots after this token
                crop(kv, kv.length - len(queue))
            sync_unconditional(dec)
            return end


# ------------------------------------------------------------------------------------------------
# Candidates

@dataclass
class Candidate:
    text: str                 # the continuation: the current partial line + up to d further lines
    ids: list[int]            # its tokens after the pending one
    ended: str                # "lines" | "dedent" | "fence" | "eos" | "cap"
    first_line_ids: list[int] = field(default_factory=list)   # tokens up to the one ending its first line

    @property
    def complete(self) -> bool:
        """The function ends with this candidate (it did not stop at the d-line horizon)."""
        return self.ended in ("dedent", "fence", "eos")


def _cut_candidate(partial: str, text: str, lines: int, def_indent: int) -> tuple[str, str] | None:
    """(kept text, why) once a candidate row is done, else None. `text` starts with the current
    partial line."""
    full = partial + text
    start = 0
    for count in range(1, lines + 1):
        newline = full.find("\n", start)
        line = full[start:] if newline < 0 else full[start:newline]
        if leaves_function(line, def_indent):
            return full[:start], "fence" if line.strip().startswith(FENCE) else "dedent"
        if newline < 0:
            return None
        start = newline + 1
        if count == lines:
            return full[:start], "lines"
    return None


@torch.inference_mode()
def sample_candidates(dec: Decoding, rows: int, lines: int, temperature: float, generator: torch.Generator,
                      max_tokens: int = 256) -> list[Candidate]:
    """`rows` continuations of up to `lines` lines from p_sol + code so far, sampled at
    `temperature` in one batch branched from the unconditional cache. Each row stops on its own:
    `lines` newlines, leaving the function, EOS/special token, or `max_tokens`."""
    kv = branch(dec.uncond, 0, rows, room=max_tokens + 1)
    partial = dec.partial_line
    anchor = _decode(dec, [dec.pending])
    row_ids: list[list[int]] = [[] for _ in range(rows)]
    results: list[Candidate | None] = [None] * rows
    token = torch.full((rows, 1), dec.pending, dtype=torch.long, device=kv.positions.device)
    for step in range(max_tokens):
        _check_cancel(dec)
        logits = forward(dec.model, kv, token)[:, -1]
        if temperature > 0:
            probs = torch.softmax(logits / temperature, dim=-1)
            token = torch.multinomial(probs, 1, generator=generator)
        else:
            token = logits.argmax(-1, keepdim=True)
        for row, value in enumerate(token[:, 0].tolist()):
            if results[row] is not None:
                continue
            if value in dec.stop_ids:
                results[row] = Candidate(partial + _after(dec, anchor, row_ids[row]), row_ids[row], "eos")
                continue
            row_ids[row].append(value)
            cut = _cut_candidate(partial, _after(dec, anchor, row_ids[row]), lines, dec.def_indent)
            if cut:
                results[row] = Candidate(cut[0], row_ids[row], cut[1])
        if all(result is not None for result in results):
            break
    for row in range(rows):
        if results[row] is None:
            results[row] = Candidate(partial + _after(dec, anchor, row_ids[row]), row_ids[row], "cap")
    for candidate in results:
        candidate.first_line_ids = _first_line_ids(dec, anchor, partial, candidate.ids)
    return results


def _decode(dec: Decoding, ids: Sequence[int]) -> str:
    return dec.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


def _after(dec: Decoding, anchor: str, ids: Sequence[int]) -> str:
    """Text of a candidate's tokens as they read after the pending token."""
    return code_text(dec.tokenizer, dec.pending, anchor, ids)


def _first_line_ids(dec: Decoding, anchor: str, partial: str, ids: Sequence[int]) -> list[int]:
    """The candidate's tokens up to the one that completes its first line; [] when it has no
    complete first line inside the function."""
    for count in range(1, len(ids) + 1):
        text = partial + _after(dec, anchor, ids[:count])
        newline = text.find("\n")
        if newline >= 0:
            return list(ids[:count]) if not leaves_function(text[:newline], dec.def_indent) else []
    return []


def choose_draft(candidates: Sequence[Candidate]) -> list[int]:
    """The first-line tokens most candidates agree on (the earliest on a tie): a free draft."""
    lines = [tuple(c.first_line_ids) for c in candidates if c.first_line_ids]
    if not lines:
        return []
    counts = Counter(lines)
    best = max(counts.values())
    return list(next(line for line in lines if counts[line] == best))
