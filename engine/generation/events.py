"""The engine's streaming API: the task, a cancel token, and the events `run_completion` yields.

Plain dataclasses (no LSP types): the CLI prints them, the language server turns them into
notifications, benchmarks count them.

Every `code` field holds a whole program as it runs: `source_before + body + source_after`, where
`body` is the text the engine wrote after `source_before` (also given, as `body`, for inserting in
an editor).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Union


@dataclass
class CompletionTask:
    function_name: str
    source_before: str      # module text up to where the body is written (def + docstring + lines so far)
    source_after: str = ""  # module text after the function (kept when executing)
    instruction: str = ""   # natural-language instruction (MBPP text); may be empty
    tests: list[str] = field(default_factory=list)   # tests guidance and the stopping rule may use
    setup: str = ""         # run before each test (imports the tests need)
    project: dict | None = None  # the module's layout (engine.project.layout): candidates run as the module of its package
    test_names: list[str] = field(default_factory=list)  # per test: the test it belongs to (asserts of one
    #                                                     test function share a name); empty: each counts alone

    @property
    def test_count(self) -> int:
        """How many tests the user sees (named tests, else asserts)."""
        return len(set(self.test_names)) if len(self.test_names) == len(self.tests) else len(self.tests)

    def tests_passed(self, result: Any) -> tuple[int, int]:
        """(passed, total) in the user's unit: a named test passes when all its asserts pass."""
        if len(self.test_names) != len(self.tests) or len(result.tests) != len(self.tests):
            return result.passed, result.total
        failed = {name for name, test in zip(self.test_names, result.tests) if test.outcome != "pass"}
        names = set(self.test_names)
        return len(names - failed), len(names)

    def program(self, body: str) -> str:
        """The module as it runs with `body` written after `source_before`."""
        if body and not body.endswith("\n") and self.source_after:
            body += "\n"
        return self.source_before + body + self.source_after


class CancelToken:
    """Set from any thread; the engine checks it before every forward pass and while it waits
    for the sandbox, so a cancelled run returns within one forward pass."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


@dataclass
class CandidatesRun:
    """An agent sampled candidate continuations for its next line and ran them against the tests."""
    agent: str
    line_no: int                 # the line about to be decoded (1-based)
    candidates: list[str]        # the unique executable continuations (current partial line + up to d lines)
    results: list[Any]           # engine.execution.executor.JobResult per candidate, same order
    programs: list[str] = field(default_factory=list)   # the programs that ran, same order
    sampled: int = 0             # rows sampled before repair and de-duplication
    seconds: float = 0.0         # wall time of the sandbox run
    scores: list[tuple[int, int]] = field(default_factory=list)  # (passed, total) per candidate (CompletionTask.tests_passed)


@dataclass
class LineCommitted:
    """A line of the body is final (guided decoding emitted its newline)."""
    agent: str
    line_no: int                 # 1-based, counted per agent
    text: str                    # the line, without its newline
    code: str                    # the whole program with the body so far
    signal: str = ""             # the execution signal the line was decoded with ("" without guidance)
    body: str = ""               # the body so far (the text written after source_before)


@dataclass
class AgentFinished:
    agent: str
    code: str                    # the agent's whole program
    passed: int
    total: int
    reason: str                  # "complete" | "token_cap" | "cancelled" | "error"
    body: str = ""
    message: str = ""            # one sentence: how it ended


@dataclass
class Finished:
    """The run is over: the answer and how it was chosen."""
    code: str                    # the returned program
    passed: int                  # of the task's given tests (never evaluation tests)
    total: int
    agent: str                   # the agent whose program is returned ("" when none finished)
    solved: bool                 # the program passes every given test
    seconds: float
    status: str                  # one sentence for the user
    body: str = ""


Event = Union[CandidatesRun, LineCommitted, AgentFinished, Finished]
