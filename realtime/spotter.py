"""Online onset / apex / offset spotting on the motion signal (REALTIME.md, "spotter").

Offline peers threshold a whole video at mean + p (max - mean); live there is no whole
video, so the threshold comes from a short neutral calibration and adapts slowly:

    calibration (first ``calibration_s``, neutral face): baseline = median, sigma = 1.4826 MAD
    threshold  = baseline + max(k_sigma * sigma, min_rise)
    adaptation: outside events, the last ``adapt_window_s`` of values (clipped at the
                threshold, so events cannot drag it up) re-estimate baseline and sigma.

The signal (realtime/motion.py) is the face's displacement from a reference frozen while
an event is open, so one event is one bump: it leaves the baseline at the onset, peaks at
the apex and returns at the offset. Per event:

    open     value > threshold. Onset = the first frame after the last one at or below
             baseline + onset_sigma * sigma (looked up in a short history).
    apex     confirmed once the (causally smoothed) value has fallen to
             baseline + apex_drop * (peak - baseline), or ``apex_wait_ms`` after the peak:
             an "apex" update is emitted then (the recogniser can run on onset + apex).
             The apex frame is the vertex of a parabola fitted to the top of the bump.
    offset   the value is back at baseline + onset_sigma * sigma (symmetric with the
             onset), or, if it stalls above that, the lowest frame within ``settle_ms``
             of falling under baseline + offset_level * (peak - baseline).
    kind     "micro" when offset - onset <= 500 ms and onset -> apex <= 260 ms (Yan et al.
             2013), in MILLISECONDS, so the limits are the same at 30 and 200 fps; else
             "macro". A "final" update is emitted at the offset; events longer than
             ``max_event_s`` are closed there as macro.
    rejected too short (< ``min_duration_ms``: a noise spike), or a blink: the eye
             region rose more than ``blink_ratio`` times the expression regions (blinks
             last about as long as an ME but move only the eyelids).

After an event, ``refractory_ms`` pass before the next may open. ``holding`` is True
while an event is open: feed it to MotionSignal.update(hold=...) and to the aligner's
freeze (LiveSpotter does the first for you).

The pipeline keeps recent aligned crops for recognition: the last ``history_frames``
frames cover any onset found at the moment an event opens; while ``open_event`` is not
None, keep its ``onset_frame`` crop and the crop of its current ``peak_frame``. Updates
carry ``onset_frame`` / ``apex_frame`` / ``offset_frame`` and ``decided_frame`` (the frame
whose arrival produced the update: algorithmic wait = decided_frame - apex_frame).
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np

from realtime.motion import MotionConfig, MotionSample, MotionSignal

MICRO_MAX_MS = 500.0          # an ME lasts at most 500 ms in total ...
MICRO_RISE_MAX_MS = 260.0     # ... and at most 260 ms from onset to apex (Yan et al. 2013)
MAD_TO_SIGMA = 1.4826         # MAD of a normal distribution -> its standard deviation


@dataclass
class SpotterConfig:
    calibration_s: float = 1.0        # neutral period at the start (and after recalibrate())
    k_sigma: float = 8.0              # threshold = baseline + max(k_sigma * sigma, min_rise)
    min_rise: float = 0.25            # px of the 224 crop: the smallest rise that can open an event
    onset_sigma: float = 2.0          # onset / offset level: baseline + onset_sigma * sigma
    apex_drop: float = 0.85           # apex confirmed when the value is down to this share of the rise
                                      # (chosen on training identities: scripts/tune_apex.py)
    apex_wait_ms: float = 70.0        # ... or this long after the peak (a held apex; also tuned there)
    apex_top: float = 0.8             # the apex parabola is fitted where the bump is above this share
    smooth_ms: float = 15.0           # causal smoothing of the value for the falling tests
    offset_level: float = 0.25        # share of the rise under which the offset is looked for
    settle_ms: float = 120.0          # longest wait for the value to reach the onset level
    micro_max_ms: float = MICRO_MAX_MS
    micro_rise_max_ms: float = MICRO_RISE_MAX_MS
    min_duration_ms: float = 60.0     # shorter excursions are noise, not expressions
    max_event_s: float = 4.0          # longer events are closed (as macro)
    refractory_ms: float = 100.0      # quiet time after an event before the next may open
    blink_ratio: float = 1.5          # eyes rise > blink_ratio * expression rise -> blink
    adapt_window_s: float = 10.0      # baseline adaptation window (frames outside events)
    adapt_every_ms: float = 100.0     # how often the adapted baseline is recomputed
    history_ms: float = 400.0         # look-back for the onset (> longest ME onset, 260 ms)


@dataclass
class SpotUpdate:
    """One step of one event. ``stage`` "apex": the apex is confirmed (offset unknown,
    ``kind`` None unless already certain); "final": the offset is known and ``kind`` is
    certain. ``kind_frame``: the frame at which micro/macro became certain (the offset's
    decision, or 500 ms after the onset for a longer event)."""

    stage: str
    event_id: int
    onset_frame: int
    apex_frame: int
    offset_frame: int | None
    kind: str | None
    peak_motion: float
    onset_t: float
    apex_t: float
    offset_t: float | None
    decided_frame: int
    decided_t: float
    kind_frame: int | None = None
    regions: dict[str, float] = field(default_factory=dict)    # region motion at the apex frame
    baseline: float = 0.0
    threshold: float = 0.0

    @property
    def wait_frames(self) -> int:
        """Algorithmic wait: frames between the apex and the decision."""
        return self.decided_frame - self.apex_frame


@dataclass
class OpenEvent:
    """The event in progress: what the pipeline must keep crops for."""

    event_id: int
    onset_frame: int
    peak_frame: int
    apex_confirmed: bool


# ----------------------------------------------------------------------------- maths

def robust_baseline(values) -> tuple[float, float]:
    """(median, 1.4826 * MAD): a baseline and a noise scale that ignore rare spikes."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("robust_baseline needs at least one value")
    med = float(np.median(v))
    return med, MAD_TO_SIGMA * float(np.median(np.abs(v - med)))


