"""Our NF4 GEMV (engine/generation/nf4_gemv.py) on the CPU: the reference dequantization against
bitsandbytes, the Triton kernel under the Triton interpreter (a subprocess: TRITON_INTERPRET must be
set before triton is imported), the op's compiled capture, and use_nf4_gemv's switching and routing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

bnb = pytest.importorskip("bitsandbytes")
from bitsandbytes import functional as bnb_functional  # noqa: E402

from engine.generation import nf4_gemv  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]


def quantized(n: int, k: int, nested: bool, dtype=torch.bfloat16, seed: int = 0, blocksize: int = 64):
    """A weight as bitsandbytes quantizes it: .data packed, .quant_state."""
    generator = torch.Generator().manual_seed(seed)
    dense = torch.randn(n, k, generator=generator).to(dtype)
    packed, state = bnb_functional.quantize_4bit(dense, blocksize=blocksize, quant_type="nf4",
                                                 compress_statistics=nested)
    return SimpleNamespace(data=packed, quant_state=state)


# --- the reference dequantization ------------------------------------------------------------------

@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize("n,k", [(1, 64), (7, 192), (33, 3584), (3, 18944), (17, 8960)])
def test_reference_dequantization_is_bitsandbytes_bit_for_bit(nested, n, k):
    weight = quantized(n, k, nested)
    assert weight.quant_state.nested == nested
    expected = bnb_functional.dequantize_4bit(weight.data, weight.quant_state)
    ours = nf4_gemv.nf4_dequantize(weight)
    assert ours.dtype == expected.dtype == torch.bfloat16 and ours.shape == (n, k)
    assert torch.equal(ours, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_reference_dequantization_other_dtypes_and_blocksize(dtype):
    weight = quantized(9, 512, True, dtype=dtype, blocksize=128)
    assert torch.equal(nf4_gemv.nf4_dequantize(weight), bnb_functional.dequantize_4bit(weight.data, weight.quant_state))


def test_params4bit_weight_reads_the_same_as_functional():
    dense = torch.randn(5, 256, generator=torch.Generator().manual_seed(3), dtype=torch.bfloat16)
    params = bnb.nn.Params4bit(dense, requires_grad=False, quant_type="nf4").to("cpu")
    expected = bnb_functional.dequantize_4bit(params.data, params.quant_state)
    assert torch.equal(nf4_gemv.nf4_dequantize(params), expected)


def test_unreadable_weights_say_why():
    dense = torch.randn(4, 128)
    packed, state = bnb_functional.quantize_4bit(dense, quant_type="fp4")
    with pytest.raises(ValueError, match="fp4"):
        nf4_gemv.nf4_tensors(SimpleNamespace(data=packed, quant_state=state))
    packed, state = bnb_functional.quantize_4bit(torch.randn(4, 96), quant_type="nf4")
    with pytest.raises(ValueError, match="blocksize 64 with 96 input features"):
        nf4_gemv.nf4_tensors(SimpleNamespace(data=packed, quant_state=state))


@pytest.mark.parametrize("config", nf4_gemv.CANDIDATE_CONFIGS + nf4_gemv.SWEEP_ONLY_CONFIGS, ids=lambda c: c.name)
@pytest.mark.parametrize("n,k,blocksize", [(512, 3584, 64), (3584, 3584, 64), (3584, 18944, 64), (18944, 3584, 64),
                                           (17, 64, 64), (40, 1280, 64), (33, 1024, 256)])
def test_split_plan_covers_every_k_step_once(n, k, blocksize, config):
    row_blocks, splits, per_split = nf4_gemv.split_plan(n, k, config, blocksize)
    steps = -(-k // max(config.block_k, blocksize))
    assert row_blocks * config.block_n >= n > (row_blocks - 1) * config.block_n
    assert splits * per_split >= steps > (splits - 1) * per_split   # no split is empty
    assert row_blocks * splits >= config.programs / 2 or per_split == 1   # enough programs, or 1 step each


# --- the Triton kernel under the interpreter ----------------------------------------------------------

INTERPRETER_CASES = [  # (name, n, k, rows, nested, bias, input dtype, blocksize, block_n, block_k, programs, interleave)
    (f"{name}-m{rows}", n, k, rows, nested, bias, dtype, blocksize, block_n, block_k, programs, interleave)
    for name, n, k, nested, bias, dtype, blocksize, block_n, block_k, programs, interleave in [
        ("strided-odd-n-k-tail-nested-bias-bf16", 17, 320, True, True, "bfloat16", 64, 16, 256, 512, False),
        ("strided-unsplit-plain-fp32", 19, 768, False, False, "float32", 64, 16, 256, 1, False),
        ("odd-n-k-tail-nested-bias-bf16", 17, 320, True, True, "bfloat16", 64, 16, 256, 512, True),
        ("split-k-plain-fp32", 40, 1280, False, False, "float32", 64, 16, 256, 512, True),
        ("one-block-nested-fp32-bias", 3, 64, True, True, "float32", 64, 16, 256, 512, True),
        ("blocksize128-bf16", 33, 640, False, False, "bfloat16", 128, 16, 256, 512, True),
        ("blocksize256-wider-than-a-step-bf16", 9, 768, True, True, "bfloat16", 256, 16, 128, 512, True),
        ("many-scales-nested-bf16", 5, 4736, True, False, "bfloat16", 64, 16, 256, 512, True),
        ("sweep-bn8-bk512-nested-bf16", 21, 1600, True, True, "bfloat16", 64, 8, 512, 512, True),   # nf4_gemv.py --sweep
        ("sweep-bn32-bk512-plain-fp32", 45, 1088, False, False, "float32", 64, 32, 512, 512, True),
        ("tall-bn128-bk128-nested-bias-bf16", 130, 704, True, True, "bfloat16", 64, 128, 128, 1024, True),
        ("unsplit-k-tail-nested-bias-bf16", 40, 1344, True, True, "bfloat16", 64, 16, 256, 1, True),   # y written directly
        ("unsplit-plain-fp32", 19, 768, False, False, "float32", 64, 16, 256, 1, True),
    ]
    for rows in (1, 2, 3, 4)
]

INTERPRETER_SCRIPT = """
import json, sys, torch
from types import SimpleNamespace
from bitsandbytes import functional as F
from engine.generation import nf4_gemv as G
G.KERNEL_DEVICES = ("cuda", "cpu")      # the op launches the (interpreted) kernel on CPU tensors
results = {}
for name, n, k, rows, nested, with_bias, dtype, blocksize, block_n, block_k, programs, interleave in json.loads(sys.argv[1]):
    config = G.KernelConfig(block_n=block_n, block_k=block_k, programs=programs, interleave=interleave)
    g = torch.Generator().manual_seed(n * k + rows)
    dtype = getattr(torch, dtype)
    packed, state = F.quantize_4bit(torch.randn(n, k, generator=g, dtype=torch.bfloat16), blocksize=blocksize,
                                    quant_type="nf4", compress_statistics=nested)
    weight = SimpleNamespace(data=packed, quant_state=state)
    tensors = G.nf4_tensors(weight)._replace(config=config)
    x = torch.randn(rows, k, generator=g).to(dtype)
    bias = torch.randn(n, generator=g).to(dtype) if with_bias else None
    got = G.nf4_linear(x, tensors, bias)
    reference = x.float() @ G.nf4_dequantize(weight, torch.float32).t()
    if bias is not None:
        reference = reference + bias.float()
    splits = G.split_plan(n, k, config, blocksize)[1]   # with this case's block sizes
    error = ((got.float() - reference).abs() / reference.abs().clamp(min=1.0)).max().item()
    results[name] = dict(error=error, dtype=str(got.dtype), shape=list(got.shape), splits=splits,
                         interpreted=type(G._nf4_gemv_kernel).__name__)
