"""What the decode loop keeps in memory (engine/generation/decode.py, kv.py): chunked prefills, one
cache for the head, the unconditional cache freed while a guided pair holds it. Tiny model, fp32."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from engine.generation import decode  # noqa: E402
from engine.generation.naive_reference import naive_guided_decode  # noqa: E402
from test_decode import PROMPTS, SIGNALS, decode_all, encode, plain, structured, tokenizer  # noqa: E402,F401

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _filled(kv):
    return [(layer.keys.clone(), layer.values.clone()) for layer in kv.layers]


def test_a_chunked_prefill_holds_the_same_keys_and_values_as_one_forward(plain, tokenizer, monkeypatch):
    ids, _ = encode(tokenizer, *PROMPTS[2])
    assert len(ids) > 40
    with torch.inference_mode():
        whole = decode.prefill(plain, ids[:-1])
        monkeypatch.setattr(decode, "PREFILL_CHUNK", 7)
        forwards = []
        handle = plain.register_forward_pre_hook(lambda module, args, kwargs: forwards.append(kwargs["input_ids"].shape),
                                                 with_kwargs=True)
        try:
            chunked = decode.prefill(plain, ids[:-1])
        finally:
            handle.remove()
        assert len(forwards) == -(-(len(ids) - 1) // 7) and max(shape[1] for shape in forwards) == 7
        assert chunked.length == whole.length == len(ids) - 1
        assert int(chunked.positions[0]) == int(whole.positions[0])
        for (k1, v1), (k2, v2) in zip(_filled(whole), _filled(chunked)):
            torch.testing.assert_close(k1, k2, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(v1, v2, atol=1e-5, rtol=1e-5)
        token = ids[-1]
        assert decode.decode_one_token(plain, whole, token, 0.0) == decode.decode_one_token(plain, chunked, token, 0.0)


def test_guided_decoding_with_small_prefill_chunks_equals_the_naive_reference(structured, tokenizer, monkeypatch):
    monkeypatch.setattr(decode, "PREFILL_CHUNK", 5)
    ids, i_dyn = encode(tokenizer, *PROMPTS[2])
    signals = [tokenizer.encode(s, add_special_tokens=False) for s in SIGNALS]
    stop = decode.stop_token_ids(tokenizer, structured)
    dec = decode.start(structured, tokenizer, ids, i_dyn, gamma=3.0, def_indent=0, max_new_tokens=24, stop_ids=stop)
    decode_all(dec, signals=signals)
    reference, _ = naive_guided_decode(structured, tokenizer, ids, i_dyn, lambda k, _: signals[k % 3], gamma=3.0,
                                       def_indent=0, max_new_tokens=24, stop_ids=stop)
    assert dec.ids == reference


def test_one_cache_holds_the_head_and_exactly_the_room_asked_for(structured, tokenizer):
    ids, i_dyn = encode(tokenizer, *PROMPTS[0])
    dec = decode.start(structured, tokenizer, ids, i_dyn, gamma=3.0, def_indent=0, max_new_tokens=20)
    assert dec.head is None                                   # nobody shares it: no second copy
    assert dec.uncond.capacity == len(ids) - 1 + 20 + 64      # the prompt once, not twice
    shared = decode.prefill_head(structured, ids, i_dyn)
    with_shared = decode.start(structured, tokenizer, ids, i_dyn, gamma=3.0, def_indent=0, max_new_tokens=20,
                               head=shared)
    assert with_shared.head is shared and with_shared.uncond.capacity == dec.uncond.capacity
    for (k1, v1), (k2, v2) in zip(_filled(dec.uncond), _filled(with_shared.uncond)):
        assert torch.equal(k1, k2) and torch.equal(v1, v2)
    gamma_one = decode.start(structured, tokenizer, ids, i_dyn, gamma=1.0, def_indent=0, max_new_tokens=20)
    assert gamma_one.head is not None                         # its conditional row is branched from it


def test_the_pair_frees_the_unconditional_cache_and_gives_it_back_on_demand(structured, tokenizer):
    ids, i_dyn = encode(tokenizer, *PROMPTS[0])
    signal = tokenizer.encode(SIGNALS[0], add_special_tokens=False)
    dec = decode.start(structured, tokenizer, ids, i_dyn, gamma=3.0, def_indent=0, max_new_tokens=20)
    old = dec.uncond
    before, position = _filled(old), int(old.positions[0])
    decode.set_signal(dec, signal)
    assert dec.uncond is None and dec.guided.rows == 2
    assert all(layer.buffer_keys is None and layer.buffer_values is None for layer in old.layers)   # freed
    with torch.inference_mode():   # a few tokens of the line, then someone asks for the unconditional cache
        token = dec.pending
        for _ in range(3):
            token = decode.decode_one_token(structured, dec.guided, token, 3.0)
    restored = decode.unconditional(dec)
    assert restored.length == len(before[0][0][0, 0]) and int(restored.positions[0]) == position
    for (k1, v1), (k2, v2) in zip(before, _filled(restored)):
        assert torch.equal(k1, k2) and torch.equal(v1, v2)
    decode.set_signal(dec, signal)   # a second signal without a line in between still works
    assert dec.guided.rows == 2


@pytest.mark.parametrize("gamma", [1.0, 3.0])
def test_candidates_branch_from_the_restored_cache(structured, tokenizer, gamma):
    from engine.generation import candidates

    ids, i_dyn = encode(tokenizer, *PROMPTS[1])
    dec = decode.start(structured, tokenizer, ids, i_dyn, gamma=gamma, def_indent=0, max_new_tokens=20)
    decode.set_signal(dec, tokenizer.encode(SIGNALS[2], add_special_tokens=False))
    rows = candidates.sample_candidates(dec, 2, 1, 0.0, torch.Generator().manual_seed(0), max_tokens=6)
    fresh = decode.start(structured, tokenizer, ids, i_dyn, gamma=gamma, def_indent=0, max_new_tokens=20)
    expected = candidates.sample_candidates(fresh, 2, 1, 0.0, torch.Generator().manual_seed(0), max_tokens=6)
    assert [row.ids for row in rows] == [row.ids for row in expected]
