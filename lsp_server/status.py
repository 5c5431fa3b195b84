"""The `egcfg/status` notification's payload: what a client's status bar shows."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

STATES = ("loading", "ready", "running", "error", "idle")
STATUS_METHOD = "egcfg/status"
LINE_METHOD = "egcfg/completionLine"


@dataclass(frozen=True)
class Status:
    state: str = "idle"        # loading | ready | running | error | idle
    message: str = ""
    model: str = ""            # the model's name (as configured)
    device: str = ""           # "cpu", "cuda:0"; empty until loaded
    quantized: bool = False    # 4-bit NF4
    progress: int = 0          # 0-100 (loading, running)
    agent: str = ""            # running: the agent whose line was last committed
    line: int = 0              # running: that line's number in the body (1-based)
    passed: int = 0            # running: tests the best candidate passes
    total: int = 0             # running: tests in use
    interpreter: str = ""      # the Python that runs the project's tests ("Python 3.12.1 at ... (...)")
    isolation: str = ""        # the sandbox level running them: bubblewrap | landlock | limits (no isolation)

    def update(self, **changes) -> "Status":
        if "state" in changes and changes["state"] not in STATES:
            raise ValueError(f"unknown status state {changes['state']!r}")
        if changes.get("state") not in (None, "running"):  # run details only belong to a run
            changes = {"agent": "", "line": 0, "passed": 0, "total": 0, "progress": 0, **changes}
        return replace(self, **changes)

    def payload(self) -> dict:
        return asdict(self)
