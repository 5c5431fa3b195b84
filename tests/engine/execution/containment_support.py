"""Constants and helpers shared by the hostile and containment suites (fixtures are in conftest.py)."""

from __future__ import annotations

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
