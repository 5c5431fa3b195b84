"""Where a process's host time goes, across all its threads: a sampling profiler for the GPU suite.

On the H200 a compiled replay line took 168-211 ms, of which the forwards, compiled steps and the
executor account for ~80-120; the rest is the engine's own Python and its waits, spread over the
agents' loop and the sandbox pool's threads (cProfile sees one thread only). Every `interval`
seconds a background thread reads every other thread's stack (sys._current_frames) and counts the
function on top (self) and every function on the stack (inclusive), by thread name.

    with HostSampler() as sampler:
        run_something()
    sampler.report()   # {"samples": .., "self_ms": [[thread, function, ms], ..], "main_inclusive_ms": [...]}
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


_NAMES: dict = {}   # code object -> its name: a sample must not touch the file system (each call
                    # would give up the GIL, and under contention wait long to get it back)
_ROOT_PREFIX = str(ROOT) + "/"


def describe(frame) -> str:
    """`path:function` with the path shortened to the repository or the installed package."""
    code = frame.f_code
    name = _NAMES.get(code)
    if name is None:
        path = code.co_filename
        for marker in ("site-packages/", "dist-packages/"):
            if marker in path:
                path = path.split(marker, 1)[1]
                break
        else:
            path = path[len(_ROOT_PREFIX):] if path.startswith(_ROOT_PREFIX) else path.rsplit("/", 1)[-1]
        name = _NAMES[code] = f"{path}:{code.co_name}"
    return name


class HostSampler:
    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.samples = 0
        self.self_counts: Counter = Counter()
        self.inclusive: Counter = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="egcfg-host-sampler", daemon=True)
        self.seconds = 0.0

    def __enter__(self) -> "HostSampler":
        self._started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.seconds = time.perf_counter() - self._started

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        """One look at every other thread's stack. (A thread busy in Python holds the GIL between
        switch intervals, so under contention samples come less often than `interval`.)"""
        me = threading.get_ident()
        names = {thread.ident: thread.name for thread in threading.enumerate()}
        self.samples += 1
        for ident, frame in sys._current_frames().items():
            if ident == me:
                continue
            # thread pools name their workers "<prefix>_<n>": one row for the pool
            thread = names.get(ident, "?").rsplit("_", 1)[0]
            self.self_counts[(thread, describe(frame))] += 1
            seen = set()
            while frame is not None:
                key = (thread, describe(frame))
                if key not in seen:
                    seen.add(key)
                    self.inclusive[key] += 1
                frame = frame.f_back

    def report(self, top: int = 25, chain: int = 40) -> dict:
        """`self_ms`: the functions on top of a stack, every thread (waits included: a pool worker
        waiting for work shows as threading.py:wait); `main_inclusive_ms`: the main thread's
        functions by time on its stack, the engine's loop and what it calls."""
        each_ms = 1000 * self.seconds / max(self.samples, 1)
        main = Counter({where: count for (thread, where), count in self.inclusive.items() if thread == "MainThread"})
        return {"samples": self.samples, "seconds": round(self.seconds, 2), "interval_ms": 1000 * self.interval,
                "self_ms": [[thread, where, round(count * each_ms, 1)]
                            for (thread, where), count in self.self_counts.most_common(top)],
                "main_inclusive_ms": [[where, round(count * each_ms, 1)] for where, count in main.most_common(chain)]}
