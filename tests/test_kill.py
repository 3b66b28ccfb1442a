"""A run killed mid-way keeps every event it had reported: the log is written as events happen.

run_live.py writes each final event to the JSON-lines log with flush + fsync before it is
printed (core.events.EventWriter; the EventLog sink comes before the console). So a
crash, a power cut or ``kill -9`` loses at most the event being written. This test runs
the real command line on a synthetic clip of a real face with several micro-expressions,
SIGKILLs it as soon as events have been written, and reads the file back line by line.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from core.events import Event, read_events
from engines.recognizer import Recognizer
from train.checkpoint import save_checkpoint
from train.moext import MoExtClassifier, MoExtConfig
from train.synth import write_clip

ROOT = Path(__file__).resolve().parents[1]
PRINTED = re.compile(r"frames (\d+)-(\d+)-(\d+)")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path, _gt, truths = write_clip(tmp_path_factory.mktemp("kill") / "me.avi", fps=30, seconds=12, events="micro",
                                   size=(320, 240), seed=3)
    assert len(truths) >= 5
    return path


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """(checkpoint, cache dir): a narrow MoExt with random weights; its ONNX export is made
    here once so the child starts as it would on a user's machine the second time."""
    d = tmp_path_factory.mktemp("engine")
    cache = d / "cache"
    torch.manual_seed(0)
    cfg = MoExtConfig(width=0.125)
    ckpt = save_checkpoint(d / "moext.safetensors", MoExtClassifier(cfg).eval(), cfg)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MOEXT_CACHE_DIR", str(cache))
        Recognizer.load(ckpt).close()
    return ckpt, cache


def complete_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


@pytest.mark.slow
def test_sigkill_mid_run_keeps_every_reported_event_in_a_parseable_log(clip, engine, tmp_path):
    ckpt, cache = engine
    events = tmp_path / "events.jsonl"
    env = dict(os.environ, PYTHONUNBUFFERED="1", MOEXT_CACHE_DIR=str(cache))
    proc = subprocess.Popen([sys.executable, str(ROOT / "run_live.py"), "--video", str(clip), "--headless",
                             "--engine", str(ckpt), "--events", str(events)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while complete_lines(events) < 2 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, f"the run ended before it could be killed:\n{proc.stderr.read()[-2000:]}"
        proc.send_signal(signal.SIGKILL)                # no chance to flush or close anything
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL

    data = events.read_bytes()
    lines = data.split(b"\n")
    complete, partial = lines[:-1], lines[-1]      # partial is b"" when the file ends with a newline
    # every complete line is a whole event record
    written = [Event.from_dict(json.loads(line), where=f"line {i + 1}") for i, line in enumerate(complete)]
    assert len(written) >= 2
    # at most one partial line, the last, and only if the kill hit the write itself
    if partial.strip():
        with pytest.raises(ValueError):
            json.loads(partial)
    else:
        assert read_events(events) == written          # the reader takes the file as it is

    # every event the run had reported (printed after it was logged) is in the file; at most
    # the one in flight (logged, not yet printed) is extra
    printed = [tuple(map(int, m.groups())) for m in PRINTED.finditer(out)]
    logged = [(e.onset_frame, e.apex_frame, e.offset_frame) for e in written]
    assert printed == logged[: len(printed)]
    assert len(logged) - len(printed) <= 1
    assert all(e.finalised_t is not None and e.kind in ("micro", "macro") for e in written)
    assert all(e.label is None or e.label in ("negative", "positive", "surprise") for e in written)
    frames = 12 * 30
    assert max(e.offset_frame for e in written) < frames - 1     # killed mid-run, not at the end
