"""Our NF4 matrix-vector product for decode steps of 1-4 rows (bitsandbytes' small-batch kernel
was measured at ~10x from memory bandwidth on an H200: benchmarks/gpu, rows part).

    report = use_nf4_gemv(model)       # every bitsandbytes Linear4bit: <= 4 rows through our kernel

The weight stays bitsandbytes' own: W [N, K] flattened row-major, two 4-bit codes a byte (the even
element in the high nibble), one absmax per `blocksize` consecutive elements; nested statistics keep
that absmax as uint8 codes with a second level: absmax = code2[q] * absmax2[block // blocksize2] + offset.
The dequantized element is code[q] * absmax in fp32, as bitsandbytes computes it; the product
accumulates in fp32 and is rounded once to the input's dtype (bitsandbytes rounds W to it first).

`egcfg::nf4_gemv` is a torch.library.triton_op, so torch.compile (fullgraph, CUDA graphs) captures
the kernel; on other devices the op runs the pure-torch reference, which is also the tests' oracle.
"""

from __future__ import annotations

import functools
import statistics
from dataclasses import asdict, dataclass, field
from typing import Callable, NamedTuple, Optional

import torch

from engine.errors import error_line

MAX_ROWS = 4            # larger inputs (prefills) keep bitsandbytes' path
CHECK_TOLERANCE = 2 ** -5   # max |ours - bitsandbytes| / max |bitsandbytes|: 4 bf16 ulps near the max (7B-shape
# layers on the CPU differed by 0.003-0.0056, one ulp; a wrong nibble, scale or row is off by order 1)
SUM_BLOCK = 1024        # outputs per program of the split-K sum
KERNEL_DEVICES = ("cuda",)   # where the op launches the kernel; tests add "cpu" under TRITON_INTERPRET=1


@dataclass(frozen=True)
class KernelConfig:
    """How the kernel tiles one weight. The kernel is memory-bound, so what matters is bytes in
    flight and load instructions a byte: a step reads `block_n` rows x `block_k` elements (block_k/2
    contiguous bytes a row); every element costs one lookup of its NF4 level, and each input value
    loaded serves the rows a thread holds (more when block_n is larger than the warps' footprint).
    Few output features (k/v: 512 -> 32 row blocks) would leave most SMs idle, so K is split until
    there are about `programs` programs, and a second kernel adds the fp32 partial sums in a fixed
    order (no atomics: the same input gives the same bits, eager and compiled). Which configuration
    is fastest depends on the GPU and the shape: `choose_configs` times them on the model's own layers."""
    block_n: int = 16
    block_k: int = 256
    warps: int = 4
    stages: int = 3
    programs: int = 512
    interleave: bool = True   # False: the input read as even and odd strides (the kernel measured in Nov 2026)

    @property
    def name(self) -> str:
        return (f"bn{self.block_n}-bk{self.block_k}-w{self.warps}-s{self.stages}-p{self.programs}"
                + ("" if self.interleave else "-strided"))


DEFAULT_CONFIG = KernelConfig()
# What choose_configs tries on a GPU (each is one Triton compile per row count, ~1 s): taller blocks
# reuse each loaded input value across more rows; more programs keep more bytes in flight. Why the
# interleaved layout should be faster than the one measured (unmeasured until the next GPU run):
# per 512 bytes of weights a warp issues 32 level lookups either way, but the strided input took
# 64 scalar loads for 2 rows against 8 vector loads now, so the load instructions a byte fall from
# ~97 to ~41 per 512 bytes.
CANDIDATE_CONFIGS = (
    DEFAULT_CONFIG,
    KernelConfig(block_n=32, block_k=256, warps=4, stages=3, programs=1024),
    KernelConfig(block_n=64, block_k=256, warps=4, stages=3, programs=1024),
    KernelConfig(block_n=64, block_k=256, warps=8, stages=3, programs=1024),
    KernelConfig(block_n=32, block_k=512, warps=8, stages=2, programs=1024),
    KernelConfig(block_n=8, block_k=512, warps=4, stages=3, programs=1024),   # short and wide, as bitsandbytes tiles
)
# The kernel benchmark's sweep (benchmarks/nf4_gemv.py --sweep) times these too; `auto` does not,
# to keep a load's Triton compiles (one per configuration, shape variant and row count) few.
SWEEP_ONLY_CONFIGS = (
    KernelConfig(interleave=False),   # the layout measured on the H200: a reference point for the others
    KernelConfig(block_n=128, block_k=128, warps=8, stages=4, programs=1024),
    KernelConfig(block_n=32, block_k=256, warps=4, stages=4, programs=2048),   # more programs: more bytes in flight
)