print(json.dumps(results))
"""


def _run(script: str, *args: str, interpret: bool) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def interpreted():
    pytest.importorskip("triton")
    return json.loads(_run(INTERPRETER_SCRIPT, json.dumps(INTERPRETER_CASES), interpret=True))


@pytest.mark.parametrize("case", INTERPRETER_CASES, ids=[case[0] for case in INTERPRETER_CASES])
def test_interpreted_kernel_equals_reference_dequantize_and_matmul(interpreted, case):
    name, n, _k, rows, _nested, _bias, dtype = case[:7]
    result = interpreted[name]
    assert result["interpreted"] == "InterpretedFunction"   # the Triton kernel ran, not the torch fallback
    assert result["shape"] == [rows, n] and result["dtype"] == f"torch.{dtype}"
    # fp32: only the summation order differs; bf16: one rounding of the output, a whole ulp (2^-7
    # relative at worst) since the interpreter truncates (the GPU rounds to nearest, Triton's default)
    assert result["error"] <= (2e-5 if dtype == "float32" else 2 ** -7)


def test_interpreter_cases_split_k_and_not(interpreted):
    splits = {name: result["splits"] for name, result in interpreted.items()}
    assert splits["split-k-plain-fp32-m1"] > 1 and splits["odd-n-k-tail-nested-bias-bf16-m2"] > 1
    assert splits["unsplit-k-tail-nested-bias-bf16-m3"] == 1 == splits["unsplit-plain-fp32-m4"]


CAPTURE_SCRIPT = """
import json, logging, torch
from types import SimpleNamespace
from bitsandbytes import functional as F
from torch._dynamo.backends.common import aot_autograd
from engine.generation import nf4_gemv as G
logging.disable(logging.WARNING)   # without a GPU driver torch cannot analyse the kernel's writes and says so
G.KERNEL_DEVICES = ("cuda", "cpu")
packed, state = F.quantize_4bit(torch.randn(40, 512, dtype=torch.bfloat16), quant_type="nf4")
tensors = G.nf4_tensors(SimpleNamespace(data=packed, quant_state=state))
bias = torch.randn(40, dtype=torch.bfloat16)
graphs = []
class Captured(Exception):
    pass
