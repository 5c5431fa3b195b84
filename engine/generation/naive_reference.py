"""A deliberately naive guided decoder, for the equivalence tests and `egcfg bench speed` only.

It does what the EG-CFG reference code does per token: the conditional prompt p_dyn (with the
signal) is prefilled from scratch on every token, and the two distributions come from two separate,
unbatched forwards (the unconditional one keeps an ordinary transformers DynamicCache). Lines and
the function's end are found from the decoded text. It shares no code with engine/generation/decode.py's
loop on purpose: the engine must reproduce it token for token.
"""

from __future__ import annotations

import inspect
from typing import Callable, Sequence

import torch
from transformers import DynamicCache


def _cache_kwarg(model) -> str:
    """transformers 5.24 renamed the forward's `past_key_values` to `cache` (the old name warns)."""
    return "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"


def _last_logits(model, ids: Sequence[int], cache=None) -> torch.Tensor:
    extra = {_cache_kwarg(model): cache} if cache is not None else {}
    out = model(input_ids=torch.tensor([list(ids)], device=model.device), use_cache=cache is not None, **extra)
    return out.logits[0, -1].float()


def _leaves(line: str, def_indent: int) -> bool:
    content = line.strip()
    if not content:
        return False
    if content.startswith("```"):
        return True
    expanded = line.expandtabs(4)
    return def_indent >= 0 and len(expanded) - len(expanded.lstrip()) <= def_indent


@torch.inference_mode()
def naive_guided_decode(model, tokenizer, prompt_ids: Sequence[int], i_dyn: int,
                        signal_for_line: Callable[[int, list[int]], Sequence[int]], *, gamma: float,
                        def_indent: int, max_new_tokens: int, stop_ids: Sequence[int]) -> tuple[list[int], str]:
    """Guided greedy decoding of a function body; returns (token ids, why it stopped).

    `signal_for_line(line_index, tokens_so_far)` gives the signal's token ids for each line (the
    index counts non-blank committed lines, as the engine refreshes only after those)."""
    prompt_ids = list(prompt_ids)
    tokens: list[int] = []
    anchor = tokenizer.decode(prompt_ids[-1:])
    committed = 0
    line_index = 0
    signal = list(signal_for_line(0, [])) if gamma != 0 else []
    cache = DynamicCache()
    fed = 0   # tokens of prompt + tokens in the unconditional cache
    while len(tokens) < max_new_tokens:
        context = prompt_ids + tokens
        unconditional = _last_logits(model, context[fed:], cache)
        fed = len(context)
        scores = torch.log_softmax(unconditional, -1)
        if gamma != 0:
            p_dyn = prompt_ids[:i_dyn] + signal + prompt_ids[i_dyn:] + tokens
            conditional = torch.log_softmax(_last_logits(model, p_dyn), -1)   # full prefill, every token
            scores = scores + gamma * (conditional - scores)
        token = int(scores.argmax())
        if token in stop_ids:
            return tokens, "eos"
        tokens.append(token)
        text = tokenizer.decode([prompt_ids[-1], *tokens])[len(anchor):]
        new_line = False
        while "\n" in text[committed:]:
            end = text.index("\n", committed)
            line = text[committed:end]
            if _leaves(line, def_indent):
                return tokens, "dedent"
            new_line = new_line or bool(line.strip())
            committed = end + 1
        if _leaves(text[committed:], def_indent):
            return tokens, "dedent"
        if new_line:
            line_index += 1
            if gamma != 0:
                signal = list(signal_for_line(line_index, list(tokens)))
    return tokens, "cap"


@torch.inference_mode()
def naive_tokens(model, prompt_ids: Sequence[int], signal: Sequence[int], i_dyn: int, gamma: float,
                 count: int) -> list[int]:
    """`count` guided greedy tokens with one fixed signal and no line logic (for the speed bench)."""
    tokens: list[int] = []
    cache = DynamicCache()
    fed = 0
    prompt_ids = list(prompt_ids)
    for _ in range(count):
        context = prompt_ids + tokens
        scores = torch.log_softmax(_last_logits(model, context[fed:], cache), -1)
        fed = len(context)
        p_dyn = prompt_ids[:i_dyn] + list(signal) + prompt_ids[i_dyn:] + tokens
        conditional = torch.log_softmax(_last_logits(model, p_dyn), -1)
        tokens.append(int((scores + gamma * (conditional - scores)).argmax()))
    return tokens
