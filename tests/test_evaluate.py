"""Spotting on the generator's clips of unseen identities, scored by python -m realtime.evaluate.

The acceptance figures (F1 >= 0.9 at IoU >= 0.5 for micro-expressions at 200 fps, apex
within 10 ms in most events, no micro events on distractor-only clips) are checked here on
a smaller set than the README's run, through the same command-line entry point.
"""
from __future__ import annotations

import json

import pytest

from realtime.evaluate import cases
from realtime.evaluate import cli as evaluate
from train.synth import eval_identities, write_clip

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clips200(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval200")
    people = eval_identities()
    for i, person in enumerate(people):
        write_clip(d / f"{person}_{i}.avi", identity=person, fps=200, seconds=8, events="mixed", seed=100 + i)
    write_clip(d / "distractors.avi", identity=people[0], fps=200, seconds=8, events="distractors", seed=99)
    return d


def test_spotting_at_200fps_on_unseen_identities(clips200, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert evaluate.main([str(clips200), "--engine", "none", "--quiet", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    micro = report["pooled"]["micro"]
    assert micro["tp"] + micro["fn"] >= 6, "the clips should hold several micro-expressions"
    assert micro["f1"] >= 0.9, micro
    assert micro["apex_within_share"] >= 0.5, micro               # apex within 10 ms in most events
    distractors = next(v for v in report["videos"] if v["video"] == "distractors.avi")
    assert distractors["truth"]["micro"] == 0 and distractors["truth"]["macro"] + distractors["truth"]["blink"] > 0
    assert distractors["detected"]["micro"] == 0, distractors["events"]
    printed = capsys.readouterr().out
    assert "pooled" in printed.lower() and "distractors.avi" in printed


def test_missing_ground_truth_video_is_named(tmp_path):
    (tmp_path / "lonely.gt.jsonl").write_text("")
    with pytest.raises(cases.AnnotationError, match="lonely"):
        cases.find_synth_cases(tmp_path)
