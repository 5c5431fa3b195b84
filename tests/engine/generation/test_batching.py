"""Agents in one batch (engine/generation/batching.py) and candidate reuse (engine/generation/candidates.py),
with free decoding on tiny random models in fp32 (no teacher forcing)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from engine.generation import agents, batching, candidates, decode  # noqa: E402
from engine.generation.events import CandidatesRun, LineCommitted  # noqa: E402
from engine.generation.naive_reference import naive_guided_decode  # noqa: E402
from test_agents import ADD, loaded  # noqa: E402,F401
from test_decode import PROMPTS, SIGNALS, encode, plain, structured, tokenizer  # noqa: E402,F401

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _requests(model, tokenizer):
    """Three step requests of different kinds: a guided pair with a signal gap, a greedy row, and
    three candidate rows of different lengths in one slot cache (one kept row, two fresh)."""
    ids_a, head_a = encode(tokenizer, *PROMPTS[0])
    ids_b, head_b = encode(tokenizer, *PROMPTS[1])
    pair = decode.start(model, tokenizer, ids_a, head_a, gamma=3.0, def_indent=0, max_new_tokens=40, stop_ids=frozenset())
    decode.set_signal(pair, tokenizer.encode(SIGNALS[0], add_special_tokens=False))
    greedy = decode.start(model, tokenizer, ids_b, head_b, gamma=0.0, def_indent=0, max_new_tokens=40,
                          stop_ids=frozenset())
    pool = candidates.Pool()
    candidates.refill(greedy, pool, 1, seed=3, room=40)
    for _ in range(5):   # the first row runs ahead, then two fresh rows join it
        token = torch.tensor([[pool.rows[0].pending(greedy)]])
        pool.rows[0].ids.append(int(decode.forward(model, pool.kv, token)[0, -1].argmax()))
        pool.rows[0].filled, pool.rows[0].position = pool.kv.length, int(pool.kv.positions[0])
    candidates.refill(greedy, pool, 3, seed=3, room=40)
    ids = torch.tensor([[row.pending(greedy)] for row in pool.rows])
    return [decode.Step(pair.guided, torch.tensor([[pair.pending]] * 2)),
            decode.Step(greedy.uncond, torch.tensor([[greedy.pending]])),
            decode.Step(pool.kv, ids)]


def test_one_forward_for_several_requests_equals_their_own_forwards(structured, tokenizer):
    with torch.inference_mode():
        alone = [[decode.forward(structured, step.kv, step.ids)[:, -1] for step in _requests(structured, tokenizer)]]
        together = [batching.forward_steps(structured, _requests(structured, tokenizer))]
    assert pool_gap_exists(_requests(structured, tokenizer)[2].kv)
    for mine, theirs in zip(alone[0], together[0]):
        assert mine.shape == theirs.shape
        assert torch.allclose(mine, theirs, atol=1e-5)
        assert (mine.argmax(-1) == theirs.argmax(-1)).all()


def pool_gap_exists(kv) -> bool:
    return kv.gaps and bool((~kv.mask[:, : kv.length]).any())


def test_one_batched_forward_per_step_for_every_request(structured, tokenizer):
    calls = []
    handle = structured.register_forward_pre_hook(lambda m, a, kw: calls.append(kw["input_ids"].shape[0]),
                                                  with_kwargs=True)
    try:
        with torch.inference_mode():
            requests = _requests(structured, tokenizer)
            calls.clear()
            batching.forward_steps(structured, requests)
    finally:
        handle.remove()
    assert calls == [2 + 1 + 3]


def _decode_together(model, tokenizer, specs, stop):
    """Guided decoding of several Decodings, their one-token steps batched into one forward
    each step; fixed signals per line (specs: (prompt, gamma, signal offset))."""
    states = []
    for prompt, gamma, offset in specs:
        ids, i_dyn = encode(tokenizer, *PROMPTS[prompt])
        dec = decode.start(model, tokenizer, ids, i_dyn, gamma=gamma, def_indent=0, max_new_tokens=30, stop_ids=stop)
        states.append({"dec": dec, "line": 0, "offset": offset, "steps": None, "reply": None, "done": False,
                       "ids": ids, "i_dyn": i_dyn, "gamma": gamma})

    def signal(state):
        return tokenizer.encode(SIGNALS[(state["line"] + state["offset"]) % 3], add_special_tokens=False)

    forwards = 0
    with torch.inference_mode():
        while not all(state["done"] for state in states):
            requests = []
            for state in states:
                if state["done"]:
                    continue
                if state["steps"] is None:
                    if state["gamma"] != 0:
                        decode.set_signal(state["dec"], signal(state))
                    state["steps"] = decode.guided_line_steps(state["dec"])
                    state["reply"] = None
                try:
                    requests.append((state, state["steps"].send(state["reply"])))
                except StopIteration as end:
                    state["steps"] = None
                    state["line"] += 1
                    state["done"] = bool(end.value.stop)
                    if not state["done"]:
                        requests.append((state, None))
            live = [(state, step) for state, step in requests if step is not None]
            if live:
                forwards += 1
                for (state, _), reply in zip(live, batching.forward_steps(model, [step for _, step in live])):
                    state["reply"] = reply
    return states, forwards


def assert_each_equals_the_naive_reference(model, tokenizer, states, stop):
    """Every state of `_decode_together` committed the tokens the naive reference commits alone."""
    for state in states:
        offset = state["offset"]
        reference, _ = naive_guided_decode(model, tokenizer, state["ids"], state["i_dyn"],
                                           lambda k, _, offset=offset: tokenizer.encode(SIGNALS[(k + offset) % 3],
                                                                                        add_special_tokens=False),
                                           gamma=state["gamma"], def_indent=0, max_new_tokens=30, stop_ids=stop)
        assert state["dec"].ids == reference


def test_guided_lines_decoded_in_one_batch_equal_the_naive_reference(structured, tokenizer):
    """For fixed signals (fixed candidates), agents decoded together commit the lines the naive
    reference (conditional prompt prefilled every token, unbatched) commits for each alone."""
    stop = decode.stop_token_ids(tokenizer, structured)
    specs = [(0, 0.5, 0), (1, 3.0, 1), (2, 1.0, 2), (0, 0.0, 0)]
    states, forwards = _decode_together(structured, tokenizer, specs, stop)
    assert_each_equals_the_naive_reference(structured, tokenizer, states, stop)
    assert sum(len(state["dec"].ids) for state in states) > forwards   # steps were shared


def _events_by_agent(model, executor, **options):
    out: dict[str, list] = {}
    for event in agents.run_completion(model, executor, ADD, max_new_tokens=24, seed=5, first_pass_wins=False,
                                       gammas=[0.5, 3.0], **options):
        if isinstance(event, LineCommitted):
            out.setdefault(event.agent, []).append(("line", event.text))
        elif isinstance(event, CandidatesRun):
            out.setdefault(event.agent, []).append(("candidates", tuple(event.candidates)))
    return out


def test_agents_batched_decode_what_they_decode_one_by_one(tiny_model_dir, executor):
    """Free decoding with sampled candidates: every row has its own generator, so batching the
    agents' steps changes no token (same lines, same candidates, agent by agent)."""
    model = loaded(tiny_model_dir, True)
    batched = _events_by_agent(model, executor, fast=True, batch_agents=True)
    alone = _events_by_agent(model, executor, fast=True, batch_agents=False)
    assert batched == alone
    assert len(batched) >= 3 and any(kind == "candidates" for events in batched.values() for kind, _ in events)


