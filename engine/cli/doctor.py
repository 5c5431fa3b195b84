"""`egcfg doctor`: what this machine offers: versions, GPU, 4-bit, sandbox isolation, model cache.

Every probe is cheap and never raises: a failing probe is reported as a finding, because the
point of the command is to explain a broken setup.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "transformers", "tokenizers", "accelerate", "bitsandbytes", "huggingface_hub",
            "pygls", "lsprotocol")


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _imports(module: str) -> tuple[bool, str]:
    try:
        importlib.import_module(module)
        return True, ""
    except Exception as error:  # a broken install raises all sorts of things
        return False, f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"


def check_python() -> dict:
    import engine

    return {"version": platform.python_version(), "executable": sys.executable, "egcfg": engine.__version__,
            "platform": platform.platform()}


def check_cuda() -> dict:
    try:
        import torch
    except Exception as error:
        return {"available": False, "error": f"torch does not import: {error}", "devices": []}
    info: dict[str, Any] = {"available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda, "devices": []}
    if info["available"]:
        for index in range(torch.cuda.device_count()):
            properties = torch.cuda.get_device_properties(index)
            free, total = torch.cuda.mem_get_info(index)
            info["devices"].append({"index": index, "name": properties.name,
                                    "total_mb": total // 2**20, "free_mb": free // 2**20,
                                    "bf16": torch.cuda.is_bf16_supported()})
    return info


def check_bitsandbytes(cuda_available: bool) -> dict:
    imports, error = _imports("bitsandbytes")
    accelerate, _ = _imports("accelerate")
    return {
        "imports": imports,
        "error": error,
        "version": _version("bitsandbytes"),
        "accelerate": accelerate,
        "four_bit_on_gpu": imports and accelerate and cuda_available,
        "note": "bitsandbytes also imports (and runs 4-bit) on CPU, so it is not a GPU signal; "
                "CUDA availability comes from torch.cuda.is_available()",
    }


def _pids_cgroup_dir() -> Path | None:
    """This process's pids cgroup folder (cgroup v1 pids hierarchy, or the v2 unified one)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if "pids" in controllers.split(","):
            return Path("/sys/fs/cgroup/pids") / path.lstrip("/")
    for line in lines:
        if line.startswith("0::"):
            folder = Path("/sys/fs/cgroup") / line[3:].lstrip("/")
            try:
                if "pids" in (folder / "cgroup.controllers").read_text().split():
                    return folder
            except OSError:
                return None
    return None


def _cgroup_probe() -> dict:
    folder = _pids_cgroup_dir()
    if folder is None or not folder.is_dir():
        return {"pids_cgroup": None, "pids_cgroup_writable": False}
    probe = folder / f"egcfg-doctor-{os.getpid()}"
    try:
        probe.mkdir()
        writable = (probe / "pids.max").exists()
        probe.rmdir()
    except OSError:
        writable = False
    return {"pids_cgroup": str(folder), "pids_cgroup_writable": writable}


def check_sandbox() -> dict:
    """The isolation `auto` picks here (engine/execution/isolation.py), why, and how to get a stronger one."""
    from engine.errors import UserError
    from engine.execution import isolation
    from engine.execution.sandbox import landlock

    bwrap, bwrap_error = isolation.find_bwrap()
    cgroup = _cgroup_probe()
    process_cap = "pids cgroup" if cgroup["pids_cgroup_writable"] else (
        "RLIMIT_NPROC (not enforced for root)" if hasattr(os, "getuid") and os.getuid() == 0 else "RLIMIT_NPROC")
    try:
        choice = isolation.choose()
        level, reason, stronger, refused = choice.level, choice.reason, choice.stronger, ""
    except UserError as error:
        level, reason, stronger, refused = "none", str(error), isolation.NO_SANDBOX, str(error)
    from engine.execution import seccomp_filter

    return {
        "bwrap": bwrap,
        "bwrap_works": bwrap is not None,
        "bwrap_error": bwrap_error,
        "landlock_abi": landlock.abi_version(),
        "seccomp": seccomp_filter.available() or "available",
        **cgroup,
        "isolation": level,  # what egcfg uses by default here ("none": it refuses to run tests)
        "reason": reason,
        "stronger": stronger,
        "refused": refused,
        "requested": isolation.requested_level(None) if not refused or "unknown" not in refused else "invalid",
        "process_cap": process_cap,
    }


