"""The guided decode loop (engine/generation/decode.py) against plain greedy decoding and the naive reference.

Tiny random-weight models in fp32 on CPU, so that the cached, batched loop and the naive loop are
comparable token for token. A logits hook gives the random model some structure (indented lines
of a few tokens) so that lines end, signals refresh and drafts get verified."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from engine.generation import decode  # noqa: E402
from engine.generation.naive_reference import naive_guided_decode  # noqa: E402

HEAD = "You write Python.\nTask: add two numbers.\nassert add(1, 2) == 3\nassert add(0, 0) == 0\n"
PROMPTS = [
    (HEAD, "Answer with one code block.\n```python\ndef add(a, b):\n"),
    ("Short task.\n", "```python\ndef f(x):\n    y = x\n"),
    (HEAD * 3, "Now the code:\n```python\ndef add(a, b):\n    \"\"\"Sum.\"\"\"\n"),
]
SIGNALS = [
    "Here is how candidates behave:\n# test: assert add(1, 2) == 3\n# outcome: fail: returned None\n",
    "candidate 2 raised ZeroDivisionError: division by zero (program line 3)\n" * 3,
    "x = 1 (int)\n",
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def load(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


def add_structure(model, tokenizer, newline_boost: float = 0.3):
    """Make the random model write indented lines: after a token ending in a newline, four spaces
    win; elsewhere tokens with content and a newline get a small boost."""
    vocab = len(tokenizer)
    texts = [tokenizer.decode([i]) for i in range(vocab)]
    ends_line = torch.tensor([t.endswith("\n") for t in texts])
    bias = torch.zeros(vocab)
    bias[[i for i, t in enumerate(texts) if "\n" in t and t.strip()]] = newline_boost
    indent = tokenizer.encode("    ", add_special_tokens=False)
    assert len(indent) == 1
    after_newline = torch.zeros(vocab)
    after_newline[indent[0]] = 5.0

    def hook(module, args, kwargs, output):
        ids = kwargs["input_ids"]
        logits = output.logits
        last = ids[:, ids.shape[1] - logits.shape[1]:]
        output.logits = logits + bias + ends_line[last].unsqueeze(-1) * after_newline
        return output

    model.register_forward_hook(hook, with_kwargs=True)
    return model


@pytest.fixture(scope="module")
def plain(tiny_model_dir):
    return load(tiny_model_dir)


@pytest.fixture(scope="module")
def structured(tiny_model_dir, tokenizer):
    return add_structure(load(tiny_model_dir), tokenizer)


def encode(tokenizer, head: str, rest: str) -> tuple[list[int], int]:
    head_ids = tokenizer.encode(head, add_special_tokens=False)
    return head_ids + tokenizer.encode(rest, add_special_tokens=False), len(head_ids)


def decode_all(dec, signals=None, drafts=None) -> list[decode.LineEnd]:
    """Run the line loop to the end; signals[k] / drafts(dec, k) per line."""
    ends, line = [], 0
    while True:
        if signals is not None:
            decode.set_signal(dec, signals[line % len(signals)])
        draft = drafts(dec, line) if drafts else ()
        end = decode.guided_line(dec, draft)
        ends.append(end)
        line += 1
        if end.stop:
            return ends


def record_forwards(model):
    """(batch, length) of every forward's input_ids, appended to the returned list."""
    shapes = []
    handle = model.register_forward_pre_hook(lambda m, a, kw: shapes.append(tuple(kw["input_ids"].shape)),
                                             with_kwargs=True)
    return shapes, handle


# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("head, rest", PROMPTS)
def test_gamma_zero_is_plain_greedy_generate(plain, tokenizer, head, rest):
    from transformers import GenerationConfig

    ids, i_dyn = encode(tokenizer, head, rest)
    dec = decode.start(plain, tokenizer, ids, i_dyn, gamma=0, def_indent=-1, max_new_tokens=40,
                       stop_ids=frozenset())
    ends = decode_all(dec)
    assert ends[-1].stop == "token_cap" and len(dec.ids) == 40
    config = GenerationConfig(max_new_tokens=40, do_sample=False, eos_token_id=None, pad_token_id=0)
    reference = plain.generate(torch.tensor([ids]), generation_config=config)[0, len(ids):].tolist()
    assert dec.ids == reference


