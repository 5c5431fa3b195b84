"""`egcfg dev tiny-model`: a tiny random-weight model with a real byte-level BPE tokenizer.

Tests and benchmarks of the plumbing need a model that loads through the real loading code, has a
chat template and tokenises Python like a real code model, but builds offline in seconds. The
tokenizer is trained on a fixed list of the running interpreter's stdlib sources; the weights are
random (seeded), so the text it generates is nonsense, but every code path is exercised.
"""

from __future__ import annotations

import argparse
import functools
import sys
import sysconfig
from pathlib import Path

from engine.errors import UserError

ARCHES = ("llama", "qwen2")
DEFAULT_VOCAB_SIZE = 3000

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
BOS_TOKEN = "<|begin_of_text|>"   # only the llama flavour puts a BOS in front of its prompts
SPECIAL_TOKENS = [PAD_TOKEN, IM_START, IM_END, BOS_TOKEN]

# The same pre-tokenisation rule as Qwen2's tokenizer: newlines split from the indentation that
# follows them, so "\n" and "    " arrive as separate tokens (punctuation may carry trailing
# newlines, e.g. ":\n", as in the real thing: the decode loop must look inside token text).
SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# A ChatML template (the one Qwen instruct models use). `{{ bos_token }}` is empty for qwen2.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Stdlib modules whose source trains the tokenizer: a fixed list (about 600 KB of ordinary Python,
# code and docstrings), so the vocabulary is the same on every run with the same interpreter.
TRAINING_MODULES = (
    "abc.py", "argparse.py", "bisect.py", "calendar.py", "colorsys.py", "csv.py", "dataclasses.py",
    "difflib.py", "enum.py", "fractions.py", "functools.py", "heapq.py", "json/decoder.py",
    "json/encoder.py", "keyword.py", "numbers.py", "operator.py", "pprint.py", "queue.py",
    "random.py", "shlex.py", "statistics.py", "string.py", "textwrap.py", "tokenize.py",
)


def training_sources() -> list[str]:
    """The texts the tokenizer is trained on, in a fixed order."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    for name in TRAINING_MODULES:
        path = stdlib / name
        if path.is_file():
            texts.append(path.read_text(encoding="utf-8"))
    if sum(map(len, texts)) < 50_000:
        raise UserError(f"cannot train the tiny tokenizer: too little Python source found under {stdlib}")
    return texts


@functools.lru_cache(maxsize=4)
def _trained_bpe_json(vocab_size: int) -> str:
    """Train the byte-level BPE once per vocabulary size and process (tests build many models)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(training_sources(), trainer=trainer)
    return backend.to_str()


def build_tokenizer(vocab_size: int = DEFAULT_VOCAB_SIZE, arch: str = "llama"):
    """A byte-level BPE wrapped as a transformers fast tokenizer, with a chat template.

    Byte-level with no prefix space and no normaliser, so decode(encode(text)) == text exactly.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 400:
        raise UserError(f"--vocab-size must be at least 400 (256 bytes + merges), got {vocab_size}")
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_trained_bpe_json(vocab_size)),
        bos_token=BOS_TOKEN if arch == "llama" else None,
        eos_token=IM_END,
        pad_token=PAD_TOKEN,
        additional_special_tokens=[IM_START, IM_END],
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
        model_max_length=8192,
    )


def build_config(arch: str, tokenizer):
    """A 2-layer, 64-wide config; every Linear's in_features is a multiple of 64 (bitsandbytes on CPU)."""
    from transformers import LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        tie_word_embeddings=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    if arch == "llama":
        return LlamaConfig(**common)
    if arch == "qwen2":
        return Qwen2Config(**common)
    raise UserError(f"unknown --arch {arch!r}: choose one of {', '.join(ARCHES)}")


def build_tiny_model(directory: str | Path, arch: str = "llama", seed: int = 0,
                     vocab_size: int = DEFAULT_VOCAB_SIZE) -> Path:
    """Build and save a tiny random model + tokenizer into `directory`; returns the folder."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig
    from transformers.utils import logging as hf_logging

    if not sys.stderr.isatty():
        hf_logging.disable_progress_bar()   # progress goes to stderr only when someone watches it
    if arch not in ARCHES:
        raise UserError(f"unknown --arch {arch!r}: choose one of {', '.join(ARCHES)}")
    directory = Path(directory)
    tokenizer = build_tokenizer(vocab_size, arch)
    config = build_config(arch, tokenizer)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        do_sample=False,
    )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
    except OSError as error:
        raise UserError(f"cannot write the tiny model to {directory} ({error.strerror or error}): "
                        f"choose a writable folder") from error
    return directory


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", metavar="DIR", help="folder to write the model and tokenizer into")
    parser.add_argument("--arch", choices=ARCHES, default="llama", help="model architecture (default: llama)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the random weights (default: 0)")
    parser.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE,
                        help=f"BPE vocabulary size incl. special tokens (default: {DEFAULT_VOCAB_SIZE})")


def main(args: argparse.Namespace) -> int:
    path = build_tiny_model(args.directory, arch=args.arch, seed=args.seed, vocab_size=args.vocab_size)
    print(path)
    print(f"tiny-{args.arch} written to {path}", file=sys.stderr)
    return 0
