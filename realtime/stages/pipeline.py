"""The live path in one object: frame in, result out (REALTIME.md, "Flow").

    source -> face tracker -> aligner -> rolling buffer + motion signal -> spotter
           -> recogniser (background worker) -> sinks

One ``Pipeline`` per stream or browser session; every front end (the window and files of
run_live.py, the Gradio demo, realtime.bench) drives the same object (STYLE.md, "one
pipeline, many front ends"):

    from realtime.pipeline import Pipeline, PipelineConfig
    from realtime.sources import open_source

    with open_source(video="clip.avi", fps=200) as src:
        pipe = Pipeline(PipelineConfig(fps=src.fps, engine="auto"), source_name=src.name)
        for frame in src:
            r = pipe.process(frame)          # FrameResult
            r.overlay, r.new_events, r.timings_ms, r.value ...
        late = pipe.close(wait=True)         # events finalised at the end of the stream
        print(pipe.summary(src).format())

What happens to each frame (``process``):

1. track: ``realtime.tracker.FaceTracker`` gives the subject's box, 68 landmarks,
   ``face_id`` and ``n_faces`` (timings "detect", "landmarks").
2. align ("align"): the training alignment (``realtime.face.alignment_transform``, five
   landmarks onto the template) is smoothed over time (``tracker.SmoothedTransform``;
   landmark jitter is motion to the spotter) and frozen while the spotter holds an event
   open; the frame is warped to a 224x224 crop with it. A face-region copy of the frame
   and the frame's own (raw) transform go into a rolling buffer of ``buffer_s`` seconds.
3. motion ("motion"): ``realtime.motion.MotionSignal`` on the smoothed crop.
4. spot ("spot"): ``realtime.spotter.OnlineSpotter`` at the source's true rate.
   - "apex" update (apex confirmed): the ONSET frame's transform warps both the onset and
     the apex frame from the buffer (one alignment for the pair, computed on the onset,
     as in training: DATASETS.md), converted to RGB once and submitted to the
     ``RecognitionWorker``; a provisional ``Event`` follows when the label is back.
   - "final" update (offset reached, micro/macro certain): the event is final and goes
     to the event sinks as soon as its label is there.
5. infer ("infer"): results the worker finished since the last frame are collected; the
   stage time is the recogniser's own compute time for those results.
6. draw ("draw"): the overlay (``realtime.overlay``), on every frame or capped at
   ``draw_fps`` (display rate), see ``PipelineConfig``.

"decode" is the source's read/decode time (``Frame.decode_ms``), recorded here so that
every front end reports the same stages.

Latency (REALTIME.md, "Latency: say which one"), all in ``Event.latency_ms``:
- ``wait``: the algorithmic part, apex -> the frame on which the spotter confirmed it,
  on the source clock (frames waited / fps for files, capture clock for cameras);
- ``compute``: that frame's capture -> label ready (processing, queue and inference);
- ``decision`` = ``wait`` + ``compute``; ``infer`` = the recogniser call alone;
- ``final``: apex -> micro/macro final (offset reached), same clocks.
``decided_t`` / ``finalised_t`` are those moments in seconds from the source start.

Alignment smoothing: the transform is averaged with a 0.5 s time constant
(``smooth_s``). Shorter constants let the alignment follow the expression itself (the
brow and chin points move in AU4 / AU1+2), which the motion signal then sees as head
motion; on the generator's 30 and 200 fps clips 0.1 s missed events that 0.5 s found.

Landmark rate: the landmark model runs at most ``landmarks_hz`` (100) times per second of
source time; on a 200 fps stream every other frame reuses the previous frame's landmarks
and raw transform (the tracker's ``refresh=False``). The face moves a fraction of a pixel
in 5 ms and the motion crop's alignment is averaged over 0.5 s, so the signal keeps its
shape; the per-frame path saves about a millisecond.

Faces: no face -> the spotter is not fed and the overlay says "no face". A face missing
for more than ``loss_reset_s`` restarts the motion signal and drops the spotter's open
event (``faults["event_aborted"]`` if it was already announced) but keeps the
noise model (the person's calm level); a different subject (new ``face_id``) starts a new one. Two or more faces: the
tracker follows one subject; ``n_faces`` and ``face_id`` say which, in the overlay
("2 faces: tracking #0") and in every event.

Threads: ``process`` is called from one thread; the recogniser runs in the worker's
thread; one recogniser may be shared by several pipelines (one worker each).
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable

import cv2
import numpy as np

from engines.contract import bgr_to_rgb
from realtime.events import MICRO_MAX_MS, Event, expression_kind
from realtime.face import CROP_SIZE, FaceBox, alignment_transform, ensure_bgr, warp_face
from realtime.overlay import OverlayView, draw_overlay
from realtime.sources import Frame
from realtime.worker import RecognitionJob, RecognitionResult, RecognitionWorker

log = logging.getLogger("realtime.pipeline")

MIN_LOOKAHEAD_SAMPLES = 5   # a recording's look-ahead with fewer motion samples warms nothing up
STAGES = ("decode", "detect", "landmarks", "align", "motion", "spot", "infer", "draw")
"""Per-frame stages, in the order data flows; ``process`` and ``frame`` are added to the
summary: the whole ``process`` call, and frame latency (captured -> result ready)."""


# ---------------------------------------------------------------------------------------
# configuration and results


@dataclass
class PipelineConfig:
    """Settings of one pipeline. ``fps`` is the source's TRUE frame rate (the spotter's
    limits are in milliseconds; pass ``--fps`` for high-speed files with a wrong header)."""

    fps: float = 30.0
    tracker: str = "fast"              # "fast" | "dlib" | "mediapipe" (realtime.tracker)
    redetect_every: int = 30           # frames between detections while tracking
    landmarks_hz: float | None = 100.0  # landmark refreshes per second of source time, at most:
                                       # a 200 fps stream runs the landmark model on every other
                                       # frame (None: every frame; <= 100 fps: every frame anyway)
    engine: str = "auto"               # "auto" (demo weights) | checkpoint/engine path | "none"
    device: str = "auto"               # "auto" | "cpu" | "cuda"
    draw: bool = True                  # build the overlay image
    draw_fps: float | None = None      # None: draw every frame (recording); else at most this
                                       # many overlays per second of wall time (display rate,
                                       # <= 60 is all a screen shows)
    curve_s: float = 4.0               # seconds of motion curve in the overlay
    calibration_s: float | None = None  # camera: signal before the first event, the noise model's
                                       # warm start (None: the spotter's default, 0.5 s)
    lookahead_s: float = 3.0           # recordings: the noise model is warmed up on this much of the
                                       # recording before its first frame is analysed (prime_from);
                                       # 0 = causal, as a camera
    spotter: dict = field(default_factory=dict)   # further SpotterConfig overrides
    motion: dict = field(default_factory=dict)    # MotionConfig overrides
    buffer_s: float = 1.0              # raw face regions kept for the onset/apex pair (> 500 ms ME)
    smooth_s: float = 0.5              # time constant of the alignment smoothing (see module docstring)
    min_face_px: float = 40.0          # faces narrower than this are treated as "face too small"
    loss_reset_s: float = 0.25         # face missing longer than this resets motion and spotter
    region_margin: float = 0.25        # buffer copy = crop footprint grown by this share per side
    max_queue: int = 8                 # recognition jobs waiting before new ones are dropped
    keep_events: int = 10_000          # final events held in memory (Pipeline.events); older ones
                                       # are only counted (every one reaches the sinks as it happens)

    def __post_init__(self) -> None:
        if not (self.fps and math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"PipelineConfig.fps must be the source's positive frame rate, got {self.fps!r}")
        if self.draw_fps is not None and self.draw_fps <= 0:
            raise ValueError(f"draw_fps must be positive or None (every frame), got {self.draw_fps!r}")
        if self.buffer_s * 1000.0 < MICRO_MAX_MS:
            raise ValueError(f"buffer_s={self.buffer_s} is shorter than the longest micro-expression "
                             f"({MICRO_MAX_MS / 1000:g} s)")
        if not (self.lookahead_s >= 0 and math.isfinite(self.lookahead_s)):
            raise ValueError(f"lookahead_s must be >= 0 (0: causal), got {self.lookahead_s!r}")
        if self.landmarks_hz is not None and not (math.isfinite(self.landmarks_hz) and self.landmarks_hz > 0):
            raise ValueError(f"landmarks_hz must be positive or None (every frame), got {self.landmarks_hz!r}")
        if self.keep_events < 1:
            raise ValueError(f"keep_events must be >= 1, got {self.keep_events!r}")

    @property
    def draw_policy(self) -> str:
        if not self.draw:
            return "off"
        return "every frame" if self.draw_fps is None else f"at most {self.draw_fps:g} per second (display rate)"


@dataclass
class FrameResult:
    """What ``Pipeline.process`` returns for one frame."""

    frame: Frame
    index: int
    t: float
    found: bool
    box: FaceBox | None = None
    landmarks: np.ndarray | None = None      # (68, 2) image pixels
    face_id: int | None = None
    n_faces: int = 0
    value: float | None = None               # motion signal, px of the 224 crop (None without a face)
    score: float | None = None               # the spotter's score: multiples of the calm level
    regions: dict[str, float] | None = None  # per-region motion
    threshold: float | None = None           # the spotter's current threshold
    in_event: bool = False                   # the spotter holds an event open
    calibrating: bool = False
    new_events: list[Event] = field(default_factory=list)  # provisional and final, this frame
    overlay: np.ndarray | None = None        # annotated BGR image when drawn
    timings_ms: dict[str, float] = field(default_factory=dict)
    latency_ms: float = 0.0                  # frame latency: captured -> result ready
    message: str | None = None               # "no face", "face too small", tracker reason...

    @property
    def final_events(self) -> list[Event]:
        return [e for e in self.new_events if e.finalised_t is not None]

    @property
    def provisional_events(self) -> list[Event]:
        return [e for e in self.new_events if e.finalised_t is None]

    def signal_row(self) -> dict:
        """One row of the per-frame signal table (realtime.sinks.SignalCSV)."""
        return {"frame": self.index, "t": round(self.t, 6), "found": int(self.found),
                "face_id": "" if self.face_id is None else self.face_id, "n_faces": self.n_faces,
                "value": "" if self.value is None else round(self.value, 5),
                "score": "" if self.score is None else round(self.score, 4),
                "threshold": "" if self.threshold is None else round(self.threshold, 5),
                "in_event": int(self.in_event)}


def is_final(event: Event) -> bool:
    """Final events carry ``finalised_t``; provisional ones (label shown early) do not."""
    return event.finalised_t is not None


@dataclass
class RunSummary:
    """End-of-run figures (printed by run_live.py, saved by the benchmark)."""

    source: str
    source_fps: float
    frames: int
    dropped: int
    frames_with_face: int
    face_share: float
    events: int
    micro: int
    macro: int
    unlabelled: int
    achieved_fps: float          # frames / wall time between the first and the last frame
    realtime_factor: float       # achieved_fps / source_fps
    wall_s: float
    faults: dict[str, int]
    stages: dict[str, dict[str, float]]   # stage -> n, mean, p50, p95, p99, max (ms)
    decision_latency_ms: dict[str, float]
    final_latency_ms: dict[str, float]
    draw: str
    tracker: str
    engine: str | None
    end_reason: str | None = None
    rejected: dict[str, int] = field(default_factory=dict)   # motion bursts judged not expressions, by reason
    lookahead_frames: int = 0    # recordings: frames the noise model was warmed up on before frame 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def format(self) -> str:
        lines = [f"== summary: {self.source}",
                 f"frames {self.frames} processed, {self.dropped} dropped; face in {self.face_share:.0%} "
                 f"({self.frames_with_face} frames)",
                 f"events {self.events}: {self.micro} micro, {self.macro} macro"
                 + (f" ({self.unlabelled} without label)" if self.unlabelled else "")
                 + ("; not expressions: " + ", ".join(f"{k} {v}" for k, v in sorted(self.rejected.items()))
                    if self.rejected else ""),
                 f"achieved {self.achieved_fps:.1f} fps over {self.wall_s:.1f} s; source {self.source_fps:g} fps; "
                 f"real-time factor {self.realtime_factor:.2f}",
                 f"tracker {self.tracker}; engine {self.engine or 'none (spotting only)'}; drawing {self.draw}"]
        if self.decision_latency_ms.get("n"):
            d, f = self.decision_latency_ms, self.final_latency_ms
            lines.append(f"decision latency p50 {d['p50']:.0f} ms, p95 {d['p95']:.0f} ms "
                         f"(wait p50 {d.get('wait_p50', 0):.0f} + compute p50 {d.get('compute_p50', 0):.0f}); "
                         f"final p50 {f.get('p50', 0):.0f} ms")
        if self.faults:
            lines.append("faults: " + ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())))
        if self.end_reason:
            lines.append(f"stopped early: {self.end_reason}")
        if self.stages:
            lines.append(f"{'stage':10s} {'n':>7s} {'p50':>8s} {'p95':>8s} {'p99':>8s} {'max':>8s}  (ms)")
            for name, s in self.stages.items():
                lines.append(f"{name:10s} {s['n']:7d} {s['p50']:8.2f} {s['p95']:8.2f} {s['p99']:8.2f} {s['max']:8.2f}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# small helpers


class StageStats:
    """Timing samples of one stage with bounded memory (reservoir sampling past ``cap``).

    Percentiles are exact up to ``cap`` samples and an unbiased sample after; ``max``,
    ``mean`` and ``n`` are exact. Long runs (hours at 200 fps) stay flat in memory."""

    def __init__(self, cap: int = 100_000, seed: int = 0) -> None:
        self.cap = cap
        self._buf = np.empty(min(cap, 1024), dtype=np.float32)
        self.n = 0
        self.total = 0.0
        self.max = 0.0
        self._rng = np.random.default_rng(seed)

    def add(self, ms: float) -> None:
        if self.n < self.cap:
            if self.n >= len(self._buf):
                self._buf = np.resize(self._buf, min(self.cap, 2 * len(self._buf)))
            self._buf[self.n] = ms
        else:
            j = int(self._rng.integers(0, self.n + 1))
            if j < self.cap:
                self._buf[j] = ms
        self.n += 1
        self.total += ms
        self.max = max(self.max, ms)

    def summary(self) -> dict[str, float]:
        if self.n == 0:
            return {"n": 0, "mean": 0.0, "p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
        v = self._buf[: min(self.n, self.cap)]
        p50, p95, p99 = np.percentile(v, [50, 95, 99])
        return {"n": self.n, "mean": self.total / self.n, "p50": float(p50), "p95": float(p95),
                "p99": float(p99), "max": float(self.max)}


def percentiles(values: Iterable[float]) -> dict[str, float]:
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        return {"n": 0}
    p50, p95, p99 = np.percentile(v, [50, 95, 99])
    return {"n": int(v.size), "mean": float(v.mean()), "p50": float(p50), "p95": float(p95),
            "p99": float(p99), "max": float(v.max())}


def crop_footprint(transform: np.ndarray, size: int = CROP_SIZE) -> tuple[float, float, float, float]:
    """Bounding box (x0, y0, x1, y1), in image pixels, of what a size x size crop shows."""
    inv = cv2.invertAffineTransform(np.asarray(transform, np.float64))
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64)
    pts = corners @ inv[:, :2].T + inv[:, 2]
    return float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())


def region_of(image_wh: tuple[int, int], transform: np.ndarray, margin: float) -> tuple[int, int, int, int]:
    """Integer region (x0, y0, x1, y1) inside the image covering the crop footprint plus margin."""
    x0, y0, x1, y1 = crop_footprint(transform)
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    w, h = image_wh
    a, b = max(0, int(math.floor(x0 - mx))), max(0, int(math.floor(y0 - my)))
    c, d = min(w, int(math.ceil(x1 + mx))), min(h, int(math.ceil(y1 + my)))
    if c <= a or d <= b:  # the face is (almost) entirely outside: keep the whole frame
        return 0, 0, w, h
    return a, b, c, d


def shift_transform(transform: np.ndarray, offset: tuple[float, float]) -> np.ndarray:
    """The transform for a region cut at ``offset`` = (x0, y0): image p = region r + offset,
    so crop = A p + b = A r + (A offset + b)."""
    m = np.asarray(transform, np.float64).copy()
    m[:, 2] = m[:, :2] @ np.asarray(offset, np.float64) + m[:, 2]
    return m


@dataclass
class _Buffered:
    """One frame in the rolling buffer: a face-region copy and the frame's own transform."""

    index: int
    t: float
    captured_at: float
    region: np.ndarray        # (h, w, 3) BGR copy of the face region
    offset: tuple[int, int]   # (x0, y0) of the region in the frame
    transform: np.ndarray     # 2x3 raw alignment transform of this frame (image -> crop)


