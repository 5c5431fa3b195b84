"""Model loading: the tiny model through the real loading code, and one-sentence errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from engine.generation import models
from engine.errors import UserError
from engine.generation.models import DEFAULT_MODEL, LoadedModel, describe, load_model


def assert_one_sentence(error: UserError, *must_name: str) -> None:
    text = str(error)
    assert "\n" not in text and "Traceback" not in text
    assert 20 < len(text) < 400
    for name in must_name:
        assert name in text, text


@pytest.fixture(scope="module")
def loaded(tiny_model_dir) -> LoadedModel:
    return load_model(str(tiny_model_dir), device="cpu")


def test_tiny_model_loads_for_inference_and_generates(loaded, tiny_model_dir):
    import torch

    assert loaded.device == "cpu" and not loaded.quantized
    assert loaded.dtype in ("bf16", "fp32")
    assert next(loaded.model.parameters()).dtype == {"bf16": torch.bfloat16, "fp32": torch.float32}[loaded.dtype]
    assert not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert loaded.tokenizer.pad_token_id is not None
    ids = torch.tensor([loaded.tokenizer.encode("def add(a, b):\n", add_special_tokens=False)])
    out = loaded.model.generate(ids, max_new_tokens=4, do_sample=False)
    assert out.shape == (1, ids.shape[1] + 4) or out.shape[1] > ids.shape[1]
    assert describe(loaded) == f"tiny-llama on cpu, {loaded.dtype}"


def test_dtype_override(tiny_model_dir):
    import torch

    loaded = load_model(str(tiny_model_dir), device="cpu", dtype="fp32")
    assert loaded.dtype == "fp32" and next(loaded.model.parameters()).dtype == torch.float32


def test_missing_pad_token_falls_back_to_eos(tiny_model_dir, tmp_path):
    import json

    folder = tmp_path / "no-pad"
    shutil.copytree(tiny_model_dir, folder)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("pad_token", None)
    config_path.write_text(json.dumps(config))
    loaded = load_model(str(folder), device="cpu")
    assert loaded.tokenizer.pad_token == loaded.tokenizer.eos_token == "<|im_end|>"


def test_empty_folder(tmp_path):
    with pytest.raises(UserError) as caught:
        load_model(str(tmp_path))
    assert_one_sentence(caught.value, str(tmp_path), "config.json")


def test_folder_without_tokenizer(tiny_model_dir, tmp_path):
    folder = tmp_path / "weights-only"
    folder.mkdir()
    for name in ("config.json", "model.safetensors", "generation_config.json"):
        shutil.copy(tiny_model_dir / name, folder / name)
    with pytest.raises(UserError) as caught:
        load_model(str(folder))
    assert_one_sentence(caught.value, str(folder), "tokenizer")


def test_folder_without_weights(tiny_model_dir, tmp_path):
    folder = tmp_path / "no-weights"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(UserError) as caught:
        load_model(str(folder))
    assert_one_sentence(caught.value, str(folder), "weights")


def test_nonexistent_path(tmp_path):
    missing = str(tmp_path / "nowhere" / "model")
    with pytest.raises(UserError) as caught:
        load_model(missing)
    assert_one_sentence(caught.value, missing)


@pytest.mark.parametrize("bad", ["foo bar", "a/b/c d", ""])
def test_invalid_names(bad):
    with pytest.raises(UserError) as caught:
        load_model(bad)
    assert_one_sentence(caught.value)


def test_uncached_hub_id_offline_is_one_quick_sentence(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    start = time.monotonic()
    for name in (DEFAULT_MODEL, "nobody-here/no-such-model-1234"):
        with pytest.raises(UserError) as caught:
            load_model(name)
        assert_one_sentence(caught.value, name, "--model", "HF_HUB_OFFLINE")
    assert time.monotonic() - start < 5


def test_unreachable_hub_without_offline_flag_is_the_same_sentence(tmp_path):
    """No HF_HUB_OFFLINE, and the hub endpoint refuses connections: the same one sentence, fast."""
    env = dict(os.environ, HF_HUB_OFFLINE="0", HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"))
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HF_HUB_CACHE"):
        env.pop(var, None)
    code = ("from engine.generation.models import load_model, DEFAULT_MODEL\n"
            "from engine.errors import UserError\n"
            "try:\n    load_model(DEFAULT_MODEL)\nexcept UserError as e:\n    print(e)\n")
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert time.monotonic() - start < 20
    assert done.returncode == 0, done.stderr
    message = done.stdout.strip()
    assert "\n" not in message and DEFAULT_MODEL in message and "cannot be reached" in message, message


def test_option_validation():
    for kwargs in ({"device": "tpu"}, {"quantization": "8bit"}, {"dtype": "int8"}):
        with pytest.raises(UserError) as caught:
            load_model("whatever", **kwargs)
        assert_one_sentence(caught.value, next(iter(kwargs.values())))


def test_cuda_requested_without_cuda(monkeypatch):
    monkeypatch.setattr(models, "_cuda_available", lambda: False)
    with pytest.raises(UserError) as caught:
        models.choose_device("cuda")
    assert_one_sentence(caught.value, "cuda")
    assert models.choose_device("auto") == "cpu"


def test_quantization_rules(monkeypatch):
    monkeypatch.setattr(models, "_has_module", lambda name: True)
    assert models.choose_quantization("auto", "cuda") == (True, "")
    assert models.choose_quantization("auto", "cpu") == (False, "")   # bitsandbytes on CPU is not a GPU
    assert models.choose_quantization("none", "cuda") == (False, "")
    monkeypatch.setattr(models, "_has_module", lambda name: name != "bitsandbytes")
    quantized, note = models.choose_quantization("auto", "cuda")
    assert not quantized and "bitsandbytes" in note
    with pytest.raises(UserError) as caught:
        models.choose_quantization("4bit", "cuda")
    assert_one_sentence(caught.value, "bitsandbytes")


def test_describe_formats():
    assert describe(LoadedModel(None, None, "Qwen/Qwen2.5-Coder-7B", "cuda:0", "bf16", True)) == \
        "Qwen2.5-Coder-7B on cuda:0, 4-bit NF4"
    assert describe(LoadedModel(None, None, "/x/tiny-llama/", "cpu", "fp32", False, note="why")) == \
        "tiny-llama on cpu, fp32 (why)"


def test_cached_hub_id_loads_offline(tiny_model_dir, tmp_path):
    """A hub id found in the local cache loads with HF_HUB_OFFLINE=1 (the real hub code path)."""
    import hashlib

    repo = tmp_path / "hub" / "models--egcfg-test--tiny-llama"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for path in tiny_model_dir.iterdir():
        data = path.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / path.name).symlink_to(os.path.relpath(blob, snapshot))
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hub"))
    code = ("from engine.generation.models import load_model, describe\n"
            "m = load_model('egcfg-test/tiny-llama', device='cpu', dtype='fp32')\n"
            "print(describe(m), m.tokenizer.pad_token)\n")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "tiny-llama on cpu, fp32 <|endoftext|>"


def test_four_bit_nf4_through_bitsandbytes(tiny_model_dir):
    """bitsandbytes runs NF4 on CPU too (the tiny model's Linear in_features are multiples of 64)."""
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed (the optional [gpu] extra)")
    import torch

    loaded = load_model(str(tiny_model_dir), quantization="4bit")
    assert loaded.quantized and loaded.dtype == "bf16"
    assert type(loaded.model.model.layers[0].mlp.down_proj).__name__ == "Linear4bit"
    assert describe(loaded).endswith(", 4-bit NF4")
    ids = torch.tensor([loaded.tokenizer.encode("def f(x):\n", add_special_tokens=False)])
    assert loaded.model.generate(ids, max_new_tokens=3, do_sample=False).shape[1] > ids.shape[1]
