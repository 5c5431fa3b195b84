"""`egcfg bench replay` (engine/bench/replay.py) on one MBPP task with a tiny random model."""

from __future__ import annotations

import json

import pytest
import torch

from engine.bench import replay
from engine.cli.main import main as egcfg


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_replay_reports_both_schemes_from_one_run(data_dir, capsys):
    assert egcfg(["bench", "replay", "mbpp", "--data", str(data_dir), "--random-config", "tiny", "--tasks", "11",
                  "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    paper, fast = report["paper"], report["fast"]
    for scheme in (paper, fast):
        for key in ("forwards_per_line", "tokens_per_line", "ms_per_line", "first_line_ms", "executor_ms_per_line"):
            assert scheme[key] > 0, key
    # teacher forcing: both schemes commit the reference's lines, agent by agent
    assert paper["lines"] == fast["lines"] > 0
    records = {r["scheme"]: r for r in report["per_task"]}
    assert records["paper"]["agents"] == records["fast"]["agents"] == ["complete"] * 3
    assert fast["forwards_per_line"] < paper["forwards_per_line"]
    assert report["device"] == "cpu" and "peak_gpu_mb" not in fast


def test_the_teacher_forces_the_reference_and_rows_disagree_only_at_line_starts():
    from engine.generation.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    body = "def f(x):\n    y = x + 1\n    return y\n"
    teacher = replay.build_teacher(tokenizer, body, 0.0, len(tokenizer), {tokenizer.eos_token_id})
    assert tokenizer.decode(teacher.force) == body
    starts = sorted(teacher.line_starts)
    assert len(starts) == 3                        # the first word of each of the three lines
    assert tokenizer.decode([teacher.force[starts[1]]]).strip() == "y"

    class Dec:
        ids: list = []
        stop_ids = {tokenizer.eos_token_id}

    Dec.tokenizer = tokenizer

    class Row:
        def __init__(self, seed):
            self.ids, self.tag = [], {}
            self.generator = torch.Generator().manual_seed(seed)

    probs = torch.full((len(tokenizer),), 1.0 / len(tokenizer))
    row = Row(0)
    written = []
    for position in range(len(teacher.force)):
        token = teacher.steer(Dec, row, probs)
        written.append(token)
        row.ids.append(token)
    assert row.tag["follows"] is False
    differs = [i for i, (mine, ref) in enumerate(zip(written, teacher.force)) if mine != ref]
    assert differs == starts                        # never the reference's word, everywhere else the same
    assert all("\n" not in tokenizer.decode([written[i]]) for i in differs)
    follower = replay.build_teacher(tokenizer, body, 1.0, len(tokenizer), {tokenizer.eos_token_id})
    row = Row(1)
    assert [follower.steer(Dec, row, probs) or 0 for _ in range(1)] == follower.force[:1]
    Dec.ids = list(follower.force)
    assert follower.steer(Dec, row, probs) == tokenizer.eos_token_id   # past the reference: the end


def test_bad_agreement_is_one_sentence(data_dir, capsys):
    assert egcfg(["bench", "replay", "mbpp", "--data", str(data_dir), "--random-config", "tiny", "--tasks", "11",
                  "--agreement", "1.5"]) == 2
    assert "--agreement must be between 0 and 1" in capsys.readouterr().err