def check_models() -> dict:
    from engine.generation import models

    info: dict[str, Any] = {"default_model": models.DEFAULT_MODEL}
    try:
        from huggingface_hub import constants, scan_cache_dir

        info["cache"] = str(constants.HF_HUB_CACHE)
        info["offline"] = bool(constants.HF_HUB_OFFLINE)
        try:
            repos = scan_cache_dir(constants.HF_HUB_CACHE).repos
        except Exception:   # no cache folder yet, or an unreadable one
            repos = []
        info["cached"] = sorted(({"id": repo.repo_id, "size_mb": round(repo.size_on_disk / 2**20, 1)}
                                 for repo in repos if repo.repo_type == "model"), key=lambda r: r["id"])
        info["default_model_cached"] = models._is_cached(models.DEFAULT_MODEL)
    except Exception as error:
        info.update(cache=None, cached=[], default_model_cached=False, error=str(error))
    try:
        device = models.choose_device("auto")
        quantized, note = models.choose_quantization("auto", device)
        info["would_load"] = {"device": device, "dtype": models.choose_dtype("auto", device),
                              "quantized": quantized, "note": note}
    except Exception as error:
        info["would_load"] = {"error": str(error)}
    return info


def check_tests_interpreter(workspace: str, python: str = "") -> dict:
    """Which Python runs the project's tests here (the same choice `egcfg serve` makes)."""
    from engine.errors import UserError
    from engine.execution import interpreter

    try:
        return interpreter.select(workspace, python).to_dict()
    except UserError as error:
        return {"error": str(error)}


def collect(workspace: str = ".", python: str = "") -> dict:
    cuda = check_cuda()
    return {
        "python": check_python(),
        "tests_interpreter": check_tests_interpreter(os.path.abspath(workspace), python),
        "packages": {name: _version(name) for name in PACKAGES},
        "cuda": cuda,
        "bitsandbytes": check_bitsandbytes(cuda["available"]),
        "sandbox": check_sandbox(),
        "models": check_models(),
    }


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def format_text(report: dict) -> str:
    python, cuda, bnb, sandbox, found = (report[key] for key in ("python", "cuda", "bitsandbytes", "sandbox", "models"))
    lines = [f"egcfg {python['egcfg']} on Python {python['version']} ({python['executable']})",
             "packages: " + ", ".join(f"{name} {version or 'missing'}" for name, version in report["packages"].items())]
    tests = report.get("tests_interpreter") or {}
    lines.append(f"tests run with: {tests.get('description') or tests.get('error')}")
    if cuda["available"]:
        for device in cuda["devices"]:
            lines.append(f"cuda:{device['index']}: {device['name']}, {device['free_mb']} of {device['total_mb']} MB free")
    else:
        lines.append("cuda: no GPU visible to torch" + (f" ({cuda['error']})" if cuda.get("error") else ""))
    lines.append(f"bitsandbytes: imports {_yes(bnb['imports'])}, accelerate {_yes(bnb['accelerate'])}, "
                 f"4-bit on GPU {_yes(bnb['four_bit_on_gpu'])} (note: {bnb['note']})")
    bwrap = f"{sandbox['bwrap']} works" if sandbox["bwrap_works"] else f"unusable: {sandbox['bwrap_error']}"
    lines.append(f"sandbox: isolation {sandbox['isolation']}: {sandbox['reason']}")
    lines.append(f"  bwrap {bwrap}; Landlock ABI {sandbox['landlock_abi']}; seccomp filter {sandbox['seccomp']}; "
                 f"process cap: {sandbox['process_cap']}")
    if sandbox["stronger"]:
        lines.append(f"  stronger isolation: {sandbox['stronger']}")
    lines.append(f"model cache: {found.get('cache')}" + (" (HF_HUB_OFFLINE is set)" if found.get("offline") else ""))
    for repo in found.get("cached", []):
        lines.append(f"  {repo['id']} ({repo['size_mb']} MB)")
    if not found.get("cached"):
        lines.append("  no models cached")
    lines.append(f"default model {found['default_model']}: {'cached' if found.get('default_model_cached') else 'not cached'}")
    would = found.get("would_load", {})
    if "error" not in would:
        precision = "4-bit NF4" if would["quantized"] else would["dtype"]
        lines.append(f"models load on {would['device']} as {precision}" + (f" ({would['note']})" if would["note"] else ""))
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the findings as one JSON object")
    parser.add_argument("--workspace", default=".", metavar="FOLDER",
                        help="the project whose tests' interpreter to report (default: the current folder)")
    parser.add_argument("--python", default="", metavar="PATH", help="the project's interpreter, as the python setting")


def main(args: argparse.Namespace) -> int:
    report = collect(args.workspace, args.python)
    print(json.dumps(report, indent=2) if args.json else format_text(report))
    return 0
