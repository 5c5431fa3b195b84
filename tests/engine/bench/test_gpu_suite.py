"""The GPU suite's plans (benchmarks/gpu/suite.py): a GPU machine is lent for minutes, so a plan must
fit its box and every part must be one the suite runs; a typo is refused on the CPU, before a
GPU second is spent."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks" / "gpu"))

import suite  # noqa: E402


@pytest.mark.parametrize("plan", [suite.PLAN, suite.DRY_PLAN])
def test_every_planned_part_is_one_the_suite_runs(plan):
    assert plan[0][0] == "env"
    for part, seconds in plan:
        assert suite.part_problem(part) == "", part
        assert seconds > 0


def test_the_default_plan_fits_eight_minutes():
    # the parent scales the parts to its budget; the wheels' install and the parent add ~20 s
    assert sum(seconds for _, seconds in suite.PLAN) <= 460


def test_parts_are_checked_before_the_gpu_starts():
    plan = suite.parse_parts("env=15,kernel:qwen2.5-coder-7b=80,replay:qwen2.5-coder-1.5b:nf4:compile=160")
    assert plan == [("env", 15.0), ("kernel:qwen2.5-coder-7b", 80.0), ("replay:qwen2.5-coder-1.5b:nf4:compile", 160.0)]
    for bad in ("shape:qwen2.5-coder-7b=110",            # no precision
                "shape:qwen2.5-coder-7b:int4=110",       # unknown precision
                "rows:qwen-7b=80",                        # unknown shape
                "mem:tiny:bf16:compile=20",               # compile is for replay only
                "replay:tiny:bf16=abc"):                  # seconds not a number
        with pytest.raises(SystemExit) as refused:
            suite.parse_parts(bad)
        assert "--parts:" in str(refused.value)


def test_the_host_sampler_sees_work_in_other_threads():
    """Samples taken by hand (the timer thread's timing depends on who holds the GIL): a pool
    worker busy in one function is seen there, under the pool's name, and the main thread's stack
    is counted inclusively."""
    import threading
    import time

    from host_profile import HostSampler

    stop = threading.Event()

    def spin_in_a_worker():
        while not stop.is_set():
            sum(range(1000))

    def sample_from_main(sampler, times):
        for _ in range(times):
            time.sleep(0.001)
            sampler.sample()

    worker = threading.Thread(target=spin_in_a_worker, name="pool_0")
    sampler = HostSampler()
    sampler.seconds = 1.0
    worker.start()
    try:
        sample_from_main(sampler, 20)
    finally:
        stop.set()
        worker.join()
    report = sampler.report()
    assert report["samples"] == 20
    by_where = {(thread, where): ms for thread, where, ms in report["self_ms"]}
    assert by_where[("pool", "tests/engine/bench/test_gpu_suite.py:spin_in_a_worker")] >= 500   # >= 10 of 20
    main = dict(report["main_inclusive_ms"])
    assert main.get("tests/engine/bench/test_gpu_suite.py:sample_from_main") is None   # the sampler's own thread is skipped