# ------------------------------------------------------------------------------------------------
# Candidate reuse

def _committed_line_steer(line_ids):
    """Steer every row's first tokens to `line_ids` (the line that will be committed); sample after."""
    def steer(dec, row, probs):
        return line_ids[len(row.ids)] if len(row.ids) < len(line_ids) else None
    return steer


def _commit(dec, line_ids):
    """Commit a line as guided decoding would (teacher forcing through the real loop)."""
    dec.force = list(dec.ids) + list(line_ids)
    end = decode.guided_line(dec)
    dec.force = None
    return end


def test_a_kept_row_continues_exactly_as_its_context_prefilled_from_scratch(structured, tokenizer):
    ids, i_dyn = encode(tokenizer, *PROMPTS[0])
    stop = decode.stop_token_ids(tokenizer, structured)
    line = tokenizer.encode("    x = a\n", add_special_tokens=False)
    dec = decode.start(structured, tokenizer, ids, i_dyn, gamma=0.0, def_indent=0, max_new_tokens=60, stop_ids=stop)
    pool = candidates.Pool()
    with torch.inference_mode():
        candidates.refill(dec, pool, 3, seed=1, room=80)
        decode.run_steps(structured, candidates.sample_steps(dec, pool, 2, 1.0, 40, _committed_line_steer(line)))
        pool.rows[1].ids[len(line) - 1] = line[-1] + 1 if line[-1] + 1 not in stop else line[-1] + 2   # disagrees
        _commit(dec, line)
        assert candidates.advance(pool, line) == 2
        candidates.refill(dec, pool, 3, seed=1, room=80)   # two kept rows (different lengths) + one fresh
        assert [row.reused for row in pool.rows] == [True, True, False]
        ids_now = torch.tensor([[row.pending(dec)] for row in pool.rows])
        logits = decode.forward(structured, pool.kv, ids_now)[:, -1]
        for index, row in enumerate(pool.rows):
            context = dec.context + row.ids
            expected = structured(input_ids=torch.tensor([context])).logits[0, -1].float()
            assert torch.allclose(logits[index], expected, atol=1e-4), index


