"""One followed face's share of the live path: its alignment, motion signal and spotter.

A ``Pipeline`` keeps one ``FaceLane`` per followed face (``PipelineConfig.max_faces``):
every face has its own smoothed (and, through an event, frozen) alignment, rolling buffer
of face regions, motion signal with its calm level, and online spotter, so one person's
expression never opens or holds another's event. The stream's tracker, event book
(shared, keyed by face) and recognition worker (one batched engine call for the pairs of
all faces that coincide) stay in the pipeline.

``step`` runs steps 2-4 of ``realtime.stages.pipeline`` (align, motion, spot) for one
face on one frame and returns its ``FaceResult`` and the spotter's updates.
"""
from __future__ import annotations

import math
import time
from collections import deque

import numpy as np

from core.face import alignment_transform
from realtime.stages.framebuffer import BufferedFrame, FrameBuffer, region_of
from realtime.stages.motion import flow_crop
from realtime.stages.rate import RateLimit
from realtime.stages.results import FaceResult
from realtime.stages.tracker import SmoothedTransform


APEX_SLACK_S = 0.1   # an event's refined apex has been seen up to 3 frames (0.1 s at 30 fps) from its raw peak


class FaceLane:
    """Per-face state (see the module docstring). ``face_id`` is None until a face is given."""

    def __init__(self, fps: float, smooth_s: float, buffer_s: float, curve_s: float, motion, spotter,
                 flow_size: int, region_margin: float, motion_hz: float | None = None) -> None:
        self.face_id: int | None = None
        self.smoother = SmoothedTransform.for_fps(fps, smooth_s)
        self.motion = motion
        self.spotter = spotter
        self.buffer = FrameBuffer(fps, buffer_s)
        self.flow_size = flow_size
        self.apex_slack = max(1, round(APEX_SLACK_S * fps))   # frames pinned each side of an open event's peak
        self.region_margin = region_margin
        self.curve: deque[tuple[float, float]] = deque(maxlen=int(math.ceil(fps * curve_s)) + 2)  # (t, score|nan)
        self.raw: np.ndarray | None = None      # the latest unsmoothed alignment transform
        self.last_seen_t: float | None = None   # source time the face was last tracked
        self.lost = False                       # motion/spotter already reset for this loss
        self.frames = 0                         # frames with this face
        self.rate = RateLimit(fps, motion_hz)   # frames measured by the motion stage and the spotter
        self.sample = None                      # the latest motion sample

    def step(self, frame, image: np.ndarray, tr, timings: dict) -> tuple[FaceResult, list]:
        """Align, measure and spot this face on one frame (``tr``: its TrackResult).
        Adds "align", "motion" and "spot" times to ``timings``."""
        self.last_seen_t = frame.t
        self.lost = False
        self.frames += 1
        t0 = time.perf_counter()
        held = getattr(tr, "held", False) and self.raw is not None
        raw = self.raw if held else alignment_transform(tr.landmarks)
        self.raw = raw
        smooth = self.smoother.update(raw, t=frame.t)
        h, w = image.shape[:2]
        x0, y0, x1, y1 = region_of((w, h), raw, self.region_margin)
        box = tr.box
        self.buffer.add(BufferedFrame(frame.index, frame.t, frame.captured_at, image[y0:y1, x0:x1].copy(), (x0, y0),
                                      raw, (round(box.left), round(box.top), round(box.width), round(box.height))))
        updates = []
        if self.rate.due(frame.t) or self.sample is None:
            # the motion stage's grey crop, warped from the whole frame (borders as trained)
            self.rate.mark(frame.t)
            crop = flow_crop(image, (0, 0), smooth, self.flow_size)
            t1 = time.perf_counter()
            timings["align"] = timings.get("align", 0.0) + (t1 - t0) * 1e3

            # motion: reference held while the spotter has an event open
            self.sample = self.motion.update(crop, hold=self.spotter.holding, t=frame.t)
            t2 = time.perf_counter()
            timings["motion"] = timings.get("motion", 0.0) + (t2 - t1) * 1e3

            updates = self.spotter.update(frame.index, frame.t, self.sample)
            self.follow_spotter(updates)
            timings["spot"] = timings.get("spot", 0.0) + (time.perf_counter() - t2) * 1e3
        else:   # between motion samples: buffered for the pair, the figures are the last sample's
            timings["align"] = timings.get("align", 0.0) + (time.perf_counter() - t0) * 1e3
        sample = self.sample
        score = self.spotter.last_score
        self.curve.append((frame.t, score if score is not None else math.nan))
        res = FaceResult(face_id=tr.face_id, box=tr.box, landmarks=tr.landmarks, value=float(sample.value),
                         score=score, regions=dict(sample.regions), threshold=self.spotter.threshold,
                         in_event=bool(self.spotter.holding), calibrating=bool(self.spotter.calibrating))
        return res, updates

    def follow_spotter(self, updates=()) -> None:
        """Freeze the alignment while an event is open; pin its onset and peak frames, and the
        onset and apex of this frame's updates: the event book cuts their pair after the
        spotter has closed the event (a late "apex" or "final" update of a long event
        names frames older than the buffer's horizon)."""
        keep = [f for u in updates for f in (u.onset_frame, u.apex_frame)]
        ev = self.spotter.open_event
        if ev is not None:
            self.smoother.freeze()
            # the refined apex (a fit over the bump's top) lands near the raw peak, not on it
            keep += [ev.onset_frame, *range(ev.peak_frame - self.apex_slack, ev.peak_frame + self.apex_slack + 1)]
        else:
            self.smoother.unfreeze()
        self.buffer.pin_only(keep)

    def signal_history(self) -> tuple[np.ndarray, np.ndarray]:
        """(t, score) of the last ``curve_s`` seconds (nan where no face)."""
        if not self.curve:
            return np.zeros(0), np.zeros(0)
        a = np.asarray(self.curve, dtype=np.float64)
        return a[:, 0], a[:, 1]

    def gap(self, t: float) -> None:
        """A frame without this face: a gap in its curve."""
        self.curve.append((t, math.nan))

    # -- resets ----------------------------------------------------------------------------
    def recalibrate(self) -> None:
        self.motion.reset()
        self.rate.reset()
        self.sample = None
        self.smoother.unfreeze()
        self.spotter.recalibrate()

    def face_lost(self) -> None:
        """Face gone for longer than the pipeline's ``loss_reset_s``: the signal starts over
        when it returns, the calibration is kept (same person)."""
        self.motion.reset()
        self.rate.reset()
        self.sample = None
        self.smoother.reset()
        self.spotter.interrupt()
        self.buffer.clear()
        self.lost = True

    def new_subject(self) -> None:
        """Another person in this lane (one followed face): calibrate on them from scratch."""
        self.motion.reset()
        self.rate.reset()
        self.sample = None
        self.smoother.reset()
        self.spotter.reset()
        self.buffer.clear()
