"""Model + tokenizer loading: 4-bit NF4 on CUDA, bf16/fp32 on CPU, one clear sentence when it fails.

`load_model` accepts a local folder (anything `save_pretrained` wrote) or a Hugging Face hub id.
Hub ids are looked up in the local cache first; when they are missing and the hub cannot be
reached (HF_HUB_OFFLINE=1, or no network), the user gets one sentence saying what was looked for
and how to point at local weights, instead of a traceback after half a minute of retries.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from engine.errors import UserError

log = logging.getLogger("egcfg.models")

# The default model for the editor: a small instruct-tuned code model that fits a laptop GPU in
# 4-bit (about 1.2 GB) and still writes sensible Python; pass --model for a bigger one.
DEFAULT_MODEL = "Qwen/Qwen2.5-Coder-1.5B-Instruct"

DEVICES = ("auto", "cpu", "cuda")
QUANTIZATIONS = ("auto", "4bit", "none")
DTYPES = ("auto", "bf16", "fp16", "fp32")
# Who multiplies 4-bit weights by 1-4 rows (engine.generation.nf4_gemv): "auto" times bitsandbytes'
# kernel and our configurations on the model's own layers when it loads, and takes the faster per shape.
NF4_KERNELS = ("bitsandbytes", "egcfg", "auto")
# bitsandbytes' kernel by default: on an H200 under CUDA graphs it ran a 7B decoder layer in 142 us (1 row)
# and 209 us (2 rows) against our kernel's 189 and 263 (benchmarks/results/gpu-nvidia-h200-20261126-233634.json).
DEFAULT_NF4_KERNEL = "bitsandbytes"

CONFIG_FILE = "config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")

HOW_TO_POINT = ("pass --model /path/to/folder (a folder written by save_pretrained), "
                "or run once on a machine with network access to the hub to download it")


@dataclass
class LoadedModel:
    model: Any = field(repr=False)      # a transformers causal LM, in eval mode, gradients off
    tokenizer: Any = field(repr=False)  # its tokenizer; pad_token is always set
    name: str               # the hub id or the folder, as given
    device: str             # "cpu" | "cuda:0" ...
    dtype: str              # "bf16" | "fp16" | "fp32": the weights' dtype, or the compute dtype when quantized
    quantized: bool         # True: 4-bit NF4 through bitsandbytes
    note: str = ""          # why the load differs from what was asked, e.g. no bitsandbytes -> bf16
    nf4_kernel: dict | None = None   # 4-bit: which kernel runs 1-4 rows, its check (nf4_gemv.NF4Report), joined projections


def describe(loaded: LoadedModel) -> str:
    """One line for logs and status bars: "tiny-llama on cpu, bf16" / "Qwen2.5-Coder-7B on cuda:0, 4-bit NF4"."""
    short_name = Path(loaded.name.rstrip("/\\")).name or loaded.name
    precision = "4-bit NF4" if loaded.quantized else loaded.dtype
    text = f"{short_name} on {loaded.device}, {precision}"
    return f"{text} ({loaded.note})" if loaded.note else text


# ------------------------------------------------------------------------------------------------
# Where the model comes from

def _looks_like_a_path(name: str) -> bool:
    """Hub ids are "name" or "org/name"; anything else with a separator is meant as a folder."""
    return (name.startswith((".", "~", "/", "\\")) or os.path.isabs(name)
            or name.count("/") > 1 or "\\" in name)


def _check_local_folder(folder: Path) -> None:
    """Raise one sentence naming what a usable model folder lacks."""
    if not folder.is_dir():
        raise UserError(f"{folder} is a file, not a model folder: pass --model with the folder that "
                        f"holds config.json, the tokenizer files and the weights")
    names = {p.name for p in folder.iterdir()}
    if CONFIG_FILE not in names:
        raise UserError(f"{folder} has no {CONFIG_FILE}, so it is not a saved model: pass --model with a "
                        f"folder written by save_pretrained (config.json, tokenizer files, weights)")
    if not names & set(TOKENIZER_FILES):
        raise UserError(f"{folder} has no tokenizer (looked for {', '.join(TOKENIZER_FILES)}): save the "
                        f"tokenizer into the same folder with tokenizer.save_pretrained({str(folder)!r})")
    if not any(name.endswith(WEIGHT_SUFFIXES) for name in names):
        raise UserError(f"{folder} has a config but no weights (*.safetensors or *.bin): save the model "
                        f"with model.save_pretrained({str(folder)!r}) or pass --model with another folder")


def _hub_is_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _is_cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, CONFIG_FILE), str)
    except Exception:  # an id the hub would reject is not cached either
        return False


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP connect to the hub, so no network means an answer in seconds, not after the
    hub client's retries (about 25 s). Behind a proxy we cannot tell, so we let the client try."""
    if any(os.environ.get(var) for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    from huggingface_hub import constants

    endpoint = urlparse(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _not_available(repo_id: str, why: str) -> UserError:
    from huggingface_hub import constants

    return UserError(f"model {repo_id!r} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) "
                     f"and {why}: {HOW_TO_POINT}")


def resolve_source(name_or_dir: str) -> tuple[str, bool]:
    """(what to pass to from_pretrained, whether it is a local folder); raises UserError early."""
    if not name_or_dir or not name_or_dir.strip():
        raise UserError(f"no model given: pass --model with a hub id such as {DEFAULT_MODEL} or a local folder")
    folder = Path(name_or_dir).expanduser()
    if folder.exists():
        _check_local_folder(folder)
        return str(folder), True
    if _looks_like_a_path(name_or_dir):
        raise UserError(f"no model folder at {name_or_dir}: pass --model with an existing folder or a hub id "
                        f"such as {DEFAULT_MODEL}")
    if not HUB_ID.match(name_or_dir):
        raise UserError(f"{name_or_dir!r} is neither an existing folder nor a hub id like {DEFAULT_MODEL}: "
                        f"pass --model with a model folder or a hub id")
    if _is_cached(name_or_dir):
        return name_or_dir, False
    if _hub_is_offline():
        raise _not_available(name_or_dir, "cannot be downloaded because HF_HUB_OFFLINE is set (unset it to download)")
    if not _hub_reachable():
        raise _not_available(name_or_dir, "the hub cannot be reached (no network)")
    return name_or_dir, False


# ------------------------------------------------------------------------------------------------
# How to load it

def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def choose_device(device: str) -> str:
    if device not in DEVICES:
        raise UserError(f"unknown device {device!r}: choose one of {', '.join(DEVICES)}")
    if device == "cuda" and not _cuda_available():
        raise UserError("device 'cuda' was asked for but torch sees no CUDA GPU: use --device cpu or auto")
    if device == "auto":
        return "cuda" if _cuda_available() else "cpu"
    return device


def choose_dtype(dtype: str, device: str) -> str:
    """GPU: bf16 where supported, else fp16. CPU: bf16 when the CPU does bf16 natively (measured
    faster than fp32 here for a small Llama), else fp32 (emulated bf16 is slow)."""
    import torch

    if dtype not in DTYPES:
        raise UserError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    if dtype != "auto":
        return dtype
    if device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if _cpu_has_native_bf16() else "fp32"


def _cpu_has_native_bf16() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            flags = cpuinfo.read(1 << 20)
    except OSError:
        return sys.platform == "darwin"   # Apple silicon runs bf16 natively
    return "avx512_bf16" in flags or "amx_bf16" in flags


def choose_quantization(quantization: str, device: str) -> tuple[bool, str]:
    """(4-bit or not, note). auto: 4-bit on CUDA when bitsandbytes is installed. bitsandbytes
    imports (and runs) on CPU too, so it is never taken as a sign of a GPU."""
    if quantization not in QUANTIZATIONS:
        raise UserError(f"unknown quantization {quantization!r}: choose one of {', '.join(QUANTIZATIONS)}")
    have_bnb = _has_module("bitsandbytes") and _has_module("accelerate")
    if quantization == "none":
        return False, ""
    if quantization == "4bit":
        if not have_bnb:
            raise UserError("4-bit loading needs bitsandbytes and accelerate: pip install 'egcfg[gpu]' "
                            "(or pip install bitsandbytes accelerate), or use --quantization none")
        return True, ""
    if device != "cuda":
        return False, ""
    if not have_bnb:
        return False, "bitsandbytes is not installed, so the weights are not 4-bit"
    return True, ""


def _torch_dtype(dtype: str):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]


def _load_tokenizer(source: str, name: str):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise UserError(f"could not load the tokenizer of {name} ({_first_line(error)}): pass --model with a "
                        f"folder that holds the tokenizer files next to config.json") from error
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise UserError(f"the tokenizer of {name} has neither a pad nor an eos token, so batches cannot be "
                            f"padded: use a tokenizer that defines eos_token")
        tokenizer.pad_token = tokenizer.eos_token   # padded positions are masked, any id will do
    return tokenizer


def _load_weights(source: str, name: str, device: str, dtype: str, quantized: bool):
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": _torch_dtype(dtype)}
    if quantized:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=_torch_dtype(dtype))
    if device == "cuda":
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    elif quantized:
        kwargs["device_map"] = {"": "cpu"}
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except torch.cuda.OutOfMemoryError as error:
        raise UserError(f"{name} does not fit in GPU memory: use a smaller model, --quantization 4bit, "
                        f"or --device cpu") from error
    except ImportError as error:   # e.g. a bitsandbytes build that does not match this torch
        raise UserError(f"could not load {name} ({_first_line(error)}): fix that package or use "
                        f"--quantization none") from error
    except (OSError, ValueError, KeyError) as error:
        raise UserError(f"could not load the weights of {name} ({_first_line(error)}): pass --model with a "
                        f"folder written by save_pretrained, or a hub id of a causal language model") from error
    model.eval()
    model.requires_grad_(False)   # inference only: no autograd graph, less memory
    return model


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__).rstrip(".")[:300]