def keep(graph, inputs):
    graphs.append(graph.code)
    raise Captured()   # the graph would launch the kernel, and this machine has no GPU
G.nf4_gemv_op()
step = torch.compile(lambda x: G.nf4_linear(x, tensors, bias), fullgraph=True, backend=aot_autograd(fw_compiler=keep))
try:
    step(torch.randn(2, 512, dtype=torch.bfloat16))
except Exception as error:
    assert "Captured" in repr(error) or isinstance(error, Captured), repr(error)
print(json.dumps(graphs))
"""


def test_compile_captures_the_kernel_in_one_graph():
    """fullgraph=True fails on any graph break; the captured graph holds the kernel's launch."""
    pytest.importorskip("triton")
    graphs = json.loads(_run(CAPTURE_SCRIPT, interpret=False))
    assert len(graphs) == 1
    assert graphs[0].count("triton_kernel_wrapper_functional(") == 2   # the product, then the split-K sum
    assert "aten.sum" not in graphs[0]


# --- use_nf4_gemv ----------------------------------------------------------------------------------

class Tiny(torch.nn.Module):
    """Two NF4 layers (one with a bias) and a bf16 head, as quantize_nf4 leaves a model."""

    def __init__(self):
        super().__init__()
        from engine.generation.random_models import quantize_nf4

        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Linear(128, 192), torch.nn.Linear(192, 64, bias=False))
        self.head = torch.nn.Linear(64, 8).bfloat16()
        quantize_nf4(self, torch.bfloat16)

    def get_output_embeddings(self):
        return self.head

    def forward(self, x):
        return self.head(self.body(x))


def _classes(model) -> list[str]:
    return [type(module).__name__ for module in model.body]


