"""Online onset / apex / offset spotting on the motion signal (REALTIME.md, "spotter").

Offline peers threshold a whole video at mean + p (max - mean). A camera gives no whole
video, and a one-shot calibration is blinded for good by a person who is already moving in
its first second (measured on real clips: a 12-25 px threshold over a 0.3-0.5 px calm face).
So the threshold follows the face's own CALM level, re-estimated all the time:

    noise model  per expression region r (brows, nose, mouth) and for the eyes, the head and
                 the light:
                 calm_r = the ``calm_quantile`` (0.2) of its motion over the last
                 ``window_s`` seconds, every frame included, refreshed every
                 ``update_every_ms``. A person who moves most of the time still has calm
                 moments, and a low quantile finds them: an expressive start raises the
                 level for a few seconds at most. A recording warms it up from a
                 look-ahead (``warm_start``: Pipeline.prime), a camera from its first
                 ``calibration_s`` (a warm start, not a neutral-face gate).
    score        s = max_r motion_r / calm_r: how many times its calm level the most active
                 expression region moves. A real AU12 moves only the mouth corners (0.25 px,
                 six times that clip's calm mouth): per-region levels keep a small mouth
                 motion from being judged against noisy brows. No absolute floor tuned on
                 amplitudes: only ``floor_px`` (the flow's resolution) keeps calm above 0.

The motion signal (realtime/stages/motion.py) is the face's displacement from a reference frozen
while an event is open, so one event is one bump: it leaves calm at the onset, peaks at the
apex and settles at the offset. Per event, in score units:

    open     s > ``open_ratio``. Onset = the first frame after the last one at or below
             ``onset_ratio`` (looked up in a short history, never before the last event).
    apex     confirmed once the (causally smoothed) score has fallen to
             1 + apex_drop * (peak - 1), or ``apex_wait_ms`` after the peak: an "apex"
             update is emitted (the recogniser can run on onset + apex). The apex frame is
             the vertex of a two-sided parabola fitted to the top of the bump.
    offset   the score is back at ``onset_ratio``, or the face has SETTLED: after falling
             under 1 + offset_level * (peak - 1) the score has made no new low for
             ``settle_ms``; the offset is the first frame that came within ``settle_tol``
             of the rise above that low. Real faces rarely return exactly to the onset's
             position (drift): the dataset-annotated offset is where the motion stops.
             If the score rises again from its low (to ``rerise`` times it, and over
             ``open_ratio``) before the face settled, the event ends at the low and a new
             one opens: a micro-expression right after a long movement is not swallowed.
    kind     core.events.expression_kind (``rule``): "megc" micro when onset -> offset
             <= 500 ms (one frame of tolerance), "casme" also a short onset phase (<= 250
             ms) under 1 s. A "final" update is emitted at the offset; events longer than
             ``max_event_s`` are closed there (macro).
    rejected never reported, counted in ``rejected``:
             "spike"  shorter than ``min_duration_ms``;
             "blink"  the eyes' score rose more than ``blink_ratio`` times the expression
                      regions' (blinks, winks and gaze shifts last about as long as an ME
                      but move the eyes);
             "head"   the head's own motion score rose more than ``head_ratio`` times the
                      expression's (nods and turns leave non-rigid residue);
             "light"  the light on the face (motion.lighting_change) changed more than
                      ``light_ratio`` times as much, in multiples of its calm level (a
                      moving brightness edge reads as optical flow);
             "busy"   a micro-length event in a part of the face that was already moving
                      (FACE_PARTS: upper = brows, lower = nose + mouth): in the part that
                      moved most, the median score over the ``context_ms`` before its onset
                      was above ``still_context`` (judged once the noise model holds
                      ``settled_s`` of signal, or a recording's look-ahead: a calm level from
                      half a second of camera is too rough to call a face moving), or another
                      event led by the same part ended less than ``isolation_ms`` before
                      its onset, or the same part moves again (over ``open_ratio``) in an
                      event starting less than that after its offset; or any event ends or
                      starts less than ``coincide_ms`` from it. Speech is a train of such lower-face
                      bursts, often opened by a brow raise; a micro-expression rises from a
                      still part and leaves it still (a brow ME in a pause of speech is
                      kept). Long events in a busy face stay (macro).
             A micro-expression's "final" therefore comes ``isolation_ms`` after its
             offset (its "apex" update, with the label, does not wait).
             The apex update of a busy event is held back until its kind is known.

After an event, ``refractory_ms`` pass before the next may open. ``holding`` is True while
an event is open: feed it to MotionSignal.update(hold=...) and to the aligner's freeze
(LiveSpotter does the first for you).

The pipeline keeps recent aligned crops for recognition: the last ``history_frames``
frames cover any onset found at the moment an event opens; while ``open_event`` is not
None, keep its ``onset_frame`` crop and the crop of its current ``peak_frame``. Updates
carry ``onset_frame`` / ``apex_frame`` / ``offset_frame`` and ``decided_frame`` (the frame
whose arrival produced the update: algorithmic wait = decided_frame - apex_frame).
"""
from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np

