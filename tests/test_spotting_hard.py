"""Spotting where real footage is hard: talking, expressive starts, tiny micro-expressions,
dataset-length sequences, and real camera clips (../shared/data/real, skipped without it).

Small versions of the README's figures, through the same entry points (python -m realtime.evaluate,
run_live.py --images)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.events import read_events
from realtime.evaluate import cli as evaluate
from realtime.evaluate import runs
from train.synth import eval_identities, write_hard_clip, write_sequences

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real"


@pytest.fixture(scope="module")
def hard30(tmp_path_factory):
    d = tmp_path_factory.mktemp("hard30")
    person = eval_identities()[0]
    write_hard_clip(d / "hard.avi", identity=person, fps=30, seconds=20, clip_type="hard", seed=5)
    write_hard_clip(d / "talking.avi", identity=person, fps=30, seconds=10, clip_type="talking", seed=6)
    write_hard_clip(d / "lighting.avi", identity=person, fps=30, seconds=8, clip_type="lighting", seed=7)
    return d


def test_hard_clips_micro_found_and_no_micro_in_talking_or_lighting(hard30, tmp_path):
    out = tmp_path / "eval.json"
    assert evaluate.main([str(hard30), "--engine", "none", "--quiet", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    videos = {v["video"]: v for v in report["videos"]}
    hard = videos["hard.avi"]
    assert hard["truth"]["micro"] >= 3 and hard["truth"].get("speech", 0) >= 1
    assert hard["scores"]["micro"]["recall"] >= 0.5, hard["scores"]["micro"]
    assert hard["scores"]["micro"]["precision"] >= 0.6, hard["events"]
    for name in ("talking.avi", "lighting.avi"):
        assert videos[name]["truth"]["micro"] == 0
        assert videos[name]["detected"]["micro"] == 0, videos[name]["events"]
    assert report["sensitivity"], "each true micro-expression gets an amplitude band"


@pytest.fixture(scope="module")
def sequences(tmp_path_factory):
    d = tmp_path_factory.mktemp("seq200")
    write_sequences(d, n=4, fps=200, seed=8)
    return d


def test_dataset_style_sequences_are_spotted_from_their_first_frames(sequences, tmp_path):
    out = tmp_path / "seq.json"
    assert evaluate.main([str(sequences), "--engine", "none", "--quiet", "--out", str(out)]) == 0
    micro = json.loads(out.read_text())["pooled"]["micro"]
    assert micro["tp"] >= 3 and micro["fp"] == 0, micro                  # at least 3 of the 4
    assert micro["apex_error_ms_median"] <= 20, micro
    # the same through the front door, as a dataset folder is given to it
    events = tmp_path / "e.jsonl"
    p = subprocess.run([sys.executable, str(ROOT / "run_live.py"), "--images", str(sequences / "seq_000"),
                        "--fps", "200", "--headless", "--engine", "none", "--events", str(events)],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "read ahead" in p.stdout and "== ground truth" not in p.stdout     # no .gt beside an image folder
    truth = json.loads((sequences / "seq_000.gt.jsonl").read_text().splitlines()[0])
    [event] = [e for e in read_events(events) if e.kind == "micro"]
    assert abs(event.apex_frame - truth["apex_frame"]) <= 4                    # 20 ms at 200 fps


def test_causal_mode_cannot_judge_a_sequence_from_its_first_frame(sequences, tmp_path):
    """What a camera would see: the noise model is still warming up when a sequence's
    micro-expression starts (which is why recordings are read ahead)."""
    out = tmp_path / "causal.json"
    assert evaluate.main([str(sequences), "--engine", "none", "--quiet", "--mode", "both", "--out", str(out)]) == 0
    modes = json.loads(out.read_text())["modes"]
    assert modes["recording"]["pooled"]["micro"]["tp"] > modes["causal"]["pooled"]["micro"]["tp"]


REAL_CLIPS = sorted(REAL.glob("*.mp4")) if REAL.is_dir() else []


@pytest.mark.skipif(not REAL_CLIPS, reason="../shared/data/real (real camera clips) is not beside the project")
@pytest.mark.parametrize("clip", REAL_CLIPS, ids=lambda p: p.stem)
def test_real_footage_no_micro_expression_for_speech_blinks_or_head_motion(clip):
    """Real people talking, smiling, laughing and yawning: none holds a labelled ME, so any
    micro event is a false alarm; their smiles and wide mouth openings are macro."""
    run = runs.spot_video(clip, None, progress=False)
    kinds = [d.kind for d in run.detections]
    assert "micro" not in kinds, run.events
    if clip.stem in ("lp_d0", "lp_d18"):          # a held smile; three wide mouth openings
        assert kinds.count("macro") >= (1 if clip.stem == "lp_d0" else 3), run.events
    # every event's pair was still in the frame buffer when it was cut (long macro-expressions
    # are decided seconds after their apex): its face box at the apex is known
    assert all(e["face_box"] is not None for e in run.events), run.events