def test_on_cpu_it_is_a_no_op_with_the_reason():
    model = Tiny()
    report = nf4_gemv.use_nf4_gemv(model)
    assert (report.kernel, report.layers, report.switched) == ("bitsandbytes", 2, 0)
    assert "CUDA" in report.reason
    assert _classes(model) == ["Linear4bit", "Linear4bit"]


def test_each_missing_piece_is_named(monkeypatch):
    model = Tiny()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)   # past the first reason
    assert "on cpu, not on a CUDA device" in nf4_gemv.environment_problem(model)
    monkeypatch.setattr(bnb, "__version__", "0.44.1")
    assert nf4_gemv.environment_problem(model) == "bitsandbytes 0.44.1 is older than 0.45"
    monkeypatch.setattr(nf4_gemv, "triton", None)
    assert nf4_gemv.environment_problem(model) == "triton is not installed"
    report = nf4_gemv.use_nf4_gemv(model)
    assert (report.switched, report.reason) == (0, "triton is not installed")


def test_a_model_without_4bit_layers_says_so():
    report = nf4_gemv.use_nf4_gemv(torch.nn.Linear(64, 64))
    assert report.switched == 0 and "no bitsandbytes 4-bit layers" in report.reason


@pytest.fixture
def anywhere(monkeypatch):
    """Pretend this machine can run the kernel (the op then runs its reference on CPU tensors)."""
    monkeypatch.setattr(nf4_gemv, "environment_problem", lambda model: "")


def test_a_failed_check_switches_nothing(anywhere, monkeypatch):
    model = Tiny()
    monkeypatch.setattr(nf4_gemv, "check_layer", lambda layer: 0.25)
    report = nf4_gemv.use_nf4_gemv(model)
    assert (report.kernel, report.switched, report.max_error) == ("bitsandbytes", 0, 0.25)
    assert "differs from bitsandbytes" in report.reason
    assert _classes(model) == ["Linear4bit", "Linear4bit"]
    assert not any(hasattr(layer, "_egcfg_nf4") for layer in model.body)

    def broken(layer):
        raise RuntimeError("no kernel image is available\nsecond line")
    monkeypatch.setattr(nf4_gemv, "check_layer", broken)
    report = nf4_gemv.use_nf4_gemv(model)
    assert report.switched == 0 and report.reason.endswith("(RuntimeError: no kernel image is available)")
    assert _classes(model) == ["Linear4bit", "Linear4bit"]


def test_a_layer_whose_forward_is_hooked_keeps_bitsandbytes(anywhere):
    model = Tiny()
    hooked = model.body[1]
    hooked.forward = lambda x: bnb.nn.Linear4bit.forward(hooked, x)   # as accelerate's hooks wrap it
    report = nf4_gemv.use_nf4_gemv(model)
    assert report.switched == 0 and "replaced on the layer itself" in report.reason
    assert _classes(model) == ["Linear4bit", "Linear4bit"]


def test_the_real_check_catches_a_kernel_that_reads_the_nibbles_swapped(anywhere, monkeypatch):
    def swapped(t):
        flipped = ((t.packed & 15) << 4) | (t.packed >> 4)
        return dequantize(t._replace(packed=flipped))
    dequantize = nf4_gemv.dequantize_tensors
    monkeypatch.setattr(nf4_gemv, "dequantize_tensors", swapped)
    model = Tiny()
    report = nf4_gemv.use_nf4_gemv(model)
    assert report.switched == 0 and report.max_error > 0.1 and "differs from bitsandbytes" in report.reason
    assert _classes(model) == ["Linear4bit", "Linear4bit"]


def test_switching_checks_against_bitsandbytes_and_is_idempotent(anywhere):
    model = Tiny()
    report = nf4_gemv.use_nf4_gemv(model)
    assert (report.kernel, report.layers, report.switched, report.reason) == ("egcfg", 2, 2, "")
    assert 0 < report.max_error <= 2 ** -7   # a bf16 ulp or two: bitsandbytes rounds W to bf16 first
    assert _classes(model) == ["NF4GemvLinear4bit", "NF4GemvLinear4bit"]
    again = nf4_gemv.use_nf4_gemv(model)
    assert again == report and _classes(model) == ["NF4GemvLinear4bit", "NF4GemvLinear4bit"]
    assert type(model.body[0]).__mro__[1] is bnb.nn.Linear4bit