def test_gamma_one_is_greedy_on_the_conditional_prompt(structured, tokenizer):
    from transformers import GenerationConfig

    ids, i_dyn = encode(tokenizer, *PROMPTS[0])
    signal = tokenizer.encode(SIGNALS[0], add_special_tokens=False)
    dec = decode.start(structured, tokenizer, ids, i_dyn, gamma=1, def_indent=-1, max_new_tokens=30,
                       stop_ids=frozenset())
    ends = decode_all(dec, signals=[signal])
    assert sum(len(e.lines) for e in ends) >= 3    # several lines, so the stream was refreshed
    p_dyn = ids[:i_dyn] + signal + ids[i_dyn:]
    config = GenerationConfig(max_new_tokens=30, do_sample=False, eos_token_id=None, pad_token_id=0)
    reference = structured.generate(torch.tensor([p_dyn]), generation_config=config)[0, len(p_dyn):].tolist()
    assert dec.ids == reference
    # and it differs from greedy on p_sol: the signal did something
    plain_greedy = structured.generate(torch.tensor([ids]), generation_config=config)[0, len(ids):].tolist()
    assert dec.ids != plain_greedy


@pytest.mark.parametrize("gamma", [0.5, 1.0, 3.0])
@pytest.mark.parametrize("prompt", [0, 1, 2])
def test_cached_batched_cfg_equals_the_naive_reference(structured, tokenizer, gamma, prompt):
    ids, i_dyn = encode(tokenizer, *PROMPTS[prompt])
    signals = [tokenizer.encode(s, add_special_tokens=False) for s in SIGNALS[prompt:] + SIGNALS[:prompt]]
    stop = decode.stop_token_ids(tokenizer, structured)
    dec = decode.start(structured, tokenizer, ids, i_dyn, gamma=gamma, def_indent=0, max_new_tokens=36,
                       stop_ids=stop)
    ends = decode_all(dec, signals=signals)
    reference, why = naive_guided_decode(structured, tokenizer, ids, i_dyn, lambda k, _: signals[k % len(signals)],
                                         gamma=gamma, def_indent=0, max_new_tokens=36, stop_ids=stop)
    assert len(ends) >= 3
    assert dec.ids == reference
    assert ends[-1].why == why


def test_verified_drafts_change_nothing_but_the_number_of_forwards(structured, tokenizer):
    ids, i_dyn = encode(tokenizer, *PROMPTS[0])
    signals = [tokenizer.encode(s, add_special_tokens=False) for s in SIGNALS]
    stop = decode.stop_token_ids(tokenizer, structured)
    reference, _ = naive_guided_decode(structured, tokenizer, ids, i_dyn, lambda k, _: signals[k % 3],
                                       gamma=3.0, def_indent=0, max_new_tokens=40, stop_ids=stop)

    def drafts(dec, line):
        """The reference's own next line (a perfect draft) on even lines, a wrong token inside it on odd ones."""
        done = len(dec.ids)
        text_ids = reference[done:]
        upto = next((k + 1 for k, t in enumerate(text_ids) if "\n" in tokenizer.decode([t])), len(text_ids))
        draft = list(text_ids[:upto])
        if line % 2 and len(draft) > 2:
            draft[1] = (draft[1] + 1) % len(tokenizer)
        return draft

    shapes, handle = record_forwards(structured)
    try:
        dec = decode.start(structured, tokenizer, ids, i_dyn, gamma=3.0, def_indent=0, max_new_tokens=40, stop_ids=stop)
        ends = decode_all(dec, signals=signals, drafts=drafts)
    finally:
        handle.remove()
    assert dec.ids == reference
    assert sum(e.drafted for e in ends) >= 5
    steps = [s for s in shapes if s[0] == 2 and s[1] == 1]
    assert len(steps) < len(reference) - 5     # drafts saved token steps


