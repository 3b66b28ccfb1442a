"""The live path in one object: frame in, result out (REALTIME.md, "Flow").

    source -> face tracker -> aligner -> rolling buffer + motion signal -> spotter
           -> recogniser (background worker) -> sinks

One ``Pipeline`` per stream or browser session; every front end (the window and files of
run_live.py, the Gradio demo, realtime.bench.cli) drives the same object (STYLE.md, "one
pipeline, many front ends"):

    from realtime.stages.pipeline import Pipeline, PipelineConfig
    from realtime.stages.sources import open_source

    with open_source(video="clip.avi", fps=200) as src:
        pipe = Pipeline(PipelineConfig(fps=src.fps, engine="auto"), source_name=src.name)
        for frame in src:
            r = pipe.process(frame)          # FrameResult
            r.overlay, r.new_events, r.timings_ms, r.value ...
        late = pipe.close(wait=True)         # events finalised at the end of the stream
        print(pipe.summary(src).format())

What happens to each frame (``process``):

1. track: ``realtime.stages.tracker.FaceTracker`` gives the subject's box, 68 landmarks,
   ``face_id`` and ``n_faces`` (timings "detect", "landmarks").
2. align ("align"): the training alignment (``core.face.alignment_transform``, five
   landmarks onto the template) is smoothed over time (``tracker.SmoothedTransform``;
   landmark jitter is motion to the spotter) and frozen while the spotter holds an event
   open; the frame is warped to a 224x224 crop with it. A face-region copy of the frame
   and the frame's own (raw) transform go into a rolling buffer of ``buffer_s`` seconds.
3. motion ("motion"): ``realtime.stages.motion.MotionSignal`` on the smoothed crop.
4. spot ("spot"): ``realtime.stages.spotter.OnlineSpotter`` at the source's true rate.
   - "apex" update (apex confirmed): the ONSET frame's transform warps both the onset and
     the apex frame from the buffer (one alignment for the pair, computed on the onset,
     as in training: DATASETS.md), converted to RGB once and submitted to the
     ``RecognitionWorker``; a provisional ``Event`` follows when the label is back.
   - "final" update (offset reached, micro/macro certain): the event is final and goes
     to the event sinks as soon as its label is there.
5. infer ("infer"): results the worker finished since the last frame are collected; the
   stage time is the recogniser's own compute time for those results.
6. draw ("draw"): the overlay (``realtime.stages.overlay``), on every frame or capped at
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

Landmark rate: the landmark model runs at most ``landmarks_hz`` (50) times per second of
source time (by the frames' timestamps, so a stream that drops frames refreshes as
often); on a 200 fps stream three frames in four reuse the previous landmarks and raw
transform (the tracker's ``refresh=False``). The face moves a fraction of a pixel in
20 ms and the motion crop's alignment is averaged over 0.5 s (and frozen through events),
so the signal keeps its shape; the per-frame path saves about a millisecond. The motion
stage and the spotter can be rate-limited the same way (``motion_hz``, off by default: at
100 a 200 fps stream is measured on every 2nd frame, 40 % less frame-loop CPU, but the
spotter's borderline decisions and its apex resolution change; README, "Latency benchmark").

Faces: every face in the frame is followed, up to ``max_faces`` (default 4;
``realtime.stages.multitrack.MultiFaceTracker``, stable ids), each in its own
``realtime.stages.lane.FaceLane``: its own alignment, buffer, motion signal, calm level and
spotter. One event book and one recognition worker serve all faces (pairs of faces that
coincide go to the engine in one batch). Every event names its ``face_id`` and
``face_box``; ``FrameResult.faces`` holds each face's figures. ``max_faces`` 1 follows one
subject (``realtime.stages.tracker.FaceTracker``, the largest face; ``n_faces`` and
``face_id`` say which, "2 faces: tracking #0"); a different subject there (new
``face_id``) starts a new calibration. No face -> no spotter is fed and the overlay says
"no face". A face missing for more than ``loss_reset_s`` restarts its motion signal and
drops its open event (``faults["event_aborted"]`` if it was already announced) but keeps
its noise model (the person's calm level); a face lane unused for ``forget_s`` is dropped.

Threads: ``process`` is called from one thread; the recogniser runs in the worker's
thread; one recogniser may be shared by several pipelines (one worker each).

Where things live: this module runs the per-frame path (``Pipeline``, ``PipelineConfig``);
``realtime.stages.results`` holds what it returns (``FrameResult``, ``RunSummary``,
``StageStats``); ``realtime.stages.framebuffer`` the rolling face-region buffer;
``realtime.stages.eventbook`` the events between the spotter and the sinks (the pair
hand-off to the recognition worker, provisional and final records, their latencies).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from core.events import MICRO_MAX_MS, Event
from core.face import alignment_transform, ensure_bgr
from engines.recognizer import load_engine
from realtime.stages.eventbook import EventBook
from realtime.stages.lane import FaceLane
from realtime.stages.motion import FLOW_SIZE, MOTION_HZ, MotionSignal, flow_crop
from realtime.stages.multitrack import MAX_FACES, MultiFaceTracker
from realtime.stages.overlay import FaceMark, OverlayView, draw_overlay
from realtime.stages.results import FrameResult, RunSummary, StageStats, is_final
from realtime.stages.sources import Frame
from realtime.stages.spotter import OnlineSpotter, SpotterConfig
from realtime.stages.rate import RateLimit
from realtime.stages.tracker import LANDMARKS_HZ, FaceTracker, SmoothedTransform
from realtime.stages.trackproc import track_once, track_step
from realtime.stages.worker import RecognitionWorker

log = logging.getLogger("realtime.stages.pipeline")

MIN_LOOKAHEAD_SAMPLES = 5   # a recording's look-ahead with fewer motion samples warms nothing up
STAGES = ("decode", "detect", "landmarks", "align", "motion", "spot", "infer", "draw")
"""Per-frame stages, in the order data flows; ``process`` and ``frame`` are added to the
summary: the whole ``process`` call, and frame latency (captured -> result ready)."""


# ---------------------------------------------------------------------------------------
# configuration


@dataclass
class PipelineConfig:
    """Settings of one pipeline. ``fps`` is the source's TRUE frame rate (the spotter's
    limits are in milliseconds; pass ``--fps`` for high-speed files with a wrong header)."""

    fps: float = 30.0
    tracker: str = "fast"              # "fast" | "dlib" | "mediapipe" (realtime.stages.tracker)
    max_faces: int = MAX_FACES         # faces followed at once (1: one subject, the largest face)
    forget_s: float = 30.0             # a face lane unused this long (source time) is dropped
    redetect_every: int = 30           # frames between detections while tracking
    landmarks_hz: float | None = LANDMARKS_HZ  # landmark refreshes per second of source time, at most:
                                       # a 200 fps stream runs the landmark model on every 4th
                                       # frame (None: every frame; <= 50 fps: every frame anyway)
    motion_hz: float | None = MOTION_HZ  # motion samples (flow + spotter) per second of source time, at
                                       # most (None, the default: every frame; 100: every 2nd frame at
                                       # 200 fps, a speed option that changes spotting: README)
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
        for name in ("landmarks_hz", "motion_hz"):
            hz = getattr(self, name)
            if hz is not None and not (math.isfinite(hz) and hz > 0):
                raise ValueError(f"{name} must be positive or None (every frame), got {hz!r}")
        if self.keep_events < 1:
            raise ValueError(f"keep_events must be >= 1, got {self.keep_events!r}")
        if not isinstance(self.max_faces, int) or isinstance(self.max_faces, bool) or self.max_faces < 1:
            raise ValueError(f"max_faces must be an integer >= 1, got {self.max_faces!r}")

    @property
    def draw_policy(self) -> str:
        if not self.draw:
            return "off"
        return "every frame" if self.draw_fps is None else f"at most {self.draw_fps:g} per second (display rate)"


# ---------------------------------------------------------------------------------------


class Pipeline:
    """One stream's live path: ``process(frame) -> FrameResult`` (see the module docstring).

    Pipeline(config=None, recognizer=None, source_name="stream", *, tracker=None,
             motion=None, spotter=None)

    recognizer: a loaded ``engines.recognizer.Recognizer`` (may be shared between
    pipelines: each pipeline has its own worker thread), or None to load
    ``config.engine`` here (``engines.recognizer.load_engine``: "none", or "auto" without
    the demo weights, runs spotting only: events carry no label).
    tracker / motion / spotter: pre-built components to use instead of the config's
    (realtime.bench.cli --compare swaps the tracker this way).
    """

    def __init__(self, config: PipelineConfig | None = None, recognizer: Any = None, source_name: str = "stream",
                 *, tracker=None, motion=None, spotter=None) -> None:
        self.config = cfg = config or PipelineConfig()
        self.source_name = source_name
        if recognizer is None:
            recognizer, note = load_engine(cfg.engine, cfg.device)
            if recognizer is None and cfg.engine == "auto":   # demo weights missing: say so
                log.warning(note)
        self.recognizer = recognizer
        if tracker is None:
            tracker = (FaceTracker(cfg.tracker, redetect_every=cfg.redetect_every) if cfg.max_faces == 1 else
                       MultiFaceTracker(cfg.tracker, max_faces=cfg.max_faces, redetect_every=cfg.redetect_every))
        self.tracker = tracker
        self._landmarks = RateLimit(cfg.fps, cfg.landmarks_hz)   # landmark refreshes, by source time
        probe = motion or MotionSignal(cfg.fps, **cfg.motion)
        self._flow_size = int(getattr(getattr(probe, "config", None), "flow_size", FLOW_SIZE))
        # the first face's lane (the only one with max_faces 1); pre-built components go here
        self._primary = self._new_lane(probe, spotter or OnlineSpotter(cfg.fps, self._spotter_config()))
        self.lanes: dict[int, FaceLane] = {}          # face_id -> lane of the faces followed lately
        self._primed: dict[int, list] = {}            # face_id -> look-ahead samples not used yet
        self.worker = (RecognitionWorker(self.recognizer, max_queue=cfg.max_queue)
                       if self.recognizer is not None else None)
        self.stats: dict[str, StageStats] = {s: StageStats() for s in STAGES + ("process", "frame")}
        self.faults: dict[str, int] = {}
        self.book = EventBook(source_name, cfg.fps, self.worker, self._fault, cfg.keep_events)
        self.frames = 0
        self.frames_with_face = 0
        self.face_frames: dict[int, int] = {}        # face_id -> frames it was followed in
        self._last_draw = -math.inf
        self._first_start: float | None = None
        self._last_end: float | None = None
        self._rate: deque[float] = deque(maxlen=60)   # recent process end times, for the overlay fps
        self._closed = False
        self.primed = 0                               # look-ahead samples the noise model started from

    def _new_lane(self, motion=None, spotter=None) -> FaceLane:
        cfg = self.config
        return FaceLane(cfg.fps, cfg.smooth_s, cfg.buffer_s, cfg.curve_s,
                        motion or MotionSignal(cfg.fps, **cfg.motion),
                        spotter or OnlineSpotter(cfg.fps, self._spotter_config()),
                        self._flow_size, cfg.region_margin, motion_hz=cfg.motion_hz)

    # the first face's components (with max_faces 1, the subject's): what tools that look
    # inside one stream's path read (realtime.bench swaps the spotter for a logging one)
    @property
    def spotter(self):
        return self._primary.spotter

    @spotter.setter
    def spotter(self, value) -> None:
        self._primary.spotter = value

    @property
    def motion(self):
        return self._primary.motion

    @property
    def smoother(self) -> SmoothedTransform:
        return self._primary.smoother

    @property
    def buffer(self):
        return self._primary.buffer

    # -- construction helpers ----------------------------------------------------------
    def _spotter_config(self) -> SpotterConfig:
        overrides = dict(self.config.spotter)
        if self.config.calibration_s is not None:
            overrides.setdefault("calibration_s", self.config.calibration_s)
        names = {f.name for f in dataclasses.fields(SpotterConfig)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValueError(f"unknown spotter setting(s) {unknown}; SpotterConfig has {sorted(names)}")
        return SpotterConfig(**overrides)

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
        return list(self.book.events)

    @property
    def last_event(self) -> Event | None:
        """The latest event shown (provisional or final)."""
        return self.book.last_event

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

    def signal_history(self, face_id: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(t, score) of the last ``curve_s`` seconds (nan where no face) of face ``face_id``
        (default: the first face's lane)."""
        lane = self.lanes.get(face_id, self._primary) if face_id is not None else self._primary
        return lane.signal_history()

    def _fault(self, kind: str, message: str | None = None, count: int = 1) -> None:
        first = kind not in self.faults
        self.faults[kind] = self.faults.get(kind, 0) + count
        if message and first:
            log.warning("%s (counted as faults[%r])", message, kind)

    # -- controls ------------------------------------------------------------------------
    def recalibrate(self) -> None:
        """Every face's spotter learns its calm level again (key "c" in the window)."""
        self.book.abort("recalibration", every_face=True)
        for lane in self._all_lanes():
            lane.recalibrate()

    def _all_lanes(self) -> list[FaceLane]:
        lanes = list(self.lanes.values())
        return lanes if self._primary in lanes else [self._primary] + lanes

    def _lane_for(self, face_id: int | None) -> FaceLane:
        """The lane of this face: with max_faces 1 always the one lane (a new subject resets
        it); else the face's own, made on its first frame (warmed by the look-ahead)."""
        lane = self._primary
        if self.config.max_faces == 1:
            if lane.face_id is not None and face_id != lane.face_id:
                self.book.abort(f"face #{lane.face_id} replaced by #{face_id}", lane.face_id)
                lane.new_subject()
            lane.face_id = face_id
            self.lanes = {face_id: lane}
            return lane
        if face_id in self.lanes:
            return self.lanes[face_id]
        if lane.face_id is not None:
            lane = self._new_lane()
            samples = self._primed.pop(face_id, None)
            if samples:
                lane.spotter.warm_start(samples)
        lane.face_id = face_id
        self.lanes[face_id] = lane
        return lane

    def _faces_missing(self, t: float, seen: set) -> None:
        """Faces not followed on this frame: reset those gone for ``loss_reset_s``, drop the
        lanes of those gone for ``forget_s``."""
        cfg = self.config
        for face_id, lane in list(self.lanes.items()):
            if face_id in seen:
                continue
            lane.gap(t)
            gone = t - lane.last_seen_t if lane.last_seen_t is not None else math.inf
            if not lane.lost and gone > cfg.loss_reset_s:
                self.book.abort("face lost", face_id)
                lane.face_lost()
            if gone > cfg.forget_s and lane is not self._primary:
                del self.lanes[face_id]

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
        if self.frames:
            raise RuntimeError("prime() must come before the first process(): it warms up a fresh stream")
        cfg = self.config
        limit = max(1, int(math.ceil(cfg.lookahead_s * cfg.fps)))
        per_face: dict[int, tuple] = {}      # face_id -> (motion, smoother, [raw], samples)
        first_id = None
        for n, frame in enumerate(frames):
            if n >= limit:
                break
            image = ensure_bgr(frame.image)
            refresh = n % self._landmarks.every == 0
            try:
                results = track_once(self.tracker, image, refresh)
            except Exception:  # counted when the frame comes again through process()
                continue
            stop = False
            for tr in results:
                if not tr.found or tr.box is None or tr.landmarks is None or tr.box.width < cfg.min_face_px:
                    continue
                if cfg.max_faces == 1 and first_id is not None and tr.face_id != first_id:
                    stop = True          # another person: their calm is not ours
                    break
                first_id = tr.face_id if first_id is None else first_id
                motion, smoother, raw, samples, rate = per_face.setdefault(
                    tr.face_id, (MotionSignal(cfg.fps, **cfg.motion), SmoothedTransform.for_fps(cfg.fps, cfg.smooth_s),
                                 [None], [], RateLimit(cfg.fps, cfg.motion_hz)))
                if not (getattr(tr, "held", False) and raw[0] is not None):
                    raw[0] = alignment_transform(tr.landmarks)
                smooth = smoother.update(raw[0], t=frame.t)
                if not rate.due(frame.t):    # the motion signal's rate, as in process()
                    continue
                rate.mark(frame.t)
                crop = flow_crop(image, (0, 0), smooth, self._flow_size)
                sample = motion.update(crop, t=frame.t)
                if sample.ready:
                    samples.append(sample)
            if stop:
                break
        self.tracker.reset()          # the analysis proper starts from scratch (same ids)
        # fewer samples than MIN_LOOKAHEAD_SAMPLES say nothing about a calm level
        usable = {k: v[3] for k, v in per_face.items() if len(v[3]) >= MIN_LOOKAHEAD_SAMPLES}
        self.primed = 0
        if usable:
            first = min(usable)                    # the first lane is the lowest id's
            self.spotter.warm_start(usable.pop(first))
            self.primed = len(per_face[first][3])
            self._primed = usable
        return self.primed

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

        # 1. track (done already when the frame comes from a trackproc.TrackedRecording)
        tracked, error = (frame.tracked if frame.tracked is not None else
                          track_step(self.tracker, self._landmarks, frame.t, image))
        if error is not None:   # native code on a bad frame: count it, treat as no face
            self._fault("tracker_error", f"{self.source_name}: face tracker failed on frame {frame.index} "
                                         f"({type(error).__name__}: {error})")
        if tracked:
            timings["detect"] = sum(float(tr.timings_ms.get("detect", 0.0)) for tr in tracked)
            timings["landmarks"] = sum(float(tr.timings_ms.get("landmarks", 0.0)) for tr in tracked)
            res.n_faces = int(tracked[0].n_faces)
        faces = [tr for tr in tracked if tr.found and tr.box is not None and tr.landmarks is not None]
        small = [tr for tr in faces if tr.box.width < cfg.min_face_px]
        faces = [tr for tr in faces if tr.box.width >= cfg.min_face_px]
        if small and not faces:
            res.message = f"face too small ({small[0].box.width:.0f} px < {cfg.min_face_px:.0f})"

        # 2-4. align, motion, spot: each face in its own lane
        updates = []
        for tr in faces:
            lane = self._lane_for(tr.face_id)
            face, ups = lane.step(frame, image, tr, timings)
            res.faces.append(face)
            updates += [(u, lane) for u in ups]
            self.face_frames[tr.face_id] = self.face_frames.get(tr.face_id, 0) + 1
        self._faces_missing(frame.t, {tr.face_id for tr in faces})
        if res.faces:
            first = res.faces[0]
            res.found = True
            res.box, res.landmarks, res.face_id = first.box, first.landmarks, first.face_id
            res.value, res.score, res.regions = first.value, first.score, first.regions
            res.threshold, res.in_event, res.calibrating = first.threshold, first.in_event, first.calibrating
            self.frames_with_face += 1
            if res.n_faces > 1 and cfg.max_faces == 1:
                res.message = f"{res.n_faces} faces: tracking #{first.face_id}"
            elif len(res.faces) > 1:
                res.message = f"{len(res.faces)} faces: " + ", ".join(f"#{f.face_id}" for f in res.faces)
        else:
            if res.message is None:
                res.message = "no face"
            res.threshold = self.spotter.threshold

        for u, lane in updates:
            self.book.on_update(u, frame.captured_at, face_id=lane.face_id, rule=lane.spotter.config.rule,
                                buffer=lane.buffer)
        self.book.submit_jobs()       # this frame's pairs, all faces, in one batch

        # 5. collect recognition results
        infer_ms = self.book.collect()
        if infer_ms:
            timings["infer"] = infer_ms
        res.new_events = self.book.emit_ready()
        res.withdrawn = self.book.take_withdrawn()
        for face in res.faces:
            face.last_event = self.book.last_by_face.get(face.face_id)

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

    # -- end of stream ---------------------------------------------------------------------------
    def close(self, wait: bool = True, timeout: float = 30.0) -> list[Event]:
        """End of stream. Closes each face's open event at the last frame (if long enough),
        waits up to ``timeout`` s for labels still being computed (``wait=False`` drops
        queued jobs that have not started), stops the worker. Events whose label did not
        come back are still written, without a label (``faults["label_missing"]``).
        Returns the events that became final here: hand them to the event sinks
        (``Sink.handle_events``)."""
        if self._closed:
            return []
        self._closed = True
        for lane in self._all_lanes():
            if lane.lost or lane.face_id is None:
                continue
            last = lane.buffer.last()
            for u in lane.spotter.finish():
                self.book.on_update(u, last.captured_at if last is not None else time.perf_counter(),
                                    face_id=lane.face_id, rule=lane.spotter.config.rule, buffer=lane.buffer)
        self.book.submit_jobs()
        for ms in self.book.close_worker(wait=wait, timeout=timeout):
            self.stats["infer"].add(ms)
        out = self.book.flush()
        if self.frames_with_face and self.spotter.calibrating:
            need = self.spotter.config.calibration_s
            self._fault("too_short", f"{self.source_name}: too short to analyse: {self.frames_with_face} frame(s) "
                                     f"with a face, the spotter needs {need:g} s of motion before it can judge "
                                     "one (or a recording read ahead: keep lookahead_s > 0)")
        self.book.drop_unfinished()
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
        t, v = self.signal_history(res.face_id)
        intervals = self.book.intervals(res.t, res.face_id)
        fps = None
        if len(self._rate) >= 2 and self._rate[-1] > self._rate[0]:
            fps = (len(self._rate) - 1) / (self._rate[-1] - self._rate[0])
        last = self.book.last_event
        marks = [FaceMark(face_id=f.face_id, box=f.box, landmarks=f.landmarks, in_event=f.in_event, score=f.score,
                          threshold=f.threshold, last_event=f.last_event,
                          last_event_final=f.last_event is not None and is_final(f.last_event))
                 for f in res.faces] if len(res.faces) > 1 else []
        return OverlayView(found=res.found, box=res.box, face_id=res.face_id, n_faces=res.n_faces,
                           message=res.message, landmarks=res.landmarks, signal_t=t, signal_value=v,
                           threshold=res.threshold, window_s=self.config.curve_s, intervals=intervals,
                           in_event=res.in_event, calibrating=res.calibrating, last_event=last,
                           last_event_final=last is not None and is_final(last), now_t=res.t, fps=fps,
                           source_fps=self.config.fps, faces=marks)

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
        counts = self.book.counts
        decision, final = self.book.latency_summary()
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
            stages=stages, decision_latency_ms=decision, final_latency_ms=final,
            draw=self.config.draw_policy, tracker=getattr(self.tracker, "kind", type(self.tracker).__name__),
            engine=engine, end_reason=end_reason,
            rejected={k: v for k, v in getattr(self.spotter, "rejected", {}).items() if v},
            lookahead_frames=self.primed, faces=self._per_face())

    def _per_face(self) -> dict[str, dict[str, int]]:
        """Frames and final events of every face followed so far, by id."""
        out = {}
        for face_id in sorted(set(self.face_frames) | {k for k in self.book.by_face if k is not None}):
            ev = self.book.by_face.get(face_id, {})
            out[str(face_id)] = {"frames": self.face_frames.get(face_id, 0), "events": ev.get("events", 0),
                                 "micro": ev.get("micro", 0), "macro": ev.get("macro", 0)}
        return out
