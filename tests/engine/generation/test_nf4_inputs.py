"""What the decode loop's steps give bitsandbytes' 4-bit matmul (NF4 random tiny model on the CPU).

bitsandbytes 0.50 picks its kernel from M = rows of the input (A.numel() // K): its CUDA dispatch
takes the fused kernel for M <= 4 and dequantizes the whole weight for a plain matmul otherwise.
A guided step must therefore reach it as [rows, 1, K], contiguous, in the compute dtype, so that
a 2-row step is M = 2, never a reshaped or upcast input."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("bitsandbytes")


def _gemm_inputs(function) -> list[tuple[tuple[int, ...], torch.dtype, bool]]:
    from torch.utils._python_dispatch import TorchDispatchMode

    seen = []

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if str(func).startswith("bitsandbytes.") and "4bit" in str(func) and args:
                seen.append((tuple(args[0].shape), args[0].dtype, args[0].is_contiguous()))
            return func(*args, **(kwargs or {}))

    with Recorder():
        function()
    return seen


@pytest.mark.parametrize("compile_step", [False, True])
def test_a_guided_step_reaches_bitsandbytes_as_two_contiguous_rows(compile_step):
    from engine.bench.speed import build_inputs
    from engine.generation import decode
    from engine.generation.compiled import CompiledStep
    from engine.generation.random_models import random_model

    torch.set_num_threads(1)
    loaded = random_model("tiny", device="cpu", dtype="bf16", quantization="4bit")
    model, tokenizer = loaded.model, loaded.tokenizer
    prompt, i_dyn, signal = build_inputs(tokenizer, 48, 12)
    with torch.inference_mode():
        dec = decode.start(model, tokenizer, prompt, i_dyn, gamma=3.0, def_indent=-1, max_new_tokens=16,
                           stop_ids=frozenset())
        decode.set_signal(dec, signal)
        if compile_step:   # the compiled step's eager twin (same function, not compiled): what it feeds
            stepper = CompiledStep(model, 2, 3.0, compile=False)
            seen = _gemm_inputs(lambda: stepper.step(dec.guided, dec.pending))
        else:
            seen = _gemm_inputs(lambda: decode.decode_one_token(model, dec.guided, dec.pending, 3.0))
    hidden = model.config.hidden_size
    assert seen, "no bitsandbytes 4-bit op ran"
    assert all(shape[:-1] == (2, 1) and dtype == torch.bfloat16 and contiguous for shape, dtype, contiguous in seen)
    assert {shape[-1] for shape, _, _ in seen} >= {hidden}