def _device_name(model) -> str:
    device = getattr(model, "device", None)
    return str(device) if device is not None else "cpu"


def apply_nf4_kernel(model, nf4_kernel: str = DEFAULT_NF4_KERNEL) -> dict:
    """A 4-bit model's small batches (1-4 rows) through our NF4 kernel ("egcfg": on CUDA, after it
    matches bitsandbytes on a layer of each shape), bitsandbytes' own, or per weight shape the faster
    of the two as timed on this GPU ("auto", a few seconds at load); the report as a dict."""
    if nf4_kernel not in NF4_KERNELS:
        raise UserError(f"unknown NF4 kernel {nf4_kernel!r}: choose one of {', '.join(NF4_KERNELS)}")
    from engine.generation.nf4_gemv import NF4Report, four_bit_layers, use_nf4_gemv

    if nf4_kernel == "bitsandbytes":
        return NF4Report("bitsandbytes", len(four_bit_layers(model)), 0, reason="bitsandbytes' kernel was chosen").as_dict()
    if nf4_kernel == "auto" and torch_device_type(model) == "cuda":
        log.info("timing bitsandbytes' NF4 kernel and egcfg's on this model's weight shapes (a few seconds)")
    report = use_nf4_gemv(model, choose=nf4_kernel == "auto")
    if report.layers and not report.switched and torch_device_type(model) == "cuda" and nf4_kernel == "egcfg":
        log.warning("NF4 layers keep bitsandbytes' kernel: %s", report.reason)
    elif nf4_kernel == "auto" and report.shapes:
        log.info("NF4 kernel per weight shape: %s", ", ".join(
            f"{shape} {choice['config'] or choice['kernel']}" for shape, choice in report.shapes.items()))
    return report.as_dict()