def test_one_two_row_forward_per_token_and_only_the_changed_part_is_prefilled(structured, tokenizer):
    ids, i_dyn = encode(tokenizer, *PROMPTS[2])
    signal = tokenizer.encode(SIGNALS[1], add_special_tokens=False)
    dec = decode.start(structured, tokenizer, ids, i_dyn, gamma=0.5, def_indent=0, max_new_tokens=24,
                       stop_ids=frozenset())
    shapes, handle = record_forwards(structured)
    try:
        lines = 0
        while True:
            before = len(shapes)
            written = len(dec.ids)
            decode.set_signal(dec, signal)
            # the conditional row's re-prefill: signal + tail + code so far, never the head
            assert shapes[before:] == [(1, len(signal) + len(ids) - i_dyn + written - 1)]
            end = decode.guided_line(dec)
            step_shapes = shapes[before + 1:]
            assert step_shapes == [(2, 1)] * end.tokens   # one 2-row forward of one token per token
            lines += 1
            if end.stop:
                break
            # the unconditional stream grew by the line (copied out of the pair, never re-prefilled)
            assert dec.uncond.length == len(ids) + len(dec.ids) - 1
    finally:
        handle.remove()
    assert lines >= 3


def test_gamma_one_skips_the_unconditional_row_and_catches_up_once_per_line(structured, tokenizer):
    ids, i_dyn = encode(tokenizer, *PROMPTS[0])
    signal = tokenizer.encode(SIGNALS[2], add_special_tokens=False)
    dec = decode.start(structured, tokenizer, ids, i_dyn, gamma=1.0, def_indent=0, max_new_tokens=24,
                       stop_ids=frozenset())
    shapes, handle = record_forwards(structured)
    try:
        decode.set_signal(dec, signal)
        end = decode.guided_line(dec)
    finally:
        handle.remove()
    assert not end.stop and end.tokens >= 2
    assert all(batch == 1 for batch, _ in shapes)
    # prefill, one 1-row step per token, one catch-up forward of the line's tokens for the p_sol stream
    assert shapes[1:-1] == [(1, 1)] * end.tokens and shapes[-1] == (1, end.tokens)
    assert dec.uncond.length == len(ids) + len(dec.ids) - 1


def test_a_token_with_a_newline_inside_commits_the_line_at_the_newline(plain, tokenizer):
    ids, i_dyn = encode(tokenizer, *PROMPTS[0])
    dec = decode.start(plain, tokenizer, ids, i_dyn, gamma=0, def_indent=0, max_new_tokens=10, stop_ids=frozenset())
    lines: list[str] = []
    token = tokenizer.encode("    x = 1", add_special_tokens=False)
    for t in token:
        assert decode.push_token(dec, t, lines) is None
    assert lines == [] and dec.partial_line == "    x = 1"
    two = tokenizer.encode(")\n\n", add_special_tokens=False)     # one token: ")\n\n"
    assert len(two) == 1
    assert decode.push_token(dec, two[0], lines) is None
    assert lines == ["    x = 1)", ""] and dec.code == "    x = 1)\n\n" and dec.partial_line == ""
    # a line that starts at the def's indentation leaves the function as soon as it shows
    stop = decode.push_token(dec, tokenizer.encode("print", add_special_tokens=False)[0], lines)
    assert stop == ("complete", "dedent") and dec.code == "    x = 1)\n\n"


def test_function_end_rules():
    assert decode.leaves_function("def g():", 0)
    assert decode.leaves_function("```", 4)
    assert decode.leaves_function("    return 1", 4)
    assert not decode.leaves_function("        return 1", 4)
    assert not decode.leaves_function("   ", 0)
    assert not decode.leaves_function("x = 1", -1)
    assert decode.def_indent_of("import os\n\nclass A:\n    def add(self, a):\n", "add") == 4
    assert decode.def_indent_of("def other(x):\n", "add") == -1


