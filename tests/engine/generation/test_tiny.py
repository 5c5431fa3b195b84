"""The tiny model: offline BPE tokenizer + random weights, built in seconds, deterministic."""

from __future__ import annotations

import hashlib
import inspect
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from engine.errors import UserError
from engine.generation.tiny import build_tiny_model, build_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


CODE_SAMPLES = [
    inspect.getsource(textwrap),
    "def f(x):\n    if x:\n        return x + 1\n\n\treturn  None   \n",
    "s = 'héllo wörld 🐍 — ünïcode'\r\nprint(s)\n",
    "   leading spaces and trailing\n\n\n",
    "",
]


@pytest.mark.parametrize("text", CODE_SAMPLES)
def test_round_trips_code_exactly(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text


def test_vocabulary_size_and_special_tokens(tokenizer):
    assert 2000 <= len(tokenizer) <= 4000
    for token in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        ids = tokenizer.encode(token, add_special_tokens=False)
        assert len(ids) == 1, token           # one token each, never split into bytes
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id


def test_newlines_are_separate_from_indentation(tokenizer):
    pieces = [tokenizer.decode([i]) for i in tokenizer.encode("    x = 1\n        return x\n", add_special_tokens=False)]
    newline_tokens = [p for p in pieces if "\n" in p]
    assert newline_tokens and all(p.endswith("\n") for p in newline_tokens), pieces
    # a 10-line function costs far fewer tokens than characters (merges were learnt)
    source = inspect.getsource(textwrap.dedent)
    assert len(tokenizer.encode(source, add_special_tokens=False)) < len(source) / 2.5


def test_chat_template_is_chatml(tokenizer):
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_builds_quickly_and_generates(tmp_path, arch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.monotonic()
    folder = build_tiny_model(tmp_path / arch, arch=arch, seed=3)
    assert time.monotonic() - start < 30
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(digest(folder))
    model = AutoModelForCausalLM.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    assert model.config.model_type == arch
    assert model.config.vocab_size == len(tok)
    assert model.config.max_position_embeddings >= 8192
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            assert module.in_features % 64 == 0, name
    ids = torch.tensor([tok.encode("def add(a, b):\n", add_special_tokens=False)])
    out = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > ids.shape[1]


def test_same_seed_same_files_other_seed_other_weights(tmp_path):
    from engine.generation.tiny import _trained_bpe_json

    a = digest(build_tiny_model(tmp_path / "a", seed=0))
    _trained_bpe_json.cache_clear()   # train the tokenizer again: training itself is deterministic
    b = digest(build_tiny_model(tmp_path / "b", seed=0))
    c = digest(build_tiny_model(tmp_path / "c", seed=1))
    assert a == b
    assert a["tokenizer.json"] == c["tokenizer.json"]
    assert a["model.safetensors"] != c["model.safetensors"]


def test_unknown_arch_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="arch"):
        build_tiny_model(tmp_path / "x", arch="gpt2")


def test_cli_writes_the_model(tmp_path):
    folder = tmp_path / "cli-model"
    done = subprocess.run([sys.executable, "-m", "engine.cli.main", "dev", "tiny-model", str(folder), "--arch", "qwen2",
                           "--vocab-size", "2500"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(folder)
    from transformers import AutoTokenizer
    assert len(AutoTokenizer.from_pretrained(folder)) == 2500


def test_unwritable_target_is_a_user_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError) as caught:
        build_tiny_model(blocker / "model")
    assert str(blocker / "model") in str(caught.value) and "\n" not in str(caught.value)
