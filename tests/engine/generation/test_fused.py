"""Joined sibling 4-bit projections (engine/generation/fused.py): same outputs, one product, and a
forward torch.compile traces whole. bitsandbytes' CPU path, bf16."""

from __future__ import annotations

import pytest
import torch

from engine.generation import fused

pytest.importorskip("bitsandbytes")


def _qwen2_like():
    """A tiny Qwen2 (biases on q, k, v; grouped heads) quantized as the random shapes are."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    from engine.generation.random_models import quantize_nf4

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=128, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval().requires_grad_(False)
    for layer in model.model.layers:   # random biases: zero ones would hide a bias put in the wrong columns
        for name in ("q_proj", "k_proj", "v_proj"):
            getattr(layer.self_attn, name).bias.normal_()
    quantize_nf4(model, torch.bfloat16)
    return model


@pytest.fixture(params=["llama", "qwen2"])
def model(request):
    if request.param == "qwen2":
        return _qwen2_like()
    from engine.generation.random_models import random_model

    return random_model("tiny", device="cpu", dtype="bf16", quantization="4bit", join=False).model


def test_joined_projections_give_the_same_logits(model):
    ids = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 13, 14]])
    layers = len(model.model.layers)
    with torch.no_grad():
        before = model(input_ids=ids).logits
        assert fused.fuse_projections(model) == 2 * layers
        after = model(input_ids=ids).logits
        one_token = model(input_ids=ids[:, :1]).logits
    assert torch.equal(before, after)
    assert one_token.shape == (2, 1, before.shape[-1])
    attention = model.model.layers[0].self_attn
    assert isinstance(attention.q_proj, fused.ProjectionSlice)
    assert attention.q_proj.product.output is None   # the product is let go after v
    assert fused.fuse_projections(model) == 0          # nothing left to join


def test_the_joined_weight_is_the_siblings_weights_stacked(model):
    from engine.generation.nf4_gemv import nf4_dequantize

    attention = model.model.layers[1].self_attn
    separate = torch.cat([nf4_dequantize(getattr(attention, name).weight) for name in ("q_proj", "k_proj", "v_proj")])
    biases = [getattr(attention, name).bias for name in ("q_proj", "k_proj", "v_proj")]
    fused.fuse_projections(model)
    joined = attention.fused_q_proj
    assert torch.equal(nf4_dequantize(joined.weight), separate)
    assert not joined.weight.quant_state.nested and joined.weight.quant_state.absmax.dtype == torch.float32
    if biases[0] is not None:
        assert torch.equal(joined.bias, torch.cat(biases))
    # the siblings are gone from the module tree: their memory goes with them
    names = [name for name, _ in model.named_modules()]
    assert "model.layers.1.self_attn.fused_q_proj" in names and "model.layers.1.mlp.fused_gate_proj" in names
    assert sum(isinstance(m, fused.ProjectionSlice) for m in model.modules()) == 5 * len(model.model.layers)


def test_a_slice_given_another_input_computes_its_own_product(model):
    fused.fuse_projections(model)
    attention = model.model.layers[0].self_attn
    x, y = torch.randn(2, 3, model.config.hidden_size, dtype=torch.bfloat16).unbind(0)
    with torch.no_grad():
        q_x = attention.q_proj(x)
        k_y = attention.k_proj(y)          # not the kept input: its own product
        v_x = attention.v_proj(x)
        full_x, full_y = attention.fused_q_proj(x), attention.fused_q_proj(y)
    heads_q = attention.q_proj.out_features
    assert torch.equal(q_x, full_x[..., :heads_q])
    assert torch.equal(k_y, full_y[..., heads_q:heads_q + attention.k_proj.out_features])
    assert torch.equal(v_x, full_x[..., heads_q + attention.k_proj.out_features:])


def test_a_compiled_forward_traces_the_joined_model_whole(model):
    fused.fuse_projections(model)
    ids = torch.tensor([[5], [9]])
    torch._dynamo.reset()
    with torch.no_grad():
        compiled = torch.compile(model, fullgraph=True, backend="eager")(input_ids=ids).logits
        eager = model(input_ids=ids).logits
    assert torch.equal(compiled, eager)
    assert model.model.layers[0].self_attn.q_proj.product.output is None


def test_what_is_not_joined():
    from engine.generation.random_models import random_model

    plain = random_model("tiny", device="cpu", dtype="bf16").model            # not 4-bit
    assert fused.fuse_projections(plain) == 0
    loaded = random_model("tiny", device="cpu", dtype="bf16", quantization="4bit")   # joined by default
    assert loaded.nf4_kernel["joined_projections"] == 2 * len(loaded.model.model.layers)
    apart = random_model("tiny", device="cpu", dtype="bf16", quantization="4bit", join=False)
    assert apart.nf4_kernel["joined_projections"] == 0
    attention = apart.model.model.layers[0].self_attn
    assert not fused.joinable([attention.q_proj, attention.o_proj.__class__(64, 32, bias=True, quant_type="nf4")])
    assert not fused.joinable([attention.q_proj, torch.nn.Linear(64, 32)])