def test_candidates_stop_per_row(structured, tokenizer):
    ids, i_dyn = encode(tokenizer, *PROMPTS[0])
    dec = decode.start(structured, tokenizer, ids, i_dyn, gamma=1.0, def_indent=0, max_new_tokens=200,
                       stop_ids=decode.stop_token_ids(tokenizer, structured))
    generator = torch.Generator().manual_seed(3)
    candidates = decode.sample_candidates(dec, rows=4, lines=2, temperature=0.12, generator=generator, max_tokens=60)
    assert len(candidates) == 4
    by_lines = [c for c in candidates if c.ended == "lines"]
    assert by_lines
    for c in by_lines:
        assert c.text.count("\n") == 2 and c.text.endswith("\n")
        # it stopped at its own second newline: one token less has fewer than two newlines
        shorter = tokenizer.decode([dec.pending, *c.ids[:-1]])[len(dec.anchor):]
        assert shorter.count("\n") < 2
    assert len({len(c.ids) for c in candidates}) > 1        # rows of different lengths in one batch
    # same seed, same candidates (deterministic); another seed, others
    again = decode.sample_candidates(dec, 4, 2, 0.12, torch.Generator().manual_seed(3), max_tokens=60)
    assert [c.ids for c in again] == [c.ids for c in candidates]
    other = decode.sample_candidates(dec, 4, 2, 0.12, torch.Generator().manual_seed(4), max_tokens=60)
    assert [c.ids for c in other] != [c.ids for c in candidates]
    # a draft is the first line most rows agree on
    assert decode.choose_draft(candidates) in [c.first_line_ids for c in candidates]


def test_candidates_branch_from_the_unconditional_cache(structured, tokenizer):
    """Rows sampled in a batch from the branched cache equal one row sampled from a full prefill."""
    ids, i_dyn = encode(tokenizer, *PROMPTS[1])
    dec = decode.start(structured, tokenizer, ids, i_dyn, gamma=0.5, def_indent=0, max_new_tokens=50,
                       stop_ids=frozenset())
    shapes, handle = record_forwards(structured)
    try:
        candidates = decode.sample_candidates(dec, 3, 1, 0.0, torch.Generator(), max_tokens=12)
    finally:
        handle.remove()
    assert all(batch == 3 and length == 1 for batch, length in shapes)   # no prompt re-prefill
    fresh = decode.start(structured, tokenizer, ids, i_dyn, gamma=0, def_indent=0, max_new_tokens=50,
                         stop_ids=frozenset())
    single = decode.sample_candidates(fresh, 1, 1, 0.0, torch.Generator(), max_tokens=12)
    assert candidates[0].ids == candidates[2].ids == single[0].ids   # temperature 0: greedy rows


def test_cancellation_stops_before_the_next_forward(structured, tokenizer):
    ids, i_dyn = encode(tokenizer, *PROMPTS[0])
    calls = []
    handle = structured.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        dec = decode.start(structured, tokenizer, ids, i_dyn, gamma=0.5, def_indent=0, max_new_tokens=100,
                           stop_ids=frozenset(), cancel=lambda: len(calls) >= 6)
        with pytest.raises(decode.Cancelled):
            decode_all(dec, signals=[tokenizer.encode("sig\n", add_special_tokens=False)])
    finally:
        handle.remove()
    assert len(calls) == 6


def test_token_cap_is_reported(structured, tokenizer):
    ids, i_dyn = encode(tokenizer, *PROMPTS[0])
    dec = decode.start(structured, tokenizer, ids, i_dyn, gamma=0.5, def_indent=0, max_new_tokens=9,
                       stop_ids=frozenset())
    ends = decode_all(dec, signals=[[]])
    assert ends[-1].stop == "token_cap" and len(dec.ids) == 9


