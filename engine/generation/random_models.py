"""Random-weight models built at run time, for benchmarks without downloads (`--random-config`).

The small shapes are for CPU runs. The published shapes give a GPU the same work per token as the
real models: the values below are those of each model's published config.json (architecture,
widths, heads, layers, vocabulary, RoPE); only the weights are random. The tokenizer is the tiny
model's offline BPE (engine.generation.tiny); its ids are a subset of the model's vocabulary, so
the LM head still multiplies against the full vocabulary.

    random_model("qwen2.5-coder-7b", device="cuda", quantization="4bit")
"""

from __future__ import annotations

from typing import Any

from engine.errors import UserError

SMALL_SHAPES: dict[str, dict[str, Any]] = {
    "tiny": dict(arch="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2),
    "small": dict(arch="llama", hidden_size=512, intermediate_size=1408, num_hidden_layers=8, num_attention_heads=8,
                  num_key_value_heads=4),
    "medium": dict(arch="llama", hidden_size=1024, intermediate_size=2816, num_hidden_layers=16,
                   num_attention_heads=16, num_key_value_heads=8),
}

# From the published config.json files (Qwen/Qwen2.5-Coder-1.5B-Instruct, Qwen/Qwen2.5-Coder-7B-Instruct,
# deepseek-ai/deepseek-coder-6.7b-instruct).
PUBLISHED_SHAPES: dict[str, dict[str, Any]] = {
    "qwen2.5-coder-1.5b": dict(arch="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                               num_attention_heads=12, num_key_value_heads=2, vocab_size=151936,
                               max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
                               tie_word_embeddings=True),
    "qwen2.5-coder-7b": dict(arch="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                             num_attention_heads=28, num_key_value_heads=4, vocab_size=152064,
                             max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
                             tie_word_embeddings=False),
    "deepseek-coder-6.7b": dict(arch="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                num_attention_heads=32, num_key_value_heads=32, vocab_size=32256,
                                max_position_embeddings=16384, rope_theta=100000.0, rms_norm_eps=1e-6,
                                rope_scaling={"rope_type": "linear", "factor": 4.0}, tie_word_embeddings=False),
}

RANDOM_CONFIGS: dict[str, dict[str, Any]] = {**SMALL_SHAPES, **PUBLISHED_SHAPES}


def build_config(name: str, tokenizer, layers: int | None = None):
    """The transformers config of a named shape; `layers` cuts the layer count (CPU tests)."""
    from transformers import LlamaConfig, Qwen2Config

    if name not in RANDOM_CONFIGS:
        raise UserError(f"unknown random config {name!r}: choose one of {', '.join(RANDOM_CONFIGS)}")
    shape = dict(RANDOM_CONFIGS[name])
    arch = shape.pop("arch")
    shape.setdefault("vocab_size", len(tokenizer))
    shape.setdefault("max_position_embeddings", 16384)
    shape.setdefault("tie_word_embeddings", False)
    if shape["vocab_size"] < len(tokenizer):
        raise UserError(f"the {name} vocabulary ({shape['vocab_size']}) is smaller than the tokenizer's")
    rope_scaling = shape.pop("rope_scaling", None)
    rope_theta = shape.pop("rope_theta", None)
    if layers:
        shape["num_hidden_layers"] = layers
    common = dict(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **shape)
    config = (Qwen2Config if arch == "qwen2" else LlamaConfig)(**common)
    if rope_theta is not None or rope_scaling is not None:
        parameters = dict(getattr(config, "rope_parameters", None) or {})
        parameters.setdefault("rope_type", "default")
        if rope_theta is not None:
            parameters["rope_theta"] = rope_theta
        if rope_scaling:
            parameters.update(rope_scaling)
        config.rope_parameters = parameters
    return config


def random_model(name: str, device: str = "auto", dtype: str = "auto", quantization: str = "none",
                 layers: int | None = None, seed: int = 0, nf4_kernel: str | None = None,
                 join: bool = True):
    """A random-weight model of the named shape with the tiny model's tokenizer, as a LoadedModel.
    4-bit: every Linear but the LM head becomes a bitsandbytes NF4 layer, as transformers'
    bitsandbytes loading does for a real checkpoint; `nf4_kernel` (None: the default) and `join` as in models.prepare_4bit."""
    import torch
    from transformers import AutoModelForCausalLM

    from engine.generation.models import DEFAULT_NF4_KERNEL, LoadedModel, _torch_dtype, choose_device, choose_dtype, prepare_4bit
    from engine.generation.tiny import build_tokenizer

    device = choose_device(device)
    dtype = choose_dtype(dtype, device)
    if quantization not in ("none", "4bit", "auto"):
        raise UserError(f"unknown quantization {quantization!r}: choose none or 4bit")
    quantized = quantization == "4bit"
    if quantized and dtype == "fp32":
        dtype = "bf16"
    tokenizer = build_tokenizer()
    config = build_config(name, tokenizer, layers)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=_torch_dtype(dtype))
    model.eval()
    model.requires_grad_(False)
    nf4 = None
    if quantized:
        quantize_nf4(model, _torch_dtype(dtype))
        nf4 = prepare_4bit(model, nf4_kernel or DEFAULT_NF4_KERNEL, join)
    return LoadedModel(model=model, tokenizer=tokenizer, name=f"random-{name}", device=str(model.device),
                       dtype=dtype, quantized=quantized, nf4_kernel=nf4)


def quantize_nf4(model, compute_dtype) -> None:
    """Replace every nn.Linear but the LM head by a bitsandbytes NF4 Linear4bit, in place."""
    import torch

    try:
        import bitsandbytes as bnb
    except ImportError as error:
        raise UserError("4-bit needs bitsandbytes: pip install 'egcfg[gpu]' or use --quantization none") from error
    head = model.get_output_embeddings()
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if not isinstance(child, torch.nn.Linear) or child is head:
                continue
            device = child.weight.device
            layer = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                      compute_dtype=compute_dtype, quant_type="nf4", device="meta")
            layer.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False,
                                             quant_type="nf4").to(device)
            if child.bias is not None:
                layer.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
            setattr(parent, child_name, layer)
            del child
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