def test_small_inputs_go_to_the_kernel_and_prefills_to_bitsandbytes(anywhere, monkeypatch):
    model = Tiny()
    nf4_gemv.use_nf4_gemv(model)
    calls = []
    kernel = nf4_gemv.triton_gemv

    def launcher(x, tensors, bias=None, launch=None):   # the kernel's place, filled by the reference
        calls.append(("kernel", tuple(x.shape)))
        return nf4_gemv.reference_gemv(x, tensors, bias)
    bnb_forward = bnb.nn.Linear4bit.forward

    def bitsandbytes(layer, x):
        calls.append(("bitsandbytes", tuple(x.shape)))
        return bnb_forward(layer, x)
    monkeypatch.setattr(nf4_gemv, "KERNEL_DEVICES", ("cuda", "cpu"))
    monkeypatch.setattr(nf4_gemv, "triton_gemv", launcher)
    monkeypatch.setattr(bnb.nn.Linear4bit, "forward", bitsandbytes)
    assert kernel is not launcher
    with torch.no_grad():
        for shape in [(1, 1, 128), (2, 1, 128), (4, 128), (1, 5, 128), (2, 3, 128)]:
            calls.clear()
            x = torch.randn(*shape, dtype=torch.bfloat16)
            y = model(x)
            kind = "kernel" if x.numel() // 128 <= nf4_gemv.MAX_ROWS else "bitsandbytes"
            rows = x.numel() // 128
            assert [c[0] for c in calls] == [kind, kind]
            if kind == "kernel":
                assert [c[1] for c in calls] == [(rows, 128), (rows, 192)]
            assert y.shape == (*shape[:-1], 8) and y.dtype == torch.bfloat16
            expected = model.head(bnb_forward(model.body[1], bnb_forward(model.body[0], x)))
            assert (y.float() - expected.float()).abs().max() <= 0.02 * expected.float().abs().max()


# --- auto: per weight shape, the faster kernel as timed --------------------------------------------

FAST, SLOW = nf4_gemv.CANDIDATE_CONFIGS[2], nf4_gemv.CANDIDATE_CONFIGS[0]


def fake_timer(table):
    """A timer reading microseconds from `table[(out features, config name or "bitsandbytes")]`, and
    recording what it was asked (on a GPU, time_layers replays the layers from a CUDA graph)."""
    asked = []

    def timer(layers, config):
        name = "bitsandbytes" if config is None else config.name
        asked.append((layers[0].out_features, len(layers), name))
        value = table.get((layers[0].out_features, name), 100.0)
        if isinstance(value, Exception):
            raise value
        return value
    timer.asked = asked
    return timer


def test_choose_configs_takes_the_fastest_only_where_it_beats_bitsandbytes():
    layers = {"a": [SimpleNamespace(out_features=1)] * 3, "b": [SimpleNamespace(out_features=2)]}
    table = {(1, "bitsandbytes"): 10.0, (1, SLOW.name): 8.0, (1, FAST.name): 6.0,
             (2, "bitsandbytes"): 10.0, (2, SLOW.name): 9.8, (2, FAST.name): RuntimeError("out of resources\nmore")}
    timer = fake_timer(table)
    plan, times = nf4_gemv.choose_configs(layers, (SLOW, FAST), timer)
    assert plan == {"a": FAST, "b": nf4_gemv.BITSANDBYTES}   # 9.8 is within the noise margin of 10
    assert times["a"] == {"bitsandbytes": 10.0, SLOW.name: 8.0, FAST.name: 6.0}
    assert times["b"][FAST.name] == "RuntimeError: out of resources" and times["b"][SLOW.name] == 9.8
    assert [(n, count) for n, count, _ in timer.asked] == [(1, 3)] * 3 + [(2, 1)] * 3   # every layer of a shape at once