class NF4Tensors(NamedTuple):
    """What the kernel reads of one bitsandbytes NF4 weight (references, no copies)."""
    packed: torch.Tensor    # uint8 [N*K/2]
    absmax: torch.Tensor    # fp32 [N*K/blocksize], or uint8 codes when nested
    code: torch.Tensor      # fp32 [16]: the NF4 levels
    absmax2: torch.Tensor   # fp32 second-level scales (nested), else absmax again (unused)
    code2: torch.Tensor     # fp32 [256] second-level codes (nested), else code again (unused)
    offset: float           # added to the nested absmax
    n: int
    k: int
    blocksize: int
    blocksize2: int
    nested: bool
    config: KernelConfig = DEFAULT_CONFIG


def nf4_tensors(weight) -> NF4Tensors:
    """The tensors of a bitsandbytes `Params4bit` NF4 weight; ValueError (one sentence) if the kernel
    cannot read it."""
    state = getattr(weight, "quant_state", None)
    if state is None:
        raise ValueError("the weight has no bitsandbytes quant_state (not quantized yet)")
    if state.quant_type != "nf4":
        raise ValueError(f"the weight is {state.quant_type}, the kernel reads nf4 only")
    if getattr(state, "packing_format_for_cpu", False):
        raise ValueError("bitsandbytes repacked the weight for its CPU kernel")
    if len(state.shape) != 2:
        raise ValueError(f"the weight has shape {tuple(state.shape)}, not [out, in]")
    n, k = (int(size) for size in state.shape)
    blocksize = int(state.blocksize)
    if blocksize not in (32, 64, 128, 256) or k % blocksize:
        raise ValueError(f"blocksize {blocksize} with {k} input features: the kernel needs a blocksize "
                         f"of 32-256 that divides the input features")
    packed = weight.data.reshape(-1)
    packed = packed if packed.dtype == torch.uint8 else packed.view(torch.uint8)
    if packed.numel() * 2 != n * k:
        raise ValueError(f"{packed.numel()} packed bytes do not hold a {n}x{k} weight")
    if state.nested:
        second = state.state2
        return NF4Tensors(packed, state.absmax, state.code.float(), second.absmax.float(), second.code.float(),
                          float(state.offset), n, k, blocksize, int(second.blocksize), True)
    return NF4Tensors(packed, state.absmax.float(), state.code.float(), state.absmax.float(), state.code.float(),
                      0.0, n, k, blocksize, 1, False)


