"""The compiled decode step (engine/generation/compiled.py): inductor on CPU, tiny model in fp32."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

import torch

sys.path.insert(0, str(Path(__file__).parent))

from engine.generation import compiled, decode  # noqa: E402
from engine.generation.naive_reference import naive_guided_decode  # noqa: E402
from test_decode import PROMPTS, SIGNALS, decode_all, encode, structured, tokenizer  # noqa: E402,F401

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_compiled_guided_decoding_equals_the_naive_reference(structured, tokenizer):
    """Whole lines with signal refreshes (a new pair of rows moved into the buffers per line): the compiled
    step (fixed-shape buffers, forward + CFG mix + argmax in one function) picks every token the
    naive reference picks."""
    ids, i_dyn = encode(tokenizer, *PROMPTS[2])
    signals = [tokenizer.encode(s, add_special_tokens=False) for s in SIGNALS]
    stop = decode.stop_token_ids(tokenizer, structured)
    dec = decode.start(structured, tokenizer, ids, i_dyn, gamma=3.0, def_indent=0, max_new_tokens=24, stop_ids=stop,
                       compile=True)
    assert dec.compile
    decode_all(dec, signals=signals)
    reference, _ = naive_guided_decode(structured, tokenizer, ids, i_dyn, lambda k, _: signals[k % 3], gamma=3.0,
                                       def_indent=0, max_new_tokens=24, stop_ids=stop)
    assert dec.ids == reference
    assert dec.stepper is not None and dec.stepper.capacity in compiled.BUCKETS


def test_decodings_take_turns_on_one_compiled_step(structured, tokenizer):
    """Two decodings of one model, lines interleaved, different prompts and guidance strengths: they
    share one step (one compiled function: a step per decoding would compile again each time), each
    gets its cache back when the other takes the buffers, and each still picks the naive
    reference's tokens."""
    signals = [tokenizer.encode(s, add_special_tokens=False) for s in SIGNALS]
    stop = decode.stop_token_ids(tokenizer, structured)
    decs, references = [], []
    for prompt, gamma in ((PROMPTS[2], 3.0), (PROMPTS[0], 1.5)):
        ids, i_dyn = encode(tokenizer, *prompt)
        decs.append(decode.start(structured, tokenizer, ids, i_dyn, gamma=gamma, def_indent=0, max_new_tokens=24,
                                 stop_ids=stop, compile=True))
        references.append(naive_guided_decode(structured, tokenizer, ids, i_dyn, lambda k, _: signals[k % 3],
                                              gamma=gamma, def_indent=0, max_new_tokens=24, stop_ids=stop)[0])
    lines = [0, 0]
    done = [False, False]
    while not all(done):
        for which, dec in enumerate(decs):
            if done[which]:
                continue
            decode.set_signal(dec, signals[lines[which] % 3])
            done[which] = decode.guided_line(dec).stop
            lines[which] += 1
    assert min(lines) >= 2                           # the buffers changed hands mid-decoding
    assert [dec.ids for dec in decs] == references
    assert decs[0].stepper is decs[1].stepper is compiled.CompiledStep.shared(structured, 2)


def test_buckets_and_what_stays_eager(monkeypatch):
    assert compiled.bucket_for(1) == 512 and compiled.bucket_for(513) == 1024 and compiled.bucket_for(5000) == 8192

    class FakeLinear4bit(torch.nn.Module):
        pass

    FakeLinear4bit.__name__ = "Linear4bit"
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), FakeLinear4bit())
    ok, why = compiled.compilable(model)                       # on the CPU: eager
    assert not ok and why.startswith("bitsandbytes 4-bit layers stay eager")
    model.device = torch.device("cuda")                        # on a GPU: with bitsandbytes 0.50+
    monkeypatch.setattr(compiled, "_bitsandbytes_version", lambda: (0, 50))
    assert compiled.compilable(model) == (True, "")
    monkeypatch.setattr(compiled, "_bitsandbytes_version", lambda: (0, 45))
    assert not compiled.compilable(model)[0]
    assert compiled.compilable(torch.nn.Sequential(torch.nn.Linear(2, 2)))[0]


# --- the compiled steps' attention and CUDA graphs ---------------------------------------------------

class _Attention(torch.nn.Module):
    """What transformers' attention functions read from the module."""

    def __init__(self, groups: int):
        super().__init__()
        self.num_key_value_groups, self.is_causal = groups, True
        self.train(False)


