"""Sibling 4-bit projections that read the same input, as one bitsandbytes matrix product.

A decoder layer multiplies its input by q, k and v in three bitsandbytes calls, and the MLP's input
by gate and up in two. Under a CUDA graph each call costs a fixed few microseconds on top of its
bytes (H200, 1 row, benchmarks/results/gpu-nvidia-h200-20261126-233634.json: the 7B shape's k,
0.9 MB, 7.1 us; q, 6.4 MB, 9.9 us; gate, 34 MB, 35.8 us), so the three attention projections cost
~24 us a layer where their 8.3 MB need a few. Here the siblings' NF4 weights are joined along their
outputs into one Linear4bit (the packed bytes and the block scales concatenated: a block of 64
inputs never crosses an output row, so nothing is re-quantized), and the original attributes
become slices of its output:

    layer.self_attn.q_proj(h)   # computes [q; k; v](h) once, keeps it, returns the q columns
    layer.self_attn.k_proj(h)   # the same h: the kept product's k columns
    layer.self_attn.v_proj(h)   # the v columns; the product is let go

Nested block scales (bitsandbytes' compress_statistics) are resolved to fp32 first: each weight
has its own offset, so their quantized scales cannot be joined. That costs 3 bytes per 64 weights
of the joined matrices (~5% of their size) and gives the same dequantized weights, bit for bit:
outputs equal the separate products.

A slice called with another input than the one kept computes the product itself: any order of
calls is right; the one the model's forward uses (q, k, v; gate, up) costs one product.
"""

from __future__ import annotations

from typing import Sequence

import torch

# Sibling groups by attribute name: Llama, Qwen2, Mistral and DeepSeek-Coder (Llama) layers.
GROUPS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


class _Product:
    """The joined layer's last input and output, shared by its slices (not a module: the joined
    Linear4bit is registered once, on the parent, as `fused_<first>`)."""

    def __init__(self, layer):
        self.layer = layer
        self.input: torch.Tensor | None = None
        self.output: torch.Tensor | None = None


class ProjectionSlice(torch.nn.Module):
    """Columns [start, end) of a joined projection's output; `last` lets the kept product go."""

    def __init__(self, product: _Product, start: int, end: int, last: bool):
        super().__init__()
        self.product = product
        self.start, self.end, self.last = start, end, last
        self.in_features = product.layer.in_features
        self.out_features = end - start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        product = self.product
        if product.input is not x or product.output is None:
            product.input, product.output = x, product.layer(x)
        out = product.output[..., self.start:self.end]
        if self.last:
            product.input = product.output = None   # a prefill's product is large: not kept past its use
        return out

    def extra_repr(self) -> str:
        return f"columns {self.start}:{self.end} of a joined 4-bit projection"


def fuse_projections(model) -> int:
    """Join every sibling group of NF4 Linear4bit layers that can be joined (GROUPS), in place;
    how many groups were joined."""
    joined = 0
    for parent in list(model.modules()):
        for names in GROUPS:
            layers = [getattr(parent, name, None) for name in names]
            if joinable(layers):
                _join(parent, names, layers)
                joined += 1
    return joined


def joinable(layers: list) -> bool:
    try:
        import bitsandbytes as bnb
    except ImportError:
        return False
    if not all(isinstance(layer, bnb.nn.Linear4bit) for layer in layers):
        return False
    states = [getattr(layer.weight, "quant_state", None) for layer in layers]
    if any(state is None or state.quant_type != "nf4" or getattr(state, "packing_format_for_cpu", False)
           or len(state.shape) != 2 for state in states):
        return False
    first = states[0]
    same = all(state.blocksize == first.blocksize and state.dtype == first.dtype and state.shape[1] == first.shape[1]
               and state.code.device == first.code.device and torch.equal(state.code, first.code) for state in states)
    with_bias = {layer.bias is not None for layer in layers}
    return (same and len(with_bias) == 1 and int(first.shape[1]) % int(first.blocksize) == 0
            and len({layer.weight.data.dtype for layer in layers}) == 1 and layers[0].weight.data.dtype == torch.uint8
            and len({layer.compute_dtype for layer in layers}) == 1)


def _join(parent, names: Sequence[str], layers: list) -> None:
    import bitsandbytes as bnb
    from bitsandbytes.functional import QuantState

    from engine.generation.nf4_gemv import block_scales, nf4_tensors

    first = layers[0]
    state = first.weight.quant_state
    widths = [int(layer.weight.quant_state.shape[0]) for layer in layers]
    k = int(state.shape[1])
    packed = torch.cat([layer.weight.data.reshape(-1) for layer in layers]).reshape(-1, 1)
    scales = torch.cat([block_scales(nf4_tensors(layer.weight)) for layer in layers]).float()
    joined_state = QuantState(absmax=scales, shape=torch.Size([sum(widths), k]), code=state.code,
                              blocksize=state.blocksize, quant_type="nf4", dtype=state.dtype)
    with torch.device("meta"):   # the weights come from the siblings: allocate nothing here
        joined = bnb.nn.Linear4bit(k, sum(widths), bias=first.bias is not None, compute_dtype=first.compute_dtype,
                                   compress_statistics=False, quant_type="nf4")
    joined.weight = bnb.nn.Params4bit(data=packed, requires_grad=False, quant_state=joined_state,
                                      blocksize=state.blocksize, compress_statistics=False, quant_type="nf4",
                                      module=joined, bnb_quantized=True)
    if first.bias is not None:
        joined.bias = torch.nn.Parameter(torch.cat([layer.bias.data for layer in layers]), requires_grad=False)
    joined.train(first.training)
    parent.register_module(f"fused_{names[0]}", joined)
    product = _Product(joined)
    start = 0
    for index, (name, width) in enumerate(zip(names, widths)):
        setattr(parent, name, ProjectionSlice(product, start, start + width, last=index == len(names) - 1))
        start += width
