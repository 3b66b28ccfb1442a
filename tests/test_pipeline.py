"""The live path (realtime.stages.pipeline) and its worker on real clips, with the real tracker,
motion signal, spotter and a real (small, randomly initialised) recogniser."""
from __future__ import annotations

import math
import threading
import time

import cv2
import numpy as np
import pytest
import torch

from core.events import Event, read_ground_truth
from core.face import CROP_SIZE, DlibDetector, Landmarks68, align_pair, alignment_transform, warp_face
from engines.recognizer import Recognizer
from realtime.stages.framebuffer import BufferedFrame as _Buffered
from realtime.stages.framebuffer import FrameBuffer, crop_footprint, region_of, shift_transform
from realtime.stages.pipeline import Pipeline, PipelineConfig
from realtime.stages.results import StageStats, is_final
from realtime.stages.sources import ArraySource, open_source
from realtime.stages.worker import RecognitionJob, RecognitionWorker
from train.checkpoint import save_checkpoint
from train.moext import MoExtClassifier, MoExtConfig
from train.synth import ground_truth_path, write_clip

CLASSES = ("negative", "positive", "surprise")
SYNTH_EVENTS = [{"kind": "micro", "label": "positive", "onset_t": 1.6, "amplitude": 3.5},
                {"kind": "micro", "label": "surprise", "onset_t": 3.0, "amplitude": 3.5}]


def synth_clip(cache_dir):
    """A 30 fps, 4.5 s clip of the bundled real face with two synthetic micro-expressions
    (train.synth; deterministic), generated once and kept in pytest's cache."""
    path = cache_dir / "me30_v1.avi"
    if not (path.is_file() and ground_truth_path(path).is_file()):
        write_clip(path, identity="sample_video", fps=30, seconds=4.5, events=SYNTH_EVENTS, seed=1)
    return path


@pytest.fixture(scope="module")
def me_clip(request):
    return synth_clip(request.config.cache.mkdir("moext_synth"))


@pytest.fixture(scope="module")
def tiny_recognizer(tmp_path_factory):
    """A real recogniser on the eager-torch engine over a random-init width-0.125 MoExt."""
    torch.manual_seed(0)
    cfg = MoExtConfig(width=0.125)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, MoExtClassifier(cfg), cfg, {"note": "random init, tests only"})
    rec = Recognizer.load(path, device="cpu", engine="torch")
    yield rec
    rec.close()


class _Failing:
    """An engine that raises (a driver error, a corrupt plan): the run must go on."""

    classes = CLASSES

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, onset, apex):
        self.calls += 1
        raise RuntimeError("engine exploded")

    def info(self):
        return {"engine": "failing"}


class _Slow:
    """An engine that blocks until released (to fill the worker's queue)."""

    classes = CLASSES

    def __init__(self) -> None:
        self.release = threading.Event()

    def predict(self, onset, apex):
        self.release.wait(10)
        return np.full((len(onset), 3), 1 / 3, np.float32)


def _pair():
    rng = np.random.default_rng(0)
    return (rng.integers(0, 255, (224, 224, 3), dtype=np.uint8),
            rng.integers(0, 255, (224, 224, 3), dtype=np.uint8))


# ------------------------------------------------------------------------------ worker


def test_worker_runs_the_real_recognizer_off_the_calling_thread(tiny_recognizer):
    w = RecognitionWorker(tiny_recognizer)
    a, b = _pair()
    assert w.submit(RecognitionJob(key="e1", onset_rgb=a, apex_rgb=b, context={"x": 1}))
    results = w.wait(timeout=60)
    w.close()
    assert len(results) == 1
    r = results[0]
    assert r.ok and r.key == "e1" and r.context == {"x": 1}
    assert set(r.probs) == set(tiny_recognizer.classes)
    assert sum(r.probs.values()) == pytest.approx(1.0, abs=1e-4)
    assert r.label == max(r.probs, key=r.probs.get)
    assert r.compute_ms > 0 and r.ready_at >= r.submitted_at