from core.events import CASME_RISE_MAX_MS, MACRO_MIN_MS, ME_RULES, MICRO_MAX_MS, expression_kind
from realtime.stages.motion import SPOT_REGIONS, MotionConfig, MotionSample, MotionSignal
from realtime.stages.noisemodel import _TIME_TOL, NoiseModel, calm_levels, frames_for  # noqa: F401 (re-exported)

REJECT_REASONS = ("spike", "blink", "head", "light", "busy")
FACE_PARTS = {"upper": ("brows",), "lower": ("nose", "mouth")}
"""Parts of the face for the "busy" test: speech moves the whole lower face (the jaw drop
reaches the nasal wings), so a mouth burst and a nose burst of the same sentence count as
one part moving again; a brow micro-expression in a pause of speech does not."""
log = logging.getLogger("realtime.stages.spotter")


@dataclass
class SpotterConfig:
    calibration_s: float = 0.5        # camera: signal needed before the first event (warm start)
    window_s: float = 6.0             # the noise model's memory
    calm_quantile: float = 0.2        # calm level = this quantile of the window
    update_every_ms: float = 100.0    # how often the calm levels are re-estimated
    floor_px: float = 0.01            # calm levels never below this (px of the 224 crop: flow resolution)
    open_ratio: float = 4.0           # an event opens when a region moves this many times its calm level
    onset_ratio: float = 2.0          # onset / offset level, in the same units
    apex_drop: float = 0.85           # apex confirmed when the score is down to this share of the rise
                                      # (chosen on training identities: scripts/tune_apex.py)
    apex_wait_ms: float = 70.0        # ... or this long after the peak (a held apex; also tuned there)
    apex_top: float = 0.8             # the apex parabola is fitted where the bump is above this share
    smooth_ms: float = 15.0           # causal smoothing of the score for the falling tests
    offset_level: float = 0.5         # share of the rise under which the face may settle (offset)
    settle_ms: float = 150.0          # no clear new low for this long: the face has settled
    rerise: float = 2.0               # after its fall, a rise to this many times the low starts a new event
    settle_tol: float = 0.05          # offset = first frame within this share of the rise above the low
    rule: str = "megc"                # micro/macro rule (core.events.expression_kind)
    min_duration_ms: float = 60.0     # shorter excursions are noise, not expressions
    max_event_s: float = 4.0          # longer events are closed (as macro)
    refractory_ms: float = 100.0      # quiet time after an event before the next may open
    blink_ratio: float = 1.5          # eyes' score rise > blink_ratio * expression rise -> blink
    head_ratio: float = 1.5           # head motion score rise > head_ratio * expression rise -> head
    light_ratio: float = 1.5          # lighting change score rise > light_ratio * expression rise -> light
    context_ms: float = 600.0         # look-back before an onset for the "busy" test
    still_context: float = 1.5        # a micro-expression's part of the face was still before it: the
                                      # look-back's median score at most this ...
    settled_s: float = 2.0            # ... judged once the noise model holds this much signal (or a look-ahead)
    isolation_ms: float = 400.0       # ... and no other event of the same part may end or start this close to it
    coincide_ms: float = 250.0        # ... nor one of another part this close (one gesture of the whole face)
    history_ms: float = 400.0         # look-back for the onset (> longest ME onset, 250 ms)
    predict_apex: bool = True         # announce a PREDICTED apex as soon as the rise slows:
    predict_slope: float = 0.3        # ... the smoothed score's slope under this share of its steepest
                                      # since the onset; the confirmed apex refines it


