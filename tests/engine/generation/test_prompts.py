"""Prompts: p_sol ids with i_dyn / code_start at exact token boundaries, both styles, with and
without a chat template."""

from __future__ import annotations

import pytest

from engine.errors import UserError
from engine.generation.prompts import (ANSWER_FENCE, SIGNAL_HEADER, STYLES, build_prompt, signal_ids, signal_text,
                            split_source)

SOURCE = ('import math\n\n\n'
          'def helper(x):\n    return x * 2\n\n\n'
          '@functools.cache\n'
          'def circle_area(r):\n'
          '    """Return the area of a circle of radius r."""\n')
FUNCTION = SOURCE[SOURCE.index("@functools"):]
TESTS = ["assert circle_area(1) == math.pi", "assert circle_area(0) == 0"]


@pytest.fixture(scope="module")
def chat_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tokenizer.chat_template
    return tokenizer


@pytest.fixture(scope="module")
def plain_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = None
    return tokenizer


def pieces(tokenizer, prompt):
    decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=False)  # noqa: E731
    return (decode(prompt.ids[: prompt.i_dyn]), decode(prompt.ids[prompt.i_dyn: prompt.code_start]),
            decode(prompt.ids[prompt.code_start:]))


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("template", ["chat", "plain"])
def test_boundaries(style, template, chat_tokenizer, plain_tokenizer):
    tokenizer = chat_tokenizer if template == "chat" else plain_tokenizer
    prompt = build_prompt(tokenizer, source_before=SOURCE, tests=TESTS, instruction="Compute the area.", style=style)
    head, tail, code = pieces(tokenizer, prompt)
    # the head ends with the tests section, the task's last words before the answer part
    assert head.endswith("assert circle_area(0) == 0\n```\n\n")
    assert head.count("Compute the area.") == 1 and "circle_area(1)" in head
    assert "Reply with" not in head.rsplit("Compute the area.", 1)[1]
    # the tail is the rest of the request and the start of the answer, ending in a code fence
    assert tail.startswith("Reply with the complete function")
    assert tail.endswith(ANSWER_FENCE)
    # the answer begins with the function itself (decorator, def, docstring), not the module above it
    assert code == FUNCTION == prompt.code
    assert prompt.context == SOURCE[: SOURCE.index("@functools")]
    assert "def helper" in head                      # the module context is part of the task
    assert prompt.text == head + tail + code
    assert 0 < prompt.i_dyn < prompt.code_start < len(prompt.ids)
    if template == "chat":
        assert "<|im_start|>user" in head and "<|im_start|>assistant\n```python\n" in tail
        assert tail.index("<|im_end|>") < tail.index("<|im_start|>assistant")   # signal is inside the user turn
        assert prompt.ids[0] == tokenizer.bos_token_id and prompt.ids.count(tokenizer.bos_token_id) == 1
    else:
        assert "<|im_start|>" not in prompt.text and "### Solution" in tail
    if style == "fewshot":
        assert "sum_even_squares" in head and "first_repeated" in head
    else:
        assert "sum_even_squares" not in prompt.text


@pytest.mark.parametrize("template", ["chat", "plain"])
def test_signal_splices_at_i_dyn(template, chat_tokenizer, plain_tokenizer):
    tokenizer = chat_tokenizer if template == "chat" else plain_tokenizer
    prompt = build_prompt(tokenizer, source_before=SOURCE, tests=TESTS)
    rendered = "candidate 1:\n    return math.pi * r ** 2\ntest: circle_area(1)\n  line 3: return 3.14159 (float)\n"
    signal = signal_ids(tokenizer, rendered)
    assert tokenizer.decode(signal) == signal_text(rendered)
    assert signal_text(rendered).startswith(SIGNAL_HEADER)
    dyn = prompt.with_signal(signal)
    head, tail, code = pieces(tokenizer, prompt)
    assert tokenizer.decode(dyn, skip_special_tokens=False) == head + signal_text(rendered) + tail + code
    assert dyn[: prompt.i_dyn] == prompt.ids[: prompt.i_dyn]
    assert dyn[prompt.i_dyn + len(signal):] == prompt.ids[prompt.i_dyn:]
    assert signal_ids(tokenizer, "  \n") == []
    assert prompt.with_signal([]) == prompt.ids


