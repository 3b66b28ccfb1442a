"""Issue 16: the time windows of the motion signal, the spotter and the alignment smoother
follow the frames' timestamps, not the nominal frame rate: a camera that drops frames or a
browser stream whose rate varies must not stretch them."""
from __future__ import annotations

import math

import numpy as np

from realtime.stages.motion import MotionSignal
from realtime.stages.spotter import NoiseModel, OnlineSpotter
from realtime.stages.tracker import SmoothedTransform

NOMINAL = 200.0


def _times(kind: str, seconds: float, seed: int = 0) -> np.ndarray:
    """Frame times of a nominal 200 fps stream: "nominal", "dropping" (every other frame
    lost: 100 fps actual) or "varying" (intervals of 2-9 ms at random)."""
    if kind == "nominal":
        return np.arange(int(seconds * NOMINAL)) / NOMINAL
    if kind == "dropping":
        return np.arange(int(seconds * 100)) / 100.0
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.uniform(0.002, 0.009, int(seconds * 250)))


def _grey(i: int) -> np.ndarray:
    rng = np.random.default_rng(i % 7)
    return (rng.random((112, 112)) * 255).astype(np.uint8)


def test_motion_reference_is_250_ms_of_source_time_old_whatever_the_rate():
    for kind in ("nominal", "dropping", "varying"):
        motion = MotionSignal(NOMINAL)
        ts = _times(kind, 1.5)
        ages = []
        for i, t in enumerate(ts):
            s = motion.update(_grey(i), t=float(t))
            if s.ready and t > 0.6:
                ages.append(t - ts[i - s.ref_age])
        ages = np.asarray(ages)
        # the reference is the oldest frame at most 250 ms old: within one frame interval of it
        gap = np.diff(ts).max()
        assert np.all(ages <= 0.25 + 1e-6), kind
        assert np.all(ages >= 0.25 - gap - 1e-6), (kind, ages.min())


def test_spotter_calibrates_and_remembers_in_seconds():
    for kind in ("nominal", "dropping", "varying"):
        spotter = OnlineSpotter(NOMINAL)
        ts = _times(kind, 8.0)
        rng = np.random.default_rng(1)
        calibrated_at = None
        for i, t in enumerate(ts):
            spotter.update(i, float(t), 0.05 + 0.01 * rng.random())
            if calibrated_at is None and spotter.calibrated:
                calibrated_at = t
        # calibration_s = 0.5 s of signal, not 100 frames (1 s at 100 fps)
        assert calibrated_at is not None and abs(calibrated_at - ts[0] - 0.5) <= np.diff(ts).max() + 1e-6, kind
        # the noise model holds window_s = 6 s of source time, not 1200 frames (12 s at 100 fps)
        assert 5.9 <= spotter.noise.span_s <= 6.0 + 1e-6, (kind, spotter.noise.span_s)


def test_noise_model_refreshes_every_100_ms_of_source_time():
    noise = NoiseModel(NOMINAL, ("a",), window_s=6.0, quantile=0.2, update_every_ms=100.0, floor=0.0)
    noise.add([1.0], 0.0)
    noise.refresh()
    levels = []
    for k, t in enumerate(np.arange(1, 101) / 100.0):      # 100 fps actual
        noise.add([float(k)], float(t))
        levels.append(noise.calm[0])
    changes = int(np.count_nonzero(np.diff(levels)))
    assert 9 <= changes <= 10                               # ten refreshes in one second


def test_spotter_event_times_do_not_stretch_when_frames_drop():
    """The same 300 ms bump, seen at 200 fps and with every other frame dropped: the same
    onset, apex and offset in seconds (within a frame or two)."""
    found = {}
    for kind in ("nominal", "dropping"):
        spotter = OnlineSpotter(NOMINAL)
        ts = _times(kind, 4.0)
        rng = np.random.default_rng(2)
        finals = []
        for i, t in enumerate(ts):
            bump = 2.0 * math.sin(math.pi * (t - 2.0) / 0.3) if 2.0 <= t <= 2.3 else 0.0
            for u in spotter.update(i, float(t), 0.05 + 0.005 * rng.random() + max(bump, 0.0)):
                if u.stage == "final":
                    finals.append(u)
        for u in spotter.finish():
            if u.stage == "final":
                finals.append(u)
        assert len(finals) == 1, kind
        found[kind] = finals[0]
    a, b = found["nominal"], found["dropping"]
    for key in ("onset_t", "apex_t", "offset_t"):
        assert abs(getattr(a, key) - getattr(b, key)) <= 0.021, (key, getattr(a, key), getattr(b, key))
    assert a.kind == b.kind == "micro"


def test_alignment_smoothing_time_constant_is_in_seconds():
    """A step in the transform: after 0.5 s (the time constant) the smoothed transform has
    moved 1 - 1/e of the way, at 200 fps and with frames dropped alike."""
    start = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    step = start.copy()
    step[0, 2] = 4.0                       # 4 px: under reset_px, so it is blended
    for kind in ("nominal", "dropping", "varying"):
        sm = SmoothedTransform.for_fps(NOMINAL, 0.5)
        ts = _times(kind, 1.0)
        sm.update(start, t=0.0)
        out = None
        for t in ts[ts > 0]:
            if t > 0.5 + 1e-9:
                break
            out = sm.update(step, t=float(t))
        moved = out[0, 2] / 4.0
        t_last = float(ts[ts <= 0.5 + 1e-9][-1])
        assert abs(moved - (1 - math.exp(-t_last / 0.5))) < 0.02, (kind, moved)
        assert 0.55 < moved < 0.66, (kind, moved)