def threshold_for(baseline: float, sigma: float, k_sigma: float, min_rise: float) -> float:
    return baseline + max(k_sigma * sigma, min_rise)


def find_onset(values, level: float) -> int:
    """Index (into ``values``, oldest first, ending at the crossing) of the onset: the first
    sample after the last one at or below ``level``; 0 if none is."""
    v = np.asarray(values, dtype=np.float64)
    below = np.flatnonzero(v <= level)
    return int(below[-1] + 1) if below.size else 0


def estimate_apex(values, baseline: float, top: float = 0.8, step: float = 0.1) -> float:
    """Sub-sample apex position (index into ``values``) of one bump.

    Takes the run of samples around the maximum that stay above baseline + top * (max -
    baseline) (on a 3-tap average, so one noisy sample does not cut it) and fits a cap
    made of two half-parabolas sharing their vertex, v = A - a_l (x - x0)^2 left of x0 and
    A - a_r (x - x0)^2 right of it, by least squares over x0 on a grid of ``step``
    samples. Two curvatures, because expressions often rise fast and relax slowly: one
    parabola would put the apex on the slow side. On a flat, noisy top the raw argmax
    wanders by several frames; the fit does not."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("estimate_apex needs at least one value")
    s = np.convolve(np.pad(v, 1, mode="edge"), np.ones(3) / 3, mode="valid") if v.size >= 3 else v
    i = int(np.argmax(s))
    level = baseline + top * (s[i] - baseline)
    lo, hi = i, i
    while lo > 0 and s[lo - 1] >= level:
        lo -= 1
    while hi < v.size - 1 and s[hi + 1] >= level:
        hi += 1
    if hi - lo < 2:
        return float(int(np.argmax(v[lo:hi + 1])) + lo)
    x = np.arange(lo, hi + 1, dtype=np.float64)
    y = v[lo:hi + 1]
    peak = float(int(np.argmax(y)) + lo)
    best, best_x0 = np.inf, peak
    for x0 in np.arange(lo, hi + step / 2, step):
        d2 = (x - x0) ** 2
        left = x < x0
        a = np.stack([np.ones_like(x), -d2 * left, -d2 * ~left], 1)   # (n, 3): A, a_l, a_r
        coef, *_ = np.linalg.lstsq(a, y, rcond=None)
        if coef[1] < 0 or coef[2] < 0:                                # not a cap at this x0
            continue
        err = float(((a @ coef - y) ** 2).sum())
        if err < best - 1e-12 or (err <= best + 1e-12 and abs(x0 - peak) < abs(best_x0 - peak)):
            best, best_x0 = err, float(x0)
    return best_x0


def classify_kind(onset_t: float, apex_t: float, offset_t: float,
                  micro_max_ms: float = MICRO_MAX_MS, micro_rise_max_ms: float = MICRO_RISE_MAX_MS) -> str:
    """"micro" if the event lasts <= micro_max_ms and rises in <= micro_rise_max_ms, else "macro"."""
    total_ms = (offset_t - onset_t) * 1000.0
    rise_ms = (apex_t - onset_t) * 1000.0
    return "micro" if total_ms <= micro_max_ms + 1e-6 and rise_ms <= micro_rise_max_ms + 1e-6 else "macro"


def frames_for(ms: float, fps: float, minimum: int = 1) -> int:
    return max(minimum, int(round(ms * fps / 1000.0)))


# ----------------------------------------------------------------------------- state

@dataclass
class _Event:
    event_id: int
    frames: list[int]
    times: list[float]
    values: list[float]
    eyes: list[float]
    regions: list[dict]
    onset: int                         # index into the lists
    peak: int                          # index of the running maximum
    apex: int | None = None            # index once confirmed
    fall_start: int | None = None      # index where the value fell under the offset level
    kind_frame: int | None = None


class OnlineSpotter:
    """Onset / apex / offset of expressions, frame by frame, at the source's true rate.

        spotter = OnlineSpotter(fps=200)
        for i, frame in enumerate(frames):
            sample = motion.update(crop, hold=spotter.holding)
            for u in spotter.update(i, i / 200, sample):
                ...   # u.stage "apex" (run the recogniser) or "final" (kind, offset)
    """

    def __init__(self, fps: float, config: SpotterConfig | None = None, **overrides) -> None:
        if not fps or fps <= 0:
            raise ValueError(f"fps must be positive, got {fps!r}; pass the source's true frame rate")
        self.fps = float(fps)
        self.config = replace(config or SpotterConfig(), **overrides)
        c = self.config
        if not 0 < c.offset_level < c.apex_drop < 1:
            raise ValueError(f"need 0 < offset_level ({c.offset_level}) < apex_drop ({c.apex_drop}) < 1")
        self.history_frames = frames_for(c.history_ms, self.fps, 2)
        self._smooth_n = frames_for(c.smooth_ms, self.fps)
        self._next_id = 0
        self.reset()

    # -- public state --

    @property
    def calibrated(self) -> bool:
        return self._baseline is not None

    @property
    def calibrating(self) -> bool:
        """True until the neutral calibration is done (no events can open yet)."""
        return self._baseline is None

    @property
    def holding(self) -> bool:
        """True while an event is open (freeze the motion reference and the alignment)."""
        return self._event is not None

    @property
    def baseline(self) -> float | None:
        return self._baseline

    @property
    def sigma(self) -> float | None:
        return self._sigma

    @property
    def threshold(self) -> float | None:
        if self._baseline is None:
            return None
        return threshold_for(self._baseline, self._sigma, self.config.k_sigma, self.config.min_rise)

    @property
    def open_event(self) -> OpenEvent | None:
        e = self._event
        if e is None:
            return None
        return OpenEvent(e.event_id, e.frames[e.onset], e.frames[e.peak], e.apex is not None)

    def reset(self) -> None:
        """Forget everything, calibration included."""
        self._calib: list[tuple[float, float]] = []
        self._calib_t0: float | None = None
        self._baseline: float | None = None
        self._sigma: float | None = None
        self._eyes_baseline = 0.0
        self._adapt: deque[tuple[float, float]] = deque(maxlen=max(1, int(self.config.adapt_window_s * self.fps)))
        self._since_adapt = 0
        self._history: deque[tuple[int, float, float, float, dict]] = deque(maxlen=self.history_frames)
        self._recent: deque[float] = deque(maxlen=self._smooth_n)
        self._event: _Event | None = None
        self._quiet_until = -math.inf

    def recalibrate(self) -> None:
        """Calibrate again on the next ``calibration_s`` (ask the person to stay neutral);
        an open event is dropped."""
        self.reset()

    def interrupt(self) -> None:
        """The face was lost: drop the open event (no update) but keep the calibration."""
        self._event = None
        self._history.clear()
        self._recent.clear()

    def finish(self) -> list[SpotUpdate]:
        """End of stream: close the open event at the last frame seen, if it has lasted
        long enough and its apex was confirmed. An event whose motion had not yet fallen
        from its peak is cut off by the end: neither its apex nor its duration (micro or
        macro) is known, so it is dropped (it was never announced)."""
        e = self._event
        if e is None:
            return []
        frame_index, t = e.frames[-1], e.times[-1]
        if (e.apex is None or (t - e.times[e.onset]) * 1000.0 < self.config.min_duration_ms
                or self._is_blink(e)):
            return self._close(frame_index, t, emit=False)
        return self._close(frame_index, t, emit=True, offset=len(e.values) - 1)

    # -- per frame --

    def update(self, frame_index: int, t: float, sample: MotionSample | float) -> list[SpotUpdate]:
        """Feed one frame's motion; returns the updates this frame produced (usually none)."""
        if isinstance(sample, MotionSample):
            if not sample.ready:
                return []
            x, eyes, regions = float(sample.value), float(sample.regions.get("eyes", 0.0)), sample.regions
        else:
            x, eyes, regions = float(sample), 0.0, {}
        if not math.isfinite(x):
            raise ValueError(f"frame {frame_index}: motion value is {x}; the motion signal must be finite")
        c = self.config
        self._recent.append(x)
        xs = float(np.mean(self._recent))

        if self._baseline is None:
            self._calibrate(t, x, eyes)
            self._history.append((frame_index, t, x, eyes, regions))
            return []

        if self._event is not None:
            return self._step_event(frame_index, t, x, xs, eyes, regions)

        self._history.append((frame_index, t, x, eyes, regions))
        thr = self.threshold
        if t < self._quiet_until:
            return []
        if x > thr:
            self._open(frame_index)
            return []
        self._adapt_baseline(min(x, thr), eyes)
        return []

    # -- steps --

    def _calibrate(self, t: float, x: float, eyes: float) -> None:
        if self._calib_t0 is None:
            self._calib_t0 = t
        self._calib.append((x, eyes))
        if t - self._calib_t0 >= self.config.calibration_s and len(self._calib) >= 3:
            xs = [v for v, _ in self._calib]
            self._baseline, self._sigma = robust_baseline(xs)
            self._eyes_baseline = float(np.median([e for _, e in self._calib]))
            self._adapt.extend(self._calib)
            self._calib = []

    def _adapt_baseline(self, x_clipped: float, eyes: float) -> None:
        self._adapt.append((x_clipped, eyes))
        self._since_adapt += 1
        if self._since_adapt >= frames_for(self.config.adapt_every_ms, self.fps):
            self._since_adapt = 0
            arr = np.asarray(self._adapt, dtype=np.float64)
            self._baseline, self._sigma = robust_baseline(arr[:, 0])
            self._eyes_baseline = float(np.median(arr[:, 1]))

    def _open(self, frame_index: int) -> None:
        h = list(self._history)
        level = self._baseline + self.config.onset_sigma * self._sigma
        onset = find_onset([r[2] for r in h], level)
        onset = min(onset, len(h) - 1)
        e = _Event(self._next_id, [r[0] for r in h], [r[1] for r in h], [r[2] for r in h],
                   [r[3] for r in h], [r[4] for r in h], onset=onset, peak=len(h) - 1)
        e.peak = onset + int(np.argmax(e.values[onset:]))
        self._next_id += 1
        self._event = e

    def _step_event(self, frame_index: int, t: float, x: float, xs: float, eyes: float,
                    regions: dict) -> list[SpotUpdate]:
        c, e = self.config, self._event
        e.frames.append(frame_index), e.times.append(t), e.values.append(x)
        e.eyes.append(eyes), e.regions.append(regions)
        n = len(e.values) - 1
        base, sig = self._baseline, self._sigma
        onset_t = e.times[e.onset]
        if e.kind_frame is None and (t - onset_t) * 1000.0 > c.micro_max_ms:
            e.kind_frame = frame_index                      # too long for an ME: macro
        out: list[SpotUpdate] = []

        if e.apex is None:
            if x > e.values[e.peak]:
                e.peak = n
            rise = e.values[e.peak] - base
            fallen = xs <= base + c.apex_drop * rise
            waited = (t - e.times[e.peak]) * 1000.0 >= c.apex_wait_ms
            long_enough = (t - onset_t) * 1000.0 >= c.min_duration_ms
            if (fallen or waited) and long_enough:
                if self._is_blink(e):
                    return self._close(frame_index, t, emit=False)
                seg = e.values[e.onset:]
                e.apex = e.onset + int(round(estimate_apex(seg, base, c.apex_top)))
                if e.kind_frame is None and (e.times[e.apex] - onset_t) * 1000.0 > c.micro_rise_max_ms:
                    e.kind_frame = frame_index
                out.append(self._update("apex", e, frame_index, t, None))
            elif (fallen or xs <= base + c.onset_sigma * sig) and not long_enough:
                if xs <= base + c.onset_sigma * sig:     # back down already: a spike
                    return self._close(frame_index, t, emit=False)

        if e.apex is not None:
            level = base + c.onset_sigma * sig
            if e.fall_start is None and xs <= base + c.offset_level * (e.values[e.peak] - base):
                e.fall_start = n
            if x <= level and n > e.apex:
                return out + self._close(frame_index, t, emit=True, offset=n)
            if e.fall_start is not None and (t - e.times[e.fall_start]) * 1000.0 >= c.settle_ms:
                lo = e.fall_start + int(np.argmin(e.values[e.fall_start:]))
                return out + self._close(frame_index, t, emit=True, offset=max(lo, e.apex))

        if (t - onset_t) >= c.max_event_s:
            if e.apex is None:
                e.apex = e.onset + int(round(estimate_apex(e.values[e.onset:], base, c.apex_top)))
                out.append(self._update("apex", e, frame_index, t, None))
            return out + self._close(frame_index, t, emit=True, offset=n)
        return out

    def _is_blink(self, e: _Event) -> bool:
        rise = max(e.values[e.onset:]) - self._baseline
        eyes_rise = max(e.eyes[e.onset:]) - self._eyes_baseline
        return eyes_rise > self.config.blink_ratio * max(rise, 1e-9)

    def _close(self, frame_index: int, t: float, emit: bool, offset: int | None = None) -> list[SpotUpdate]:
        e = self._event
        self._event = None
        self._history.clear()
        self._quiet_until = t + self.config.refractory_ms / 1000.0
        if not emit:
            return []
        return [self._update("final", e, frame_index, t, offset)]

    def _update(self, stage: str, e: _Event, frame_index: int, t: float, offset: int | None) -> SpotUpdate:
        c = self.config
        onset_t, apex_t = e.times[e.onset], e.times[e.apex]
        kind, offset_frame, offset_t = None, None, None
        if offset is not None:
            offset_frame, offset_t = e.frames[offset], e.times[offset]
            kind = classify_kind(onset_t, apex_t, offset_t, c.micro_max_ms, c.micro_rise_max_ms)
            if e.kind_frame is None:
                e.kind_frame = frame_index
        elif e.kind_frame is not None:
            kind = "macro"
        return SpotUpdate(
            stage=stage, event_id=e.event_id, onset_frame=e.frames[e.onset], apex_frame=e.frames[e.apex],
            offset_frame=offset_frame, kind=kind, peak_motion=float(e.values[e.apex]),
            onset_t=onset_t, apex_t=apex_t, offset_t=offset_t, decided_frame=frame_index, decided_t=t,
            kind_frame=e.kind_frame, regions=dict(e.regions[e.apex]), baseline=float(self._baseline),
            threshold=float(self.threshold),
        )


class LiveSpotter:
    """MotionSignal + OnlineSpotter wired together: the reference of the motion signal is
    frozen while the spotter has an event open. One per face track.

        live = LiveSpotter(fps=200)
        sample, updates = live.update(frame_index, t, aligned_crop_224)
        aligner_frozen = live.holding
    """

    def __init__(self, fps: float, motion: MotionConfig | None = None, spotter: SpotterConfig | None = None) -> None:
        self.motion = MotionSignal(fps, motion)
        self.spotter = OnlineSpotter(fps, spotter)

    @property
    def holding(self) -> bool:
        return self.spotter.holding

    def update(self, frame_index: int, t: float, aligned_crop) -> tuple[MotionSample, list[SpotUpdate]]:
        sample = self.motion.update(aligned_crop, hold=self.spotter.holding)
        return sample, self.spotter.update(frame_index, t, sample)

    def face_lost(self) -> None:
        """No face this frame: restart the motion reference, drop any open event."""
        self.motion.reset()
        self.spotter.interrupt()

    def recalibrate(self) -> None:
        self.motion.reset()
        self.spotter.recalibrate()

    def reset(self) -> None:
        self.motion.reset()
        self.spotter.reset()