def test_unicode_everywhere(chat_tokenizer):
    source = 'def grüße(name: str) -> str:\n    """Begrüßt 🐍 «name» — auf Deutsch."""\n'
    tests = ['assert grüße("Zoë") == "Hallo, Zoë! 👋"']
    prompt = build_prompt(chat_tokenizer, source_before=source, tests=tests, instruction="Schreibe eine Grußfunktion ✓")
    head, tail, code = pieces(chat_tokenizer, prompt)
    assert code == source
    assert "Zoë! 👋" in head and "Grußfunktion ✓" in head
    assert chat_tokenizer.decode(prompt.ids, skip_special_tokens=False) == prompt.text


def test_very_long_tests(chat_tokenizer):
    tests = [f"assert total({list(range(i, i + 40))}) == {sum(range(i, i + 40))}" for i in range(150)]
    prompt = build_prompt(chat_tokenizer, source_before="def total(xs):\n", tests=tests)
    head, tail, code = pieces(chat_tokenizer, prompt)
    assert len(prompt.ids) > 5000
    assert head.endswith(tests[-1] + "\n```\n\n")
    assert all(t in head for t in tests)
    assert code == "def total(xs):\n" and tail.endswith(ANSWER_FENCE)


def test_body_lines_already_written_stay_in_the_answer(chat_tokenizer):
    source = "def f(xs):\n    total = 0\n    for x in xs:\n"
    prompt = build_prompt(chat_tokenizer, source_before=source, tests=["assert f([1]) == 1"])
    assert pieces(chat_tokenizer, prompt)[2] == source


def test_instruction_only_task(chat_tokenizer):
    prompt = build_prompt(chat_tokenizer, source_before="", tests=["assert add(1, 2) == 3"],
                          instruction="Write a function add(a, b) that returns the sum.")
    head, tail, code = pieces(chat_tokenizer, prompt)
    assert code == "" and prompt.code_start == len(prompt.ids)
    assert "Complete this Python code" not in head and tail.startswith("Reply with the complete solution")


def test_template_without_system_role(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
        "[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}")
    prompt = build_prompt(tokenizer, source_before=SOURCE, tests=TESTS, style="fewshot")
    head, tail, code = pieces(tokenizer, prompt)
    assert head.startswith("[user] You are an expert Python programmer.")
    assert tail.endswith("[assistant] " + ANSWER_FENCE) and code == FUNCTION


def test_bad_input(chat_tokenizer):
    with pytest.raises(UserError, match="style"):
        build_prompt(chat_tokenizer, source_before=SOURCE, tests=TESTS, style="chain-of-thought")
    with pytest.raises(UserError, match="empty"):
        build_prompt(chat_tokenizer, source_before="  \n", tests=[], instruction="")


def test_split_source():
    assert split_source(SOURCE) == (SOURCE[: SOURCE.index("@functools")], FUNCTION)
    assert split_source(SOURCE, "helper")[1].startswith("def helper(x):")
    method = "class A:\n    x = 1\n\n    @property\n    async def value(self):\n"
    assert split_source(method) == ("class A:\n    x = 1\n\n", "    @property\n    async def value(self):\n")
    assert split_source("x = 1\n") == ("", "x = 1\n")


def test_qwen2_flavour_has_no_bos(tmp_path):
    from engine.generation.tiny import build_tokenizer

    tokenizer = build_tokenizer(arch="qwen2")
    assert tokenizer.bos_token is None
    prompt = build_prompt(tokenizer, source_before="def f(x):\n", tests=["assert f(1) == 2"])
    assert prompt.text.startswith("<|im_start|>system\n")
    assert tokenizer.decode(prompt.ids[: prompt.i_dyn]).endswith("assert f(1) == 2\n```\n\n")
    assert tokenizer.decode(prompt.ids[prompt.code_start:]) == "def f(x):\n"


@pytest.mark.parametrize("template_has_bos", [True, False])
def test_bos_exactly_once_when_the_tokenizer_adds_one(template_has_bos):
    from tokenizers import processors

    from engine.generation.tiny import BOS_TOKEN, CHAT_TEMPLATE, build_tokenizer

    tokenizer = build_tokenizer(arch="llama")
    bos_id = tokenizer.bos_token_id
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", special_tokens=[(BOS_TOKEN, bos_id)])
    assert tokenizer.encode("x")[0] == bos_id          # this tokenizer adds BOS by itself
    if not template_has_bos:
        tokenizer.chat_template = CHAT_TEMPLATE.replace("{{ bos_token }}", "")
    prompt = build_prompt(tokenizer, source_before="def f(x):\n", tests=["assert f(1) == 2"])
    assert prompt.ids[0] == bos_id and prompt.ids.count(bos_id) == 1
    assert tokenizer.decode(prompt.ids[prompt.code_start:]) == "def f(x):\n"
