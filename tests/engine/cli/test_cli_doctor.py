"""`egcfg doctor` through the real command line."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from engine.generation.models import DEFAULT_MODEL


def fake_hub_cache(cache: Path, repo_id: str, files: dict[str, bytes]) -> None:
    """The layout huggingface_hub writes: blobs, a snapshot of symlinks, refs/main."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))


def run_doctor(*args: str, cache: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if cache is not None:
        env["HF_HUB_CACHE"] = str(cache)
    return subprocess.run([sys.executable, "-m", "engine.cli.main", "doctor", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_doctor_json_has_every_section(tmp_path):
    done = run_doctor("--json", cache=tmp_path / "empty-cache")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report) == {"python", "tests_interpreter", "packages", "cuda", "bitsandbytes", "sandbox", "models"}
    assert report["tests_interpreter"]["version"] and report["tests_interpreter"]["description"].startswith("Python ")
    assert report["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert report["packages"]["torch"] and report["packages"]["transformers"]
    assert isinstance(report["cuda"]["available"], bool) and isinstance(report["cuda"]["devices"], list)
    assert "not a GPU signal" in report["bitsandbytes"]["note"]
    assert report["bitsandbytes"]["four_bit_on_gpu"] == (report["bitsandbytes"]["imports"]
                                                         and report["bitsandbytes"]["accelerate"]
                                                         and report["cuda"]["available"])
    sandbox = report["sandbox"]
    assert sandbox["isolation"] == ("bubblewrap" if sandbox["bwrap_works"] else "landlock" if sandbox["landlock_abi"] else "none")
    assert sandbox["bwrap_works"] == (sandbox["bwrap"] is not None and sandbox["bwrap_error"] == "")
    assert sandbox["reason"] and (sandbox["stronger"] or sandbox["isolation"] == "bubblewrap")
    models = report["models"]
    assert models["default_model"] == DEFAULT_MODEL
    assert models["cache"] == str(tmp_path / "empty-cache")
    assert models["cached"] == [] and models["default_model_cached"] is False
    assert models["would_load"]["device"] == ("cuda" if report["cuda"]["available"] else "cpu")


def test_doctor_lists_cached_models(tmp_path):
    cache = tmp_path / "hub"
    fake_hub_cache(cache, DEFAULT_MODEL, {"config.json": b'{"model_type": "qwen2"}'})
    fake_hub_cache(cache, "someone/other-model", {"config.json": b"{}", "model.safetensors": b"x" * 2_000_000})
    report = json.loads(run_doctor("--json", cache=cache).stdout)
    ids = [repo["id"] for repo in report["models"]["cached"]]
    assert ids == sorted([DEFAULT_MODEL, "someone/other-model"])
    assert report["models"]["default_model_cached"] is True
    sizes = {repo["id"]: repo["size_mb"] for repo in report["models"]["cached"]}
    assert 1.8 < sizes["someone/other-model"] < 2.1


def test_doctor_plain_text(tmp_path):
    done = run_doctor(cache=tmp_path / "empty-cache")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert text.startswith("egcfg ") and f"Python {'.'.join(map(str, sys.version_info[:3]))}" in text
    for expected in ("packages: torch", "bitsandbytes: imports", "sandbox: isolation", "model cache: ",
                     "no models cached", f"default model {DEFAULT_MODEL}: not cached"):
        assert expected in text, expected
    assert not text.lstrip().startswith("{")


def test_doctor_says_which_isolation_and_how_to_get_a_stronger_one(tmp_path, monkeypatch):
    """A machine without user namespaces (simulated: EGCFG_SANDBOX_SIMULATE) gets Landlock and is
    told how to get bubblewrap; without Landlock as well, egcfg refuses and says what to install."""
    monkeypatch.setenv("EGCFG_SANDBOX_SIMULATE", "no-userns")
    report = json.loads(run_doctor("--json", cache=tmp_path / "c").stdout)["sandbox"]
    if report["landlock_abi"]:
        assert report["isolation"] == "landlock" and "user namespaces" in report["stronger"]
    monkeypatch.setenv("EGCFG_SANDBOX_SIMULATE", "no-userns,no-landlock")
    done = run_doctor(cache=tmp_path / "c")
    assert "sandbox: isolation none" in done.stdout and "install bubblewrap" in done.stdout
