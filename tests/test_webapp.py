"""The web demo's handlers without a browser: recording tab, limits, sessions, files.

The handlers are the ones the page calls (realtime.frontends.webhandlers.WebApp.live_step /
analyse_upload), on a real clip of a real face with a synthetic micro-expression
(train.synth), real decoding, the real Pipeline and a small random-init MoExt network.
"""
from __future__ import annotations

import argparse
import os
import shutil
import time

import cv2
import gradio as gr
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from engines.recognizer import Recognizer
from core.events import read_events
from realtime.frontends.webapp import MemoryImage, build_app, launch, parse_auth
from realtime.frontends.webhandlers import WebApp
from realtime.frontends.websession import EVENT_COLUMNS, JpegFrame, UploadRefused, WebConfig
from realtime.frontends.webcodec import BROWSER_CODECS, BrowserVideoWriter, available_codecs, probe
from train.checkpoint import save_checkpoint
from train.moext import MoExtClassifier, MoExtConfig
from y4m import event_clip_frames, read_counter, read_y4m, stamp_counter, write_y4m

FPS = 30


def tiny_recognizer(path):
    """A random-init width-0.125 MoExt on the torch engine (no ONNX export to wait for)."""
    torch.manual_seed(0)
    cfg = MoExtConfig(width=0.125)
    save_checkpoint(path, MoExtClassifier(cfg), cfg)
    return Recognizer.load(str(path), device="cpu", engine="torch")


@pytest.fixture(scope="module")
def recognizer(tmp_path_factory):
    rec = tiny_recognizer(tmp_path_factory.mktemp("weights") / "tiny.safetensors")
    yield rec
    rec.close()


@pytest.fixture(scope="module")
def clip_frames():
    """3.5 s at 30 fps: 1 s neutral, a clear micro-expression at 1.5 s."""
    frames, truth = event_clip_frames(seconds=3.5, onsets=(1.5,), labels=("positive",), counter=False)
    return frames, truth


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory, clip_frames):
    path = tmp_path_factory.mktemp("media") / "clip.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (640, 480))
    for f in clip_frames[0]:
        w.write(f)
    w.release()
    return path


@pytest.fixture
def uploads(tmp_path):
    """Stands in for Gradio's upload folder (WebConfig.upload_roots)."""
    d = tmp_path / "uploads"
    d.mkdir()
    return d


@pytest.fixture
def app(recognizer, uploads, tmp_path):
    a = WebApp(WebConfig(upload_roots=(str(uploads),), work_dir=str(tmp_path / "work")), recognizer)
    yield a
    a.close()


def upload(clip_file, uploads, name="clip.avi"):
    """What Gradio does on upload: a copy in its own sub-folder of the upload folder."""
    d = uploads / f"h{time.perf_counter_ns()}"
    d.mkdir()
    return shutil.copy(clip_file, d / name)


# ---------------------------------------------------------------------------------------


def test_build_app_sets_streaming_and_cache_options(recognizer):
    demo = build_app(WebConfig(engine="none"))
    try:
        assert isinstance(demo, gr.Blocks)
        app = demo.moext_app
        assert app.recognizer is None  # "none": spotting only
        cam = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "webcam")
        assert cam.streaming and cam.type == "numpy" and cam.webcam_options.mirror is False
        assert cam.webcam_options.constraints["video"]["width"]["ideal"] == 640
        stream = next(fn for fn in demo.fns.values() if fn.fn.__name__ == "live")
        assert stream.stream_every == pytest.approx(0.05)
        assert stream.concurrency_limit == app.config.live_concurrency >= 2
        assert demo.delete_cache is not None and demo.delete_cache[1] == app.config.cache_age_s
        info = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "info")
        assert "spotting only" in info.value
    finally:
        demo.moext_app.close()
    demo = build_app(WebConfig(), recognizer)
    try:
        info = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "info").value
        assert "tiny.safetensors" in info and "torch" in info and "synthetic" in info
    finally:
        demo.moext_app.close()


def test_recording_handler_returns_events_plot_playable_video_and_jsonl(app, clip_file, uploads, clip_frames):
    path = upload(clip_file, uploads)
    video, fig, table, files, summary, cleared, session = app.analyse_upload(str(path), 0, None)

    assert list(table.columns) == list(EVENT_COLUMNS)
    assert len(table) >= 1
    truth = clip_frames[1][0]
    row = table.iloc[0]
    assert row["kind"] == "micro" and row["status"] == "final"
    assert truth.onset_t - 0.2 <= row["apex_t"] <= truth.offset_t + 0.2
    assert row["label"] in recognizer_classes(app) and 0 <= row["confidence"] <= 1
    assert isinstance(fig, Figure) and fig.axes[0].get_title().startswith("clip.avi")
    assert "1 events" in summary or f"{len(table)} events" in summary

    p = probe(video)
    assert p.codec in BROWSER_CODECS and p.browser_playable
    assert (p.width, p.height) == (640, 480) and p.frames == len(clip_frames[0])
    events_path, signal_path = files
    events = read_events(events_path)
    assert len(events) == len(table) and events[0].apex_frame == row["apex_frame"]
    assert open(signal_path).readline().startswith("frame,t,found")

    # the upload is gone (and its Gradio sub-folder); outputs live in the session's folder
    assert cleared is None and not path.exists() and not path.parent.exists()
    assert all(str(f).startswith(str(session.dir)) for f in (video, events_path, signal_path))
    assert not list(session.dir.rglob("upload*"))
    # a second run replaces the first run's files: one result set per session
    video2 = app.analyse_upload(str(upload(clip_file, uploads)), 30, session)[0]
    assert not (session.dir / "run-1").exists() and video2 != video
    assert len(list(session.dir.iterdir())) == 1