def _repeated_heads_reference(query, key, value, mask, scale):
    """Plain attention with every key/value head copied for its query heads (repeat_kv), in fp64."""
    groups = query.shape[1] // key.shape[1]
    key, value = (t.double().repeat_interleave(groups, dim=1) for t in (key, value))
    scores = (query.double() @ key.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~mask, float("-inf"))
    return (scores.softmax(-1) @ value).transpose(1, 2)


@pytest.mark.parametrize("heads,kv_heads", [(4, 2), (28, 4), (12, 2)])
def test_decode_attention_reads_grouped_heads_once_and_equals_repeated_heads(heads, kv_heads):
    from engine.generation.attention import decode_attention_forward

    generator = torch.Generator().manual_seed(heads)
    rows, slots, dim = 3, 37, 16
    query = torch.randn(rows, heads, 1, dim, generator=generator)
    key, value = (torch.randn(rows, kv_heads, slots, dim, generator=generator) for _ in range(2))
    mask = torch.rand(rows, 1, 1, slots, generator=generator) < 0.6
    mask[:, ..., 0] = True   # every row attends something
    out, weights = decode_attention_forward(_Attention(heads // kv_heads), query, key, value, mask, scaling=0.25)
    assert weights is None and out.shape == (rows, 1, heads, dim)
    expected = _repeated_heads_reference(query, key, value, mask, 0.25)
    assert torch.allclose(out.double(), expected, atol=1e-5)


def test_decode_attention_leaves_other_cases_to_sdpa(monkeypatch):
    from engine.generation import attention

    calls = []
    monkeypatch.setattr(attention, "sdpa_attention_forward", lambda *a, **kw: calls.append(a[1].shape) or ("sdpa", None))
    key = value = torch.zeros(1, 2, 5, 8)
    mask = torch.ones(1, 1, 1, 5, dtype=torch.bool)
    module = _Attention(2)
    assert attention.decode_attention_forward(module, torch.zeros(1, 4, 2, 8), key, value, None)[0] == "sdpa"  # 2 tokens
    per_head_mask = torch.ones(1, 4, 1, 5, dtype=torch.bool)
    assert attention.decode_attention_forward(module, torch.zeros(1, 4, 1, 8), key, value, per_head_mask)[0] == "sdpa"
    assert attention.decode_attention_forward(module, torch.zeros(1, 4, 1, 8), key, value, mask,
                                              sliding_window=4)[0] == "sdpa"
    assert attention.decode_attention_forward(_Attention(1), torch.zeros(1, 2, 1, 8), key, value, mask)[0] == "sdpa"
    training = _Attention(2).train()
    assert attention.decode_attention_forward(training, torch.zeros(1, 4, 1, 8), key, value, mask)[0] == "sdpa"
    assert len(calls) == 5
    assert attention.decode_attention_forward(module, torch.zeros(1, 4, 1, 8), key, value, mask)[0].shape == (1, 1, 4, 8)
    assert len(calls) == 5


def test_the_compiled_step_runs_decode_attention_and_restores_the_models_own(structured, tokenizer, monkeypatch):
    """Every layer of the step's forward goes through egcfg_decode; eager forwards before and
    after keep sdpa."""
    from transformers import AttentionInterface

    from engine.generation import attention

    seen = []

    def spy(module, query, *args, **kwargs):
        seen.append(query.shape[2])
        return attention.decode_attention_forward(module, query, *args, **kwargs)
    AttentionInterface.register(attention.DECODE_ATTENTION, spy)
    try:
        ids, i_dyn = encode(tokenizer, *PROMPTS[0])
        dec = decode.start(structured, tokenizer, ids, i_dyn, gamma=3.0, def_indent=0, max_new_tokens=4,
                           stop_ids=frozenset())
        decode.set_signal(dec, tokenizer.encode(SIGNALS[0], add_special_tokens=False))
        step = compiled.CompiledStep(structured, 2, 3.0, compile=False)
        with torch.inference_mode():
            step.step(dec.guided, dec.pending)
    finally:
        AttentionInterface.register(attention.DECODE_ATTENTION, attention.decode_attention_forward)
    assert seen == [1] * structured.config.num_hidden_layers
    assert structured.config._attn_implementation == "sdpa"


def recording_context(log: list):
    """A context-manager factory that writes "in" and "out" to `log`."""
    @contextmanager
    def context():
        log.append("in")
        yield
        log.append("out")
    return context


def test_a_graphed_call_without_cuda_falls_back_to_the_function_and_says_why():
    from engine.generation.graphs import GraphedCall, _same

    entered = []
    context = recording_context(entered)

    def function(x):
        assert entered[-1] == "in"   # the function runs inside the context
        return x * 2
    call = GraphedCall(function, context)
    x = torch.arange(3.0)
    if torch.cuda.is_available():
        pytest.skip("this checks the fallback where there is no GPU")
    assert torch.equal(call(x), x * 2) and call.note.startswith("CUDA graph not used")
    assert torch.equal(call(x), x * 2) and call.graph is None and call.captures == 0
    assert entered[-1] == "out" and entered.count("in") == 3   # the failed capture, then both runs
    assert _same(torch.tensor([3]), torch.tensor([3])) and not _same(torch.tensor([3]), torch.tensor([4]))
    assert _same(torch.tensor([100.0]), torch.tensor([100.05])) and not _same(torch.tensor([100.0]), torch.tensor([101.0]))
    assert not _same(torch.tensor([float("nan")]), torch.tensor([1.0]))


def test_compile_modes():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert compiled.compile_function(len, None, cpu, compile=False) == ("default", len)
    assert compiled.compile_function(len, None, gpu, compile=False) == ("graphs", len)
    mode, function = compiled.compile_function(len, "reduce-overhead", cpu)
    assert mode == "reduce-overhead" and function is not len and callable(function)   # torch.compile's wrapper
    with pytest.raises(ValueError, match="unknown compile mode 'fast'"):
        compiled.compile_function(len, "fast", cpu)
    from engine.generation.graphs import GraphedCall

    assert isinstance(compiled.compile_function(len, "graphs", gpu)[1], GraphedCall)
    seen = []
    mode, function = compiled.compile_function(lambda x: seen.append(x) or x, None, cpu, compile=False,
                                               context=recording_context(seen))
    assert function(5) == 5 and seen == ["in", 5, "out"]   # eager and inductor calls run inside the context


def test_a_step_whose_compile_fails_runs_eagerly_and_says_why(structured, tokenizer):
    """A compiled function that fails (here: inductor's place taken by one that raises) leaves the
    decoding on the plain step function, with the same tokens as the naive reference."""
    ids, i_dyn = encode(tokenizer, *PROMPTS[2])
    signals = [tokenizer.encode(s, add_special_tokens=False) for s in SIGNALS]
    stop = decode.stop_token_ids(tokenizer, structured)
    stepper = compiled.CompiledStep(structured, 2, 3.0)
    assert isinstance(stepper.function.__wrapped__, compiled.CompiledOrEager)
    assert compiled.step_status(stepper.function) == "compiled"
    calls = []

    def broken(*args):
        calls.append(1)
        raise RuntimeError("InductorError: no kernel for this op\nsecond line")
    stepper.function.__wrapped__.compiled = broken
    dec = decode.start(structured, tokenizer, ids, i_dyn, gamma=3.0, def_indent=0, max_new_tokens=24, stop_ids=stop,
                       compile=True)
    dec.stepper = stepper
    decode_all(dec, signals=signals)
    reference, _ = naive_guided_decode(structured, tokenizer, ids, i_dyn, lambda k, _: signals[k % 3], gamma=3.0,
                                       def_indent=0, max_new_tokens=24, stop_ids=stop)
    assert dec.ids == reference and len(calls) == 1   # tried once, then the plain function for good
    assert compiled.step_status(stepper.function) == ("compiled step not used: RuntimeError: "
                                                      "InductorError: no kernel for this op")


def test_step_status_names_what_runs():
    from engine.generation.graphs import GraphedCall

    cpu = torch.device("cpu")
    assert compiled.step_status(compiled.compile_function(len, None, cpu, compile=False)[1]) == "eager"
    assert compiled.step_status(compiled.compile_function(len, None, cpu)[1]) == "compiled"
    graphed = GraphedCall(compiled.CompiledOrEager(len, len))
    assert compiled.step_status(graphed) == "graph"
    graphed.note = "CUDA graph not used: RuntimeError: capture failed"
    graphed.function.note = "compiled step not used: RuntimeError: x"
    assert compiled.step_status(graphed) == ("CUDA graph not used: RuntimeError: capture failed; "
                                             "compiled step not used: RuntimeError: x")
