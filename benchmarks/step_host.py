"""The host time of a compiled decode step outside its forward, on the CPU.

On a GPU a compiled step is one CUDA graph replay, so the Python around it (filling the static
inputs, moving the cache's length, switching the model's attention) is time the GPU waits for:
at 150 tokens/s a step has 6.7 ms in all. This times `CompiledStep.step` with the compiled
function replaced by one that returns its token at once, so what is left is exactly that Python,
for a model with the published shapes' layer count (28) and a 2-row guided step.

    .venv/bin/python benchmarks/step_host.py [--layers 28] [--steps 2000] [--repeats 5]

Run it against another checkout of the engine (e.g. `git archive <commit> engine | tar -x -C DIR`)
with PYTHONPATH=DIR to compare before and after side by side. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))   # after PYTHONPATH: another engine may come first


def measure(layers: int, steps: int, repeats: int) -> dict:
    import torch

    import engine
    from engine.generation import decode
    from engine.generation.compiled import CompiledStep
    from engine.generation.kv import empty_kv
    from engine.generation.random_models import random_model

    model = random_model("tiny", device="cpu", dtype="fp32", layers=layers).model
    kv = empty_kv(model, 2, 64)
    decode.feed(model, kv, [1, 2, 3, 4, 5])
    stepper = CompiledStep(model, 2, 3.0, compile=False)
    token = torch.zeros((), dtype=torch.long)
    forward = stepper.function
    stepper.function = lambda *args: token   # the forward's place: a graph replay costs the host one launch
    stepper.step(kv, 7)                      # the first step moves the cache into the static buffers
    per_step = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            stepper.step(kv, 7)
            if kv.length + 2 > stepper.capacity:
                decode.crop(kv, 6)   # stay in one bucket: a move to a bigger one is not per-step work
        per_step.append((time.perf_counter() - start) / steps * 1e6)
    stepper.function = forward
    return {"benchmark": "step_host", "engine": str(Path(engine.__file__).resolve().parent), "layers": layers,
            "rows": 2, "steps": steps, "repeats": repeats, "host_us_per_step": round(statistics.median(per_step), 1),
            "host_us_per_step_min": round(min(per_step), 1), "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=28)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(json.dumps(measure(args.layers, args.steps, args.repeats)))


if __name__ == "__main__":
    main()
