"""The real engine, slowed down, for the VS Code end-to-end test.

The server's testing hook (EGCFG_LSP_BACKEND=module:callable, see lsp_server/backend.py) loads
this class instead of EngineBackend. Model loading and the sandboxed test runs are the real ones.

- With a tiny model the engine writes a whole function in well under a second, too fast to see
  the ghost text grow, so the event stream pauses EGCFG_E2E_LINE_DELAY_MS after each committed line.
- EGCFG_E2E_LOAD_DELAY_MS delays the model load (a command sent meanwhile must wait, not refuse).
- A random-weight model almost never writes more than one line, so line-by-line growth cannot be
  seen with it. For the functions named in the JSON file EGCFG_E2E_SCRIPT ({"name": [line, ...]}),
  the committed lines are those lines instead of the model's (same event types, same pauses); the
  test checks the growth on such a function. Every other function gets the model's lines.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Iterator

from lsp_server.backend import EngineBackend


def _pause(seconds: float, cancel) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not cancel.cancelled:  # cancel stays prompt
        time.sleep(0.02)


def _scripts() -> dict[str, list[str]]:
    path = os.environ.get("EGCFG_E2E_SCRIPT", "")
    if not path:
        return {}
    with open(path, encoding="utf-8") as file:
        return json.load(file)


class SlowEngineBackend(EngineBackend):
    def load(self, settings):
        # EGCFG_E2E_LOAD_DELAY_MS: a slow model load, so that a command can be sent while it loads
        time.sleep(float(os.environ.get("EGCFG_E2E_LOAD_DELAY_MS", "0")) / 1000)
        return super().load(settings)

    def complete(self, settings, project_root, task_fields, cancel) -> Iterator[Any]:
        delay = float(os.environ.get("EGCFG_E2E_LINE_DELAY_MS", "1500")) / 1000
        script = _scripts().get(task_fields["function_name"])
        events = (self._scripted(settings, project_root, task_fields, script, cancel) if script is not None
                  else super().complete(settings, project_root, task_fields, cancel))
        for event in events:
            yield event
            if type(event).__name__ == "LineCommitted":
                _pause(delay, cancel)

    def _scripted(self, settings, project_root, task_fields, lines: list[str], cancel) -> Iterator[Any]:
        """The engine's events for a body written as `lines`, judged by the real sandbox."""
        from engine.generation.events import AgentFinished, Finished, LineCommitted

        agent = "scripted/greedy"
        started = time.monotonic()
        before, after = task_fields["source_before"], task_fields.get("source_after", "")
        body = ""
        for number, text in enumerate(lines, 1):
            if cancel.cancelled:
                return
            body += text + "\n"
            yield LineCommitted(agent=agent, line_no=number, text=text, code=before + body + after, body=body)
        program = before + body + after
        tests = task_fields.get("tests", [])
        [result] = self.run_tests(settings, project_root, [(program, tests, task_fields.get("setup", ""))])
        passed, total = result.passed, result.total
        yield AgentFinished(agent=agent, code=program, passed=passed, total=total, reason="complete", body=body,
                            message=f"the scripted body passes {passed}/{total} tests")
        yield Finished(code=program, passed=passed, total=total, agent=agent, solved=passed == total,
                       seconds=time.monotonic() - started, status=f"{passed}/{total} tests pass", body=body)
