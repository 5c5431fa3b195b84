"""The guided decode loop (METHOD.md step 2), in the style of gpt-fast's generate.py: a handful of
short functions over explicit tensors and positions, readable top to bottom.

    KV slots            `KV` (engine.generation.kv): a batched KV cache in preallocated buffers whose
                        rows are separate sequences, with explicit RoPE positions and a per-row slot mask
    forward passes      `forward`, `prefill`, `decode_one_token`, `cfg_scores`, `verify_draft`
    attention           `shared_prefix_attention` (engine.generation.attention): the 2-row step reads
                        the shared head's KV once
    the state           `Decoding`: prompt, caches, the code written so far (token ids + text)
    one line            `set_signal` (conditional stream re-prefilled), `guided_line`
                        (2-row CFG steps, optional draft verification), line/function-end checks
    steps               `Step` / `run_steps`: the one-token loops are generators that yield their
                        forwards, so a scheduler can batch several agents (engine.generation.batching)
    elsewhere           candidates (engine.generation.candidates), the compiled step
                        (engine.generation.compiled)

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

import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

# The cache and the attention functions live in their own modules; their names stay importable
# from here (callers and tests use decode.KV, decode.branch, decode.shared_prefix_attention ...).
from engine.generation.attention import (  # noqa: F401
    SHARED_PREFIX_ATTENTION, SHARED_PREFIX_KWARG, _partial_attention_flash_cpu, _partial_attention_matmul,
    _shared_prefix_applies, _with_shared_prefix, partial_attention, shared_prefix_attention,
    shared_prefix_attention_forward)
from engine.generation.kv import (  # noqa: F401
    KV, SlotLayer, _new_buffers, branch, crop, drop_gap, empty_kv, ensure_room, merge_rows, pair_with_gap, row_view)

FENCE = "```"



# ------------------------------------------------------------------------------------------------
# Forward passes

def forward(model, kv: KV, ids: torch.Tensor, *, all_logits: bool = False) -> torch.Tensor:
    """Feed ids [rows, k] into the next k slots of every row; logits [rows, k or 1, vocab] (fp32)."""
    rows, k = ids.shape
    ensure_room(kv, k)
    start = kv.length
    kv.mask[:, start : start + k] = True
    positions = kv.positions[:, None] + torch.arange(k, device=kv.positions.device)
    inputs = dict(input_ids=ids, position_ids=positions, use_cache=True,
                  attention_mask=_attention_mask(model, kv, start + k, k), logits_to_keep=0 if all_logits else 1)
    inputs[cache_argument(model)] = kv.cache
    if k == 1 and rows > 1 and kv.shared > 0 and len(kv.own_from) == rows and _attn_implementation(model) == "sdpa":
        out = _with_shared_prefix(model, (kv.shared, kv.own_from), inputs)
    else:
        out = model(**inputs)
    kv.positions += k
    return out.logits.float()


def cache_argument(model) -> str:
    """The forward's name for the KV cache: `cache` from transformers 5.24 on (where the old
    `past_key_values` warns on every call), `past_key_values` before."""
    return _cache_argument(type(model))


@functools.lru_cache(maxsize=None)
def _cache_argument(model_class) -> str:
    parameters = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


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



# Prompts are prefilled in chunks of at most this many tokens: one forward over N tokens holds
# activations for all of them at once (the MLP's [tokens, intermediate] tensors are the largest:
# about 0.5 GB for the 7B shape at 3,600 tokens, 4 GB at 32k). Chunks give the same keys and values
# up to rounding, but in bf16 that rounding can flip a near-tie in sampling, and on a CPU a chunk
# after the first was slower than one forward over both (docs/benchmarks.md): only prompts past
# 4,096 tokens are cut, where the activations grow large.
PREFILL_CHUNK = 4096


def feed(model, kv: KV, ids: Sequence[int], chunk: int | None = None) -> None:
    """Feed the tokens `ids` into the next slots of every row of `kv` (a prefill), `chunk` tokens
    per forward (default PREFILL_CHUNK). Each chunk attends the slots before it, as one forward
    over all of them would: the keys, values and the last logits are the same."""
    ids = list(ids)
    chunk = chunk or PREFILL_CHUNK
    for begin in range(0, len(ids), chunk):
        part = torch.tensor([ids[begin : begin + chunk]] * kv.rows, device=kv.positions.device)
        forward(model, kv, part)


def prefill(model, ids: Sequence[int], room: int = 0) -> KV:
    """A 1-row KV holding `ids` (nothing pending: the caller decides what comes next)."""
    kv = empty_kv(model, 1, len(ids) + room)
    feed(model, kv, ids)
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


def verify_draft(model, kv: KV, token: int, draft: Sequence[int], gamma: float,
                 forced: Sequence[int] | None = None) -> list[int]:
    """Feed `token` + draft[:-1] in one forward and keep the longest prefix of the draft that the
    guided argmax agrees with, plus the argmax's own token at the first disagreement: exactly the
    tokens greedy guided decoding would have produced one by one. The caller owns the returned
    tokens (the last one is pending; the slots of rejected draft tokens are dropped). `forced`
    replaces the argmax (teacher forcing, for `egcfg bench replay`)."""
    fed = [token, *draft[:-1]]
    start = kv.length
    ids = torch.tensor([fed] * kv.rows, device=kv.positions.device)
    best = cfg_scores(forward(model, kv, ids, all_logits=True), gamma).argmax(-1).tolist()
    if forced is not None:
        best = list(forced)[: len(best)]
    accepted = []
    for guess, choice in zip(draft, best):
        accepted.append(choice)
        if choice != guess:
            break
    crop(kv, start + len(accepted))   # fed: token + accepted[:-1]
    return accepted


@dataclass
class Step:
    """A step generator's request: feed `ids` [rows, 1] to the rows of `kv` in one forward; the
    generator is sent back the last logits [rows, vocab]. Generators (guided lines, candidate
    rows) yield these so that a scheduler can put several agents' steps into one forward
    (engine.generation.batching); `run_steps` drives one alone."""
    kv: KV
    ids: torch.Tensor


def run_steps(model, steps):
    """Drive a step generator on its own, one forward per step; returns its return value."""
    try:
        request = next(steps)
        while True:
            request = steps.send(forward(model, request.kv, request.ids)[:, -1])
    except StopIteration as stop:
        return stop.value


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
    uncond: KV | None         # p_sol + code, everything but the pending token (None while a
                              # guided pair holds it as row 0: read it through `unconditional`)
    head: KV | None = None    # KV of prompt_ids[:head_len] (kept for the conditional refreshes)
    guided: KV | None = None  # the KV the current line is decoded with
    signal_len: int = 0       # signal tokens in `guided`'s conditional row
    uncond_fed: int = 0       # context tokens in `uncond` (it lags within a line when gamma == 1)
    ids: list[int] = field(default_factory=list)
    text: str = ""
    committed: int = 0
    anchor: str = ""          # decoded text of the last prompt token (see code_text)
    cancel: Callable[[], bool] | None = None
    force: Sequence[int] | None = None   # teacher forcing: the guided choice follows these tokens (replay)
    compile: bool = False     # one-token guided steps through engine.generation.compiled (torch.compile)
    stepper: Any = None       # its CompiledStep, made on first use

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
          cancel: Callable[[], bool] | None = None, head: KV | None = None, compile: bool = False) -> Decoding:
    """Prefill the prompt (everything but its last token, which is pending), in chunks of at
    most PREFILL_CHUNK tokens. The head before i_dyn is prefilled first; it is kept apart only
    when it is shared (pass `head`, from `prefill_head`, for agents with the same prompt) or gamma
    is 1 (the conditional row is branched from it every line); otherwise the pairs copy it from
    the unconditional row, and one cache holds it. `compile`:
    the one-token guided steps run through a torch.compile'd step (engine.generation.compiled)
    where the model allows it (bitsandbytes 4-bit layers only on a GPU; see `compiled.compilable`)."""
    prompt_ids = list(prompt_ids)
    if len(prompt_ids) < 2:
        raise ValueError("the prompt needs at least two tokens")
    head_len = max(1, min(head_len, len(prompt_ids) - 1))
    room = max_new_tokens + 64
    if gamma == 0 and head is None:
        uncond = prefill(model, prompt_ids[:-1], room=room)
    elif head is not None or gamma == 1:
        # a head shared between agents, or one gamma 1 branches its conditional row from every
        # line: kept, and copied into the unconditional row
        head = head if head is not None else prefill_head(model, prompt_ids, head_len)
        uncond = branch(head, 0, 1, room=len(prompt_ids) - 1 - head.length + room)
        feed(model, uncond, prompt_ids[head_len:-1])
    else:
        # nobody else needs the head: it is prefilled straight into the unconditional row (the
        # pairs copy its slots from there), the tail after it, as with a separate head
        uncond = empty_kv(model, 1, len(prompt_ids) - 1 + room)
        feed(model, uncond, prompt_ids[:head_len])
        feed(model, uncond, prompt_ids[head_len:-1])
    anchor = tokenizer.decode([prompt_ids[-1]], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    dec = Decoding(model=model, tokenizer=tokenizer, prompt_ids=prompt_ids, head_len=head_len, gamma=gamma,
                   def_indent=def_indent, stop_ids=stop_ids if stop_ids is not None else stop_token_ids(tokenizer, model),
                   max_new_tokens=max_new_tokens, uncond=uncond, head=head, anchor=anchor, cancel=cancel)
    if compile:
        from engine.generation.compiled import compilable

        dec.compile = compilable(model)[0]
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
        # the pair's row 0 is the unconditional row (with the gap): its separate cache is freed
        # while the pair is built, and `unconditional` rebuilds it from the pair if asked mid-line
        dec.guided = pair_with_gap(unconditional(dec), dec.head_len, len(signal), room=dec.room, release=True)
        dec.uncond = None
        target = row_view(dec.guided, 1)   # writes into row 1 of the pair, positions included
        for layer in target.layers:
            layer.length = dec.head_len
    if cond_ids:
        feed(dec.model, target, cond_ids)
    dec.signal_len = len(signal)


@torch.inference_mode()
def unconditional(dec: Decoding) -> KV:
    """The unconditional cache (p_sol + code, all but the pending token). While a guided pair
    holds it as row 0, it is copied out of the pair (without the tokens of the line so far)."""
    if dec.uncond is None:
        kv = drop_gap(dec.guided, dec.head_len, dec.signal_len, room=dec.room)
        crop(kv, dec.uncond_fed)
        dec.uncond = kv
    return dec.uncond


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
            feed(dec.model, dec.uncond, missing)
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


def forced_tokens(dec: "Decoding", count: int) -> list[int]:
    """The next `count` tokens of the teacher-forced reference, then an end-of-sequence token."""
    at = len(dec.ids)
    tokens = list(dec.force[at : at + count])
    end = dec.tokenizer.eos_token_id if dec.tokenizer.eos_token_id in dec.stop_ids else min(dec.stop_ids, default=0)
    return tokens + [end] * (count - len(tokens))


def guided_choice(dec: "Decoding", logits: torch.Tensor) -> int:
    """The guided argmax of the next token (or the forced one under teacher forcing)."""
    if dec.force is not None:
        return forced_tokens(dec, 1)[0]
    return int(cfg_scores(logits, dec.gamma).argmax())


@torch.inference_mode()
def _compiled_choice(dec: Decoding, kv: KV) -> int:
    """One guided step through the compiled step (it runs in place: not batched with other agents)."""
    from engine.generation.compiled import CompiledStep

    if dec.stepper is None or dec.stepper.rows != kv.rows:
        dec.stepper = CompiledStep.shared(dec.model, kv.rows)
    token = dec.stepper.step(kv, dec.pending, gamma=dec.gamma)
    return forced_tokens(dec, 1)[0] if dec.force is not None else token


@torch.inference_mode()
def guided_line(dec: Decoding, draft: Sequence[int] = ()) -> LineEnd:
    """Decode greedily with guidance until a token completes a line, the function ends, or the
    token cap is hit. A draft (a candidate's first line) is verified in one forward first."""
    return run_steps(dec.model, guided_line_steps(dec, draft))


def guided_line_steps(dec: Decoding, draft: Sequence[int] = ()):
    """`guided_line` as a step generator: the one-token steps are yielded as `Step`s (the signal
    prefill and the draft verification run in place)."""
    if dec.guided is None:
        set_signal(dec, [])
    kv, end = dec.guided, LineEnd(lines=[])
    queue: list[int] = []
    budget = dec.max_new_tokens - len(dec.ids)
    if draft and budget > 1:
        _check_cancel(dec)
        draft = list(draft)[:budget]
        forced = forced_tokens(dec, len(draft)) if dec.force is not None else None
        with torch.inference_mode():
            queue = verify_draft(dec.model, kv, dec.pending, draft, dec.gamma, forced)
        end.drafted = len(queue) - 1
    while True:
        if not queue:
            if len(dec.ids) >= dec.max_new_tokens:
                end.stop, end.why = "token_cap", "cap"
                return end
            _check_cancel(dec)
            if dec.compile:
                queue = [_compiled_choice(dec, kv)]
            else:
                ids = torch.full((kv.rows, 1), dec.pending, dtype=torch.long, device=kv.positions.device)
                logits = yield Step(kv, ids)
                queue = [guided_choice(dec, logits)]
        token = queue.pop(0)
        end.tokens += 1
        stopped = push_token(dec, token, end.lines)
        if stopped:
            end.stop, end.why = stopped
            return end
        if any(line.strip() for line in end.lines):   # blank lines do not refresh the signal
            with torch.inference_mode():
                if queue:   # a verified draft ran past the line's end: forget the slots after this token
                    crop(kv, kv.length - len(queue))
                sync_unconditional(dec)
            return end


# The candidates moved to engine.generation.candidates; these names stay importable from here.
def __getattr__(name: str):
    if name in ("Candidate", "sample_candidates", "choose_draft", "_cut_candidate", "_first_line_ids"):
        from engine.generation import candidates

        return getattr(candidates, name)
    raise AttributeError(name)