def block_scales(t: NF4Tensors) -> torch.Tensor:
    """The fp32 absmax of every block (the nested statistics resolved)."""
    if not t.nested:
        return t.absmax
    blocks = torch.arange(t.absmax.numel(), device=t.absmax.device)
    return t.code2[t.absmax.long()] * t.absmax2[blocks // t.blocksize2] + t.offset


def dequantize_tensors(t: NF4Tensors) -> torch.Tensor:
    """W [N, K] in fp32: code[q] * absmax, element by element."""
    codes = torch.stack([t.packed >> 4, t.packed & 15], dim=1).reshape(-1).long()
    values = t.code[codes].view(-1, t.blocksize) * block_scales(t).view(-1, 1)
    return values.view(t.n, t.k)


def nf4_dequantize(weight, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The reference: a bitsandbytes NF4 weight as a dense [N, K] tensor in `dtype` (default: the
    dtype it was quantized from), bit for bit what bitsandbytes.functional.dequantize_4bit gives."""
    return dequantize_tensors(nf4_tensors(weight)).to(dtype or weight.quant_state.dtype)


try:
    import triton
    import triton.language as tl
except ImportError:   # no triton: the op runs the reference on every device and use_nf4_gemv says why
    triton = None

if triton is not None:
    @triton.jit
    def _row_dot(x_row_ptr, column, x_ok, w, c_odd, scale, INTERLEAVE: tl.constexpr):
        """One input row against the step's levels: [BLOCK_N] sums of x * level over each
        quantization block, each scaled once. INTERLEAVE: w [BLOCK_N, GROUPS, QBLOCK] in element
        order (x read contiguously: vector loads); else w and c_odd [BLOCK_N, GROUPS, QBLOCK/2] are
        the even and odd elements (x read as two strides)."""
        if INTERLEAVE:
            x = tl.load(x_row_ptr + column, mask=x_ok, other=0.0).to(tl.float32)
            return tl.sum(tl.sum(w * x[None], axis=2) * scale, axis=1)
        x_even = tl.load(x_row_ptr + column, mask=x_ok, other=0.0).to(tl.float32)
        x_odd = tl.load(x_row_ptr + column + 1, mask=x_ok, other=0.0).to(tl.float32)
        return tl.sum(tl.sum(w * x_even[None] + c_odd * x_odd[None], axis=2) * scale, axis=1)

    @triton.jit
    def _store_row(out_row_ptr, acc, rows, row_ok, bias_ptr, HAS_BIAS: tl.constexpr):
        if HAS_BIAS:
            acc += tl.load(bias_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
        tl.store(out_row_ptr + rows, acc.to(out_row_ptr.dtype.element_ty), mask=row_ok)

    @triton.jit
    def _nf4_gemv_kernel(x_ptr, packed_ptr, absmax_ptr, code_ptr, absmax2_ptr, code2_ptr, offset, out_ptr, bias_ptr,
                         N, K, steps_per_split,
                         M: tl.constexpr, QBLOCK: tl.constexpr, QBLOCK2: tl.constexpr, NESTED: tl.constexpr,
                         HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr, GROUPS: tl.constexpr,
                         INTERLEAVE: tl.constexpr):
        """out[split, m, n] = sum over this split's K range of x[m, k] * code[q[n, k]] * absmax: fp32
        partial sums, or with one split y[m, n] itself (+ bias, in out's dtype).
        A step holds GROUPS quantization blocks of BLOCK_N rows as [BLOCK_N, GROUPS, QBLOCK/2] bytes:
        a block's QBLOCK/2 bytes are contiguous and share one absmax."""
        HALF: tl.constexpr = QBLOCK // 2
        split = tl.program_id(1)
        rows = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
        row_ok = rows < N
        in_group = tl.arange(0, HALF)
        in_block = tl.arange(0, QBLOCK)
        blocks_per_row = K // QBLOCK
        acc0 = tl.zeros([BLOCK_N], dtype=tl.float32)
        acc1 = tl.zeros([BLOCK_N], dtype=tl.float32)
        acc2 = tl.zeros([BLOCK_N], dtype=tl.float32)
        acc3 = tl.zeros([BLOCK_N], dtype=tl.float32)
        for step in range(steps_per_split):
            group = (split * steps_per_split + step) * GROUPS + tl.arange(0, GROUPS)   # block within a row
            group_ok = group < blocks_per_row
            block = rows[:, None] * blocks_per_row + group[None, :]                       # [BLOCK_N, GROUPS]
            ok = row_ok[:, None] & group_ok[None, :]
            if NESTED:
                scale_code = tl.load(absmax_ptr + block, mask=ok, other=0).to(tl.int32)
                # fp32 whatever type `offset` arrives as: inductor passes a Python float as fp64, which
                # made the accumulators fp64 and the kernel fail to compile in a CUDA graph (H200 run)
                scale = (tl.load(code2_ptr + scale_code) * tl.load(absmax2_ptr + block // QBLOCK2, mask=ok, other=0.0)
                         + offset).to(tl.float32)
            else:
                scale = tl.load(absmax_ptr + block, mask=ok, other=0.0)
            byte = tl.load(packed_ptr + block[:, :, None] * HALF + in_group[None, None, :], mask=ok[:, :, None],
                           other=0).to(tl.int32)
            # element 2j is the high nibble: interleaving the two lookups gives the elements in order,
            # so the input is read contiguously (vector loads) rather than as even and odd strides
            c_even = tl.load(code_ptr + (byte >> 4))
            c_odd = tl.load(code_ptr + (byte & 15))
            if INTERLEAVE:
                w = tl.interleave(c_even, c_odd)
                column = group[:, None] * QBLOCK + in_block[None, :]            # [GROUPS, QBLOCK]
            else:
                w = c_even
                column = group[:, None] * QBLOCK + 2 * in_group[None, :]        # [GROUPS, HALF], even k
            x_ok = group_ok[:, None]
            acc0 += _row_dot(x_ptr, column, x_ok, w, c_odd, scale, INTERLEAVE)
            if M > 1:
                acc1 += _row_dot(x_ptr + K, column, x_ok, w, c_odd, scale, INTERLEAVE)
            if M > 2:
                acc2 += _row_dot(x_ptr + 2 * K, column, x_ok, w, c_odd, scale, INTERLEAVE)
            if M > 3:
                acc3 += _row_dot(x_ptr + 3 * K, column, x_ok, w, c_odd, scale, INTERLEAVE)
        out = out_ptr + split * M * N
        _store_row(out, acc0, rows, row_ok, bias_ptr, HAS_BIAS)
        if M > 1:
            _store_row(out + N, acc1, rows, row_ok, bias_ptr, HAS_BIAS)
        if M > 2:
            _store_row(out + 2 * N, acc2, rows, row_ok, bias_ptr, HAS_BIAS)
        if M > 3:
            _store_row(out + 3 * N, acc3, rows, row_ok, bias_ptr, HAS_BIAS)

    @triton.jit
    def _sum_splits_kernel(partial_ptr, bias_ptr, out_ptr, SPLITS, N, TOTAL, HAS_BIAS: tl.constexpr,
                           BLOCK: tl.constexpr):
        """out = partial[0] + partial[1] + ... (+ bias), in this order: the same bits eager and compiled
        (a torch sum would be free to reorder under inductor)."""
        index = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        ok = index < TOTAL
        acc = tl.load(partial_ptr + index, mask=ok, other=0.0)
        for split in range(1, SPLITS):
            acc += tl.load(partial_ptr + split * TOTAL + index, mask=ok, other=0.0)
        if HAS_BIAS:
            acc += tl.load(bias_ptr + index % N, mask=ok, other=0.0).to(tl.float32)
        tl.store(out_ptr + index, acc.to(out_ptr.dtype.element_ty), mask=ok)


def step_elements(config: KernelConfig, blocksize: int) -> int:
    """Input elements a kernel step reads of each row: whole quantization blocks."""
    return max(config.block_k, blocksize)


def split_plan(n: int, k: int, config: KernelConfig = DEFAULT_CONFIG, blocksize: int = 64) -> tuple[int, int, int]:
    """(row blocks, K splits, steps per split): split K by powers of two until ~config.programs."""
    row_blocks = -(-n // config.block_n)
    steps = -(-k // step_elements(config, blocksize))
    splits = 1
    while row_blocks * splits < config.programs and splits < steps:
        splits *= 2
    per_split = -(-steps // min(splits, steps))
    return row_blocks, -(-steps // per_split), per_split


def triton_gemv(x: torch.Tensor, t: NF4Tensors, bias: Optional[torch.Tensor] = None, launch=None) -> torch.Tensor:
    """y [M, N] = x [M, K] @ W^T (+ bias) in x's dtype by the kernel, for a contiguous x, M <= 4.
    One split writes y itself; more write fp32 partial sums, added by a second kernel. `launch`
    wraps the kernel (torch.library.wrap_triton inside the op; the plain kernel for the interpreter)."""
    rows, k = x.shape
    if not 1 <= rows <= MAX_ROWS or k != t.k:
        raise ValueError(f"the kernel takes 1-{MAX_ROWS} rows of {t.k} features, not {tuple(x.shape)}")
    config = t.config
    row_blocks, splits, per_split = split_plan(t.n, k, config, t.blocksize)
    launch = launch or (lambda fn: fn)
    # pointers a kernel does not use get x, which no kernel writes (never an alias of an output)
    y = torch.empty((rows, t.n), device=x.device, dtype=x.dtype)
    final = splits == 1
    out = y if final else torch.empty((splits, rows, t.n), device=x.device, dtype=torch.float32)
    launch(_nf4_gemv_kernel)[(row_blocks, splits)](
        x, t.packed, t.absmax, t.code, t.absmax2, t.code2, t.offset, out, bias if final and bias is not None else x,
        t.n, k, per_split, M=rows, QBLOCK=t.blocksize, QBLOCK2=t.blocksize2, NESTED=t.nested,
        HAS_BIAS=final and bias is not None, BLOCK_N=config.block_n, GROUPS=step_elements(config, t.blocksize) // t.blocksize,
        INTERLEAVE=config.interleave, num_warps=config.warps, num_stages=config.stages)
    if not final:
        total = rows * t.n
        launch(_sum_splits_kernel)[(-(-total // SUM_BLOCK),)](
            out, bias if bias is not None else x, y, splits, t.n, total, HAS_BIAS=bias is not None, BLOCK=SUM_BLOCK)
    return y


def reference_gemv(x: torch.Tensor, t: NF4Tensors, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """What the kernel computes, in plain torch: fp32 products of the dequantized weight."""
    return add_bias(x.float() @ dequantize_tensors(t).t(), bias, x.dtype)


def add_bias(y: torch.Tensor, bias: Optional[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    return (y if bias is None else y + bias.float()).to(dtype)


def gemv(x: torch.Tensor, t: NF4Tensors, bias: Optional[torch.Tensor] = None, launch=None) -> torch.Tensor:
    """y [M, N] = x [M, K] @ W^T (+ bias) in x's dtype; the kernel on CUDA, the reference elsewhere."""
    if x.device.type in KERNEL_DEVICES and triton is not None:
        return triton_gemv(x, t, bias, launch)
    return reference_gemv(x, t, bias)


def _nf4_gemv(x: torch.Tensor, packed: torch.Tensor, absmax: torch.Tensor, code: torch.Tensor,
              absmax2: torch.Tensor, code2: torch.Tensor, offset: float, n: int, blocksize: int, blocksize2: int,
              nested: bool, bias: Optional[torch.Tensor], block_n: int, block_k: int, warps: int, stages: int,
              programs: int, interleave: bool) -> torch.Tensor:
    """The op's body: gemv with the kernels wrapped for tracing."""
    from torch.library import wrap_triton

    t = NF4Tensors(packed, absmax, code, absmax2, code2, offset, n, x.shape[-1], blocksize, blocksize2, nested,
                   KernelConfig(block_n, block_k, warps, stages, programs, interleave))
    return gemv(x, t, bias, wrap_triton)


@functools.cache
def nf4_gemv_op():
    """Register egcfg::nf4_gemv once (on first use, so importing this module costs nothing)."""
    return torch.library.triton_op("egcfg::nf4_gemv", _nf4_gemv, mutates_args=())


def nf4_linear(x: torch.Tensor, t: NF4Tensors, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """x [..., K] @ W^T (+ bias); the leading dims' product must be <= 4. Compiled code calls the op
    egcfg::nf4_gemv (registered by use_nf4_gemv: dynamo cannot trace the registration); eager code
    calls its body directly, without the dispatcher's Python cost on every layer of every step."""
    rows = x.reshape(-1, t.k).contiguous()
    if torch.compiler.is_compiling():
        c = t.config
        y = torch.ops.egcfg.nf4_gemv(rows, t.packed, t.absmax, t.code, t.absmax2, t.code2, t.offset, t.n,
                                     t.blocksize, t.blocksize2, t.nested, bias, c.block_n, c.block_k, c.warps,
                                     c.stages, c.programs, c.interleave)
    else:
        y = gemv(rows, t, bias)
    return y.reshape(*x.shape[:-1], t.n)


def gemv_forward(layer, x: torch.Tensor) -> torch.Tensor:
    """A Linear4bit's forward through our kernel, with bitsandbytes' dtypes: the input in the layer's
    compute dtype, the output back in the input's dtype."""
    input_dtype = x.dtype
    if getattr(layer, "compute_type_is_set", False) and layer.compute_dtype is not None:
        x = x.to(layer.compute_dtype)
    bias = None if layer.bias is None else layer.bias.to(x.dtype)
    return nf4_linear(x, layer._egcfg_nf4, bias).to(input_dtype)


@functools.cache
def gemv_linear_class():
    """bitsandbytes' Linear4bit, but inputs of <= MAX_ROWS rows go through gemv_forward."""
    import bitsandbytes as bnb

    class NF4GemvLinear4bit(bnb.nn.Linear4bit):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.numel() > MAX_ROWS * x.shape[-1]:
                return super().forward(x)
            return gemv_forward(self, x)

    return NF4GemvLinear4bit


@dataclass
class NF4Report:
    kernel: str                  # "egcfg": small batches go through our kernel; "bitsandbytes": unchanged;
    #                              "mixed": ours for some weight shapes (chosen by timing, `shapes`)
    layers: int                  # bitsandbytes 4-bit layers in the model
    switched: int                # of those, how many use our kernel now
    max_error: float | None = None   # the check: max |ours - bitsandbytes| / max |bitsandbytes|
    reason: str = ""             # why nothing (or not everything) switched
    shapes: dict = field(default_factory=dict)   # when chosen by timing: per weight shape, who won and the times

    def as_dict(self) -> dict:
        return asdict(self)


def four_bit_layers(model) -> list:
    try:
        import bitsandbytes as bnb
    except ImportError:
        return []
    return [module for module in model.modules() if isinstance(module, bnb.nn.Linear4bit)]


def environment_problem(model) -> str:
    """Why our kernel cannot run for this model here ("" when it can)."""
    if not torch.cuda.is_available():
        return "no CUDA device: the kernel runs on NVIDIA GPUs only"
    if triton is None:
        return "triton is not installed"
    if not hasattr(torch.library, "triton_op"):
        return f"torch {torch.__version__} has no torch.library.triton_op (needs 2.6 or later)"
    import bitsandbytes as bnb

    version = tuple(int(part) for part in bnb.__version__.split(".")[:2] if part.isdigit())
    if version < (0, 45):
        return f"bitsandbytes {bnb.__version__} is older than 0.45"
    layers = four_bit_layers(model)
    if layers and layers[0].weight.device.type != "cuda":
        return f"the 4-bit weights are on {layers[0].weight.device.type}, not on a CUDA device"
    return ""


@torch.no_grad()
def check_layer(layer, rows_list=(1, 2, 4), seed: int = 0) -> float:
    """Max relative difference between our forward and bitsandbytes' on random input of each row count."""
    base = gemv_linear_class().__mro__[1]   # bitsandbytes' Linear4bit
    generator = torch.Generator(device=layer.weight.device).manual_seed(seed)
    dtype = layer.compute_dtype or torch.bfloat16
    worst = 0.0
    for rows in rows_list:
        x = torch.randn(rows, layer.in_features, generator=generator, device=layer.weight.device, dtype=dtype)
        expected = base.forward(layer, x).float()
        got = gemv_forward(layer, x).float()
        error = ((got - expected).abs().max() / expected.abs().max().clamp(min=1e-6)).item()
        worst = max(worst, error if error == error else float("inf"))   # NaN counts as a failure
    return worst


ShapeKey = tuple   # (out features, in features, blocksize, nested, bias): layers one timing speaks for
BITSANDBYTES = None   # in a plan: this shape keeps bitsandbytes' kernel


def shape_key(layer, tensors: NF4Tensors) -> ShapeKey:
    return (tensors.n, tensors.k, tensors.blocksize, tensors.nested, layer.bias is not None)


def shape_name(key: ShapeKey) -> str:
    return f"{key[0]}x{key[1]}"


def graph_us_per_call(function: Callable[[], object], calls: int, repeats: int = 5) -> float:
    """Device time of `function()` (which makes `calls` calls) replayed from a CUDA graph, per call:
    the median of `repeats` replays. A graph, as the compiled decode step runs: no launch overhead."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        function()   # compiles the kernel and allocates outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        function()
    graph.replay()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / calls)
    return statistics.median(times)


@torch.no_grad()
def time_layers(layers: list, config: KernelConfig | None, rows: int = 2) -> float:
    """Microseconds a call of one of `layers` (all one shape) takes on `rows` rows under a CUDA
    graph: bitsandbytes' kernel (config None) or ours with `config`. All the layers run in turn,
    so their weights come from memory, not the L2 cache, as in a decode step."""
    base = gemv_linear_class().__mro__[1]
    first = layers[0]
    x = torch.randn(rows, first.in_features, device=first.weight.device, dtype=first.compute_dtype or torch.bfloat16)
    if config is None:
        calls = [functools.partial(base.forward, layer, x) for layer in layers]
    else:
        calls = []
        for layer in layers:
            tensors = nf4_tensors(layer.weight)._replace(config=config)
            bias = None if layer.bias is None else layer.bias.to(x.dtype)
            calls.append(functools.partial(nf4_linear, x, tensors, bias))
    return graph_us_per_call(lambda: [call() for call in calls], len(calls))


def choose_configs(groups: dict, configs=CANDIDATE_CONFIGS, timer: Callable = time_layers,
                   margin: float = 0.97) -> tuple[dict, dict]:
    """(plan, times): per shape, the fastest of our configurations when it beats bitsandbytes by
    more than the timing noise (`margin`), else BITSANDBYTES; times in microseconds a call (or
    why a configuration could not run)."""
    plan, times = {}, {}
    for key, layers in groups.items():
        measured: dict = {"bitsandbytes": round(timer(layers, None), 2)}
        best = None
        for config in configs:
            try:
                us = timer(layers, config)
            except Exception as failure:   # a configuration that does not compile here (registers, shared memory)
                measured[config.name] = error_line(failure, 120)
                continue
            measured[config.name] = round(us, 2)
            if best is None or us < best[0]:
                best = (us, config)
        plan[key] = best[1] if best is not None and best[0] < margin * measured["bitsandbytes"] else BITSANDBYTES
        times[key] = measured
    return plan, times


def use_nf4_gemv(model, choose: bool = False, configs=CANDIDATE_CONFIGS, timer: Callable = time_layers) -> NF4Report:
    """Route bitsandbytes Linear4bit layers' small inputs (<= 4 rows) through our kernel, after it
    matches bitsandbytes on a layer; otherwise change nothing. Every layer with DEFAULT_CONFIG, or
    with `choose`: per weight shape, the configuration that `timer` finds fastest on the model's own
    layers, and only the shapes where ours beats bitsandbytes'. Idempotent."""
    layers = four_bit_layers(model)
    if not layers:
        return NF4Report("bitsandbytes", 0, 0, reason="the model has no bitsandbytes 4-bit layers")
    problem = environment_problem(model)
    if problem:
        return NF4Report("bitsandbytes", len(layers), 0, reason=problem)
    previous = getattr(model, "_egcfg_nf4_report", None)
    if previous is not None:
        return previous
    patched = gemv_linear_class()
    nf4_gemv_op()
    groups: dict = {}   # shape -> layers
    readable: dict = {}   # layer -> its tensors, read before any check runs bitsandbytes (which on a CPU repacks them)
    for layer in layers:
        if "forward" in vars(layer):   # e.g. an accelerate offload hook: the class's forward would not run
            return NF4Report("bitsandbytes", len(layers), 0, reason="a 4-bit layer's forward is replaced on the "
                                                                    "layer itself (an offloading hook?)")
        try:
            readable[layer] = nf4_tensors(layer.weight)
        except ValueError as error:
            return NF4Report("bitsandbytes", len(layers), 0, reason=f"{type(layer).__name__}: {error}")
        groups.setdefault(shape_key(layer, readable[layer]), []).append(layer)
    times: dict = {}
    if choose:
        try:
            plan, times = choose_configs(groups, configs, timer)
        except Exception as failure:   # timing must not stop the load: bitsandbytes' kernel stays
            return NF4Report("bitsandbytes", len(layers), 0,
                             reason=f"timing the kernels failed ({error_line(failure)})")
    else:
        plan = dict.fromkeys(groups, DEFAULT_CONFIG)
    worst, reasons = None, []
    for key, config in list(plan.items()):
        if config is BITSANDBYTES:
            continue
        first = groups[key][0]
        first._egcfg_nf4 = readable[first]._replace(config=config)
        try:
            error = check_layer(first)
        except Exception as failure:   # a kernel that does not compile or launch here must not stop the load
            error, reason = None, f"the kernel failed on a {shape_name(key)} layer ({error_line(failure)})"
        else:
            reason = (f"the kernel differs from bitsandbytes on a {shape_name(key)} layer by {error:.3g} (relative), "
                      f"more than {CHECK_TOLERANCE:g}") if not error <= CHECK_TOLERANCE else ""
        del first._egcfg_nf4
        if error is not None:
            worst = error if worst is None else max(worst, error)
        if reason:
            plan[key] = BITSANDBYTES
            reasons.append(reason)
    switched = 0
    for key, config in plan.items():
        if config is BITSANDBYTES:
            continue
        for layer in groups[key]:
            tensors = readable[layer]._replace(config=config)
            for tensor in tensors[:5]:
                # a fixed address, as a parameter has: CUDA graphs otherwise copy every plain tensor
                # attribute that reaches the graph as an input, each replay (the weights, every token)
                torch._dynamo.mark_static_address(tensor)
            layer._egcfg_nf4 = tensors
            layer.__class__ = patched
            switched += 1
    if choose and not reasons and not switched:
        reasons.append("bitsandbytes' kernel was faster for every weight shape")
    kernel = "bitsandbytes" if not switched else "egcfg" if switched == len(layers) else "mixed"
    shapes = {shape_name(key): {"layers": len(groups[key]), "kernel": "bitsandbytes" if plan[key] is BITSANDBYTES
                                else "egcfg", "config": None if plan[key] is BITSANDBYTES else plan[key].name,
                                **({"us_per_call": times[key]} if key in times else {})}
              for key in groups}
    report = NF4Report(kernel, len(layers), switched, worst, "; ".join(reasons), shapes)
    if switched:
        model._egcfg_nf4_report = report
    return report
