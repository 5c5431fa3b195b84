"""A normal run prints no third-party warnings: stderr holds progress bars and egcfg's own lines only.

Run as a user would (a subprocess, progress bars on), so that import-time messages of torch,
transformers and bitsandbytes are seen exactly as a user sees them.
"""

import json
import os
import re
import subprocess
import sys

import pytest

# tqdm's bars ("Loading weights:  50%|#####     | 10/21 [00:00<00:00, 24.1it/s]"), one per \r
PROGRESS_BAR = re.compile(r"^[\w .-]*:\s*\d+%\|.*\|")


def egcfg(*args, cwd):
    env = {key: value for key, value in os.environ.items() if key not in ("HF_HUB_DISABLE_PROGRESS_BARS", "PYTHONWARNINGS")}
    env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run([sys.executable, "-m", "engine.cli.main", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


# egcfg's own: its messages ("egcfg: ...") and the lines it commits ("[agent   1] text")
OWN_LINE = re.compile(r"^(egcfg|\[\S+ +\d+\] )")


def foreign_lines(stderr: str) -> list[str]:
    pieces = [piece.strip() for piece in re.split(r"[\r\n]+", stderr)]
    return [piece for piece in pieces if piece and not PROGRESS_BAR.match(piece) and not OWN_LINE.match(piece)]


def test_committed_lines_are_egcfg_own_and_cannot_redraw_the_terminal():
    from engine.cli.complete import LiveView

    class Stream(list):
        write = list.append

        def flush(self):
            pass

        def isatty(self):
            return False

    stream = Stream()
    LiveView(stream).line("instruct/g1", 1, "x = 1\r\x1b[2Kdone")
    assert "".join(stream) == "[instruct/g1   1] x = 1\\r\\x1b[2Kdone\n"
    assert foreign_lines("".join(stream)) == [] and foreign_lines("warning: x\n") == ["warning: x"]


@pytest.fixture
def project(tmp_path):
    (tmp_path / "mathy.py").write_text('def double(x):\n    """Return x times two."""\n')
    (tmp_path / "test_mathy.py").write_text("from mathy import double\n\n\ndef test_double():\n    assert double(2) == 4\n")
    return tmp_path


def test_complete_writes_only_progress_and_its_own_lines(project, tiny_model_dir):
    run = egcfg("complete", "mathy.py::double", "--tests", "test_mathy.py", "--model", tiny_model_dir,
                "--max-new-tokens", "8", cwd=project)
    assert run.returncode == 0, run.stderr
    assert "def double" in run.stdout
    assert not re.search(r"warning|deprecated", run.stderr, re.IGNORECASE), run.stderr
    assert foreign_lines(run.stderr) == [], run.stderr


def test_doctor_and_trace_write_nothing_to_stderr(project):
    doctor = egcfg("doctor", "--json", cwd=project)
    assert doctor.returncode == 0, doctor.stderr
    assert json.loads(doctor.stdout)["python"]["egcfg"]
    assert doctor.stderr == ""
    trace = egcfg("trace", "mathy.py", "--test", "assert double(2) == 4", cwd=project)
    assert trace.returncode in (0, 1), trace.stderr
    assert trace.stderr == ""