def test_pairs_of_faces_on_one_frame_go_to_the_engine_in_one_batch(tiny_recognizer):
    """Two faces' apexes confirmed on the same frame: one EventBook.submit_jobs, one engine
    call with both pairs, each result back on its own face's event."""
    from realtime.stages.eventbook import EventBook
    from realtime.stages.framebuffer import BufferedFrame, FrameBuffer
    from realtime.stages.spotter import SpotUpdate

    w = RecognitionWorker(tiny_recognizer)
    faults = []
    book = EventBook("two", 30.0, w, lambda kind, *a, **k: faults.append(kind))
    rng = np.random.default_rng(0)
    buffers = {}
    for face in (0, 1):
        buf = FrameBuffer(30.0, 1.0)
        for i in range(10):
            m = np.array([[1.0, 0, 0], [0, 1.0, 0]])
            buf.add(BufferedFrame(i, i / 30, 0.0, rng.integers(0, 255, (240, 240, 3), dtype=np.uint8), (0, 0), m,
                                  (100 * face, 0, 200, 200)))
        buffers[face] = buf
        u = SpotUpdate(stage="apex", event_id=1, onset_frame=2, apex_frame=7, offset_frame=None, kind=None,
                       peak_motion=1.0, onset_t=2 / 30, apex_t=7 / 30, offset_t=None, decided_frame=8, decided_t=8 / 30)
        book.on_update(u, 0.0, face_id=face, rule="megc", buffer=buf)
    assert w.stats()["submitted"] == 0           # cut, not yet handed over
    book.submit_jobs()
    deadline = time.monotonic() + 60
    while w.pending and time.monotonic() < deadline:
        time.sleep(0.01)
    book.collect()
    assert w.stats()["batches"] == 1 and w.stats()["largest_batch"] == 2
    events = book.emit_ready()
    assert sorted(e.face_id for e in events) == [0, 1] and all(e.label for e in events)
    assert {e.face_id: e.face_box for e in events} == {0: [0, 0, 200, 200], 1: [100, 0, 200, 200]}
    assert not faults
    w.close()


def test_a_withdrawn_event_stops_showing_its_provisional_label():
    """The spotter rejects an event after its provisional label was shown (a "busy" or
    "head" verdict at the offset): the face's latest label is taken back, so the overlay
    does not keep a label for something judged not an expression; another face's stays."""
    from realtime.stages.eventbook import EventBook
    from realtime.stages.framebuffer import BufferedFrame, FrameBuffer
    from realtime.stages.spotter import SpotUpdate

    book = EventBook("withdrawn", 30.0, None, lambda *a, **k: None)
    buf = FrameBuffer(30.0, 1.0)
    rng = np.random.default_rng(0)
    for i in range(10):
        buf.add(BufferedFrame(i, i / 30, 0.0, rng.integers(0, 255, (240, 240, 3), dtype=np.uint8), (0, 0),
                              np.array([[1.0, 0, 0], [0, 1.0, 0]]), (0, 0, 200, 200)))

    def update(stage, face):
        return SpotUpdate(stage=stage, event_id=face, onset_frame=2, apex_frame=7, offset_frame=None, kind=None,
                          peak_motion=1.0, onset_t=2 / 30, apex_t=7 / 30, offset_t=None, decided_frame=8,
                          decided_t=8 / 30)

    for face in (0, 1):
        book.on_update(update("apex", face), 0.0, face_id=face, rule="megc", buffer=buf)
    shown = book.emit_ready()
    assert [e.finalised_t for e in shown] == [None, None]          # provisional, spotting only
    assert set(book.last_by_face) == {0, 1} and book.last_event.face_id == 1
    book.on_update(update("rejected", 1), 0.0, face_id=1, rule="megc", buffer=buf)
    assert set(book.last_by_face) == {0} and book.last_event is None
    assert book.take_withdrawn() == [(1, 2)] and book.take_withdrawn() == []   # for the web table, once
    assert book.emit_ready() == [] and book.counts["events"] == 0   # nothing final was ever written


