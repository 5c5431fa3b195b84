"""Constants and helpers shared by the hostile and containment suites (fixtures are in conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

from engine.errors import UserError
from engine.execution import isolation
from engine.execution.executor import Limits

REPO = Path(__file__).resolve().parents[3]
LIMITS = Limits(test_seconds=2.0, job_seconds=30.0, memory_mb=512, max_processes=32, output_keep=256,
                output_kill=1 << 20, file_size_mb=4)
ISOLATING_LEVELS = ["bubblewrap", "landlock"]
SENTINEL_TEXT = "egcfg sentinel: a hostile test must not read or change this"


def level_available(level: str) -> str:
    """"" when this machine offers ``level``, else why not (the reason a test is skipped)."""
    try:
        isolation.choose(level)
    except UserError as error:
        return str(error)
    return ""


PYENV = os.path.expanduser("~/.pyenv/versions")
OTHER_PYTHONS = {"3.12": f"{PYENV}/3.12.1/bin/python", "3.13": f"{PYENV}/3.13.0/bin/python"}


def versioned_executors():
    """get(level, version) -> an Executor whose sandbox worker runs under that Python ("own": the
    .venv's), made once; and close() for the fixture's teardown. Skips where a level or a Python
    is missing here."""
    import pytest

    from engine.execution.executor import Executor

    made = {}

    def get(level, version):
        key = (level, version)
        if key not in made:
            problem = level_available(level)
            if problem:
                pytest.skip(f"{level} is not available here: {problem}")
            python = OTHER_PYTHONS.get(version)
            if version != "own" and not (python and os.path.exists(python)):
                pytest.skip(f"no Python {version} here")
            made[key] = Executor(workers=2, limits=LIMITS, isolation=level, project_root=str(REPO), python=python)
        return made[key]

    def close():
        for ex in made.values():
            ex.close()

    return get, close
