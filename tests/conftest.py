"""Shared pytest fixtures."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)  # 2 shared cores: torch's thread pool makes tiny-model tests far slower


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's tests, whatever an earlier test set (`--threads` runs in this
    process); tiny models on shared cores only lose to the thread pool (30x here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- tiny model (engine/generation/tiny.py) ---------------------------------------------------------------

@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random-weight llama + byte-level BPE tokenizer (with a ChatML chat template), built once
    per test session; load it with `engine.generation.models.load_model(str(tiny_model_dir))`."""
    from engine.generation.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama", arch="llama", seed=0)


# --- benchmark data and the executor (datasets, validate, trace) ---------------------------------

@pytest.fixture(scope="session")
def data_dir():
    """The benchmark data folder named by EGCFG_DATA (scripts/test points it at ../shared/data)."""
    import os
    from pathlib import Path

    value = os.environ.get("EGCFG_DATA")
    if not value:
        pytest.skip("EGCFG_DATA is not set: these tests need the benchmark data folder (see scripts/test)")
    path = Path(value)
    if not path.is_dir():
        pytest.fail(f"EGCFG_DATA={value} is not a folder")
    return path


@pytest.fixture(scope="session")
def executor():
    """One sandboxed executor shared by the session (2 workers: the machine has 2 cores)."""
    from engine.execution.executor import Executor

    with Executor(workers=2) as shared:
        yield shared
