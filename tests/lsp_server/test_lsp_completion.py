"""The completion's plain logic: the site at the cursor, the engine's events turned into streamed
lines / progress / the body to insert, and the one-run-at-a-time GPU worker."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest

from engine.errors import UserError
from engine.generation.events import CancelToken, CandidatesRun, Finished, LineCommitted
from engine.project.testfile import TestCase, TestSuite
from lsp_server.completion import GpuRunner, body_to_insert, drive, site_at, task_fields

MODULE = '''import math

def area(r):
    """Area of a circle.

    >>> area(1)
    3.14
    """

def other():
    return 1
'''


def test_site_in_an_empty_body_after_the_docstring():
    site = site_at(MODULE + "", 8)
    assert site.function.name == "area" and site.insert_line == 8
    assert site.docstring.strip().startswith("Area of a circle.") and site.docstring_line == 4
    assert site.function.source_before.endswith('    """\n') and site.function.source_after == "\ndef other():\n    return 1\n"


def test_cursor_outside_any_function_or_in_a_signature_is_refused():
    with pytest.raises(UserError, match="not inside a function"):
        site_at(MODULE, 0)
    with pytest.raises(UserError, match="signature"):
        site_at(MODULE, 2)
    text = MODULE + "\n"
    with pytest.raises(UserError, match="not inside a function"):
        site_at(text, 12, 0)   # a blank line after other(), whose body is written
    assert site_at(text, 11, 4).function.name == "other"


def test_task_fields_carry_the_tests_and_setup():
    site = site_at(MODULE, 8)
    suite = TestSuite("area", cases=[TestCase("assert area(1) == 3.14", "doctest 1", "m.py", 6, "assert")], setup="import math")
    fields = task_fields(site, suite)
    assert fields["tests"] == ["assert area(1) == 3.14"] and fields["setup"] == "import math"
    assert fields["function_name"] == "area" and fields["source_before"] == site.function.source_before
    assert fields["test_names"] == ["doctest 1"]


def test_the_asserts_of_one_test_function_share_its_name():
    cases = [TestCase("assert f(1)", "test_f #1", "t.py", 3, "assert"), TestCase("assert f(2)", "test_f #2", "t.py", 4, "assert"),
             TestCase("assert f(3)", "test_g[1-2]", "t.py", 8, "assert"), TestCase("...", "doctest 2", "m.py", 5, "block")]
    assert [c.test for c in cases] == ["test_f", "test_f", "test_g[1-2]", "doctest 2"]


def test_body_from_a_whole_program_a_function_or_bare_lines():
    site = site_at(MODULE, 8)
    body = "    return round(math.pi * r * r, 2)\n"
    before, after = site.function.source_before, site.function.source_after
    assert body_to_insert(site, before + body + after) == body
    assert body_to_insert(site, 'def area(r):\n    """Area."""\n' + body) == body
    assert body_to_insert(site, body.rstrip("\n")) == body


def fake_events(site, lines, cancel_after=None, token=None):
    code = site.function.source_before
    for number, text in enumerate(lines, 1):
        yield CandidatesRun("a1", number, [text], [])
        code += text + "\n"
        yield LineCommitted("a1", number, text, code + site.function.source_after, body=code[len(site.function.source_before):])
        if cancel_after == number:
            token.cancel()
    yield Finished(code + site.function.source_after, 1, 1, "a1", True, 0.1, "solved", body=code[len(site.function.source_before):])


def test_drive_streams_lines_reports_progress_and_returns_the_body():
    site = site_at(MODULE, 8)
    streamed, progress = [], []
    lines = ["    a = math.pi * r * r", "    return round(a, 2)"]
    outcome = drive(fake_events(site, lines), site, CancelToken(), streamed.append, lambda p: progress.append(p.message))
    assert [s["text"] for s in streamed] == lines and [s["lineNo"] for s in streamed] == [1, 2]
    assert all(abs(s["engineTime"] - time.time()) < 5 for s in streamed)
    assert outcome.body == "\n".join(lines) + "\n" and (outcome.passed, outcome.total, outcome.agent) == (1, 1, "a1")
    assert not outcome.cancelled and any("line 2" in m for m in progress)


def test_drive_stops_at_the_first_event_after_a_cancel():
    site = site_at(MODULE, 8)
    token = CancelToken()
    streamed = []
    outcome = drive(fake_events(site, ["    a = 1", "    b = 2", "    return a"], cancel_after=1, token=token),
                    site, token, streamed.append, lambda p: None)
    assert outcome.cancelled and len(streamed) == 1 and outcome.body == ""


def test_drive_without_an_answer_is_an_error():
    site = site_at(MODULE, 8)
    with pytest.raises(UserError, match="without an answer"):
        drive(iter(()), site, CancelToken(), lambda line: None, lambda p: None)


def test_gpu_runner_runs_one_at_a_time_and_a_newer_run_cancels_the_older():
    runner = GpuRunner()
    started = threading.Event()
    active = []

    def slow(token):
        active.append(1)
        assert len(active) == 1, "two runs at once"
        started.set()
        while not token.cancelled:
            time.sleep(0.001)
        active.pop()
        return "stopped"

    first_token, first = runner.submit("inline:a", slow)
    assert started.wait(5)
    second_token, second = runner.submit("inline:b", lambda token: "second")
    assert first.result(timeout=5) == "stopped" and first_token.cancelled
    assert second.result(timeout=5) == "second" and not second_token.cancelled
    assert not runner.busy

    # cancelling by owner leaves other owners alone
    started.clear()
    token, future = runner.submit("command:a", slow)
    assert started.wait(5)
    assert runner.cancel(owner="inline:a") == 0 and runner.busy
    assert runner.cancel(owner="command:a") == 1 and future.result(timeout=5) == "stopped"
    runner.close()
