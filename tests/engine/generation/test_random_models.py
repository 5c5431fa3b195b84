"""Random-weight models in published shapes (engine/generation/random_models.py), built without
allocating them: on the meta device, or cut to one layer."""

from __future__ import annotations

import warnings

import pytest
import torch

from engine.errors import UserError
from engine.generation import random_models
from engine.generation.tiny import build_tokenizer

# parameter counts of the published checkpoints (billions, as their model cards round them)
PUBLISHED = {"qwen2.5-coder-1.5b": (1.54, "Qwen2ForCausalLM", 151936),
             "qwen2.5-coder-7b": (7.62, "Qwen2ForCausalLM", 152064),
             "deepseek-coder-6.7b": (6.74, "LlamaForCausalLM", 32256)}


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_shapes_have_the_published_size(name, tokenizer):
    from transformers import AutoModelForCausalLM

    billions, architecture, vocab = PUBLISHED[name]
    config = random_models.build_config(name, tokenizer)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    assert type(model).__name__ == architecture
    assert config.vocab_size == vocab > len(tokenizer)
    assert sum(p.numel() for p in model.parameters()) / 1e9 == pytest.approx(billions, abs=0.006)


def test_deepseek_keeps_its_linear_rope_scaling(tokenizer):
    config = random_models.build_config("deepseek-coder-6.7b", tokenizer)
    assert config.rope_parameters["rope_type"] == "linear" and config.rope_parameters["factor"] == 4.0
    assert config.rope_parameters["rope_theta"] == 100000.0
    assert random_models.build_config("qwen2.5-coder-7b", tokenizer).rope_parameters["rope_theta"] == 1e6


def test_a_published_shape_cut_to_one_layer_runs_in_nf4():
    """(bf16 is the same model before quantize_nf4; one build keeps this test short.)"""
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        for quantization in ("4bit",):
            loaded = random_models.random_model("qwen2.5-coder-1.5b", device="cpu", dtype="bf16",
                                                quantization=quantization, layers=1)
            model = loaded.model
            assert model.config.num_hidden_layers == 1 and loaded.quantized == (quantization == "4bit")
            kinds = {type(m).__name__ for m in model.modules()}
            assert ("Linear4bit" in kinds) == (quantization == "4bit")
            assert type(model.get_output_embeddings()).__name__ == "Linear"   # the LM head stays bf16
            with torch.inference_mode():
                logits = model(input_ids=torch.tensor([[1, 2, 3]])).logits
            assert logits.shape == (1, 3, 151936) and torch.isfinite(logits.float()).all()


def test_unknown_config_is_a_user_error(tokenizer):
    with pytest.raises(UserError, match="unknown random config"):
        random_models.build_config("gpt-5", tokenizer)
