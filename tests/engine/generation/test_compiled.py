"""The compiled decode step (engine/generation/compiled.py): inductor on CPU, tiny model in fp32."""

from __future__ import annotations

import sys
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