def test_kv_buffers_grow_when_a_line_outruns_them(plain, tokenizer):
    kv = decode.prefill(plain, tokenizer.encode("def f(x):\n", add_special_tokens=False), room=1)
    before = kv.capacity
    for token in tokenizer.encode("    return x + 1\n    pass\n", add_special_tokens=False):
        decode.forward(plain, kv, torch.tensor([[token]]))
    assert kv.capacity > before and kv.length == len(tokenizer.encode("def f(x):\n    return x + 1\n    pass\n",
                                                                       add_special_tokens=False))
    full = plain(torch.tensor([tokenizer.encode("def f(x):\n    return x + 1\n    pass\n", add_special_tokens=False)]))
    last = decode.forward(plain, kv, torch.tensor([[5]]))
    reference = plain(torch.tensor([tokenizer.encode("def f(x):\n    return x + 1\n    pass\n", add_special_tokens=False)
                                    + [5]])).logits[0, -1]
    assert torch.allclose(last[0, -1], reference, atol=1e-4)
    assert full.logits.shape[1] == kv.length - 1


def test_bench_speed_prints_one_json_object(capsys):
    import argparse
    import json

    from engine.bench import speed as bench_speed

    parser = argparse.ArgumentParser()
    bench_speed.add_arguments(parser)
    args = parser.parse_args(["--random-config", "tiny", "--dtype", "fp32", "--prompt-tokens", "120",
                              "--signal-tokens", "40", "--tokens", "3", "--naive-tokens", "2", "--lines", "2",
                              "--no-executor", "--json"])
    assert bench_speed.main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["prompt_tokens"] == 120 and report["signal_tokens"] == 40 and report["device"] == "cpu"
    for key in ("greedy_ms_per_token", "guided_ms_per_token", "refresh_ms_per_line", "naive_ms_per_token",
                "guided_over_greedy", "naive_over_guided"):
        assert report[key] > 0, key
    assert set(report["bars"]) == {"guided_over_greedy <= 1.3", "naive_over_guided >= 10"}


def _speed_with_compile(capsys) -> dict:
    import argparse
    import json

    from engine.bench import speed as bench_speed

    parser = argparse.ArgumentParser()
    bench_speed.add_arguments(parser)
    args = parser.parse_args(["--random-config", "tiny", "--compile", "--no-executor", "--tokens", "6",
                              "--prompt-tokens", "120", "--signal-tokens", "40", "--naive-tokens", "2",
                              "--lines", "2", "--json"])
    assert bench_speed.main(args) == 0
    return json.loads(capsys.readouterr().out)


def test_bench_speed_compile_reports_matching_tokens_only_for_steps_that_ran_compiled(capsys, monkeypatch):
    """The issue's bar (`bench speed --random-config tiny --compile`: compiled_matches_eager), and a
    compile that fails (the step then runs eagerly, same tokens) does not count as a match."""
    import torch

    torch._dynamo.reset()
    report = _speed_with_compile(capsys)
    assert report["compiled"] is True and report["compiled_matches_eager"] is True
    assert report["guided_step_status"] == report["greedy_step_status"] == "compiled"
    assert report["compiled_ms_per_token"] > 0

    def failing_compile(function, **kwargs):
        def compiled(*args):
            raise RuntimeError("BackendCompilerFailed: inductor could not build a kernel")
        return compiled
    monkeypatch.setattr(torch, "compile", failing_compile)
    report = _speed_with_compile(capsys)
    assert report["guided_step_status"].startswith("compiled step not used: RuntimeError: BackendCompilerFailed")
    assert report["compiled"] is False and report["compiled_matches_eager"] is False
    assert "guided_first_difference" not in report   # the tokens themselves are the eager ones


