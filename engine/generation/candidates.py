"""Candidates (METHOD.md step 2a): s rows of up to d lines sampled from p_sol + code so far, and
their reuse from one line to the next.

    Row, Pool           the sampled rows of one agent, in one slot cache (rows may differ in length)
    refill              rows for the next line: kept rows plus fresh rows branched from the
                        unconditional cache, merged into one batch
    sample_steps        a step generator: every unfinished row advances one token per step, each
                        row with its own torch.Generator (so batching never changes a sample)
    draw_tokens         one token per row from its own generator, all rows in one search
    advance             after a committed line: keep the rows whose first line is that line
    sample_candidates   s fresh rows sampled in one go (one forward per step)
    choose_draft        the first line most rows agree on, for draft verification

Reuse. A row whose first line equals the line just committed is a sample of the following lines
given the new code: sampling is autoregressive, so p(rest | code, line) is exactly what a fresh
row would be drawn from. Such a row keeps its KV and its tokens; it is topped up by one line (the
d-line horizon holds) in the same batch as the fresh rows that replace the ones that disagreed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from engine.generation.decode import (FENCE, Decoding, Step, _check_cancel, code_text, leaves_function, unconditional,
                                      run_steps)
from engine.generation.kv import KV, merge_rows


@dataclass
class Candidate:
    text: str                 # the continuation: the current partial line + up to d further lines
    ids: list[int]            # its tokens after the pending one
    ended: str                # "lines" | "dedent" | "fence" | "eos" | "cap"
    first_line_ids: list[int] = field(default_factory=list)   # tokens up to the one ending its first line
    reused: bool = False      # kept from the previous line (its first line was committed)

    @property
    def complete(self) -> bool:
        """The function ends with this candidate (it did not stop at the d-line horizon)."""
        return self.ended in ("dedent", "fence", "eos")


@dataclass
class Row:
    """One sampled row. `ids` are its tokens after the agent's pending token; the row's own next
    input is its last id (or the agent's pending token while it has none)."""
    generator: torch.Generator
    ids: list[int] = field(default_factory=list)
    slot_row: int = 0         # its row in the pool's cache
    filled: int = 0           # slots of the pool's cache that hold this row's sequence
    position: int = 0         # its next RoPE position
    ended: str = ""           # "" while it samples, else why it stopped (Candidate.ended)
    reused: bool = False
    tag: dict = field(default_factory=dict)   # free state for a steering function (replay)

    def pending(self, dec: Decoding) -> int:
        return self.ids[-1] if self.ids else dec.pending


@dataclass
class Pool:
    """One agent's candidate rows and the cache they live in."""
    rows: list[Row] = field(default_factory=list)
    kv: KV | None = None
    made: int = 0             # rows created so far (seeds the next row's generator)


# A steering function picks a row's next token instead of sampling (teacher forcing in replay):
# steer(dec, row, probabilities) -> token id, or None to sample.
Steer = Callable[[Decoding, Row, torch.Tensor], "int | None"]


def new_row(pool: Pool, seed: int) -> Row:
    """A fresh row whose generator lives on the host, whatever the model's device: its draws are
    uniform numbers (draw_tokens), which cost a CUDA generator a kernel launch each."""
    generator = torch.Generator().manual_seed((seed * 1_000_003 + pool.made) % (2**63))
    pool.made += 1
    return Row(generator=generator)


def draw_tokens(weights: torch.Tensor, generators: Sequence[torch.Generator]) -> list[int]:
    """One token per row of `weights` [rows, vocab] (non-negative, any scale; a row needs some
    positive weight), row r drawn with generators[r]: a uniform number per row from its (host)
    generator, then one inverse-CDF search over all rows and one transfer of the tokens. On a GPU
    that is a few launches and one sync a step, where a multinomial per row cost a launch and a
    sync each (a row per candidate, every token). A row's token depends only on its weights and its
    generator, never on the other rows: batching does not change a sample. The sums are in fp64, so
    rounding does not move probability between neighbouring tokens of a 150k vocabulary."""
    if not len(generators):
        return []
    uniform = torch.stack([torch.rand((), generator=generator, dtype=torch.float64) for generator in generators])
    cdf = weights.double().cumsum(-1)
    target = uniform.to(cdf.device) * cdf[:, -1]
    index = torch.searchsorted(cdf, target[:, None], right=True)   # the first token whose cdf passes the draw
    return index.squeeze(1).clamp_(max=weights.shape[-1] - 1).tolist()


def refill(dec: Decoding, pool: Pool, rows: int, seed: int, room: int) -> None:
    """Bring the pool to `rows` rows for the next line: kept rows stay (with their slots), new
    rows are branched from the unconditional cache; all of them in one cache."""
    kept = pool.rows[:rows]
    fresh = [new_row(pool, seed) for _ in range(rows - len(kept))]
    uncond = unconditional(dec)
    parts = [(pool.kv, row.slot_row, row.filled, row.position) for row in kept]
    for row in fresh:
        row.filled, row.position = uncond.length, int(uncond.positions[0])
        parts.append((uncond, 0, row.filled, row.position))
    pool.rows = kept + fresh
    pool.kv = merge_rows(parts, room)   # each row's slots past `filled` are masked from here on
    for index, row in enumerate(pool.rows):
        row.slot_row = index


def advance(pool: Pool, line_ids: Sequence[int]) -> int:
    """After a line is committed (its tokens `line_ids`): keep the rows that begin with exactly
    those tokens, re-based after them; drop the others. Returns how many rows were kept."""
    line_ids = list(line_ids)
    count = len(line_ids)
    kept = []
    for row in pool.rows:
        if count and row.ids[:count] == line_ids:
            row.ids = row.ids[count:]
            row.reused = True
            if row.ended in ("lines", "cap"):
                row.ended = ""        # top it up: one more line keeps the horizon at d
            kept.append(row)
    pool.rows = kept
    if not kept:
        pool.kv = None
    return len(kept)


def sample_steps(dec: Decoding, pool: Pool, lines: int, temperature: float, max_tokens: int,
                 steer: Steer | None = None):
    """Step generator: advance every unfinished row of the pool until it stops (`lines` lines
    past the current partial line, leaving the function, a stop token, or `max_tokens` tokens);
    returns the pool's rows as Candidates. Finished rows are fed a token too (the batch keeps
    its shape) but their slots past `filled` are never read again."""
    kv = pool.kv
    partial = dec.partial_line
    anchor = dec.tokenizer.decode([dec.pending], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    for row in pool.rows:
        if not row.ended:
            _check_row(dec, row, partial, anchor, lines, max_tokens)
    while any(not row.ended for row in pool.rows):
        _check_cancel(dec)
        ids = torch.tensor([[row.pending(dec)] for row in pool.rows], dtype=torch.long, device=kv.positions.device)
        logits = yield Step(kv, ids)
        probs = torch.softmax(logits.float() / temperature, dim=-1) if temperature > 0 else None
        positions = kv.positions.tolist()
        chosen: dict[int, int] = {}
        for index, row in enumerate(pool.rows):
            if row.ended:
                continue
            row.filled, row.position = kv.length, positions[index]
            token = steer(dec, row, probs[index] if probs is not None else logits[index]) if steer else None
            if token is not None:
                chosen[index] = token
        drawn = [index for index, row in enumerate(pool.rows) if not row.ended and index not in chosen]
        if drawn:   # every row left to sample, in one go
            tokens = (draw_tokens(probs[drawn], [pool.rows[index].generator for index in drawn]) if probs is not None
                      else logits[drawn].argmax(-1).tolist())
            chosen.update(zip(drawn, tokens))
        for index in sorted(chosen):
            row, token = pool.rows[index], chosen[index]
            if token in dec.stop_ids:
                row.ended = "eos"
                continue
            row.ids.append(token)
            _check_row(dec, row, partial, anchor, lines, max_tokens)
    return [_candidate(dec, row, partial, anchor, lines) for row in pool.rows]


def _check_row(dec: Decoding, row: Row, partial: str, anchor: str, lines: int, max_tokens: int) -> None:
    cut = _cut_candidate(partial, _after(dec, anchor, row.ids), lines, dec.def_indent)
    if cut:
        row.ended = cut[1]
    elif len(row.ids) >= max_tokens:
        row.ended = "cap"


def _candidate(dec: Decoding, row: Row, partial: str, anchor: str, lines: int) -> Candidate:
    full = _after(dec, anchor, row.ids)
    cut = _cut_candidate(partial, full, lines, dec.def_indent)
    text = cut[0] if cut and row.ended in ("lines", "dedent", "fence") else partial + full
    return Candidate(text, list(row.ids), row.ended, _first_line_ids(dec, anchor, partial, row.ids), row.reused)


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
                      max_tokens: int = 256, steer: Steer | None = None) -> list[Candidate]:
    """`rows` fresh continuations of up to `lines` lines from p_sol + code so far, sampled at
    `temperature` in one batch branched from the unconditional cache. Each row stops on its own:
    `lines` newlines, leaving the function, EOS/special token, or `max_tokens`. Every row draws
    from its own generator, seeded from `generator`."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    pool = Pool()
    refill(dec, pool, rows, seed, room=max_tokens + 1)
    return run_steps(dec.model, sample_steps(dec, pool, lines, temperature, max_tokens, steer))


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