class FrameBuffer:
    """The last ``seconds`` of face regions, looked up by frame index.

    ``pin`` keeps chosen frames past that horizon (the open event's onset and peak: a
    macro-expression may last longer than the buffer)."""

    def __init__(self, fps: float, seconds: float) -> None:
        self.maxlen = int(math.ceil(fps * seconds)) + 2
        self._items: deque[_Buffered] = deque()
        self._by_index: dict[int, _Buffered] = {}
        self._pinned: dict[int, _Buffered] = {}

    def add(self, item: _Buffered) -> None:
        self._items.append(item)
        self._by_index[item.index] = item
        while len(self._items) > self.maxlen:
            old = self._items.popleft()
            self._by_index.pop(old.index, None)

    def get(self, index: int) -> _Buffered | None:
        return self._by_index.get(index) or self._pinned.get(index)

    def pin_only(self, indices: Iterable[int]) -> None:
        """Pin exactly these frames (those still held); unpin every other."""
        keep = {}
        for i in indices:
            item = self.get(i)
            if item is not None:
                keep[i] = item
        self._pinned = keep

    def last(self) -> _Buffered | None:
        return self._items[-1] if self._items else None

    def clear(self) -> None:
        self._items.clear()
        self._by_index.clear()
        self._pinned.clear()

    def __len__(self) -> int:
        return len(self._items)


