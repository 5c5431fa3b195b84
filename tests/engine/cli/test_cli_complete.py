"""`egcfg complete` end to end: a tiny random-weight model, the real sandbox, and bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
MODULE = '''import math


def hypotenuse(a, b):
    """Length of the hypotenuse of a right triangle with legs a and b."""


def unrelated():
    return 1
'''
TESTS = "from geometry import hypotenuse\n\n\ndef test_hypotenuse():\n    assert hypotenuse(3, 4) == 5.0\n    assert hypotenuse(5, 12) == 13.0\n"


def egcfg(*args, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    return subprocess.run([sys.executable, "-m", "engine.cli.main", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture
def project(tmp_path):
    (tmp_path / "geometry.py").write_text(MODULE)
    (tmp_path / "test_geometry.py").write_text(TESTS)
    return tmp_path


def test_json_answer_has_the_function_and_its_test_results(project, tiny_model_dir):
    run = egcfg("complete", "geometry.py::hypotenuse", "--tests", "test_geometry.py", "--model", tiny_model_dir,
                "--max-new-tokens", "12", "--json", cwd=project)
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout)
    assert {"code", "passed", "total", "agent", "seconds"} <= answer.keys()
    assert answer["code"].startswith("def hypotenuse(a, b):")
    assert "def unrelated" not in answer["code"] and "def unrelated" in answer["program"]
    assert answer["total"] == 1 and 0 <= answer["passed"] <= 1   # one test function (two asserts)
    assert answer["agent"] and answer["seconds"] > 0
    assert "tiny" in answer["model"]
    assert (project / "geometry.py").read_text() == MODULE  # the file itself is left alone


@pytest.mark.parametrize("args, message", [
    (["geometry.py::nope", "--test", "assert nope() == 1"], "no function named 'nope'"),
    (["broken.py::hypotenuse", "--test", "assert hypotenuse(3, 4) == 5"], "syntax error outside hypotenuse"),
    (["geometry.py::hypotenuse", "--tests", "test_missing_import.py"], "the tests' imports fail"),
    (["geometry.py::hypotenuse"], "no tests given"),
    (["geometry.py::hypotenuse", "--test", "assert hypotenuse(3, 4) == 5", "--model", "no_tokenizer"], "tokenizer"),
    (["missing.py::f", "--test", "assert f() == 1"], "no such file"),
    (["geometry.py", "--test", "assert f() == 1"], "expected FILE::FUNCTION"),
])
def test_bad_input_is_one_clear_sentence(project, args, message):
    (project / "broken.py").write_text(MODULE + "\ndef oops(:\n    pass\n")
    (project / "test_missing_import.py").write_text("import no_such_module_here\nfrom geometry import hypotenuse\n\n"
                                                    "def test_h():\n    assert hypotenuse(3, 4) == 5.0\n")
    no_tokenizer = project / "no_tokenizer"
    no_tokenizer.mkdir()
    (no_tokenizer / "config.json").write_text('{"model_type": "llama"}')
    run = egcfg("complete", *args, cwd=project)
    assert run.returncode == 2, run.stdout + run.stderr
    assert message in run.stderr
    assert "Traceback" not in run.stderr
    assert len([line for line in run.stderr.splitlines() if line.startswith("egcfg:")]) == 1
