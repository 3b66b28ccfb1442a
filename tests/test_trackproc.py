"""realtime.stages.trackproc: decoding and tracking a recording in a second process gives
the frame loop the same frames and the same tracking, so the same signal and events, as
tracking in the loop; the process ends (and frees its shared frames) however the loop
ends; its failures reach the loop as clear errors."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from core import assets
from core.events import read_events
from realtime.stages.pipeline import Pipeline, PipelineConfig
from realtime.stages.recording import drive
from realtime.stages.sources import SourceError, open_source
from realtime.stages.trackproc import TrackedRecording, TrackSpec


ROOT = Path(__file__).resolve().parents[1]


class Rows:
    """A sink keeping each frame's figures and whether its tracking came done."""

    def __init__(self) -> None:
        self.rows, self.pretracked = [], 0

    def handle(self, r) -> None:
        self.rows.append((r.index, r.found, r.face_id, r.value, r.score, r.in_event))
        self.pretracked += r.frame.tracked is not None

    def handle_events(self, events) -> None:
        pass


def run(path, track_process: bool, max_frames: int | None = None):
    with open_source(video=path) as src:
        pipe = Pipeline(PipelineConfig(fps=src.fps, engine="none", lookahead_s=0.0), source_name=src.name)
        sink = Rows()
        out = drive(src, pipe, [sink], track_process=track_process, max_frames=max_frames)
        events = [(e.onset_frame, e.apex_frame, e.offset_frame, e.kind) for e in pipe.events]
        return out, sink, events, dict(src.faults)


def test_second_process_gives_the_loops_results_frame_for_frame():
    path = assets.sample_path("micro")         # a micro-expression generated on a real face, 100 fps
    out_a, a, ev_a, faults_a = run(path, track_process=False)
    out_b, b, ev_b, faults_b = run(path, track_process=True)
    assert a.pretracked == 0 and b.pretracked == out_b.frames == out_a.frames > 100
    assert ev_b == ev_a and any(k == "micro" for *_, k in ev_a)
    assert faults_b == faults_a
    for ra, rb in zip(a.rows, b.rows):
        assert ra[:3] == rb[:3] and ra[5] == rb[5]
        # OpenCV's threads sum in varying order: the loop alone differs from itself by ~1e-10
        assert rb[3] == pytest.approx(ra[3], rel=1e-6, abs=1e-9)
        assert (ra[4] is None) == (rb[4] is None)
        if ra[4] is not None:
            assert rb[4] == pytest.approx(ra[4], rel=1e-6, abs=1e-9)
    assert out_b.summary.frames_with_face == out_a.summary.frames_with_face


def test_a_frame_folder_goes_through_the_second_process_too(tmp_path):
    cap = cv2.VideoCapture(str(assets.sample_path("micro")))
    for i in range(40):
        ok, f = cap.read()
        assert ok
        cv2.imwrite(str(tmp_path / f"img{i}.png"), f)
    with open_source(images=tmp_path, fps=100.0) as src:
        loop = [(f.index, f.image) for f in src]
    with open_source(images=tmp_path, fps=100.0) as src:
        rec = TrackedRecording(src, PipelineConfig(fps=100.0, engine="none"))
        got = [(f.index, f.image, f.tracked) for f in rec]
        assert src.frames_read == 40 and src.size == (loop[0][1].shape[1], loop[0][1].shape[0])
    assert [i for i, *_ in got] == [i for i, _ in loop]
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(got, loop))       # the same pixels
    assert all(t is not None and t[0] and t[0][0].found for *_, t in got)    # the face, every frame


