"""One recording through the live path: the code run_live.py, the batch runner and the
spotting evaluation share.

    from realtime.stages.recording import RecordingSettings, make_pipeline, drive
    from realtime.stages.sources import open_source

    settings = RecordingSettings(engine="none", tracker="fast")
    with open_source(video="clip.avi") as src:
        pipe = make_pipeline(src, settings, recognizer=None)     # configured and read ahead
        outcome = drive(src, pipe, sinks)                         # every frame to every sink,
        print(outcome.summary.format())                           # late events too

``RecordingSettings`` holds every option that changes what a recording gives (engine,
device, tracker, landmark rate, causal or read-ahead, micro/macro rule, calibration,
spotter and motion overrides). It is what a batch keys its "already done" check on
(``key()``), so an option added to run_live.py (a face limit, a remote engine) is added
HERE once and reaches the window, the batch and the evaluation alike.

``make_pipeline`` builds the ``PipelineConfig`` from the settings and reads a recording
ahead (``Pipeline.prime_from``: the noise model learns the person's calm level before the
first frame is judged; cameras and ``causal`` settings stay causal). ``drive`` is the frame
loop: each frame through ``Pipeline.process`` and every sink, an optional per-frame hook
(the window's key handling), then ``Pipeline.close`` and the events finalised there to the
sinks.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

from realtime.stages.pipeline import Pipeline, PipelineConfig
from realtime.stages.trackproc import TrackedRecording

log = logging.getLogger("realtime.stages.recording")

SETTINGS_VERSION = 1
"""Bumped when the meaning of a setting changes, so that a batch redoes its recordings."""


@dataclass(frozen=True)
class RecordingSettings:
    """What a recording is analysed with (see the module docstring).

    ``engine``: "auto" (the demo weights), a checkpoint / engine path, or "none" (spotting
    only). ``landmarks_hz`` / ``motion_hz`` None: landmarks / motion on every frame. ``causal``: no look-ahead (as a
    camera). ``me_rule``: core.events.expression_kind's rule. ``calibration_s`` None: the
    spotter's default warm start. ``spotter`` / ``motion``: SpotterConfig / MotionConfig
    overrides (a ``rule`` in ``spotter`` wins over ``me_rule``)."""

    engine: str = "auto"
    device: str = "auto"
    tracker: str = "fast"
    landmarks_hz: float | None = PipelineConfig.landmarks_hz
    motion_hz: float | None = PipelineConfig.motion_hz
    max_faces: int = PipelineConfig.max_faces
    causal: bool = False
    me_rule: str = "megc"
    calibration_s: float | None = None
    spotter: dict = field(default_factory=dict)
    motion: dict = field(default_factory=dict)

    @classmethod
    def from_args(cls, args, **overrides) -> "RecordingSettings":
        """From parsed run_live.py-style options (engine, device, tracker, max_faces, landmarks_hz,
        motion_hz, causal, me_rule, calibration); options absent from ``args`` keep their defaults."""
        kw: dict[str, Any] = {}
        for name, attr in (("engine", "engine"), ("device", "device"), ("tracker", "tracker"), ("max_faces", "max_faces"),
                           ("causal", "causal"), ("me_rule", "me_rule"), ("calibration_s", "calibration")):
            if hasattr(args, attr):
                kw[name] = getattr(args, attr)
        for name in ("landmarks_hz", "motion_hz"):
            if hasattr(args, name):
                kw[name] = getattr(args, name) or None     # 0 = every frame
        kw.update(overrides)
        return cls(**kw)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RecordingSettings":
        return cls(**d)

    def spotter_overrides(self) -> dict:
        spot = dict(self.spotter)
        spot.setdefault("rule", self.me_rule)
        return spot

    def pipeline_config(self, fps: float, *, labelled: bool, draw: bool = False, draw_fps: float | None = None):
        """The PipelineConfig for a source at ``fps``; ``labelled``: a recogniser is passed
        to the pipeline (else its config says "none" so that it loads nothing)."""
        return PipelineConfig(fps=fps, tracker=self.tracker, max_faces=self.max_faces, device=self.device,
                              engine=self.engine if labelled else "none", draw=draw, draw_fps=draw_fps,
                              calibration_s=self.calibration_s, landmarks_hz=self.landmarks_hz,
                              motion_hz=self.motion_hz,
                              spotter=self.spotter_overrides(), motion=dict(self.motion),
                              lookahead_s=0.0 if self.causal else PipelineConfig.lookahead_s)

    def key(self, engine_fingerprint: str = "") -> str:
        """A short stable hash of everything that changes the results (plus the engine
        file's own fingerprint: the same path with other weights is another setting)."""
        d = self.to_dict()
        payload = json.dumps({"v": SETTINGS_VERSION, "settings": d, "engine_file": engine_fingerprint},
                             sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def make_pipeline(source, settings: RecordingSettings, recognizer=None, *, draw: bool = False,
                  draw_fps: float | None = None):
    """A Pipeline for ``source`` with ``settings``, read ahead when the source is a
    recording (see Pipeline.prime_from); ``pipe.primed`` says how many samples it used.
    ``recognizer``: a loaded Recognizer (shared), or None for spotting only."""
    cfg = settings.pipeline_config(source.fps, labelled=recognizer is not None, draw=draw, draw_fps=draw_fps)
    pipe = Pipeline(cfg, recognizer, source_name=source.name)
    pipe.prime_from(source)
    return pipe


@dataclass
class Outcome:
    """How ``drive`` ended: frames processed, the run's summary, and why it stopped early
    (``stop``: the code the per-frame hook returned; ``interrupted``: Ctrl+C / SIGTERM)."""

    frames: int
    summary: Any
    interrupted: bool = False
    stop: int | None = None


def drive(source, pipe, sinks: Iterable, *, on_result: Callable[[Any], int | None] | None = None,
          max_frames: int | None = None, close_timeout: float = 60.0, track_process: bool = False) -> Outcome:
    """Every frame of ``source`` through ``pipe`` and to every sink (``handle``), then the
    pipeline closed (labels still computing waited for up to ``close_timeout`` s) and the
    events finalised there handed to the sinks (``handle_events``). ``on_result(result)``
    after each frame: None goes on, a number stops the loop (it comes back as
    ``Outcome.stop``). A KeyboardInterrupt (Ctrl+C, or SIGTERM where the front end maps it)
    ends the loop but still closes the pipeline, so the outputs are complete up to there.
    The sinks are not closed here: their owner does that. ``track_process``: a recording
    (file or frame folder) is decoded and tracked in a second process ahead of the frame
    loop (``realtime.stages.trackproc``: the same results, two cores busy); a live source
    is always tracked in the loop."""
    sinks = list(sinks)
    n, stop, interrupted = 0, None, False
    frames = TrackedRecording(source, pipe.config) if track_process and not source.live else source
    try:
        for frame in frames:
            r = pipe.process(frame)
            for s in sinks:
                s.handle(r)
            n += 1
            if on_result is not None:
                stop = on_result(r)
                if stop is not None:
                    break
            if max_frames and n >= max_frames:
                break
    except KeyboardInterrupt:
        interrupted = True
        log.warning("interrupted: finishing the outputs")
    finally:
        if frames is not source:
            frames.close()       # the second process, if the loop left early
    late = pipe.close(wait=True, timeout=close_timeout)
    for s in sinks:
        s.handle_events(late)
    return Outcome(frames=n, summary=pipe.summary(source), interrupted=interrupted, stop=stop)


__all__ = ["Outcome", "RecordingSettings", "SETTINGS_VERSION", "drive", "make_pipeline"]