def recognizer_classes(app):
    return set(app.recognizer.classes)


def test_upload_limits_are_refused_with_a_clear_message(recognizer, clip_file, uploads, tmp_path):
    small = WebApp(WebConfig(upload_roots=(str(uploads),), max_upload_mb=0.05), recognizer)
    short = WebApp(WebConfig(upload_roots=(str(uploads),), max_duration_s=2.0), recognizer)
    try:
        path = upload(clip_file, uploads)
        with pytest.raises(UploadRefused, match=r"MB; this demo accepts up to 0.05 MB"):
            small.analyse_upload(str(path), 0, None)
        assert not path.exists()  # a refused upload is deleted too

        path = upload(clip_file, uploads)
        with pytest.raises(UploadRefused, match=r"lasts 3.5 s \(105 frames at 30 fps\); this demo accepts up to 2 s"):
            short.analyse_upload(str(path), 0, None)
        assert not path.exists()
        # the fps override counts: 105 frames at 60 fps last 1.75 s
        out = short.analyse_upload(str(upload(clip_file, uploads)), 60, None)
        assert probe(out[0]).frames == 105

        path = upload(clip_file, uploads, name="notes.txt")
        with pytest.raises(UploadRefused, match="files are not accepted; upload a video"):
            small.analyse_upload(str(path), 0, None)
        with pytest.raises(UploadRefused, match="frame rate -5.0 is not usable"):
            short.analyse_upload(str(upload(clip_file, uploads)), -5, None)
        with pytest.raises(UploadRefused, match="no video uploaded"):
            short.analyse_upload(None, 0, None)
        assert not any(p.is_file() for p in uploads.rglob("*"))
        # refused runs leave no output folders behind: only the successful run has files
        with_files = [s for a in (small, short) for s in a.sessions.values() if any(s.dir.iterdir())]
        assert len(with_files) == 1 and any(with_files[0].dir.rglob("*-annotated.*"))
    finally:
        small.close()
        short.close()


def test_paths_outside_the_upload_folder_are_refused_and_untouched(app, clip_file, uploads, tmp_path):
    outside = tmp_path / "secret.avi"
    shutil.copy(clip_file, outside)
    link = uploads / "link.avi"
    link.symlink_to(outside)
    for attempt in (str(outside), str(uploads / ".." / "secret.avi"), str(link), "/etc/hostname",
                    {"path": str(outside)}):
        with pytest.raises(UploadRefused, match="only files uploaded through this page"):
            app.analyse_upload(attempt, 0, None)
    assert outside.exists() and link.is_symlink()


def test_two_sessions_do_not_share_state(app, clip_frames):
    """Session A streams the clip with a micro-expression, session B a still neutral face,
    interleaved like two browsers: only A gets events; each has its own pipeline."""
    frames = clip_frames[0][::2]  # the browser's ~15 fps
    neutral = frames[0]
    a = b = None
    start = time.perf_counter()
    for i, f in enumerate(frames):
        delay = start + i / 15 - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        img_a, table_a, _, a = app.live_step(f[:, :, ::-1].copy(), a)
        img_b, table_b, _, b = app.live_step(neutral[:, :, ::-1].copy(), b)
    assert a is not b and a.id != b.id and a.dir != b.dir
    assert a.live.pipeline is not b.live.pipeline and a.live.pipeline.tracker is not b.live.pipeline.tracker
    assert a.live.frames == b.live.frames == len(frames)
    assert a.live.frames_with_face == len(frames)
    rows_a, rows_b = a.live.table(), b.live.table()
    assert len(rows_a) >= 1 and len(rows_b) == 0
    assert b.live.stats()["events"] == 0 and b.live.pipeline.events == []
    assert isinstance(img_a, JpegFrame) and isinstance(img_b, JpegFrame)
    # the annotated frame comes back as a data URL: nothing written to disk
    shown = MemoryImage()
    data = shown.postprocess(img_a)
    assert data.path is None and data.url.startswith("data:image/jpeg;base64,")
    # closing one session (tab closed) leaves the other running
    app.close_session(a.id)
    assert a.closed and not a.dir.exists() and a.live.pipeline is None
    assert not b.closed and b.live.pipeline is not None
    out = app.live_step(neutral[:, :, ::-1].copy(), b)
    assert out[3] is b and b.live.frames == len(frames) + 1


