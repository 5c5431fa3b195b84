"""Shared by the hostile and containment suites: one executor per isolation level (built once per
module), the level list, a temporary HOME holding a sentinel, and `run_case`, which runs one
hostile program and checks the bars every case must meet."""

from __future__ import annotations

import os
import time
import uuid

import pytest

from containment_support import LIMITS, REPO, SENTINEL_TEXT, level_available
from engine.execution.executor import Executor, Job

@pytest.fixture(scope="session", autouse=True)
def temporary_home(tmp_path_factory):
    """HOME is a temporary folder with a sentinel file for the whole run: attacks that reach the
    host's home folder would hit this one, and every case checks the sentinel afterwards."""
    home = tmp_path_factory.mktemp("home")
    (home / "sentinel.txt").write_text(SENTINEL_TEXT)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(home))
        yield home


@pytest.fixture(scope="module")
def sandboxes():
    made = {}

    def get(level, project_root=str(REPO)):
        key = (level, project_root)
        if key not in made:
            problem = level_available(level) if level != "limits" else ""
            if problem:
                pytest.skip(f"{level} is not available here: {problem}")
            made[key] = Executor(workers=2, limits=LIMITS, isolation=level, project_root=project_root)
            made[key].map([Job("def f():\n    return 1\n", ("assert f() == 1",) * 2)])
        return made[key]

    yield get
    for ex in made.values():
        ex.close()


def marker_processes(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if marker.encode() in handle.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found


def cgroup_process_counts(ex: Executor) -> list[int]:
    counts = []
    for slot in ex._pool.slots:
        for procs in slot.cgroup.procs_files:
            if "/pids/" in procs or slot.cgroup.version == "v2":
                with open(procs) as handle:
                    counts.append(len(handle.read().split()))
    return counts


def settle(ex: Executor) -> None:
    """A trivial test on each worker in turn, so the clock of the next case does not include a
    worker still cleaning up after the previous one (a 1500-deep tree takes seconds under Landlock)."""
    from engine.execution.executor import _JobState, _Task

    state = _JobState(Job("x = 1\n", ("pass",)), ex.limits)
    for slot in ex._pool.slots:
        slot.execute(_Task(state, 0))


@pytest.fixture
def run_case(temporary_home, tmp_path):
    """run_case(ex, program, test, outcomes, message) -> TestResult, after checking: the outcome
    (and message), the time bound, nothing left running, the sentinel and host files unchanged,
    nothing written to the project, and that the sandbox still works afterwards."""

    def run(ex, program, test, outcomes, message=None, prelude_extra=""):
        marker = f"egcfg-hostile-{uuid.uuid4().hex}"
        victim = tmp_path / "victim.txt"
        victim.write_text("original")
        sentinel = temporary_home / "sentinel.txt"
        home_before = sorted(p.name for p in temporary_home.iterdir())
        prelude = (f"MARKER = {marker!r}\nPROJECT = {str(REPO)!r}\nVICTIM = {str(victim)!r}\n"
                   f"HOME_DIR = {str(temporary_home)!r}\nSENTINEL = {str(sentinel)!r}\n" + prelude_extra)
        settle(ex)
        modes = {path: os.stat(path).st_mode for path in ("/tmp", str(temporary_home), str(sentinel), str(REPO))}
        baseline = cgroup_process_counts(ex)
        start = time.monotonic()
        result = ex.run(Job(prelude + program, (test,)))
        elapsed = time.monotonic() - start
        outcome = result.tests[0]
        assert outcome.outcome in outcomes, (outcome.outcome, outcome.message)
        if message:
            assert message in outcome.message, outcome.message
        assert elapsed < LIMITS.test_seconds + 2
        deadline = time.monotonic() + 1.0
        while marker_processes(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker_processes(marker) == []
        assert cgroup_process_counts(ex) == baseline
        assert victim.read_text() == "original"
        assert {path: os.stat(path).st_mode for path in modes} == modes  # no host file's mode changed
        assert sentinel.read_text() == SENTINEL_TEXT
        assert sorted(p.name for p in temporary_home.iterdir()) == home_before
        assert not list(REPO.glob("egcfg_hostile_*"))
        check = "import os\ndef f():\n    open('probe', 'w').close()\n    return sorted(os.listdir('.'))\n"
        after = ex.run(Job(check, ("assert f() == ['probe']",))).tests[0]
        assert after.outcome == "pass", after.message
        return outcome

    return run