def test_worker_survives_a_recognizer_that_raises():
    engine = _Failing()
    w = RecognitionWorker(engine)
    a, b = _pair()
    for k in range(3):
        assert w.submit(RecognitionJob(key=k, onset_rgb=a, apex_rgb=b))
    results = w.wait(timeout=10)
    assert len(results) == 3 and all(not r.ok for r in results)
    assert "engine exploded" in results[0].error
    assert w.faults == 3 and w.last_error.startswith("RuntimeError")
    assert w._thread.is_alive()          # still serving
    w.close()
    assert not w._thread.is_alive()


def test_worker_submit_never_blocks_and_counts_drops():
    engine = _Slow()
    w = RecognitionWorker(engine, max_queue=2, max_batch=1)
    a, b = _pair()
    t0 = time.perf_counter()
    accepted = [w.submit(RecognitionJob(key=k, onset_rgb=a, apex_rgb=b)) for k in range(8)]
    assert time.perf_counter() - t0 < 0.5
    assert accepted.count(False) == w.dropped >= 4
    engine.release.set()
    results = w.close(wait=True)
    assert len(results) == accepted.count(True) and all(r.ok for r in results)


# ------------------------------------------------------------------------------ pure helpers


def test_shifted_transform_warps_a_region_like_the_whole_frame(asset):
    img = cv2.imread(str(asset("single_face.jpg")))

    box = DlibDetector().detect(img)[0]
    m = alignment_transform(Landmarks68()(img, box))
    x0, y0, x1, y1 = region_of((img.shape[1], img.shape[0]), m, 0.25)
    region = img[y0:y1, x0:x1].copy()
    full = warp_face(img, m)
    part = warp_face(region, shift_transform(m, (x0, y0)))
    assert full.shape == part.shape == (CROP_SIZE, CROP_SIZE, 3)
    assert np.abs(full.astype(int) - part.astype(int)).max() <= 1
    fx0, fy0, fx1, fy1 = crop_footprint(m)
    assert x0 <= fx0 and y0 <= fy0 and (x1 >= fx1 or x1 == img.shape[1])


def test_pair_is_warped_with_the_onset_transform():
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)
    m_onset = np.array([[1.0, 0, -40], [0, 1.0, -10]])
    m_apex = np.array([[1.1, 0, -60], [0, 1.1, -20]])    # landmarks moved: must be ignored
    onset = _Buffered(0, 0.0, 0.0, frame[5:, 20:].copy(), (20, 5), m_onset)
    apex = _Buffered(3, 0.1, 0.0, frame.copy(), (0, 0), m_apex)
    m = onset.transform   # the pair as the event book cuts it: the ONSET's transform for both
    a, b = align_pair(onset.region, apex.region, shift_transform(m, onset.offset),
                      apex_transform=shift_transform(m, apex.offset))
    expected = warp_face(frame, m_onset)[..., ::-1]        # RGB
    assert np.array_equal(b, expected)
    assert np.abs(a.astype(int) - expected.astype(int)).max() <= 1


def test_frame_buffer_keeps_seconds_and_pins():
    buf = FrameBuffer(fps=10, seconds=1.0)
    for i in range(30):
        buf.add(_Buffered(i, i / 10, 0.0, np.zeros((2, 2, 3), np.uint8), (0, 0), np.eye(2, 3)))
        if i == 5:
            buf.pin_only([3])
    assert len(buf) == 12 and buf.get(10) is None and buf.get(29) is not None
    assert buf.get(3) is not None          # pinned past the horizon
    buf.pin_only([])
    assert buf.get(3) is None


def test_stage_stats_exact_then_bounded():
    s = StageStats(cap=1000)
    for v in range(1, 101):
        s.add(float(v))
    d = s.summary()
    assert d["n"] == 100 and d["max"] == 100 and d["p50"] == pytest.approx(50.5) and d["mean"] == 50.5
    for v in range(10_000):
        s.add(1.0)
    assert s.n == 10_100 and len(s._buf) <= 1000 and s.summary()["max"] == 100


