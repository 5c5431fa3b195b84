"""The scheduler's batched forward, compiled (engine/generation/compiled_batch.py): inductor on
CPU, tiny random models in fp32. It must give every request what its own eager forward gives, keep
each cache's contents through binding, eviction and re-binding, and decode what eager decodes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from engine.generation import batching, compiled, compiled_batch, decode  # noqa: E402
from test_agents import loaded  # noqa: E402,F401
from test_batching import (_decode_together, _events_by_agent, _requests,  # noqa: E402
                           assert_each_equals_the_naive_reference)
from test_decode import PROMPTS, SIGNALS, encode, plain, structured, tokenizer  # noqa: E402,F401

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _filled(kv):
    return [(layer.keys.clone(), layer.values.clone()) for layer in kv.layers], kv.mask[:, : kv.length].clone()


def test_compiled_batched_steps_equal_each_request_alone(structured, tokenizer):
    """Steps over changing subsets of three requests (a guided pair with a signal gap, a greedy row,
    three candidate rows of different lengths): the logits equal each request's own eager forward,
    and after the steps every cache holds what the eager one holds, bound or evicted."""
    step = compiled_batch.BatchStep(structured)
    with torch.inference_mode():
        mine, theirs = _requests(structured, tokenizer), _requests(structured, tokenizer)
        for subset in ([0, 1, 2], [0, 2], [1], [2, 0, 1], [0], [1, 2], [0, 1, 2]):
            eager = [decode.forward(structured, theirs[i].kv, theirs[i].ids)[:, -1] for i in subset]
            batched = step.forward([mine[i] for i in subset])
            for i, a, b in zip(subset, eager, batched):
                assert a.shape == b.shape
                assert torch.allclose(a, b, atol=1e-4), f"request {i}"
                ids = a.argmax(-1, keepdim=True)
                mine[i], theirs[i] = decode.Step(mine[i].kv, ids), decode.Step(theirs[i].kv, ids)
        assert step.bindings                                  # caches are bound to the static rows
        step._allocate(mine[0].kv, step.rows * 2, step.slots_total)   # everyone gets a copy back
        assert not step.bindings
        for a, b in zip(mine, theirs):
            assert a.kv.length == b.kv.length and torch.equal(a.kv.positions, b.kv.positions)
            (layers_a, mask_a), (layers_b, mask_b) = _filled(a.kv), _filled(b.kv)
            assert torch.equal(mask_a, mask_b)
            for (ka, va), (kb, vb) in zip(layers_a, layers_b):
                assert torch.allclose(ka, kb, atol=1e-4) and torch.allclose(va, vb, atol=1e-4)


def test_placement_keeps_bound_caches_and_reuses_free_rows(structured, tokenizer):
    step = compiled_batch.BatchStep(structured, compile=False)   # placement only: no need to compile
    with torch.inference_mode():
        requests = _requests(structured, tokenizer)
        kvs = [request.kv for request in requests]
        first = step.place(kvs)
        assert first == [0, 2, 3] and step.rows == 8
        view = kvs[2].layers[0].buffer_keys
        assert step.place([kvs[2]]) == [3] and kvs[2].layers[0].buffer_keys is view   # stays, no copy
        decode.ensure_room(kvs[1], kvs[1].capacity + 1)        # an eager function moved it off
        assert not step.holds(kvs[1])
        assert step.place([kvs[1], kvs[2]]) == [2, 3] and step.holds(kvs[1])   # back to the free row
        assert step.holds(kvs[0])                                # not fed this step, still bound
        assert step.mask[:, -1].sum() == step.rows - 6        # free rows attend only the scratch slot
        extra = _pair(structured, tokenizer, 2)
        assert step.place([extra, kvs[2]]) == [6, 3]             # the two free rows, nobody evicted
        assert all(step.holds(kv) for kv in kvs)
        third = _pair(structured, tokenizer, 1)
        assert step.place([third, kvs[2]]) == [0, 3]              # no free row: the pair not fed gives way
        assert not step.holds(kvs[0]) and kvs[0].layers[0].buffer_keys.shape[0] == 2


def _pair(model, tokenizer, prompt):
    dec = decode.start(model, tokenizer, *encode(tokenizer, *PROMPTS[prompt]), gamma=3.0, def_indent=0,
                       max_new_tokens=8, stop_ids=frozenset())
    decode.set_signal(dec, tokenizer.encode(SIGNALS[0], add_special_tokens=False))
    return dec.guided


def test_guided_lines_decoded_in_one_compiled_batch_equal_the_naive_reference(structured, tokenizer, monkeypatch):
    monkeypatch.setattr(batching, "forward_steps", compiled_batch.forward_steps)
    stop = decode.stop_token_ids(tokenizer, structured)
    specs = [(0, 0.5, 0), (1, 3.0, 1), (2, 1.0, 2), (0, 0.0, 0)]
    before = compiled.CompiledStep.forwards
    states, forwards = _decode_together(structured, tokenizer, specs, stop)
    assert compiled.CompiledStep.forwards - before == forwards > 0   # every batched step was the compiled one
    assert_each_equals_the_naive_reference(structured, tokenizer, states, stop)


def test_agents_with_a_compiled_batch_decode_what_eager_agents_decode(tiny_model_dir, executor):
    """Free decoding, sampled candidates, three agents batched: compiled, the same lines and
    candidates agent by agent, and the scheduler's forwards went through the compiled step."""
    model = loaded(tiny_model_dir, True)
    before = compiled.CompiledStep.forwards
    batched = _events_by_agent(model, executor, fast=True, compile=True)
    assert compiled.CompiledStep.forwards > before
    eager = _events_by_agent(model, executor, fast=True)
    assert batched == eager