def test_qwen2_architecture_matches_the_naive_reference_too(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.generation.tiny import build_tiny_model

    folder = build_tiny_model(tmp_path_factory.mktemp("qwen") / "tiny-qwen2", arch="qwen2", seed=1)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = add_structure(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval(), tokenizer)
    ids, i_dyn = encode(tokenizer, *PROMPTS[0])
    signals = [tokenizer.encode(s, add_special_tokens=False) for s in SIGNALS]
    stop = decode.stop_token_ids(tokenizer, model)
    dec = decode.start(model, tokenizer, ids, i_dyn, gamma=3.0, def_indent=0, max_new_tokens=30, stop_ids=stop)
    ends = decode_all(dec, signals=signals)
    reference, _ = naive_guided_decode(model, tokenizer, ids, i_dyn, lambda k, _: signals[k % 3], gamma=3.0,
                                       def_indent=0, max_new_tokens=30, stop_ids=stop)
    assert len(ends) >= 3 and dec.ids == reference


def test_a_shared_head_is_never_written_and_gives_the_same_tokens(structured, tokenizer):
    ids, i_dyn = encode(tokenizer, *PROMPTS[0])
    signals = [tokenizer.encode(s, add_special_tokens=False) for s in SIGNALS]
    head = decode.prefill_head(structured, ids, i_dyn)
    before = [layer.keys.clone() for layer in head.layers]
    outputs = []
    for shared in (None, head, head):
        for gamma in (0.0, 3.0):
            dec = decode.start(structured, tokenizer, ids, i_dyn, gamma=gamma, def_indent=0, max_new_tokens=20,
                               stop_ids=frozenset(), head=shared)
            decode_all(dec, signals=signals)
            outputs.append((gamma, dec.ids))
    assert outputs[0:2] == outputs[2:4] == outputs[4:6]
    assert head.length == i_dyn and all(torch.equal(b, layer.keys) for b, layer in zip(before, head.layers))


# ------------------------------------------------------------------------------------------------
# Shared-prefix attention (the 2-row guided step reads the common head's keys and values once)

def _gapped_rows(prefix=37, gap=11, tail=6, heads=8, kv_heads=2, dim=16, seed=0):
    """Random q/k/v for two rows that share slots [0, prefix); row 0 masks the next `gap` slots."""
    generator = torch.Generator().manual_seed(seed)
    slots = prefix + gap + tail
    query = torch.randn(2, heads, 1, dim, generator=generator)
    key = torch.randn(2, kv_heads, slots, dim, generator=generator)
    value = torch.randn(2, kv_heads, slots, dim, generator=generator)
    key[1, :, :prefix], value[1, :, :prefix] = key[0, :, :prefix], value[0, :, :prefix]
    mask = torch.ones(2, 1, 1, slots, dtype=torch.bool)
    mask[0, ..., prefix : prefix + gap] = False
    return query, key, value, mask, (prefix + gap, prefix)


def _plain_attention(query, key, value, mask, scale):
    """Textbook GQA attention with a boolean mask, [rows, 1, heads, dim]."""
    group = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(group, dim=1), value.repeat_interleave(group, dim=1)
    scores = (query @ key.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~mask, float("-inf"))
    return (torch.softmax(scores, dim=-1) @ value).transpose(1, 2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shared_prefix_attention_equals_plain_attention_with_gqa(seed):
    query, key, value, mask, own_from = _gapped_rows(seed=seed)
    prefix = own_from[1]
    expected = _plain_attention(query, key, value, mask, 0.25)
    got = decode.shared_prefix_attention(query, key, value, prefix, own_from, 0.25)
    assert got.shape == expected.shape == (2, 1, 8, 16)
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)
    # it reads the prefix from row 0 only: garbage in row 1's prefix slots changes nothing
    key[1, :, :prefix] = 1e3
    assert torch.allclose(decode.shared_prefix_attention(query, key, value, prefix, own_from, 0.25), expected,
                          atol=1e-5, rtol=1e-5)
    # and it does read row 0's prefix: changing it changes the output
    key[0, :, 0] += 3.0
    assert not torch.allclose(decode.shared_prefix_attention(query, key, value, prefix, own_from, 0.25), expected,
                              atol=1e-3)


def test_both_partial_attention_kernels_give_the_same_output_and_log_sum_exp():
    generator = torch.Generator().manual_seed(5)
    query, key, value = (torch.randn(2, 3, n, 8, generator=generator) for n in (4, 29, 29))
    flash_out, flash_lse = decode._partial_attention_flash_cpu(query, key, value, 0.3)
    matmul_out, matmul_lse = decode._partial_attention_matmul(query, key, value, 0.3)
    scores = (query @ key.transpose(-1, -2)) * 0.3
    assert torch.allclose(flash_lse, torch.logsumexp(scores, -1), atol=1e-5)
    assert torch.allclose(matmul_lse, torch.logsumexp(scores, -1), atol=1e-5)
    assert torch.allclose(flash_out, torch.softmax(scores, -1) @ value, atol=1e-5)
    assert torch.allclose(matmul_out, flash_out, atol=1e-5)


def test_the_attention_function_falls_back_to_sdpa_outside_its_case():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    query, key, value, mask, own_from = _gapped_rows()
    module = torch.nn.Module().eval()
    module.num_key_value_groups = 4
    plain, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.25)
    layout = (own_from[1], own_from)
    shared, _ = decode.shared_prefix_attention_forward(module, query, key, value, mask, scaling=0.25,
                                                       **{decode.SHARED_PREFIX_KWARG: layout})
    assert torch.allclose(shared, plain, atol=1e-5)
    # two query tokens (a draft), or no layout: sdpa under the mask, the layout is ignored
    key[1, :, 0] = 1e3                          # would break the shared path, which reads row 0 only
    plain, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.25)
    fallback, _ = decode.shared_prefix_attention_forward(module, query, key, value, mask, scaling=0.25)
    assert torch.equal(fallback, plain)
    two = torch.cat([query, query], dim=2)
    mask2 = mask.expand(2, 1, 2, mask.shape[-1])
    plain2, _ = sdpa_attention_forward(module, two, key, value, mask2, scaling=0.25)
    fallback2, _ = decode.shared_prefix_attention_forward(module, two, key, value, mask2, scaling=0.25,
                                                          **{decode.SHARED_PREFIX_KWARG: layout})
    assert torch.equal(fallback2, plain2)


