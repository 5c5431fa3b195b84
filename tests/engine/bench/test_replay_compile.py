"""`egcfg bench replay --compile` (engine/bench/replay.py): the guided steps go through the compiled
step (inductor on the CPU) and the replay commits the same lines as the eager one."""

from __future__ import annotations

import pytest
import torch

from engine.bench import replay


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_compiled_replay_commits_the_same_lines_as_eager(data_dir, dtype, monkeypatch):
    from engine.bench.accuracy import load_benchmark
    from engine.execution.executor import Executor
    from engine.generation import compiled, decode
    from engine.generation.random_models import random_model

    steps = []
    real_step = compiled.CompiledStep.step
    monkeypatch.setattr(compiled.CompiledStep, "step", lambda self, kv, token, gamma=None: steps.append(
        (kv.rows, self.capacity)) or real_step(self, kv, token, gamma))
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
    # per agent, the same lines in the same order (agents interleave differently: a compiled step
    # runs in place, not batched with the other agents' steps)
    assert lines[False] and sorted(lines[True]) == sorted(lines[False])
    for agent in {line[0] for line in lines[False]}:
        assert [line for line in lines[True] if line[0] == agent] == [line for line in lines[False] if line[0] == agent]
    assert records[True]["agents"] == records[False]["agents"] == ["complete"] * 3
    assert steps and {rows for rows, _ in steps} <= {1, 2}   # the compiled step ran (guided pairs, gamma-0 rows)
    # compiled once per row count and bucket, not once per decoding (3 agents, many lines each),
    # and every compiled step was counted as a forward
    compiles = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert 0 < compiles <= len({(rows, capacity) for rows, capacity in steps if capacity})
    compiled_run = records[True]
    assert compiled_run["compiled_steps"] == len(steps)
    assert compiled_run["forwards"] == compiled_run["eager_forwards"] + len(steps)
    # where the time went: issuing eager forwards and the compiled steps, each within the whole
    for record in records.values():
        assert 0 < record["eager_host_seconds"] < record["seconds"]
        assert 0 <= record["compiled_step_seconds"] < record["seconds"]
    assert compiled_run["compiled_step_seconds"] > 0 and records[False]["compiled_step_seconds"] == 0

