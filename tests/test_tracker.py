"""FaceTracker and SmoothedTransform on the bundled real clips (REALTIME.md, "face
tracker" and "aligner"). Speed is measured by `python -m realtime.stages.tracker`, not asserted."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from core.face import (
    DlibDetector, Landmarks68, TRACKER_KINDS, alignment_transform, face_models, landmark_error,
)
from realtime.stages.tracker import (
    FaceTracker, SmoothedTransform, TrackerConfig, TrackResult, centre_distance, inside_fraction, same_subject,
)
from core.face import FaceBox


def read_frames(path, scale: float = 1.0) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if scale != 1.0:
            frame = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        frames.append(frame)
    cap.release()
    assert frames, f"could not decode {path}"
    return frames


@pytest.fixture(scope="module")
def models():
    """Loaded (detector, landmarks) per kind, shared by the trackers of this module."""
    cache = {}

    def get(kind):
        if kind not in cache:
            cache[kind] = face_models(kind)
        return cache[kind]

    yield get
    for det, _ in cache.values():
        if hasattr(det, "close"):
            det.close()


def make_tracker(models, kind, redetect_every=30, **cfg) -> FaceTracker:
    det, lms = models(kind)
    return FaceTracker(kind, redetect_every, TrackerConfig(**cfg), detector=det, landmarks=lms)


@pytest.fixture(scope="module")
def single_clip(asset):
    return read_frames(asset("single_face.mp4"))


@pytest.fixture(scope="module")
def leaving_clip(asset):
    """face_noface.mov at half size (480x270, faces ~130 px): a face for frames 0-71, then
    a cut to an animation without faces (frames 72-168); the face does not come back
    within the clip."""
    return read_frames(asset("face_noface.mov"), scale=0.5)


@pytest.fixture(scope="module")
def fast_run(models, single_clip):
    tracker = make_tracker(models, "fast")
    return [tracker.update(f) for f in single_clip]


# ---- following one face ---------------------------------------------------------------------

@pytest.mark.parametrize("kind", TRACKER_KINDS)
def test_follows_the_face_through_single_face_clip(models, single_clip, fast_run, kind):
    if kind == "fast":
        results = fast_run
    else:
        tracker = make_tracker(models, kind)
        results = [tracker.update(f) for f in single_clip]
    assert all(isinstance(r, TrackResult) for r in results)
    assert sum(r.found for r in results) >= 0.97 * len(results)
    assert {r.face_id for r in results if r.found} == {0}
    assert all(r.n_faces == 1 for r in results)
    r = results[5]
    assert r.landmarks.shape == (68, 2) and r.landmarks.dtype == np.float32
    assert set(r.timings_ms) >= {"detect", "landmarks"}
    # Detection runs on the first frame and then every 30 frames only.
    assert [i for i, r in enumerate(results) if r.redetected] == [0, 30, 60]
    assert all(r.timings_ms["detect"] == 0 for i, r in enumerate(results) if i not in (0, 30, 60))


def test_tracked_landmarks_do_not_drift_from_per_frame_detection(single_clip, fast_run):
    """Following by landmarks gives the landmarks a fresh HOG detection would give."""
    hog, lm68 = DlibDetector(upsample=0), Landmarks68()
    for i in (10, 29, 45, 71):
        (box,) = hog.detect(single_clip[i])
        assert landmark_error(fast_run[i].landmarks, lm68(single_clip[i], box)) < 0.05


# ---- loss and re-acquisition -------------------------------------------------------------------

@pytest.mark.parametrize("kind", TRACKER_KINDS)
def test_reports_loss_when_the_face_leaves_and_reacquires_it(models, leaving_clip, kind):
    tracker = make_tracker(models, kind)
    # The clip, then its first 10 frames again: the face returns where it left.
    results = [tracker.update(f) for f in leaving_clip + leaving_clip[:10]]
    assert all(r.found and r.face_id == 0 for r in results[:72])
    gone = results[72:169]
    assert not any(r.found for r in gone)
    assert all(r.box is None and r.landmarks is None and r.face_id is None for r in gone)
    assert "not found" in gone[0].reason
    back = results[169:]
    assert back[0].found and back[0].redetected and back[0].face_id == 0  # same place: same subject
    assert all(r.found and r.face_id == 0 for r in back)


def test_held_frames_reuse_landmarks_and_loss_is_seen_at_the_next_refresh(models, leaving_clip):
    """update(refresh=False) (a 200 fps stream refreshing landmarks every other frame)."""
    tracker = make_tracker(models, "fast")
    results = [tracker.update(f, refresh=i % 2 == 1) for i, f in enumerate(leaving_clip)]
    for i, r in enumerate(results[:72]):
        assert r.found and r.face_id == 0
        if r.held:
            assert i % 2 == 0 and not r.redetected and r.timings_ms["landmarks"] == 0.0
            assert np.array_equal(r.landmarks, results[i - 1].landmarks)
    assert sum(r.held for r in results[:72]) >= 30
    # re-detection is never postponed by holding: still on frames 0, 30 and 60
    assert [i for i, r in enumerate(results[:72]) if r.redetected] == [0, 30, 60]
    # the cut at frame 72 (a held frame) is noticed on frame 73
    assert results[72].found and results[72].held
    assert not results[73].found and not any(r.found for r in results[73:])
    # nothing is held without a face: a lost tracker detects on every frame again
    assert not any(r.held for r in results[73:])


def test_a_face_returning_elsewhere_is_a_new_subject(models, leaving_clip):
    tracker = make_tracker(models, "fast")
    for f in leaving_clip[60:72]:
        assert tracker.update(f).face_id == 0
    for f in leaving_clip[72:72 + 31]:  # missing for more than switch_after (30) frames
        assert not tracker.update(f).found
    # The face comes back 150 px (more than a face width) to the right.
    shift = np.float32([[1, 0, 150], [0, 1, 0]])
    moved = [cv2.warpAffine(f, shift, (f.shape[1], f.shape[0]), borderMode=cv2.BORDER_REPLICATE)
             for f in leaving_clip[:5]]
    results = [tracker.update(f) for f in moved]
    assert all(r.found and r.face_id == 1 for r in results)


def test_waits_for_the_subject_before_taking_another_face(models, leaving_clip):
    tracker = make_tracker(models, "fast", switch_after=30)
    tracker.update(leaving_clip[0])
    tracker.update(leaving_clip[72])  # lost
    shift = np.float32([[1, 0, 150], [0, 1, 0]])
    moved = cv2.warpAffine(leaving_clip[1], shift, (480, 270), borderMode=cv2.BORDER_REPLICATE)
    r = tracker.update(moved)
    assert not r.found and r.n_faces == 1 and "subject missing" in r.reason


# ---- several faces --------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,n_faces", [("fast", 5), ("dlib", 4)])
def test_keeps_the_same_subject_among_several_faces(models, asset, kind, n_faces):
    """multi_face.jpg repeated while drifting 3 px per frame to the right, re-detecting every
    other frame: the tracker keeps one subject and its id (dlib's HOG misses the face in
    sunglasses, hence four)."""
    img = cv2.imread(str(asset("multi_face.jpg")))
    tracker = make_tracker(models, kind, redetect_every=2)
    results = []
    for k in range(8):
        shift = np.float32([[1, 0, 3 * k], [0, 1, 0]])
        results.append(tracker.update(cv2.warpAffine(img, shift, (img.shape[1], img.shape[0]),
                                                     borderMode=cv2.BORDER_REPLICATE)))
    assert all(r.found and r.face_id == 0 and r.n_faces == n_faces for r in results)
    x0, y0 = results[0].box.center
    for k, r in enumerate(results):
        x, y = r.box.center
        assert abs(x - (x0 + 3 * k)) < 6 and abs(y - y0) < 6
    assert sum(r.redetected for r in results) >= 4


def test_reset_starts_over(models, single_clip):
    tracker = make_tracker(models, "fast")
    tracker.update(single_clip[0])
    tracker.update(single_clip[1])
    tracker.reset()
    r = tracker.update(single_clip[2])
    assert r.found and r.redetected and r.face_id == 0 and r.reason == "new subject"


def test_config_is_copied_and_redetect_every_defaults_to_it(models):
    det, lms = models("fast")
    cfg = TrackerConfig(redetect_every=7)
    assert FaceTracker("fast", config=cfg, detector=det, landmarks=lms).config.redetect_every == 7
    tracker = FaceTracker("fast", 12, cfg, detector=det, landmarks=lms)
    assert tracker.config.redetect_every == 12 and cfg.redetect_every == 7
    tracker.close()  # a detector passed in stays open for its owner
    assert det.detect(np.zeros((64, 64, 3), np.uint8)) == []


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown tracker kind 'haar'.*fast, dlib, mediapipe"):
        FaceTracker("haar")
    with pytest.raises(ValueError, match="redetect_every must be >= 1"):
        FaceTracker("fast", redetect_every=0)


# ---- helpers ----------------------------------------------------------------------------------

def test_box_helpers():
    box = FaceBox(-50, 0, 50, 100)
    assert inside_fraction(box, 640, 360) == pytest.approx(0.5)
    assert inside_fraction(FaceBox(700, 0, 800, 100), 640, 360) == 0.0
    assert centre_distance(FaceBox(10, 0, 110, 100), FaceBox(0, 0, 100, 100)) == pytest.approx(0.1)
    ref = FaceBox(0, 0, 100, 100)
    near, far = FaceBox(30, 0, 130, 100), FaceBox(300, 0, 400, 100)
    assert same_subject([far, near], ref, 0.3, 0.5) is near
    assert same_subject([far], ref, 0.3, 0.5) is None
    assert same_subject([], ref, 0.3, 0.5) is None


# ---- smoothing the alignment --------------------------------------------------------------------

def _shifted(m, dx):
    out = np.array(m, dtype=np.float64)
    out[0, 2] += dx
    return out


def test_smoothed_transform_averages_holds_and_resets():
    base = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    s = SmoothedTransform(alpha=0.5, reset_px=8.0)
    assert s.value is None
    assert np.allclose(s.update(base), base)
    assert np.allclose(s.update(_shifted(base, 2.0)), _shifted(base, 1.0))  # halfway
    s.freeze()
    assert np.allclose(s.update(_shifted(base, 4.0)), _shifted(base, 1.0))  # held through an event
    assert np.allclose(s.update(_shifted(base, 40.0)), _shifted(base, 1.0))  # even through a jump
    s.unfreeze()
    assert s.jump(_shifted(base, 21.0)) == pytest.approx(20.0)
    assert np.allclose(s.update(_shifted(base, 21.0)), _shifted(base, 21.0))  # jump: reset, not blended
    assert s.resets == 1
    s.reset()
    assert s.value is None and not s.frozen
    with pytest.raises(ValueError, match="2x3"):
        s.update(np.eye(3))
    with pytest.raises(ValueError, match="alpha"):
        SmoothedTransform(alpha=0.0)


def test_smoothed_transform_alpha_from_fps():
    a30 = SmoothedTransform.for_fps(30, 0.1).alpha
    a200 = SmoothedTransform.for_fps(200, 0.1).alpha
    assert a200 < a30 < 1
    assert (1 - a200) ** 200 == pytest.approx((1 - a30) ** 30)  # same decay per second


def test_smoothing_reduces_frame_to_frame_jitter(fast_run):
    """On the real clip, the smoothed alignment moves less from frame to frame."""
    raw = [alignment_transform(r.landmarks) for r in fast_run if r.found]
    s = SmoothedTransform.for_fps(30, 0.1)
    smooth = [s.update(m) for m in raw]

    def mean_step(ms):
        steps = []
        for a, b in zip(ms, ms[1:]):
            probe = SmoothedTransform(alpha=1.0)
            probe.update(a)
            steps.append(probe.jump(b))
        return np.mean(steps)

    assert mean_step(smooth) < 0.8 * mean_step(raw)