def test_auto_switches_only_the_shapes_where_ours_is_faster(anywhere):
    model = Tiny()   # body[0]: 192x128 with a bias, body[1]: 64x192
    timer = fake_timer({(192, "bitsandbytes"): 20.0, (192, FAST.name): 5.0, (64, "bitsandbytes"): 3.0})
    report = nf4_gemv.use_nf4_gemv(model, choose=True, configs=(SLOW, FAST), timer=timer)
    assert (report.kernel, report.layers, report.switched, report.reason) == ("mixed", 2, 1, "")
    assert _classes(model) == ["NF4GemvLinear4bit", "Linear4bit"]
    assert model.body[0]._egcfg_nf4.config == FAST and not hasattr(model.body[1], "_egcfg_nf4")
    assert report.shapes["192x128"] == {"layers": 1, "kernel": "egcfg", "config": FAST.name, "us_per_call": {
        "bitsandbytes": 20.0, SLOW.name: 100.0, FAST.name: 5.0}}
    assert report.shapes["64x192"]["kernel"] == "bitsandbytes" and report.shapes["64x192"]["config"] is None
    assert 0 < report.max_error <= 2 ** -7   # the chosen configuration was checked against bitsandbytes
    assert nf4_gemv.use_nf4_gemv(model, choose=True, timer=timer) is report and len(timer.asked) == 6   # idempotent
    x = torch.randn(2, 1, 128, dtype=torch.bfloat16)
    with torch.no_grad():
        expected = model.head(bnb.nn.Linear4bit.forward(model.body[1], bnb.nn.Linear4bit.forward(model.body[0], x)))
        assert (model(x).float() - expected.float()).abs().max() <= 0.02 * expected.float().abs().max()


def test_auto_keeps_bitsandbytes_when_it_wins_everywhere_or_timing_fails(anywhere):
    model = Tiny()
    report = nf4_gemv.use_nf4_gemv(model, choose=True, configs=(SLOW,), timer=fake_timer({}))   # all 100 us
    assert (report.kernel, report.switched, report.max_error) == ("bitsandbytes", 0, None)
    assert report.reason == "bitsandbytes' kernel was faster for every weight shape"
    assert set(report.shapes) == {"192x128", "64x192"} and _classes(model) == ["Linear4bit", "Linear4bit"]
    broken = fake_timer({(192, "bitsandbytes"): RuntimeError("CUDA graph capture failed")})
    report = nf4_gemv.use_nf4_gemv(model, choose=True, timer=broken)
    assert report.switched == 0 and report.reason == "timing the kernels failed (RuntimeError: CUDA graph capture failed)"


def test_auto_drops_a_chosen_configuration_that_differs_from_bitsandbytes(anywhere, monkeypatch):
    model = Tiny()
    monkeypatch.setattr(nf4_gemv, "check_layer", lambda layer: 0.5 if layer.out_features == 192 else 0.001)
    timer = fake_timer({(192, FAST.name): 1.0, (64, FAST.name): 1.0})
    report = nf4_gemv.use_nf4_gemv(model, choose=True, configs=(FAST,), timer=timer)
    assert (report.kernel, report.switched, report.max_error) == ("mixed", 1, 0.5)
    assert "differs from bitsandbytes on a 192x128 layer by 0.5" in report.reason
    assert _classes(model) == ["Linear4bit", "NF4GemvLinear4bit"]


def test_a_compiled_step_through_the_op_has_no_graph_break(anywhere):
    """On CPU the op runs its reference; fullgraph=True raises on any graph break."""
    model = Tiny()
    nf4_gemv.use_nf4_gemv(model)
    x = torch.randn(2, 1, 128, dtype=torch.bfloat16)
    with torch.no_grad():
        eager = model(x)
        compiled = torch.compile(model, fullgraph=True, backend="inductor")(x)
    assert (compiled.float() - eager.float()).abs().max() <= 0.02 * eager.float().abs().max()


