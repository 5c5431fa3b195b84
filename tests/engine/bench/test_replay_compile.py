"""`egcfg bench replay --compile` (engine/bench/replay.py): the fast scheme's batched forwards go
through the compiled batch step (inductor on the CPU) and the replay commits the same lines as the
eager one."""

from __future__ import annotations

import pytest
import torch

from engine.bench import replay


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_compiled_replay_commits_the_same_lines_as_eager(data_dir, dtype, monkeypatch):
    from engine.bench.accuracy import load_benchmark
    from engine.execution.executor import Executor
    from engine.generation import decode
    from engine.generation.random_models import random_model

    from engine.generation import compiled_batch

    shapes = []   # the compiled batch step's (rows, slots) buckets
    real_allocate = compiled_batch.BatchStep._allocate
    monkeypatch.setattr(compiled_batch.BatchStep, "_allocate", lambda self, like, rows, slots: shapes.append(
        (rows, slots)) or real_allocate(self, like, rows, slots))
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    task = load_benchmark("mbpp", str(data_dir), "11", None)[0]
    loaded = random_model("tiny", device="cpu", dtype=dtype)
    lines: dict[bool, list] = {False: [], True: []}
    records = {}
    with Executor() as executor:
        for compile_ in (False, True):
            records[compile_] = replay.replay_task(loaded, executor, task, "fast", 0.5, "editor", 0,
                                                   compile=compile_, committed=lines[compile_])
    # per agent, the same lines in the same order
    assert lines[False] and sorted(lines[True]) == sorted(lines[False])
    for agent in {line[0] for line in lines[False]}:
        assert [line for line in lines[True] if line[0] == agent] == [line for line in lines[False] if line[0] == agent]
    assert records[True]["agents"] == records[False]["agents"] == ["complete"] * 3
    # the scheduler's batched forwards were the compiled ones, compiled once per bucket of rows and
    # slots (not once per step or decoding), and every compiled forward was counted
    compiled_run = records[True]
    assert shapes and compiled_run["compiled_steps"] > 0
    assert compiled_run["forwards"] == compiled_run["eager_forwards"] + compiled_run["compiled_steps"]
    compiles = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert 0 < compiles <= len(set(shapes))
    # where the time went: issuing eager forwards and the compiled steps, each within the whole
    for record in records.values():
        assert 0 < record["eager_host_seconds"] < record["seconds"]
        assert 0 <= record["compiled_step_seconds"] < record["seconds"]
    assert compiled_run["compiled_step_seconds"] > 0 and records[False]["compiled_step_seconds"] == 0
    assert decode.stop_token_ids(loaded.tokenizer, loaded.model)   # the task ran with real stop tokens