def test_a_withdrawn_provisional_event_is_marked_in_the_live_table(app, clip_frames):
    """A provisional row whose event the spotter then judged not an expression says
    "withdrawn" (the pipeline reports it in FrameResult.withdrawn, from the event book)."""
    from core.events import Event

    f = clip_frames[0][0][:, :, ::-1].copy()
    _, _, _, s = app.live_step(f, None)
    book = s.live.pipeline.book
    shown = Event(source="live", fps=20.0, onset_frame=3, apex_frame=5, offset_frame=5, onset_t=0.15, apex_t=0.25,
                  offset_t=0.25, kind="micro", label="surprise", probs={"surprise": 0.9}, peak_motion=1.0,
                  decided_t=0.3, finalised_t=None, latency_ms={"decision": 50.0}, face_id=0)
    book.emit_ready = lambda: [shown]
    app.live_step(f, s)
    assert list(s.live.table()["status"]) == ["provisional"]
    book.emit_ready = lambda: []
    book._withdrawn.append((0, 3))
    app.live_step(f, s)
    assert list(s.live.table()["status"]) == ["withdrawn"]


def test_temp_files_removed_on_session_end_and_shutdown(recognizer, clip_file, uploads):
    app = WebApp(WebConfig(upload_roots=(str(uploads),)), recognizer)
    root = app.root
    _, _, _, files, _, _, s1 = app.analyse_upload(str(upload(clip_file, uploads)), 0, None)
    s2 = app.session(None)
    assert s1.dir.exists() and s2.dir.exists()
    app.close_session(s1.id)  # Blocks.unload when the tab closes
    assert not s1.dir.exists() and not any(os.path.exists(f) for f in files)
    app.config.session_idle_s = 0.0  # a session left idle is reaped when the next one starts
    time.sleep(0.01)
    s3 = app.session(None)
    assert s2.closed and not s2.dir.exists() and not s3.closed
    app.close()
    assert not root.exists()


def test_live_restarts_after_a_pause_and_limits_open_pipelines(recognizer, clip_frames):
    app = WebApp(WebConfig(max_live=1, restart_gap_s=0.3), recognizer)
    try:
        f = clip_frames[0][0][:, :, ::-1].copy()
        _, _, _, a = app.live_step(f, None)
        first = a.live.pipeline
        time.sleep(0.35)
        app.live_step(f, a)
        assert a.live.pipeline is not first and a.live.stream_no == 2  # new stream, new calibration
        _, _, stats, b = app.live_step(f, None)  # A is still streaming: B must wait
        assert "maximum of 1 live streams" in stats and b.live.pipeline is None
        time.sleep(0.35)
        app.live_step(f, b)  # A went quiet: its pipeline makes room
        assert b.live.pipeline is not None and a.live.pipeline is None
    finally:
        app.close()


def test_auth_parsing_and_launch_refusals(tmp_path):
    assert parse_auth("ann:pa:ss") == ("ann", "pa:ss") and parse_auth(None) is None
    with pytest.raises(ValueError, match="USER:PASSWORD"):
        parse_auth("ann:")

    args = argparse.Namespace(engine="none", device="cpu", tracker="fast", calibration=None, auth="nobody",
                              share=False, host="127.0.0.1", port=0)
    assert launch(args) == 2
    args.auth, args.engine = None, str(tmp_path / "missing.safetensors")
    assert launch(args) == 2


def test_browser_video_writer_codecs_round_trip(tmp_path):
    for codec in available_codecs():
        w = BrowserVideoWriter(tmp_path / f"x-{codec}", fps=29.97, codec=codec)
        for i in range(12):
            w.write(np.full((121, 161, 3), 20 * i, np.uint8))  # odd sides: cropped to even
        w.close()
        p = probe(w.path)
        assert p.codec == codec and (p.width, p.height) == (160, 120) and p.frames == 12
        assert p.fps == pytest.approx(29.97, abs=0.01)


def test_y4m_writer_and_counter(tmp_path, clip_frames):
    frames = [stamp_counter(f, i * 7) for i, f in enumerate(clip_frames[0][:4])]
    path = write_y4m(tmp_path / "cam.y4m", frames, fps=30)
    assert path.read_bytes().startswith(b"YUV4MPEG2 W640 H480 F30:1 Ip A1:1 C420jpeg\nFRAME\n")
    back, fps = read_y4m(path)
    assert fps == 30 and len(back) == 4
    assert [read_counter(f) for f in back] == [0, 7, 14, 21]
    ok, jpg = cv2.imencode(".jpg", back[3], [cv2.IMWRITE_JPEG_QUALITY, 60])
    assert read_counter(cv2.imdecode(jpg, cv2.IMREAD_COLOR)) == 21  # survives JPEG
    assert read_counter(clip_frames[0][0]) is None