# --- the loaders and the benchmark flag -----------------------------------------------------------

def test_random_4bit_models_record_which_kernel_runs(anywhere):
    from engine.errors import UserError
    from engine.generation.random_models import random_model

    ours = random_model("tiny", device="cpu", dtype="bf16", quantization="4bit", nf4_kernel="egcfg")
    layers = len(nf4_gemv.four_bit_layers(ours.model))
    assert ours.nf4_kernel["kernel"] == "egcfg" and ours.nf4_kernel["switched"] == layers > 0
    theirs = random_model("tiny", device="cpu", dtype="bf16", quantization="4bit")   # the default
    assert theirs.nf4_kernel == {"kernel": "bitsandbytes", "layers": layers, "switched": 0, "max_error": None,
                                 "reason": "bitsandbytes' kernel was chosen", "shapes": {},
                                 "joined_projections": 4}  # 2 layers x (qkv, gate+up)
    assert not any(type(m) is nf4_gemv.gemv_linear_class() for m in theirs.model.modules())
    assert random_model("tiny", device="cpu", dtype="bf16").nf4_kernel is None   # not 4-bit
    with torch.no_grad():   # the switched model still runs a 2-row step and a prefill
        ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
        assert ours.model(input_ids=ids[:, :1]).logits.shape[:2] == (2, 1)
        assert ours.model(input_ids=ids).logits.shape[:2] == (2, 3)
    with pytest.raises(UserError, match="unknown NF4 kernel 'fast'"):
        random_model("tiny", device="cpu", dtype="bf16", quantization="4bit", nf4_kernel="fast")


def test_on_this_cpu_a_4bit_model_keeps_bitsandbytes_and_says_why():
    from engine.generation.random_models import random_model

    for kernel in ("egcfg", "auto"):
        loaded = random_model("tiny", device="cpu", dtype="bf16", quantization="4bit", nf4_kernel=kernel)
        assert loaded.nf4_kernel["kernel"] == "bitsandbytes" and "no CUDA device" in loaded.nf4_kernel["reason"]
        assert loaded.nf4_kernel["shapes"] == {}


def test_bench_speed_passes_the_flag_and_reports_the_kernel(monkeypatch, capsys):
    import argparse

    from engine.bench import speed

    parser = argparse.ArgumentParser()
    speed.add_arguments(parser)
    asked = {}

    def build(name, device, dtype, quantization="none", layers=None, nf4_kernel="bitsandbytes"):
        asked["nf4_kernel"] = nf4_kernel
        raise SystemExit(0)   # loading is all this test needs
    monkeypatch.setattr(speed, "random_model", build)
    args = parser.parse_args(["--random-config", "tiny", "--quantization", "4bit", "--nf4-kernel", "egcfg"])
    with pytest.raises(SystemExit):
        speed.main(args)
    assert asked == {"nf4_kernel": "egcfg"}
    assert parser.parse_args(["--random-config", "tiny"]).nf4_kernel == "bitsandbytes"


def test_the_kernels_tensors_reach_a_compiled_graph_as_static_inputs(anywhere):
    """Like parameters: CUDA graphs would otherwise copy each plain tensor input (the weights) every replay."""
    model = Tiny()
    nf4_gemv.use_nf4_gemv(model)
    inputs = {}

    ops = []

    def backend(graph, example_inputs):
        for node in graph.graph.nodes:
            if node.op == "placeholder":
                inputs[node.name] = node.meta.get("tensor_dict", {}).get("_dynamo_static_input_type")
            ops.append(str(node.target))
        return graph.forward
    with torch.no_grad():
        torch.compile(model, fullgraph=True, backend=backend)(torch.randn(2, 1, 128, dtype=torch.bfloat16))
    ours = {name: kind for name, kind in inputs.items() if "egcfg_nf4" in name}
    assert len(ours) == 10 and set(ours.values()) == {"unguarded"}   # 5 tensors x 2 layers
    assert inputs["l_x_"] is None
    assert sum("egcfg.nf4_gemv" in op for op in ops) == 2, ops   # compiled code calls the op, eager code its body


