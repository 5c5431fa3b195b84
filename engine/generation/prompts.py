"""Prompts (METHOD.md step 1): `p_sol` as token ids, with `i_dyn` where the execution signal goes.

The prompt is built from three pieces, each tokenised on its own and concatenated, so that the
split points are token boundaries and the signal can be spliced in without re-tokenising:

    head    everything up to and including the task and its tests    ids[:i_dyn]
    tail    the rest of the request, then the start of the answer    ids[i_dyn:code_start]
    code    the function written so far (def line, docstring, ...)   ids[code_start:]

`p_dyn` = head + signal_ids(...) + tail + code. With a chat template the task sits in a user
message (the signal goes inside that message) and the answer starts in the assistant turn with a
```python fence; without one, a plain-text prompt has the same three parts.

Styles: "instruct" (instruction only) and "fewshot" (two short worked examples first).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from engine.errors import UserError

STYLES = ("instruct", "fewshot")

# Put between the tests and the rest of the request; never shown to the model.
_SIGNAL_MARK = "\u27e6EGCFG-SIGNAL\u27e7"

SIGNAL_HEADER = ("Here is how these candidate continuations of the function behave at runtime on the tests "
                 "(the code of each candidate, the test it ran, and its execution trace):")

SYSTEM_LINE = "You are an expert Python programmer."
ANSWER_FENCE = "```python\n"

# The module text before the function is context the model reads once (it sits before i_dyn, in the
# cached prefix); past this many characters only its last part is kept.
MAX_CONTEXT_CHARS = 8000

_DEF_LINE = re.compile(r"^(?P<indent>[ \t]*)(async[ \t]+)?def[ \t]+(?P<name>\w+)")


@dataclass
class Prompt:
    ids: list[int]      # p_sol as token ids
    i_dyn: int          # the signal's tokens are inserted before ids[i_dyn]
    code_start: int     # ids[code_start:] are the tokens of `code`
    code: str           # the function's code so far, the text the model continues
    context: str        # module text above the function (shown in the task, not in the answer)
    text: str           # p_sol as text, for logs and tests

    def with_signal(self, signal: Sequence[int]) -> list[int]:
        """p_dyn: p_sol with the signal tokens spliced in at i_dyn."""
        return self.ids[: self.i_dyn] + list(signal) + self.ids[self.i_dyn:]


# ------------------------------------------------------------------------------------------------
# Few-shot examples (written for this project): an MBPP-style one and a docstring-style one.

@dataclass(frozen=True)
class _Example:
    instruction: str
    source_before: str
    tests: tuple[str, ...]
    solution: str


FEWSHOT_EXAMPLES = (
    _Example(
        instruction="Write a function that returns the sum of the squares of the even numbers in a list.",
        source_before="def sum_even_squares(numbers):\n",
        tests=("assert sum_even_squares([1, 2, 3, 4]) == 20", "assert sum_even_squares([]) == 0",
               "assert sum_even_squares([-2, 5]) == 4"),
        solution=("def sum_even_squares(numbers):\n"
                  "    total = 0\n"
                  "    for n in numbers:\n"
                  "        if n % 2 == 0:\n"
                  "            total += n * n\n"
                  "    return total\n"),
    ),
    _Example(
        instruction="",
        source_before=('def first_repeated(words):\n'
                       '    """Return the first word that occurs a second time in the list, or None."""\n'),
        tests=('assert first_repeated(["a", "b", "a", "b"]) == "a"', 'assert first_repeated(["x", "y"]) is None',
               'assert first_repeated(["p", "q", "q", "p"]) == "q"'),
        solution=('def first_repeated(words):\n'
                  '    """Return the first word that occurs a second time in the list, or None."""\n'
                  '    seen = set()\n'
                  '    for word in words:\n'
                  '        if word in seen:\n'
                  '            return word\n'
                  '        seen.add(word)\n'
                  '    return None\n'),
    ),
)


# ------------------------------------------------------------------------------------------------
# Text of the request

def split_source(source_before: str, function_name: str = "") -> tuple[str, str]:
    """(module context, the function's code so far): the function starts at its (last) def line,
    with the decorators right above it. No def found: everything is the function's code."""
    lines = source_before.splitlines(keepends=True)
    start = None
    for index in range(len(lines) - 1, -1, -1):
        match = _DEF_LINE.match(lines[index])
        if match and (not function_name or match.group("name") == function_name):
            start = index
            break
    if start is None:
        return "", source_before
    indent = _DEF_LINE.match(lines[start]).group("indent")
    while start > 0 and lines[start - 1].startswith(indent + "@"):
        start -= 1
    return "".join(lines[:start]), "".join(lines[start:])


def _trim_context(context: str) -> str:
    if len(context) <= MAX_CONTEXT_CHARS:
        return context
    kept = context[-MAX_CONTEXT_CHARS:]
    kept = kept[kept.find("\n") + 1:]   # start at a whole line
    return "# ... (earlier code left out)\n" + kept


def _code_block(code: str) -> str:
    return f"```python\n{code.rstrip()}\n```\n"


def _task_text(instruction: str, context: str, code: str, tests: Sequence[str]) -> str:
    """The task and its tests; ends with a newline (i_dyn comes right after it)."""
    parts = []
    if instruction.strip():
        parts.append(instruction.strip() + "\n")
    shown = _trim_context(context) + code
    if shown.strip():
        parts.append("Complete this Python code:\n" + _code_block(shown))
    if tests:
        parts.append("Your code should pass these tests:\n" + _code_block("\n".join(t.rstrip() for t in tests)))
    if not parts:
        raise UserError("the task is empty: give an instruction, a function signature or some tests")
    return "\n".join(parts) + "\n"


def _request_tail(function_code: str) -> str:
    """After the signal: what to answer. Short, because it is re-read on every line."""
    if function_code.strip():
        return "Reply with the complete function in one Python code block.\n"
    return "Reply with the complete solution in one Python code block.\n"


# ------------------------------------------------------------------------------------------------
# Tokenising the pieces

def _encode_piece(tokenizer, text: str) -> list[int]:
    """Token ids of `text` alone, no special tokens added. Tokenizers that prepend a space to a
    lone piece (sentencepiece) get an anchor newline in front that is then cut off again."""
    if not text:
        return []
    ids = tokenizer.encode(text, add_special_tokens=False)
    if tokenizer.decode(ids) == text:
        return ids
    anchor = tokenizer.encode("\n", add_special_tokens=False)
    anchored = tokenizer.encode("\n" + text, add_special_tokens=False)
    if anchored[: len(anchor)] == anchor and tokenizer.decode(anchored[len(anchor):]) == text:
        return anchored[len(anchor):]
    return ids


def _bos_prefix(tokenizer, text: str) -> list[int]:
    """The BOS id when the tokenizer would add one by itself and the text does not carry it."""
    bos, bos_id = tokenizer.bos_token, tokenizer.bos_token_id
    if bos is None or bos_id is None or text.startswith(bos):
        return []
    sample = tokenizer.encode("x", add_special_tokens=True)
    return [bos_id] if sample and sample[0] == bos_id else []


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _chat_text(tokenizer, messages: list[dict]) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _chat_prompt(tokenizer, examples, task: str, tail: str) -> tuple[str, str]:
    """(head text, tail text) of a chat prompt, split at the signal mark."""
    messages = [{"role": "system", "content": SYSTEM_LINE}]
    for example in examples:
        messages.append({"role": "user", "content": _example_request(example)})
        messages.append({"role": "assistant", "content": _code_block(example.solution)})
    # the template closes the message itself; a trailing newline would only add a token
    messages.append({"role": "user", "content": task + _SIGNAL_MARK + tail.rstrip("\n")})
    try:
        text = _chat_text(tokenizer, messages)
    except Exception:   # some templates refuse a system message: fold it into the first request
        messages = messages[1:]
        messages[0] = {"role": "user", "content": SYSTEM_LINE + "\n\n" + messages[0]["content"]}
        text = _chat_text(tokenizer, messages)
    head, _, rest = text.partition(_SIGNAL_MARK)
    return head, rest + ANSWER_FENCE


def _plain_prompt(examples, task: str, tail: str) -> tuple[str, str]:
    shots = "".join(f"### Task\n{_example_request(example)}\n### Solution\n{_code_block(example.solution)}\n"
                    for example in examples)
    return f"{SYSTEM_LINE}\n\n{shots}### Task\n{task}", f"{tail}\n### Solution\n{ANSWER_FENCE}"


def _example_request(example: _Example) -> str:
    context, code = split_source(example.source_before)
    return _task_text(example.instruction, context, code, example.tests) + _request_tail(code)


def build_prompt(tokenizer, *, source_before: str, tests: Sequence[str], instruction: str = "",
                 style: str = "instruct", function_name: str = "") -> Prompt:
    """p_sol for one task. The prompt ends with the function's code so far, which the model continues."""
    if style not in STYLES:
        raise UserError(f"unknown prompt style {style!r}: choose one of {', '.join(STYLES)}")
    context, code = split_source(source_before, function_name)
    task = _task_text(instruction, context, code, tests)
    tail = _request_tail(code)
    examples = FEWSHOT_EXAMPLES if style == "fewshot" else ()
    if has_chat_template(tokenizer):
        head_text, tail_text = _chat_prompt(tokenizer, examples, task, tail)
    else:
        head_text, tail_text = _plain_prompt(examples, task, tail)
    head_ids = _bos_prefix(tokenizer, head_text) + _encode_piece(tokenizer, head_text)
    tail_ids = _encode_piece(tokenizer, tail_text)
    code_ids = _encode_piece(tokenizer, code)
    return Prompt(
        ids=head_ids + tail_ids + code_ids,
        i_dyn=len(head_ids),
        code_start=len(head_ids) + len(tail_ids),
        code=code,
        context=context,
        text=head_text + tail_text + code,
    )


def signal_text(rendered: str) -> str:
    """The text spliced in at i_dyn: the fixed header, the rendered traces, a blank line."""
    return f"{SIGNAL_HEADER}\n{rendered.strip()}\n\n"


def signal_ids(tokenizer, rendered: str) -> list[int]:
    """Tokens of the execution signal, tokenised on their own; [] when there is nothing to show
    (then p_dyn equals p_sol and guidance is a no-op)."""
    if not rendered.strip():
        return []
    return _encode_piece(tokenizer, signal_text(rendered))