def aligned_pair(onset: _Buffered, apex: _Buffered) -> tuple[np.ndarray, np.ndarray]:
    """Warp onset and apex with the ONSET's transform: (224, 224, 3) RGB uint8 each."""
    m = onset.transform
    a = warp_face(onset.region, shift_transform(m, onset.offset))
    b = warp_face(apex.region, shift_transform(m, apex.offset))
    return bgr_to_rgb(a), bgr_to_rgb(b)


def load_recognizer(spec: str | None, device: str = "auto"):
    """``engines.recognizer.Recognizer.load(spec, device)``, or None for "none"/None."""
    if spec is None or str(spec).lower() in ("", "none"):
        return None
    from engines.recognizer import Recognizer

    return Recognizer.load(spec, device=device)


@dataclass
class _Open:
    """An event between its apex update and its emission as final."""

    onset_frame: int
    apex_frame: int
    onset_t: float
    apex_t: float
    peak_motion: float
    face_id: int | None
    decided_t: float                 # source time of the frame that confirmed the apex
    decided_captured_at: float       # perf_counter when that frame was captured
    kind: str | None = None
    offset_frame: int | None = None
    offset_t: float | None = None
    result: RecognitionResult | None = None
    awaiting_label: bool = False
    label_time: float | None = None  # perf_counter when the label (or its failure) was there
    final_t: float | None = None     # source time of the frame that made the kind final
    final_lag_s: float = 0.0         # that frame's capture -> the final update (processing)
    provisional_sent: bool = False