def test_the_kernel_benchmark_dry_run_prints_its_json():
    """benchmarks/nf4_gemv.py (the GPU comparison) runs its plumbing on the CPU."""
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "nf4_gemv.py"), "--dry-run", "--sweep"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert set(result["shapes"]) == {"q", "down"} and result["device"] == "cpu"
    for shape in result["shapes"].values():
        assert set(shape["rows"]) == {"1", "2", "3", "4"}
        assert all(row["max_error"] <= nf4_gemv.CHECK_TOLERANCE and row["egcfg_eager_us"] > 0
                   for row in shape["rows"].values())
    assert result["decoder_layer_graph_us"]["1"] == {"egcfg": None, "bitsandbytes": None}   # no CUDA graphs here
    assert list(result["shapes"]["q"]["sweep"]) == [config.name for config in   # what auto tries, and more
                                                    nf4_gemv.CANDIDATE_CONFIGS + nf4_gemv.SWEEP_ONLY_CONFIGS]


def test_the_sweep_summary_adds_a_decoder_layer_and_picks_the_fastest():
    import importlib.util

    spec = importlib.util.spec_from_file_location("nf4_gemv_bench", ROOT / "benchmarks" / "nf4_gemv.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    shapes = {"q": {"sweep": {"a": {1: 10.0, 2: 12.0, 4: 30.0}, "b": {1: 8.0, 2: 13.0, 4: "differs by 0.5"}}},
              "down": {"sweep": {"a": {1: 20.0, 2: 22.0, 4: 40.0}, "b": {1: 21.0, 2: 20.0, 4: 1.0}}}}
    summary = bench.sweep_summary(shapes)
    assert summary["decoder_layer_us"] == {"a": {1: 30.0, 2: 34.0, 4: 70.0}, "b": {1: 29.0, 2: 33.0, 4: None}}
    assert summary["fastest"] == {1: {"config": "b", "us": 29.0}, 2: {"config": "b", "us": 33.0},
                                  4: {"config": "a", "us": 70.0}}


def test_bench_replay_passes_the_flag(monkeypatch):
    import argparse

    from engine.bench import replay
    from engine.generation import random_models

    parser = argparse.ArgumentParser()
    replay.add_arguments(parser)
    asked = {}
    monkeypatch.setattr(random_models, "random_model", lambda *a, **kw: asked.update(kw) or "loaded")
    args = parser.parse_args(["mbpp", "--random-config", "tiny", "--quantization", "4bit",
                              "--nf4-kernel", "egcfg"])
    assert replay.load(args) == "loaded" and asked["nf4_kernel"] == "egcfg"
    assert parser.parse_args(["mbpp", "--random-config", "tiny"]).nf4_kernel == "bitsandbytes"


def test_a_checkpoint_loaded_in_4bit_by_transformers_switches_after_the_check(anywhere, tiny_model_dir):
    """transformers' bitsandbytes loading (BitsAndBytesConfig, statistics not nested, as real models
    are loaded): the kernel reads its layers and the check against bitsandbytes passes."""
    from engine.generation.models import load_model

    loaded = load_model(str(tiny_model_dir), device="cpu", quantization="4bit", dtype="bf16", nf4_kernel="egcfg")
    layers = nf4_gemv.four_bit_layers(loaded.model)
    assert layers and not any(layer.weight.quant_state.nested for layer in layers)
    report = loaded.nf4_kernel
    assert (report["kernel"], report["switched"], report["layers"]) == ("egcfg", len(layers), len(layers))
    assert 0 < report["max_error"] <= 2 ** -7
    with torch.no_grad():
        logits = loaded.model(input_ids=torch.tensor([[5, 6, 7], [8, 9, 10]])[:, -1:]).logits
    assert logits.shape[:2] == (2, 1) and torch.isfinite(logits).all()