def test_kept_rows_are_samples_of_the_next_lines_given_the_committed_line(plain, tokenizer):
    structured = plain   # no added structure: the distribution after a newline is not one token
    """Over many seeds, the first token a kept row samples after its top-up starts has the
    model's exact conditional distribution given the committed code (a chi-square test)."""
    ids, i_dyn = encode(tokenizer, *PROMPTS[1])
    stop = decode.stop_token_ids(tokenizer, structured)
    line = tokenizer.encode("    z = y\n", add_special_tokens=False)
    allowed = torch.tensor(tokenizer.encode("    ", add_special_tokens=False)
                           + tokenizer.encode(" a b c\n", add_special_tokens=False))
    handle = structured.register_forward_hook(_restrict(allowed), with_kwargs=True)
    observed = torch.zeros(len(allowed))
    expected = torch.zeros(len(allowed))
    try:
        with torch.inference_mode():
            for seed in range(120):
                dec = decode.start(structured, tokenizer, ids, i_dyn, gamma=0.0, def_indent=0, max_new_tokens=60,
                                   stop_ids=stop)
                pool = candidates.Pool()
                candidates.refill(dec, pool, 2, seed=seed, room=60)
                decode.run_steps(structured, candidates.sample_steps(dec, pool, 1, 1.0, 12,
                                                                     _committed_line_steer(line)))
                _commit(dec, line)
                candidates.advance(pool, line)
                candidates.refill(dec, pool, 3, seed=seed, room=60)   # kept rows (empty) + one fresh
                kept = [row for row in pool.rows if row.reused]
                assert len(kept) == 2 and all(row.ids == [] for row in kept)
                exact = torch.softmax(structured(input_ids=torch.tensor([dec.context])).logits[0, -1].float(), -1)
                steps = candidates.sample_steps(dec, pool, 1, 1.0, 1)
                decode.run_steps(structured, steps)
                for row in kept:
                    observed[(allowed == row.ids[0]).nonzero()[0, 0]] += 1
                    expected += exact[allowed]
    finally:
        handle.remove()
    chi_square = float(((observed - expected) ** 2 / expected.clamp(min=1e-9)).sum())
    assert float(expected.sum()) == pytest.approx(float(observed.sum()), rel=1e-3)
    assert chi_square < 20.0, (observed.tolist(), expected.tolist())   # 5 categories: p < 0.001
    assert (observed > 0).sum() >= 3                                      # it did sample, not argmax


def _restrict(allowed: torch.Tensor):
    """A forward hook: only `allowed` tokens keep their (model-made) logits."""
    def hook(module, args, kwargs, output):
        mask = torch.full((output.logits.shape[-1],), float("-inf"))
        mask[allowed] = 0
        output.logits = output.logits + mask
        return output
    return hook


def test_draw_tokens_is_per_row_exact_and_independent_of_the_batch():
    """draw_tokens: a row's token depends only on its weights and its generator (batched equals one
    by one), follows the weights' distribution (any scale), and never picks a zero-weight token."""
    vocab = 50
    weights = torch.rand(3, vocab) ** 4
    weights[1, ::2] = 0                      # row 1: odd tokens only
    weights[2] *= 1000                       # scale does not matter

    def generators(seed):
        return [torch.Generator().manual_seed(seed * 10 + row) for row in range(3)]
    together, apart = [], []
    batch, single = generators(7), generators(7)
    for _ in range(200):
        together.append(candidates.draw_tokens(weights, batch))
        apart.append([candidates.draw_tokens(weights[row : row + 1], [single[row]])[0] for row in range(3)])
    assert together == apart
    assert all(token % 2 == 1 for draw in together for token in [draw[1]])
    draws = 20000
    rows = generators(3)
    counts = torch.zeros(vocab)
    for _ in range(draws // 100):   # row 0 alone, batched with itself 100 times (independent generators)
        many = [torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=rows[0]))) for _ in range(100)]
        counts += torch.bincount(torch.tensor(candidates.draw_tokens(weights[0].expand(100, vocab), many)),
                                 minlength=vocab).float()
    expected = weights[0] / weights[0].sum() * draws
    chi_square = float(((counts - expected) ** 2 / expected).sum())
    assert chi_square < 100   # 49 degrees of freedom: the 99.99th percentile is about 95
    assert candidates.draw_tokens(weights, []) == []