# ---------------------------------------------------------------------------------------


class Pipeline:
    """One stream's live path: ``process(frame) -> FrameResult`` (see the module docstring).

    Pipeline(config=None, recognizer=None, source_name="stream", *, tracker=None,
             motion=None, spotter=None)

    recognizer: a loaded ``engines.recognizer.Recognizer`` (may be shared between
    pipelines: each pipeline has its own worker thread), or None to load
    ``config.engine`` here ("none" runs spotting only: events carry no label).
    tracker / motion / spotter: pre-built components to use instead of the config's
    (realtime.bench --compare swaps the tracker this way).
    """

    def __init__(self, config: PipelineConfig | None = None, recognizer: Any = None, source_name: str = "stream",
                 *, tracker=None, motion=None, spotter=None) -> None:
        from realtime.motion import MotionSignal
        from realtime.spotter import OnlineSpotter
        from realtime.tracker import FaceTracker, SmoothedTransform

        self.config = cfg = config or PipelineConfig()
        self.source_name = source_name
        self.recognizer = recognizer if recognizer is not None else load_recognizer(cfg.engine, cfg.device)
        self.tracker = tracker or FaceTracker(cfg.tracker, redetect_every=cfg.redetect_every)
        self.smoother = SmoothedTransform.for_fps(cfg.fps, cfg.smooth_s)
        self._landmarks_every = 1 if cfg.landmarks_hz is None else max(1, round(cfg.fps / cfg.landmarks_hz))
        self._raw: np.ndarray | None = None   # the latest unsmoothed alignment transform
        self.motion = motion or MotionSignal(cfg.fps, **cfg.motion)
        self.spotter = spotter or OnlineSpotter(cfg.fps, self._spotter_config())
        self.worker = (RecognitionWorker(self.recognizer, max_queue=cfg.max_queue)
                       if self.recognizer is not None else None)
        self.buffer = FrameBuffer(cfg.fps, cfg.buffer_s)
        self.stats: dict[str, StageStats] = {s: StageStats() for s in STAGES + ("process", "frame")}
        self.faults: dict[str, int] = {}
        self.frames = 0
        self.frames_with_face = 0
        # final events, in order: the latest keep_events of them (memory stays flat over hours);
        # the counts below cover every one
        self._events: deque[Event] = deque(maxlen=cfg.keep_events)
        self._counts = {"events": 0, "micro": 0, "macro": 0, "unlabelled": 0}
        self._open: dict[int, _Open] = {}   # onset_frame -> open event
        self._decision_ms = StageStats()     # latencies of the final events (bounded reservoirs)
        self._wait_ms = StageStats()
        self._compute_ms = StageStats()
        self._final_ms = StageStats()
        keep = int(math.ceil(cfg.fps * cfg.curve_s)) + 2
        self._curve: deque[tuple[float, float]] = deque(maxlen=keep)  # (t, value or nan)
        self._last_event: Event | None = None
        self._last_draw = -math.inf
        self._first_start: float | None = None
        self._last_end: float | None = None
        self._rate: deque[float] = deque(maxlen=60)   # recent process end times, for the overlay fps
        self._face_id: int | None = None
        self._last_seen_t: float | None = None       # source time the face was last tracked
        self._lost = False                            # motion/spotter already reset for this loss
        self._closed = False
        self.primed = 0                               # look-ahead samples the noise model started from

    # -- construction helpers ----------------------------------------------------------
    def _spotter_config(self):
        from realtime import spotter as sp

        overrides = dict(self.config.spotter)
        if self.config.calibration_s is not None:
            overrides.setdefault("calibration_s", self.config.calibration_s)
        names = {f.name for f in dataclasses.fields(sp.SpotterConfig)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValueError(f"unknown spotter setting(s) {unknown}; SpotterConfig has {sorted(names)}")
        return sp.SpotterConfig(**overrides)

    @classmethod
    def for_source(cls, source, config: PipelineConfig | None = None, recognizer: Any = None, **kw) -> "Pipeline":
        """A pipeline at the source's frame rate (``config.fps`` replaced by ``source.fps``)."""
        cfg = dataclasses.replace(config or PipelineConfig(), fps=source.fps)
        return cls(cfg, recognizer, source_name=source.name, **kw)

    # -- state the front ends read -------------------------------------------------------
    @property
    def events(self) -> list[Event]:
        """Final events so far, in the order they were finalised (the latest
        ``config.keep_events`` of them; ``summary()`` counts every one)."""
        return list(self._events)

    @property
    def last_event(self) -> Event | None:
        """The latest event shown (provisional or final)."""
        return self._last_event

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.recognizer.classes) if self.recognizer is not None else ()

    def engine_info(self) -> dict:
        if self.recognizer is None:
            return {"engine": None}
        try:
            return self.recognizer.info()
        except Exception as e:  # a description must never stop a run
            return {"engine": getattr(self.recognizer, "name", "?"), "error": str(e)}

    def signal_history(self) -> tuple[np.ndarray, np.ndarray]:
        """(t, value) of the last ``curve_s`` seconds (value nan where no face)."""
        if not self._curve:
            return np.zeros(0), np.zeros(0)
        a = np.asarray(self._curve, dtype=np.float64)
        return a[:, 0], a[:, 1]

    def _fault(self, kind: str, message: str | None = None, count: int = 1) -> None:
        first = kind not in self.faults
        self.faults[kind] = self.faults.get(kind, 0) + count
        if message and first:
            log.warning("%s (counted as faults[%r])", message, kind)

    # -- controls ------------------------------------------------------------------------
    def recalibrate(self) -> None:
        """The spotter learns the face's calm level again (key "c" in the window)."""
        self._abort_open("recalibration")
        self.motion.reset()
        self.smoother.unfreeze()
        self.spotter.recalibrate()

    def _face_lost(self) -> None:
        """Face gone for longer than ``loss_reset_s``: the signal starts over when it returns,
        the calibration is kept (same person)."""
        self._abort_open("face lost")
        self.motion.reset()
        self.smoother.reset()
        self.spotter.interrupt()
        self.buffer.clear()

    def _new_subject(self, old: int | None, new: int | None) -> None:
        """Another person is tracked: calibrate on them from scratch."""
        self._abort_open(f"face #{old} replaced by #{new}")
        self.motion.reset()
        self.smoother.reset()
        self.spotter.reset()
        self.buffer.clear()

    def _abort_open(self, why: str) -> None:
        if self._open:
            self._fault("event_aborted", f"{self.source_name}: open event aborted ({why})", count=len(self._open))
            self._open.clear()

    # -- recordings: look ahead --------------------------------------------------------------
    def prime_from(self, source) -> int:
        """A recording (file or folder of frames) can be read ahead: warm the spotter's noise
        model up on its first ``lookahead_s`` seconds (read a second time, through
        ``source.reopen()``), so that its first frame is analysed against the person's calm
        level, not against a still-empty model. Live sources (cameras, streams, ``--realtime``
        playback) and ``lookahead_s`` 0 stay causal. Returns the motion samples used."""
        reopen = getattr(source, "reopen", None)
        if getattr(source, "live", True) or self.config.lookahead_s <= 0 or reopen is None:
            return 0
        with reopen() as ahead:
            return self.prime(ahead)

    def prime(self, frames: Iterable[Frame]) -> int:
        """Warm the noise model on the first ``lookahead_s`` seconds of ``frames`` (tracked,
        aligned and measured as ``process`` does, with the rolling motion reference; nothing
        is spotted or emitted). Call before the first ``process``. Returns the samples used."""
        from realtime.motion import MotionSignal
        from realtime.tracker import SmoothedTransform

        if self.frames:
            raise RuntimeError("prime() must come before the first process(): it warms up a fresh stream")
        cfg = self.config
        motion = MotionSignal(cfg.fps, **cfg.motion)
        smoother = SmoothedTransform.for_fps(cfg.fps, cfg.smooth_s)
        limit = max(1, int(math.ceil(cfg.lookahead_s * cfg.fps)))
        samples, raw, face_id = [], None, None
        for n, frame in enumerate(frames):
            if n >= limit:
                break
            image = ensure_bgr(frame.image)
            refresh = self._landmarks_every == 1 or n % self._landmarks_every == 0
            try:
                tr = self.tracker.update(image, refresh=refresh)
            except Exception:  # counted when the frame comes again through process()
                tr = None
            if tr is None or not tr.found or tr.box is None or tr.landmarks is None or tr.box.width < cfg.min_face_px:
                continue
            if face_id is not None and tr.face_id != face_id:   # another person: their calm is not ours
                break
            face_id = tr.face_id
            raw = raw if getattr(tr, "held", False) and raw is not None else alignment_transform(tr.landmarks)
            sample = motion.update(warp_face(image, smoother.update(raw)))
            if sample.ready:
                samples.append(sample)
        self.tracker.reset()          # the analysis proper starts from scratch (same ids)
        if len(samples) >= MIN_LOOKAHEAD_SAMPLES:     # fewer say nothing about a calm level
            self.spotter.warm_start(samples)
        else:
            samples = []
        self.primed = len(samples)
        return len(samples)

    # -- the per-frame path ------------------------------------------------------------------
    def process(self, frame: Frame) -> FrameResult:
        """Run one frame through the path; never blocks on recognition."""
        if self._closed:
            raise RuntimeError("this Pipeline was closed; make a new one for a new stream")
        start = time.perf_counter()
        if self._first_start is None:
            self._first_start = start
        cfg = self.config
        timings: dict[str, float] = {"decode": float(frame.decode_ms)}
        image = ensure_bgr(frame.image)
        res = FrameResult(frame=frame, index=frame.index, t=frame.t, found=False)

        # 1. track
        try:
            refresh = self._landmarks_every == 1 or self.frames % self._landmarks_every == 0
            tr = self.tracker.update(image, refresh=refresh)
        except Exception as e:  # native code on a bad frame: count it, treat as no face
            self._fault("tracker_error", f"{self.source_name}: face tracker failed on frame {frame.index} "
                                         f"({type(e).__name__}: {e})")
            tr = None
        if tr is not None:
            timings["detect"] = float(tr.timings_ms.get("detect", 0.0))
            timings["landmarks"] = float(tr.timings_ms.get("landmarks", 0.0))
            res.n_faces = int(tr.n_faces)
        found = tr is not None and tr.found and tr.box is not None and tr.landmarks is not None
        if found and tr.box.width < cfg.min_face_px:
            found = False
            res.message = f"face too small ({tr.box.width:.0f} px < {cfg.min_face_px:.0f})"
        value = math.nan
        updates = []
        if found:
            if self._face_id is not None and tr.face_id != self._face_id:
                self._new_subject(self._face_id, tr.face_id)
            res.found = True
            res.box, res.landmarks, res.face_id = tr.box, tr.landmarks, tr.face_id
            self._face_id = tr.face_id
            self._last_seen_t = frame.t
            self._lost = False
            self.frames_with_face += 1
            if tr.n_faces > 1:
                res.message = f"{tr.n_faces} faces: tracking #{tr.face_id}"

            # 2. align: smoothed (frozen in events) for the motion crop; raw into the buffer
            t0 = time.perf_counter()
            raw = self._raw if getattr(tr, "held", False) and self._raw is not None else alignment_transform(tr.landmarks)
            self._raw = raw
            smooth = self.smoother.update(raw)
            crop = warp_face(image, smooth)
            h, w = image.shape[:2]
            x0, y0, x1, y1 = region_of((w, h), raw, cfg.region_margin)
            self.buffer.add(_Buffered(frame.index, frame.t, frame.captured_at,
                                      image[y0:y1, x0:x1].copy(), (x0, y0), raw))
            t1 = time.perf_counter()
            timings["align"] = (t1 - t0) * 1e3

            # 3. motion: reference held while the spotter has an event open
            sample = self.motion.update(crop, hold=self.spotter.holding)
            t2 = time.perf_counter()
            timings["motion"] = (t2 - t1) * 1e3
            value = float(sample.value)
            res.value, res.regions = value, dict(sample.regions)

            # 4. spot
            updates = self.spotter.update(frame.index, frame.t, sample)
            res.score = self.spotter.last_score
            self._follow_spotter()
            timings["spot"] = (time.perf_counter() - t2) * 1e3
        else:
            if res.message is None:
                res.message = "no face"
            gone = frame.t - self._last_seen_t if self._last_seen_t is not None else math.inf
            if not self._lost and gone > cfg.loss_reset_s:
                self._face_lost()
                self._lost = True
        res.threshold = self.spotter.threshold
        res.in_event = bool(self.spotter.holding)
        res.calibrating = bool(self.spotter.calibrating) and found
        self._curve.append((frame.t, res.score if res.score is not None else math.nan))

        for u in updates:
            self._on_update(u, frame.captured_at)

        # 5. collect recognition results
        if self.worker is not None:
            infer_ms = sum(self._on_result(r) for r in self.worker.poll())
            if infer_ms:
                timings["infer"] = infer_ms
        res.new_events = self._emit_ready()

        # 6. draw
        if cfg.draw and (cfg.draw_fps is None or start - self._last_draw >= 1.0 / cfg.draw_fps):
            t0 = time.perf_counter()
            res.overlay = draw_overlay(image, self._view(res))
            timings["draw"] = (time.perf_counter() - t0) * 1e3
            self._last_draw = start

        end = time.perf_counter()
        for k, v in timings.items():
            self.stats[k].add(v)
        self.stats["process"].add((end - start) * 1e3)
        res.latency_ms = (end - frame.captured_at) * 1e3
        self.stats["frame"].add(res.latency_ms)
        res.timings_ms = timings
        self.frames += 1
        self._last_end = end
        self._rate.append(end)
        return res

    def _follow_spotter(self) -> None:
        """Freeze the alignment while an event is open; pin its onset and peak frames."""
        ev = self.spotter.open_event
        if ev is not None:
            self.smoother.freeze()
            self.buffer.pin_only((ev.onset_frame, ev.peak_frame))
        else:
            self.smoother.unfreeze()
            self.buffer.pin_only(())

    # -- events ----------------------------------------------------------------------------
    def _on_update(self, u, captured_at: float) -> None:
        """A SpotUpdate: "apex" opens an event and submits its pair, "final" closes it."""
        key = int(u.onset_frame)
        ev = self._open.get(key)
        if u.stage == "rejected":          # announced, then judged not an expression: withdrawn
            self._open.pop(key, None)
            return
        if ev is None:
            ev = _Open(onset_frame=key, apex_frame=int(u.apex_frame), onset_t=float(u.onset_t),
                       apex_t=float(u.apex_t), peak_motion=float(u.peak_motion), face_id=self._face_id,
                       decided_t=float(u.decided_t), decided_captured_at=captured_at)
            self._open[key] = ev
            self._submit(ev)
        elif int(u.apex_frame) != ev.apex_frame:
            # the apex moved before the event closed: label the pair the record will name
            ev.apex_frame, ev.apex_t, ev.peak_motion = int(u.apex_frame), float(u.apex_t), float(u.peak_motion)
            ev.result = None
            self._submit(ev)
        if u.kind:
            ev.kind = u.kind
        if u.stage == "final":
            ev.offset_frame = max(int(u.offset_frame), ev.apex_frame)
            ev.offset_t = max(float(u.offset_t), ev.apex_t)
            ev.final_t = float(u.decided_t)
            ev.final_lag_s = max(0.0, time.perf_counter() - captured_at)
            if ev.kind not in ("micro", "macro"):
                ev.kind = expression_kind(ev.onset_t, ev.apex_t, ev.offset_t, self.spotter.config.rule,
                                          self.config.fps)

    def _submit(self, ev: _Open) -> None:
        def no_label():
            ev.awaiting_label = False
            ev.label_time = time.perf_counter()

        if self.worker is None:
            return no_label()
        onset, apex = self.buffer.get(ev.onset_frame), self.buffer.get(ev.apex_frame)
        if onset is None or apex is None:
            self._fault("pair_outside_buffer", f"{self.source_name}: onset {ev.onset_frame} / apex {ev.apex_frame} "
                                               "no longer in the frame buffer; the event keeps no label")
            return no_label()
        a, b = aligned_pair(onset, apex)
        ev.awaiting_label = True
        if not self.worker.submit(RecognitionJob(key=(ev.onset_frame, ev.apex_frame), onset_rgb=a, apex_rgb=b)):
            self._fault("recognition_dropped", f"{self.source_name}: recognition queue full, a pair was dropped")
            no_label()

    def _on_result(self, r: RecognitionResult) -> float:
        """Attach a worker result to its event; returns the recogniser's compute time."""
        onset, apex = r.key
        if r.error is not None:
            self._fault("recognition_error", f"{self.source_name}: recognition failed ({r.error}); "
                                             "the run continues, the event keeps no label")
        ev = self._open.get(onset)
        if ev is not None and ev.apex_frame == apex:   # else aborted, or superseded by a later apex
            ev.result = r if r.ok else None
            ev.awaiting_label = False
            ev.label_time = r.ready_at
        return r.compute_ms

    def _make_event(self, ev: _Open, final: bool) -> Event:
        ready = ev.label_time if ev.label_time is not None else time.perf_counter()
        wait_ms = max(0.0, (ev.decided_t - ev.apex_t) * 1e3)
        compute_ms = max(0.0, (ready - ev.decided_captured_at) * 1e3)
        latency = {"decision": wait_ms + compute_ms, "wait": wait_ms, "compute": compute_ms}
        if ev.result is not None:
            latency["infer"] = ev.result.compute_ms
        finalised_t = None
        if final:
            finalised_t = ev.final_t + ev.final_lag_s
            latency["final"] = max(0.0, (finalised_t - ev.apex_t) * 1e3)
        # a provisional record needs a kind: "macro" once the event outlasted any ME, else "micro"
        kind = ev.kind or "micro"
        r = ev.result
        return Event(source=self.source_name, fps=self.config.fps, onset_frame=ev.onset_frame,
                     apex_frame=ev.apex_frame,
                     offset_frame=ev.offset_frame if ev.offset_frame is not None else ev.apex_frame,
                     onset_t=round(ev.onset_t, 6), apex_t=round(ev.apex_t, 6),
                     offset_t=round(ev.offset_t if ev.offset_t is not None else ev.apex_t, 6),
                     kind=kind, label=r.label if r is not None else None,
                     probs={k: round(v, 6) for k, v in r.probs.items()} if r is not None else {},
                     peak_motion=round(ev.peak_motion, 6), decided_t=round(ev.decided_t + compute_ms / 1e3, 6),
                     finalised_t=None if finalised_t is None else round(finalised_t, 6),
                     latency_ms={k: round(v, 3) for k, v in latency.items()}, face_id=ev.face_id)

    def _emit_ready(self) -> list[Event]:
        """Events whose state changed: provisional once labelled, final once labelled and closed."""
        out = []
        for key in sorted(self._open):
            ev = self._open[key]
            if ev.awaiting_label:
                continue
            if ev.final_t is not None:
                e = self._make_event(ev, final=True)
                del self._open[key]
                self._events.append(e)
                self._counts["events"] += 1
                self._counts[e.kind] = self._counts.get(e.kind, 0) + 1
                self._counts["unlabelled"] += e.label is None
                self._decision_ms.add(e.latency_ms["decision"])
                self._wait_ms.add(e.latency_ms["wait"])
                self._compute_ms.add(e.latency_ms["compute"])
                self._final_ms.add(e.latency_ms["final"])
            elif not ev.provisional_sent:
                e = self._make_event(ev, final=False)
                ev.provisional_sent = True
            else:
                continue
            out.append(e)
            self._last_event = e
        return out

    # -- end of stream ---------------------------------------------------------------------------
    def close(self, wait: bool = True, timeout: float = 30.0) -> list[Event]:
        """End of stream. Closes the spotter's open event at the last frame (if long enough),
        waits up to ``timeout`` s for labels still being computed (``wait=False`` drops
        queued jobs that have not started), stops the worker. Events whose label did not
        come back are still written, without a label (``faults["label_missing"]``).
        Returns the events that became final here: hand them to the event sinks
        (``Sink.handle_events``)."""
        if self._closed:
            return []
        self._closed = True
        if not self._lost:
            last = self.buffer.last()
            for u in self.spotter.finish():
                self._on_update(u, last.captured_at if last is not None else time.perf_counter())
        if self.worker is not None:
            for r in self.worker.close(wait=wait, timeout=timeout):
                self.stats["infer"].add(self._on_result(r))
        late = [ev for ev in self._open.values() if ev.awaiting_label]
        if late:  # the label did not come back in time: keep the event, without a label
            self._fault("label_missing", f"{self.source_name}: {len(late)} label(s) not back when the stream "
                                         "ended; those events are written without a label", count=len(late))
            for ev in late:
                ev.awaiting_label, ev.label_time = False, time.perf_counter()
        out = [e for e in self._emit_ready() if is_final(e)]
        if self.frames_with_face and self.spotter.calibrating:
            need = self.spotter.config.calibration_s
            self._fault("too_short", f"{self.source_name}: too short to analyse: {self.frames_with_face} frame(s) "
                                     f"with a face, the spotter needs {need:g} s of motion before it can judge "
                                     "one (or a recording read ahead: keep lookahead_s > 0)")
        if self._open:
            self._fault("event_unfinished", f"{self.source_name}: {len(self._open)} event(s) still open at the end "
                                            "of the stream were not written", count=len(self._open))
            self._open.clear()
        close = getattr(self.tracker, "close", None)
        if callable(close):
            close()
        return out

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.close(wait=False)

    # -- reporting -------------------------------------------------------------------------------
    def _view(self, res: FrameResult) -> OverlayView:
        t, v = self.signal_history()
        intervals = [(e.onset_t, e.offset_t, e.kind) for e in reversed(list(itertools.islice(reversed(self._events), 8)))]
        intervals += [(o.onset_t, o.offset_t if o.offset_t is not None else res.t, "open")
                      for o in self._open.values()]
        fps = None
        if len(self._rate) >= 2 and self._rate[-1] > self._rate[0]:
            fps = (len(self._rate) - 1) / (self._rate[-1] - self._rate[0])
        last = self._last_event
        return OverlayView(found=res.found, box=res.box, face_id=res.face_id, n_faces=res.n_faces,
                           message=res.message, landmarks=res.landmarks, signal_t=t, signal_value=v,
                           threshold=res.threshold, window_s=self.config.curve_s, intervals=intervals,
                           in_event=res.in_event, calibrating=res.calibrating, last_event=last,
                           last_event_final=last is not None and is_final(last), now_t=res.t, fps=fps,
                           source_fps=self.config.fps)

    def summary(self, source=None) -> RunSummary:
        """Figures for the run so far; ``source`` adds its drops, faults and end reason."""
        faults = dict(self.faults)
        dropped = 0
        end_reason = None
        if source is not None:
            dropped = int(getattr(source, "dropped", 0))
            for k, v in getattr(source, "faults", {}).items():
                faults[k] = faults.get(k, 0) + v
            end_reason = getattr(source, "end_reason", None)
        wall = (self._last_end - self._first_start) if self.frames else 0.0
        achieved = (self.frames / wall) if wall > 0 else 0.0
        counts = self._counts
        decision = self._decision_ms.summary() if self._decision_ms.n else {"n": 0}
        if decision.get("n"):
            compute = self._compute_ms.summary()
            decision["wait_p50"] = self._wait_ms.summary()["p50"]
            decision["compute_p50"] = compute["p50"]
            decision["compute_p95"] = compute["p95"]
        stages = {k: s.summary() for k, s in self.stats.items() if s.n}
        engine = None
        if self.recognizer is not None:
            info = self.engine_info()
            engine = " ".join(str(x) for x in (info.get("engine"), info.get("precision"), "on",
                                                  info.get("device")) if x)
        return RunSummary(
            source=self.source_name, source_fps=self.config.fps, frames=self.frames, dropped=dropped,
            frames_with_face=self.frames_with_face,
            face_share=self.frames_with_face / self.frames if self.frames else 0.0,
            events=counts["events"], micro=counts.get("micro", 0), macro=counts.get("macro", 0),
            unlabelled=counts["unlabelled"] if self.recognizer is not None else 0,
            achieved_fps=achieved, realtime_factor=achieved / self.config.fps, wall_s=wall, faults=faults,
            stages=stages, decision_latency_ms=decision, final_latency_ms=self._final_ms.summary() if self._final_ms.n else {"n": 0},
            draw=self.config.draw_policy, tracker=getattr(self.tracker, "kind", type(self.tracker).__name__),
            engine=engine, end_reason=end_reason,
            rejected={k: v for k, v in getattr(self.spotter, "rejected", {}).items() if v},
            lookahead_frames=self.primed)