def test_config_refuses_bad_values():
    with pytest.raises(ValueError, match="fps"):
        PipelineConfig(fps=0)
    with pytest.raises(ValueError, match="draw_fps"):
        PipelineConfig(draw_fps=0)
    with pytest.raises(ValueError, match="unknown spotter setting"):
        Pipeline(PipelineConfig(engine="none", spotter={"bogus": 1}))


# ------------------------------------------------------------------------------ real clips


def _run(pipe, src):
    results = [pipe.process(f) for f in src]
    late = pipe.close(wait=True)
    return results, late


def test_single_face_clip(asset):
    with open_source(video=asset("single_face.mp4")) as src:
        pipe = Pipeline.for_source(src, PipelineConfig(engine="none"))
        results, _ = _run(pipe, src)
        summary = pipe.summary(src)
    assert len(results) == 72
    assert summary.face_share > 0.95 and summary.frames == 72 and summary.dropped == 0
    r = results[-1]
    assert r.found and r.face_id == 0 and r.n_faces == 1 and r.value is not None
    assert r.overlay is not None and r.overlay.shape == r.frame.image.shape
    assert {"decode", "detect", "landmarks", "align", "motion", "spot", "draw"} <= set(r.timings_ms)
    assert set(r.regions) >= {"brows", "eyes", "mouth", "nose_ref"}
    for st in ("decode", "landmarks", "align", "motion", "spot", "draw", "process", "frame"):
        assert summary.stages[st]["n"] > 0 and summary.stages[st]["p95"] >= summary.stages[st]["p50"]
    assert summary.achieved_fps > 0 and summary.realtime_factor == pytest.approx(summary.achieved_fps / 30)
    row = r.signal_row()
    assert row["frame"] == 71 and row["found"] == 1
    assert "summary" in summary.format() and summary.to_dict()["frames"] == 72


@pytest.mark.parametrize("fps,hz,held", [(200, 100.0, True), (200, None, False), (30, 100.0, False)])
def test_landmark_rate_at_high_frame_rates(asset, fps, hz, held):
    """landmarks_hz: a 200 fps stream runs the landmark model on every other frame; slower
    streams, or landmarks_hz=None, on every frame. The motion signal is there either way."""
    with open_source(video=asset("single_face.mp4"), fps=fps) as src:
        pipe = Pipeline.for_source(src, PipelineConfig(engine="none", draw=False, landmarks_hz=hz))
        results, _ = _run(pipe, src)
    ran = [r.timings_ms["landmarks"] > 0 for r in results]
    assert all(r.found and math.isfinite(r.value) for r in results[1:])
    if held:
        assert ran[::2] == [True] * 36 and not any(ran[1::2])   # odd frames held
    else:
        assert all(ran)
    with pytest.raises(ValueError, match="landmarks_hz"):
        PipelineConfig(landmarks_hz=0)


@pytest.mark.parametrize("fps,hz,every", [(200, 100.0, 2), (200, None, 1), (30, 100.0, 1)])
def test_motion_rate_at_high_frame_rates(asset, fps, hz, every):
    """motion_hz 100: a 200 fps stream is measured (flow + spotter) on every 2nd frame; slower
    streams, or motion_hz None (the default), on every frame. Every frame is still buffered
    for the pair and reports the latest sample's figures."""
    with open_source(video=asset("single_face.mp4"), fps=fps) as src:
        pipe = Pipeline.for_source(src, PipelineConfig(engine="none", draw=False, motion_hz=hz))
        results, _ = _run(pipe, src)
    measured = ["motion" in r.timings_ms for r in results]
    assert measured == [i % every == 0 for i in range(len(results))]
    assert all(r.found and math.isfinite(r.value) for r in results[1:])
    if every > 1:   # between samples: the figures of the frame before
        assert all(results[i].value == results[i - 1].value for i in range(1, len(results), 2))
    assert len(pipe.buffer) == min(len(results), pipe.buffer.maxlen)   # every frame is held for the pair
    with pytest.raises(ValueError, match="motion_hz"):
        PipelineConfig(motion_hz=-1)