def test_guided_steps_use_the_shared_prefix_attention_and_match_the_reference(structured, tokenizer, monkeypatch):
    ids, i_dyn = encode(tokenizer, *PROMPTS[2])
    signals = [tokenizer.encode(s, add_special_tokens=False) for s in SIGNALS]
    stop = decode.stop_token_ids(tokenizer, structured)
    calls = []
    from engine.generation import attention

    original = attention.shared_prefix_attention

    def spy(query, key, value, prefix, own_from, scaling):
        calls.append((prefix, tuple(own_from)))
        return original(query, key, value, prefix, own_from, scaling)

    monkeypatch.setattr(attention, "shared_prefix_attention", spy)
    assert structured.config._attn_implementation == "sdpa"
    dec = decode.start(structured, tokenizer, ids, i_dyn, gamma=0.5, def_indent=0, max_new_tokens=30, stop_ids=stop)
    ends = decode_all(dec, signals=signals)
    reference, _ = naive_guided_decode(structured, tokenizer, ids, i_dyn, lambda k, _: signals[k % 3], gamma=0.5,
                                       def_indent=0, max_new_tokens=30, stop_ids=stop)
    assert dec.ids == reference
    layers = structured.config.num_hidden_layers
    assert len(calls) == layers * sum(e.tokens for e in ends)          # every guided token, every layer
    assert {prefix for prefix, _ in calls} == {i_dyn}
    assert {own[0] - own[1] for _, own in calls} <= {len(s) for s in signals}   # row 0 skips the signal
    assert structured.config._attn_implementation == "sdpa"            # the swap is undone