@dataclass
class SpotUpdate:
    """One step of one event. ``stage`` "apex": the apex is confirmed (offset unknown,
    ``kind`` None unless already certain); "final": the offset is known and ``kind`` is
    certain; "rejected": an event announced at its apex turned out not to be an expression
    (see the module docstring; drop it). ``kind_frame``: the frame at which micro/macro became certain (the offset's
    decision, or when the event outlasted the micro limit). ``peak_motion`` is in px of the
    224 crop (the spotting value at the apex), ``peak_score`` in multiples of calm."""

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
    peak_score: float = 0.0
    calm: dict[str, float] = field(default_factory=dict)       # calm levels (px) when decided
    predicted: bool = False           # an "apex" update at a predicted apex (the rise slowed); a
                                      # later "apex" update with another apex_frame refines it

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


def settled_offset(values, fall_start: int, low: int, tol: float) -> int:
    """Index of the offset of a bump whose tail stalls above the onset level: the first
    sample from ``fall_start`` on that is within ``tol`` of the lowest one (index ``low``)."""
    v = np.asarray(values, dtype=np.float64)
    near = np.flatnonzero(v[fall_start:low + 1] <= v[low] + tol)
    return fall_start + int(near[0]) if near.size else low


# ----------------------------------------------------------------------------- state

@dataclass
class _Event:
    event_id: int
    frames: list[int]
    times: list[float]
    values: list[float]                # score (multiples of calm)
    px: list[float]                    # spotting value, px
    eyes: list[float]                  # eyes' score
    head: list[float]                  # head motion's score
    regions: list[dict]
    light: list[float]                 # lighting change's score
    onset: int                         # index into the lists
    peak: int                          # index of the running maximum
    rvalues: list = field(default_factory=list)        # per frame: each part's score (FACE_PARTS)
    context: np.ndarray | None = None  # per part: median score in the look-back before the onset (>= 1)
    last_end: np.ndarray | None = None  # per part: when the last event it led ended, as of the onset
    settled: bool = True               # the noise model had enough signal to tell still from moving
    apex: int | None = None            # index once confirmed
    held: bool = False                 # apex confirmed but not announced (suspect, see _suspect)
    fall_start: int | None = None      # index where the score fell under the offset level
    low: int | None = None             # index of the lowest score since fall_start
    low_t: float | None = None         # time of the last clear new low (of the smoothed score)
    low_level: float = 0.0             # the smoothed score then
    kind_frame: int | None = None
    slope: float = 0.0                 # steepest rise of the smoothed score so far (per second)
    last_xs: tuple[float, float] | None = None    # (t, smoothed score) of the previous frame
    predicted: int | None = None       # index announced as the predicted apex