def test_no_face_clip(asset):
    with open_source(video=asset("no_face.mp4")) as src:
        pipe = Pipeline.for_source(src, PipelineConfig(engine="none"))
        results, late = _run(pipe, src)
        summary = pipe.summary(src)
    assert len(results) == 95 and late == []
    assert summary.face_share == 0 and summary.events == 0
    assert all(not r.found and r.message == "no face" and r.value is None for r in results)
    assert results[0].overlay is not None
    assert not np.array_equal(results[0].overlay, results[0].frame.image)  # the message is drawn
    assert "truncated" not in summary.faults   # header estimates a few frames more: not a fault


def _frames(path, n=None, size=None):
    cap = cv2.VideoCapture(str(path))
    out = []
    while n is None or len(out) < n:
        ok, f = cap.read()
        if not ok:
            break
        out.append(cv2.resize(f, size) if size else f)
    cap.release()
    return out


def test_face_leaves_the_frame(asset):
    with open_source(video=asset("face_noface.mov")) as src:
        pipe = Pipeline.for_source(src, PipelineConfig(engine="none", draw=False))
        results, _ = _run(pipe, src)
    found = [r.found for r in results]
    assert found[0] and not found[-1]
    first_loss = found.index(False)
    assert all(not f for f in found[first_loss + 5:])           # gone for good in this clip
    assert results[-1].message == "no face"
    assert 0.2 < pipe.summary().face_share < 0.8


def test_face_lost_and_back_keeps_its_id(asset):
    face = _frames(asset("single_face.mp4"), 30)
    empty = _frames(asset("no_face.mp4"), 20, size=(640, 360))
    src = ArraySource(face + empty + face, fps=30, name="leave-and-return")
    pipe = Pipeline.for_source(src, PipelineConfig(engine="none", draw=False))
    results, late = _run(pipe, src)
    found = np.array([r.found for r in results])
    assert found[:30].mean() > 0.9 and not found[32:50].any() and found[55:].mean() > 0.9
    ids = {r.face_id for r in results if r.found}
    assert ids == {0}                                        # the same person comes back as #0
    assert pipe.frames == 80 and set(pipe.faults) <= {"event_aborted"}   # a lost face is no error
    # no event spans the absence: every onset and apex lies on a frame that shows the face
    events = [e for r in results for e in r.new_events] + list(late)
    assert all(found[e.onset_frame] and found[e.apex_frame] for e in events)


@pytest.fixture(scope="module")
def group_clip(asset, tmp_path_factory):
    img = cv2.imread(str(asset("multi_face.jpg")))           # five real people
    clip = tmp_path_factory.mktemp("group") / "multi_face.avi"
    h, w = img.shape[:2]
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (w, h))
    for _ in range(15):
        writer.write(img)
    writer.release()
    return clip


def test_max_faces_1_tracks_one_and_says_so(group_clip):
    with open_source(video=group_clip) as src:
        pipe = Pipeline.for_source(src, PipelineConfig(engine="none", max_faces=1))
        results, _ = _run(pipe, src)
    tracked = [r for r in results if r.found]
    assert len(tracked) == 15
    assert {r.face_id for r in tracked} == {0} and all(len(r.faces) == 1 for r in tracked)
    assert all(r.n_faces >= 2 for r in tracked)
    assert tracked[-1].message == f"{tracked[-1].n_faces} faces: tracking #0"
    boxes = np.array([[r.box.left, r.box.top] for r in tracked])
    assert np.ptp(boxes, axis=0).max() < 10                  # the same subject throughout
    assert results[-1].overlay is not None