def prepare_4bit(model, nf4_kernel: str = DEFAULT_NF4_KERNEL, join: bool = True) -> dict:
    """A 4-bit model made ready to decode: sibling projections joined (engine.generation.fused: the
    same outputs bit for bit, fewer bitsandbytes calls; `join=False` keeps them apart), then the NF4
    kernel chosen (apply_nf4_kernel). The kernel report, with `joined_projections`: how many groups
    were joined."""
    from engine.generation.fused import fuse_projections

    joined = fuse_projections(model) if join else 0
    report = apply_nf4_kernel(model, nf4_kernel)
    report["joined_projections"] = joined
    return report


def torch_device_type(model) -> str:
    return getattr(getattr(model, "device", None), "type", "cpu")


def load_model(name_or_dir: str | os.PathLike, *, device: str = "auto", quantization: str = "auto",
               dtype: str = "auto", nf4_kernel: str = DEFAULT_NF4_KERNEL) -> LoadedModel:
    """Load a causal LM and its tokenizer for inference (eval mode, no gradients, pad token set).
    `nf4_kernel`: see apply_nf4_kernel (4-bit models only)."""
    name_or_dir = os.fspath(name_or_dir)
    if nf4_kernel not in NF4_KERNELS:
        raise UserError(f"unknown NF4 kernel {nf4_kernel!r}: choose one of {', '.join(NF4_KERNELS)}")
    device = choose_device(device)
    dtype = choose_dtype(dtype, device)
    quantized, note = choose_quantization(quantization, device)
    if quantized and dtype == "fp32":
        dtype = "bf16"   # NF4 compute in fp32 buys nothing and costs memory bandwidth
    source, _local = resolve_source(name_or_dir)
    tokenizer = _load_tokenizer(source, name_or_dir)
    model = _load_weights(source, name_or_dir, device, dtype, quantized)
    nf4 = prepare_4bit(model, nf4_kernel) if quantized else None
    if getattr(model, "generation_config", None) is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if note:
        log.warning("%s", note)
    return LoadedModel(model=model, tokenizer=tokenizer, name=name_or_dir, device=_device_name(model),
                       dtype=dtype, quantized=quantized, note=note, nf4_kernel=nf4)