class OnlineSpotter:
    """Onset / apex / offset of expressions, frame by frame, at the source's true rate.

        spotter = OnlineSpotter(fps=200)
        spotter.warm_start(samples)          # optional: a recording's look-ahead
        for i, frame in enumerate(frames):
            sample = motion.update(crop, hold=spotter.holding)
            for u in spotter.update(i, i / 200, sample):
                ...   # u.stage "apex" (run the recogniser) or "final" (kind, offset)

    ``update`` takes a MotionSample (per-region motion) or a plain float (one channel,
    no eyes or head: tests and other signals).
    """

    def __init__(self, fps: float, config: SpotterConfig | None = None, **overrides) -> None:
        if not fps or fps <= 0:
            raise ValueError(f"fps must be positive, got {fps!r}; pass the source's true frame rate")
        self.fps = float(fps)
        self.config = replace(config or SpotterConfig(), **overrides)
        c = self.config
        if not 0 < c.offset_level < c.apex_drop < 1:
            raise ValueError(f"need 0 < offset_level ({c.offset_level}) < apex_drop ({c.apex_drop}) < 1")
        if not 1.0 <= c.onset_ratio < c.open_ratio:
            raise ValueError(f"need 1 <= onset_ratio ({c.onset_ratio}) < open_ratio ({c.open_ratio})")
        if c.rule not in ME_RULES:
            raise ValueError(f"rule must be one of {ME_RULES}, got {c.rule!r}")
        self.regions = tuple(SPOT_REGIONS)
        # Windows in SOURCE TIME: each is the span of the frame count it was at the
        # nominal rate ((n - 1) / fps), so at that rate they hold exactly those frames, and a
        # camera that drops frames or a stream whose rate varies does not stretch them.
        self.history_frames = frames_for(c.history_ms, self.fps, 2)
        self._history_s = (self.history_frames - 1) / self.fps
        self._context_s = frames_for(c.context_ms, self.fps, 1) / self.fps
        self._settled_s = (frames_for(c.settled_s * 1000.0, self.fps, 1) - 1) / self.fps
        self._smooth_s = (frames_for(c.smooth_ms, self.fps) - 1) / self.fps
        self._calib_s = (frames_for(c.calibration_s * 1000.0, self.fps, 3) - 1) / self.fps
        self._next_id = 0
        self.rejected = {r: 0 for r in REJECT_REASONS}
        self.noise = NoiseModel(self.fps, self.regions + ("eyes", "head", "light"), c.window_s, c.calm_quantile,
                                c.update_every_ms, c.floor_px)
        self.reset()

    # -- public state --

    @property
    def calibrated(self) -> bool:
        return self.noise.calm is not None

    @property
    def calibrating(self) -> bool:
        """True until the noise model has its first calm levels (no events can open yet)."""
        return self.noise.calm is None

    @property
    def holding(self) -> bool:
        """True while an event is open (freeze the motion reference and the alignment)."""
        return self._event is not None

    @property
    def threshold(self) -> float | None:
        """The score at which an event opens (None while calibrating)."""
        return None if self.noise.calm is None else self.config.open_ratio

    @property
    def calm(self) -> dict[str, float]:
        """Current calm level of each channel, px of the 224 crop ({} while calibrating)."""
        if self.noise.calm is None:
            return {}
        return {n: float(v) for n, v in zip(self.noise.channels, self.noise.calm)}

    @property
    def open_event(self) -> OpenEvent | None:
        e = self._event
        if e is None:
            return None
        return OpenEvent(e.event_id, e.frames[e.onset], e.frames[e.peak], e.apex is not None)

    def reset(self) -> None:
        """Forget everything, the noise model included."""
        self.noise.clear()
        # (frame, t, row, px, regions) of the last history + context (pruned by time; capped)
        self._past: deque[tuple] = deque(maxlen=8 * (self.history_frames + int(round(self._context_s * self.fps))))
        self._recent: deque[tuple[float, float]] = deque(maxlen=8 * (int(round(self._smooth_s * self.fps)) + 1))
        self._event: _Event | None = None
        self._quiet_until = -math.inf
        # per part of the face: offset time of the last event it led (spikes aside)
        self._last_end_t = np.full(len(FACE_PARTS), -math.inf)
        # a micro final awaiting its isolation check: (update, deadline, its part, its offset time)
        self._pending: tuple[SpotUpdate, float, int, float] | None = None
        self._last_close = -math.inf           # frame index of the last event's end
        self.last_score: float | None = None   # the score of the last frame (None while calibrating)

    def recalibrate(self) -> None:
        """Learn the noise model again from the next frames; an open event is dropped."""
        self.reset()

    def warm_start(self, samples) -> None:
        """Start the noise model from a look-ahead (MotionSamples or floats of the first
        seconds of a recording), so the recording is analysed from its first frame."""
        rows = [self._row(s)[0] for s in samples if not (isinstance(s, MotionSample) and not s.ready)]
        self.noise.warm_start(rows)

    def interrupt(self) -> None:
        """The face was lost: drop the open event (no update) but keep the noise model."""
        self._event = None
        self._past.clear()
        self._recent.clear()

    def score(self, sample: MotionSample | float) -> float | None:
        """The score a sample would get now (None while calibrating)."""
        if self.noise.calm is None:
            return None
        return self._scores(self._row(sample)[0])[0]

    def finish(self) -> list[SpotUpdate]:
        """End of stream: close the open event at the last frame seen, if it has lasted
        long enough and its apex was confirmed. An event whose motion had not yet fallen
        from its peak is cut off by the end: neither its apex nor its duration (micro or
        macro) is known, so it is dropped (it was never announced)."""
        e = self._event
        out = self._flush(None)
        if e is None:
            return out
        frame_index, t = e.frames[-1], e.times[-1]
        if e.apex is None or (t - e.times[e.onset]) * 1000.0 < self.config.min_duration_ms:
            if e.predicted is not None:        # announced at its predicted apex: withdraw it
                out.append(self._update("rejected", e, frame_index, t, None, apex=e.predicted))
            return out + self._close(frame_index, t)
        return out + self._final(frame_index, t, len(e.values) - 1) + self._flush(None)

    # -- per frame --

    def _row(self, sample: MotionSample | float) -> tuple[np.ndarray, float, dict]:
        if isinstance(sample, MotionSample):
            r = sample.regions
            row = [float(r.get(n, 0.0)) for n in self.regions] + [float(r.get("eyes", 0.0)),
                                                                   float(r.get("nose_ref", 0.0)),
                                                                   float(r.get("light", 0.0))]
            px, regions = float(sample.value), r
        else:
            px, regions = float(sample), {}
            row = [px] * len(self.regions) + [0.0, 0.0, 0.0]
        if not all(math.isfinite(v) for v in row + [px]):
            raise ValueError(f"motion value is {sample!r}; the motion signal must be finite")
        return np.asarray(row, dtype=np.float64), px, regions

    def _region_scores(self, row: np.ndarray) -> np.ndarray:
        """The score of each part of the face (FACE_PARTS): its most active region's motion in
        multiples of that region's calm level."""
        r = row[:len(self.regions)] / self.noise.calm[:len(self.regions)]
        return np.asarray([max((r[i] for i, n in enumerate(self.regions) if n in part), default=0.0)
                           for part in FACE_PARTS.values()])

    def _scores(self, row: np.ndarray) -> tuple[float, float, float, float]:
        """(expression score, eyes' score, head's score, light's score) of one row against calm."""
        r = row / self.noise.calm
        k = len(self.regions)
        return float(r[:k].max()), float(r[k]), float(r[k + 1]), float(r[k + 2])

    def update(self, frame_index: int, t: float, sample: MotionSample | float) -> list[SpotUpdate]:
        """Feed one frame's motion; returns the updates this frame produced (usually none)."""
        if isinstance(sample, MotionSample) and not sample.ready:
            return []
        try:
            row, px, regions = self._row(sample)
        except ValueError as e:
            raise ValueError(f"frame {frame_index}: {e}") from None
        self.noise.add(row, t)
        self.last_score = None
        if self.noise.calm is None:
            if len(self.noise) >= 3 and self.noise.span_s >= self._calib_s - _TIME_TOL:
                self.noise.refresh()
            else:
                self._remember(frame_index, t, row, px, regions)
                return []
        x, eyes, head, light = self._scores(row)
        self.last_score = x
        self._recent.append((t, x))
        while self._recent[0][0] < t - self._smooth_s - _TIME_TOL:
            self._recent.popleft()
        xs = float(np.mean([v for _, v in self._recent]))
        self._remember(frame_index, t, row, px, regions)
        if self._event is not None:
            self._event.rvalues.append(self._region_scores(row))
            self._event.light.append(light)
            out = self._check_pending() + self._flush(t)
            return out + self._step_event(frame_index, t, x, xs, px, eyes, head, regions)
        out = self._flush(t)
        if t >= self._quiet_until and x > self.config.open_ratio:
            out += self._open()
        return out

    def _remember(self, frame_index: int, t: float, row, px: float, regions: dict) -> None:
        self._past.append((frame_index, t, row, px, regions))
        while self._past[0][1] < t - self._history_s - self._context_s - _TIME_TOL:
            self._past.popleft()

    # -- steps --

    def _open(self) -> list[SpotUpdate]:
        """A new event; a micro-expression still waiting for its isolation check loses it."""
        c = self.config
        out = []
        past = list(self._past)                  # the context reaches back over earlier events ...
        scores = [self._scores(p[2]) for p in past]
        regional = np.asarray([self._region_scores(p[2]) for p in past])     # (frames, parts)
        after = sum(1 for p in past if p[0] <= self._last_close)
        now = past[-1][1]
        recent = sum(1 for p in past if p[1] < now - self._history_s - _TIME_TOL)
        first = min(max(after, recent), len(scores) - 1)         # ... the onset never does
        onset = first + min(find_onset([s[0] for s in scores[first:]], c.onset_ratio), len(scores) - 1 - first)
        if self._pending is not None and (past[onset][1] - self._pending[3]) * 1000.0 < c.coincide_ms:
            out += self._withdraw_pending()
        onset_t = past[onset][1]
        start = sum(1 for p in past[:onset] if p[1] < onset_t - self._context_s - _TIME_TOL)
        context = regional[start:onset]
        seg, sc = past[onset:], scores[onset:]
        e = _Event(self._next_id, [p[0] for p in seg], [p[1] for p in seg], [s[0] for s in sc],
                   [p[3] for p in seg], [s[1] for s in sc], [s[2] for s in sc], [p[4] for p in seg],
                   [s[3] for s in sc], onset=0, peak=0, rvalues=list(regional[onset:]),
                   context=np.maximum(1.0, np.median(context, axis=0)) if len(context) else
                   np.ones(len(FACE_PARTS)), last_end=self._last_end_t.copy(),
                   settled=self.noise.warmed or self.noise.span_s >= self._settled_s - _TIME_TOL)
        e.peak = int(np.argmax(e.values))
        self._next_id += 1
        self._event = e
        return out + self._check_pending()

    def _check_pending(self) -> list[SpotUpdate]:
        """The waiting micro-expression's part of the face moves again (over ``open_ratio``)
        in the event now open, which began within ``isolation_ms`` of its offset: withdrawn."""
        e, c = self._event, self.config
        if self._pending is None or e is None or (e.times[e.onset] - self._pending[3]) * 1000.0 >= c.isolation_ms:
            return []
        if max(v[self._pending[2]] for v in e.rvalues[e.onset:]) > c.open_ratio:
            return self._withdraw_pending()
        return []

    def _withdraw_pending(self) -> list[SpotUpdate]:
        final = self._pending[0]
        self._pending = None
        self.rejected["busy"] += 1
        log.debug("event %d rejected: busy (the face moves again at once)", final.event_id)
        return [replace(final, stage="rejected")]

    def _suspect(self, e: _Event, upto: int | None = None) -> str | None:
        """Why this event may not be an expression (judged only if it is micro-length)."""
        c = self.config
        end = len(e.values) if upto is None else upto + 1
        rise = max(e.values[e.onset:end]) - 1.0
        if max(e.eyes[e.onset:end]) - 1.0 > c.blink_ratio * max(rise, 1e-9):
            return "blink"
        if max(e.head[e.onset:end]) - 1.0 > c.head_ratio * max(rise, 1e-9):
            return "head"
        if max(e.light[e.onset:end]) - 1.0 > c.light_ratio * max(rise, 1e-9):
            return "light"
        r = self._region_of(e, end)
        since = (e.times[e.onset] - e.last_end) * 1000.0               # per part
        moving = e.settled and e.context[r] > c.still_context
        if moving or since[r] < c.isolation_ms or since.min() < c.coincide_ms:
            return "busy"
        return None

    def _region_of(self, e: _Event, end: int | None = None) -> int:
        """Index (into FACE_PARTS) of the part of the face that moved most in the event."""
        return int(np.argmax(np.max(e.rvalues[e.onset:end], axis=0)))

    def _kind_certain(self, e: _Event, t: float) -> bool:
        """Macro already certain before the offset: the event has outlasted every ME the rule allows."""
        lasted_ms = (t - e.times[e.onset]) * 1000.0
        if lasted_ms <= MICRO_MAX_MS + 1000.0 / self.fps:
            return False
        if self.config.rule == "megc" or lasted_ms >= MACRO_MIN_MS:
            return True
        return e.apex is not None and (e.times[e.apex] - e.times[e.onset]) * 1000.0 > CASME_RISE_MAX_MS

    def _step_event(self, frame_index: int, t: float, x: float, xs: float, px: float, eyes: float,
                    head: float, regions: dict) -> list[SpotUpdate]:
        c, e = self.config, self._event
        e.frames.append(frame_index), e.times.append(t), e.values.append(x), e.px.append(px)
        e.eyes.append(eyes), e.head.append(head), e.regions.append(regions)
        n = len(e.values) - 1
        onset_t = e.times[e.onset]
        if e.kind_frame is None and self._kind_certain(e, t):
            e.kind_frame = frame_index                      # too long for an ME: macro
        out: list[SpotUpdate] = []

        if e.apex is None:
            if x > e.values[e.peak]:
                e.peak = n
            out += self._predict(e, frame_index, t, xs)
            rise = e.values[e.peak] - 1.0
            fallen = xs <= 1.0 + c.apex_drop * rise
            waited = (t - e.times[e.peak]) * 1000.0 >= c.apex_wait_ms
            long_enough = (t - onset_t) * 1000.0 >= c.min_duration_ms
            if (fallen or waited) and long_enough:
                e.apex = e.onset + int(round(estimate_apex(e.values[e.onset:], 1.0, c.apex_top)))
                e.held = e.predicted is None and self._suspect(e) is not None and e.kind_frame is None
                if not e.held and (e.predicted is None or e.frames[e.predicted] != e.frames[e.apex]):
                    out.append(self._update("apex", e, frame_index, t, None))
            elif xs <= c.onset_ratio and not long_enough:     # back down already: a spike
                self.rejected["spike"] += 1
                return self._close(frame_index, t)

        if e.apex is not None:
            rise = e.values[e.peak] - 1.0
            if e.fall_start is None and xs <= 1.0 + c.offset_level * rise:
                e.fall_start, e.low, e.low_t, e.low_level = n, n, t, xs
            elif e.fall_start is not None:
                if x < e.values[e.low]:
                    e.low = n
                if xs < e.low_level - c.settle_tol * rise:   # still falling clearly: not settled yet
                    e.low_t, e.low_level = t, xs
            if x <= c.onset_ratio and n > e.apex:
                return out + self._final(frame_index, t, n)
            if e.fall_start is not None and n > e.low and x >= max(c.open_ratio, c.rerise * e.values[e.low]):
                # the face moves again before it settled: this event ends at its low, the next opens
                low = e.frames[e.low]
                out += self._final(frame_index, t, e.low)
                self._last_close, self._quiet_until = low, -math.inf
                return out + self._open()
            if e.fall_start is not None and (t - e.low_t) * 1000.0 >= c.settle_ms:
                off = settled_offset(e.values, e.fall_start, e.low, c.settle_tol * rise)
                return out + self._final(frame_index, t, max(off, e.apex))

        if (t - onset_t) >= c.max_event_s:
            if e.apex is None:
                e.apex = e.onset + int(round(estimate_apex(e.values[e.onset:], 1.0, c.apex_top)))
            return out + self._final(frame_index, t, n)
        return out

    def _predict(self, e: _Event, frame_index: int, t: float, xs: float) -> list[SpotUpdate]:
        """The apex predicted while the score still rises: once the smoothed score's slope
        has fallen under ``predict_slope`` of its steepest since the onset (the rise is
        levelling off), the running peak is announced as the apex (``predicted``), so the
        recogniser starts ~the confirmation wait earlier; the confirmed apex refines it."""
        c = self.config
        prev, e.last_xs = e.last_xs, (t, xs)
        if not c.predict_apex or e.predicted is not None or prev is None or t <= prev[0]:
            return []
        slope = (xs - prev[1]) / (t - prev[0])
        e.slope = max(e.slope, slope)
        if (e.slope <= 0 or slope >= c.predict_slope * e.slope or xs <= c.open_ratio
                or (t - e.times[e.onset]) * 1000.0 < c.min_duration_ms):
            return []
        if self._suspect(e) is not None and e.kind_frame is None:    # judged at the confirmation
            return []
        e.predicted = e.peak
        return [self._update("apex", e, frame_index, t, None, apex=e.peak, predicted=True)]

    def _final(self, frame_index: int, t: float, offset: int) -> list[SpotUpdate]:
        """Close the open event at ``offset``: reject it, or emit (held apex +) final."""
        e = self._event
        kind = expression_kind(e.times[e.onset], e.times[e.apex], e.times[offset], self.config.rule, self.fps)
        end = offset + 1
        r = self._region_of(e, end)
        log.debug("event %d frames %d-%d-%d: %s, %s, peak score %.2f (context %.2f), eyes %.2f, head %.2f",
                  e.event_id, e.frames[e.onset], e.frames[e.apex], e.frames[offset], kind, list(FACE_PARTS)[r],
                  max(v[r] for v in e.rvalues[e.onset:end]), e.context[r], max(e.eyes[e.onset:end]),
                  max(e.head[e.onset:end]))
        if kind == "micro":
            why = self._suspect(e, offset)
            if why is not None:
                log.debug("event %d rejected: %s", e.event_id, why)
                self.rejected[why] += 1
                self._close(frame_index, t, (r, e.times[offset]))
                # announced at its apex, judged on its whole course: withdraw it
                return [] if e.held else [self._update("rejected", e, frame_index, t, offset)]
        out = []
        if e.held:
            out.append(self._update("apex", e, frame_index, t, None))
        self._close(frame_index, t, (r, e.times[offset]))
        final = self._update("final", e, frame_index, t, offset, kind)
        if kind == "micro":      # isolated? wait and see whether the same region moves again at once
            out += self._flush(None)          # an earlier one, led by another region, stands
            self._pending = (final, e.times[offset] + self.config.isolation_ms / 1000.0, r, e.times[offset])
            return out
        return out + [final]

    def _flush(self, t: float | None) -> list[SpotUpdate]:
        """The micro-expression waiting for its isolation check: final once ``isolation_ms``
        passed without another event (``t`` None: end of stream)."""
        if self._pending is None or (t is not None and t < self._pending[1]):
            return []
        final = self._pending[0]
        self._pending = None
        return [final]

    def _close(self, frame_index: int, t: float, ended: tuple[int, float] | None = None) -> list[SpotUpdate]:
        if ended is not None:                    # (region that led the event, its offset time)
            self._last_end_t[ended[0]] = ended[1]
        self._event = None
        self._last_close = frame_index
        self._quiet_until = t + self.config.refractory_ms / 1000.0
        return []

    def _update(self, stage: str, e: _Event, frame_index: int, t: float, offset: int | None,
                kind: str | None = None, apex: int | None = None, predicted: bool = False) -> SpotUpdate:
        apex = e.apex if apex is None else apex
        onset_t, apex_t = e.times[e.onset], e.times[apex]
        offset_frame, offset_t = None, None
        if offset is not None:
            offset_frame, offset_t = e.frames[offset], e.times[offset]
            if e.kind_frame is None:
                e.kind_frame = frame_index
        elif e.kind_frame is not None:
            kind = "macro"
        return SpotUpdate(
            stage=stage, event_id=e.event_id, onset_frame=e.frames[e.onset], apex_frame=e.frames[apex],
            offset_frame=offset_frame, kind=kind, peak_motion=float(e.px[apex]),
            onset_t=onset_t, apex_t=apex_t, offset_t=offset_t, decided_frame=frame_index, decided_t=t,
            kind_frame=e.kind_frame, regions=dict(e.regions[apex]), peak_score=float(e.values[apex]),
            calm=self.calm, predicted=predicted,
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
        sample = self.motion.update(aligned_crop, hold=self.spotter.holding, t=t)
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