def test_every_face_is_followed_up_to_max_faces(group_clip):
    """Five people, max_faces 4 (the default): four lanes with stable, distinct ids and
    boxes that do not overlap; one signal row per face per frame."""
    with open_source(video=group_clip) as src:
        pipe = Pipeline.for_source(src, PipelineConfig(engine="none"))
        results, _ = _run(pipe, src)
    assert pipe.config.max_faces == 4
    assert all(len(r.faces) == 4 for r in results)
    ids = [tuple(f.face_id for f in r.faces) for r in results]
    assert set(ids) == {(0, 1, 2, 3)}                       # stable over the clip
    last = results[-1].faces
    for i, a in enumerate(last):
        for b in last[i + 1:]:
            assert a.box.iou(b.box) < 0.1
    # each face in place throughout
    for k in range(4):
        boxes = np.array([[r.faces[k].box.left, r.faces[k].box.top] for r in results])
        assert np.ptp(boxes, axis=0).max() < 10
    rows = results[-1].signal_rows()
    assert [row["face_id"] for row, _ in rows] == [0, 1, 2, 3] and all(reg for _, reg in rows)
    assert set(pipe.lanes) == {0, 1, 2, 3} and len({id(v) for v in pipe.lanes.values()}) == 4
    assert pipe.summary().faces["3"]["frames"] == 15
    assert results[-1].overlay is not None


def test_synthetic_micro_expressions_are_spotted_and_labelled(me_clip, tiny_recognizer):
    truth = read_ground_truth(ground_truth_path(me_clip))
    with open_source(video=me_clip) as src:
        pipe = Pipeline.for_source(src, PipelineConfig(draw=False), recognizer=tiny_recognizer)
        results, late = _run(pipe, src)
        summary = pipe.summary(src)
    events = [e for r in results for e in r.final_events] + late
    assert events == pipe.events and len(events) == summary.events
    assert summary.micro >= 1
    for e in events:
        assert isinstance(e, Event) and is_final(e)
        assert e.onset_frame <= e.apex_frame <= e.offset_frame
        assert e.label in CLASSES and sum(e.probs.values()) == pytest.approx(1.0, abs=1e-3)
        lat = e.latency_ms
        assert lat["decision"] == pytest.approx(lat["wait"] + lat["compute"], abs=0.01)
        assert lat["wait"] == pytest.approx((e.decided_t - e.apex_t) * 1000 - lat["compute"], abs=0.01)
        assert lat["infer"] > 0 and lat["final"] >= lat["wait"]
        assert e.finalised_t >= e.apex_t and e.face_id == 0 and e.source == me_clip.name
        assert e.onset_t == pytest.approx(e.onset_frame / 30, abs=1e-5)
    # each true micro-expression is matched by an event overlapping it (IoU >= 0.5)
    def iou(e, g):
        inter = min(e.offset_frame, g.offset_frame) - max(e.onset_frame, g.onset_frame) + 1
        union = max(e.offset_frame, g.offset_frame) - min(e.onset_frame, g.onset_frame) + 1
        return max(0, inter) / union
    hits = [g for g in truth if any(iou(e, g) >= 0.5 for e in events)]
    assert len(hits) == len(truth)
    assert summary.decision_latency_ms["n"] == len(events)


def test_a_failing_engine_costs_labels_not_the_run(me_clip):
    engine = _Failing()
    with open_source(video=me_clip) as src:
        pipe = Pipeline.for_source(src, PipelineConfig(draw=False), recognizer=engine)
        results, late = _run(pipe, src)
        summary = pipe.summary(src)
    assert len(results) == summary.frames == src.frames_read
    assert engine.calls >= 1 and summary.events >= 1
    assert summary.faults["recognition_error"] == engine.calls
    assert all(e.label is None and e.probs == {} for e in pipe.events)
    assert summary.unlabelled == summary.events