def test_leaving_early_ends_the_process_and_frees_the_shared_frames():
    with open_source(video=assets.sample_path("micro")) as src:
        rec = TrackedRecording(src, PipelineConfig(fps=src.fps, engine="none"), depth=4)
        frames = []
        for frame in rec:
            frames.append(frame)
            if len(frames) == 10:
                break
    assert [f.index for f in frames] == list(range(10))
    assert all(f.tracked is not None and f.tracked[1] is None for f in frames)
    assert len({id(f.image) for f in frames}) == 10 and frames[0].image.flags.owndata   # copies, not the ring
    assert rec._proc.poll() is not None                   # the process has ended
    assert rec.process_cpu_s > 0 and (rec.process_peak_rss_mb is None or rec.process_peak_rss_mb > 10)
    assert rec.shm_name
    if os.path.isdir("/dev/shm"):                         # Linux: the ring was unlinked
        assert not os.path.exists(os.path.join("/dev/shm", rec.shm_name.lstrip("/")))
    with pytest.raises(RuntimeError, match="read once"):
        next(iter(rec))


def test_a_failure_in_the_second_process_is_a_clear_error():
    with open_source(video=assets.sample_path("micro")) as src:
        rec = TrackedRecording(src, PipelineConfig(fps=src.fps, engine="none"))
        rec._spec = dataclasses.replace(rec._spec, kind="no-such-tracker")
        with pytest.raises(SourceError, match="tracking process failed.*no-such-tracker"):
            list(rec)
    assert rec._proc.poll() is not None


def test_live_sources_are_tracked_in_the_loop():
    with open_source(video=assets.sample_path("micro"), realtime=True) as src:
        with pytest.raises(SourceError, match="newest frame"):
            TrackedRecording(src, PipelineConfig(fps=src.fps))
        pipe = Pipeline(PipelineConfig(fps=src.fps, engine="none"), source_name=src.name)
        sink = Rows()
        out = drive(src, pipe, [sink], track_process=True, max_frames=20)   # quietly in the loop
    assert out.frames == 20 and sink.pretracked == 0


def test_spec_follows_the_pipeline_config():
    cfg = PipelineConfig(fps=200.0, tracker="fast", max_faces=2, redetect_every=15, landmarks_hz=50.0)
    spec = TrackSpec.of(cfg)
    assert (spec.kind, spec.max_faces, spec.redetect_every, spec.fps, spec.landmarks_hz) == ("fast", 2, 15, 200.0, 50.0)


def run_live(*args, cwd):
    p = subprocess.run([sys.executable, str(ROOT / "run_live.py"), *map(str, args)], capture_output=True, text=True,
                       timeout=300, cwd=cwd)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def test_run_live_track_process_gives_the_same_events_and_a_cut_recordings_fault(tmp_path):
    """run_live.py --track-process: the same events as tracking in the loop; a recording
    cut short mid-write still ends with its fault and the frames read (they come from the
    second process's source)."""
    clip = tmp_path / "clip.avi"
    cap = cv2.VideoCapture(str(assets.sample_path("micro")))
    w = None
    while True:
        ok, f = cap.read()
        if not ok:
            break
        if w is None:
            w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 100.0, (f.shape[1], f.shape[0]))
        w.write(f)
    w.release()
    runs = {}
    for mode in ("loop", "process"):
        extra = ["--track-process"] if mode == "process" else []
        run_live("--video", clip, "--headless", "--quiet", "--engine", "none", "--events", tmp_path / f"{mode}.jsonl",
                 "--summary-json", tmp_path / f"{mode}.json", *extra, cwd=tmp_path)
        runs[mode] = [(e.onset_frame, e.apex_frame, e.offset_frame, e.kind) for e in
                      read_events(tmp_path / f"{mode}.jsonl")]
    assert runs["process"] == runs["loop"] and runs["loop"]
    cut = tmp_path / "cut.avi"
    data = clip.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    p = run_live("--video", cut, "--headless", "--engine", "none", "--track-process", "--summary-json",
                 tmp_path / "cut.json", cwd=tmp_path)
    s = json.loads((tmp_path / "cut.json").read_text())
    full = json.loads((tmp_path / "loop.json").read_text())
    assert s["faults"].get("truncated") == 1 and 0 < s["frames"] < full["frames"]
    assert f"decoding stopped after {s['frames']} of {full['frames']} frames" in s["end_reason"]
    assert "stopped early" in p.stdout