def test_events_in_memory_are_bounded_but_all_are_counted(me_clip):
    """Hours of running: Pipeline.events keeps the latest keep_events; counts and latency
    figures still cover every event (each one also went to the sinks as it happened)."""
    with open_source(video=me_clip) as src:
        pipe = Pipeline.for_source(src, PipelineConfig(draw=False, keep_events=1), recognizer=_Failing())
        results, late = _run(pipe, src)
        summary = pipe.summary(src)
    events = [e for r in results for e in r.final_events] + late
    assert len(events) >= 2                       # the clip has several events
    assert pipe.events == events[-1:]
    assert summary.events == len(events) == summary.decision_latency_ms["n"] == summary.final_latency_ms["n"]
    assert summary.micro + summary.macro == len(events)
    with pytest.raises(ValueError, match="keep_events"):
        PipelineConfig(keep_events=0)


def test_recalibrate_and_draw_rate_cap(asset):
    with open_source(video=asset("single_face.mp4")) as src:
        pipe = Pipeline.for_source(src, PipelineConfig(engine="none", draw_fps=1e-3, calibration_s=0.2))
        results = []
        for f in src:
            results.append(pipe.process(f))
            if f.index == 40:
                pipe.recalibrate()
                assert pipe.spotter.calibrating
        pipe.close()
    drawn = [r for r in results if r.overlay is not None]
    assert len(drawn) == 1 and "draw" not in results[5].timings_ms   # display-rate cap
    assert pipe.config.draw_policy.startswith("at most")


def test_events_whose_label_is_late_are_still_written(me_clip):
    engine = _Slow()                       # never answers within the run
    with open_source(video=me_clip) as src:
        pipe = Pipeline.for_source(src, PipelineConfig(draw=False), recognizer=engine)
        emitted = [e for f in src for e in pipe.process(f).final_events]
        t0 = time.perf_counter()
        late = pipe.close(wait=True, timeout=0.5)
        assert time.perf_counter() - t0 < 3.0      # a stuck engine does not hold up the end
    engine.release.set()
    assert emitted == [] and len(late) >= 1
    assert all(e.label is None and is_final(e) for e in late)
    assert pipe.faults["label_missing"] == len(late)


def _events(path, lookahead_s=3.0, **kw):
    with open_source(video=path, **kw) as src:
        pipe = Pipeline.for_source(src, PipelineConfig(engine="none", draw=False, lookahead_s=lookahead_s))
        primed = pipe.prime_from(src)
        _run(pipe, src)
        return pipe.events, pipe.summary(src), primed


def test_the_bundled_smile_is_a_macro_expression(asset):
    """single_face.mp4: a real man talks, then smiles broadly from about 0.5 s to the end."""
    events, summary, primed = _events(asset("single_face.mp4"))
    assert primed > 30 and summary.lookahead_frames == primed      # the whole 2.4 s clip, read ahead
    assert [e.kind for e in events] == ["macro"]
    [smile] = events
    assert 0.3 <= smile.onset_t <= 0.8 and smile.offset_t - smile.onset_t >= 0.5


def test_recordings_are_read_ahead_cameras_are_not(asset):
    with open_source(video=asset("single_face.mp4")) as src:
        pipe = Pipeline.for_source(src, PipelineConfig(engine="none", draw=False, lookahead_s=0.5))
        assert pipe.prime_from(src) > 5
        assert not pipe.spotter.calibrating                       # judged from the first frame
        results, _ = _run(pipe, src)
        assert results[1].score is not None                       # frame 0 has no reference yet
        with pytest.raises(RuntimeError, match="before the first"):
            pipe.prime([])
    with open_source(video=asset("single_face.mp4"), realtime=True) as live:   # played as a camera
        pipe = Pipeline.for_source(live, PipelineConfig(engine="none", draw=False))
        assert pipe.prime_from(live) == 0 and pipe.spotter.calibrating
        pipe.close(wait=False)


def test_a_clip_too_short_to_analyse_says_so(asset, tmp_path):
    short = tmp_path / "three_frames.avi"
    with open_source(video=asset("single_face.mp4")) as src:
        frames = [f.image for f, _ in zip(src, range(3))]
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(short), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (w, h))
    for f in frames:
        writer.write(f)
    writer.release()
    events, summary, primed = _events(short)
    assert events == [] and primed == 0
    assert summary.faults.get("too_short") == 1
