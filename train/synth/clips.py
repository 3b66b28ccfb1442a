"""The standard clip generator: a real face still animated by scheduled events, seen by a camera.

Owns ``make_clip`` (the events of timing.schedule_events rendered lazily, frame by frame:
the AU warp of the face ROI during events, head drift as one affine warp of the head region
over a static background, then exposure, flicker, noise and occasional JPEG) and
``write_clip`` (the same through output.write_rendered), and ``clip_pose`` / ``ClipPose``
(where the face is in each frame: the first draws of a clip's render seed, shared with
train.synth.multiface, whose ground truth boxes each face). The standard set's clips are these.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from core.events import GroundTruth
from core.face import transform_points
from train.synth.camera import (
    CameraLook,
    _apply_cast,
    _cast_gains,
    _check_size,
    _Drift,
    _face_centre,
    _noise_bank,
    head_motion,
    head_region,
    placement,
)
from train.synth.config import REF_FACE_WIDTH, SynthConfig
from train.synth.identities import FaceStill
from train.synth.output import write_rendered
from train.synth.rig import face_rig
from train.synth.timing import EventPlan, _frames, schedule_events


def make_clip(identity: str = "sample_video", fps: float = 200.0, seconds: float = 10.0,
              events: str | Sequence = "mixed", size: tuple[int, int] = (640, 480), seed: int = 0,
              config: SynthConfig | None = None, source: str = "") -> tuple[Iterator[np.ndarray], list[GroundTruth]]:
    """A synthetic clip of a real face: (lazy iterator of BGR frames, ground truth).

    The still is placed at a realistic face size, animated by the scheduled events (see
    schedule_events) and seen through a camera with drift, flicker, noise and occasional
    JPEG re-encoding. The same arguments always give the same frames and ground truth."""
    if fps <= 0 or seconds <= 0:
        raise ValueError(f"fps and seconds must be positive, got fps={fps}, seconds={seconds}")
    cfg = config or SynthConfig()
    size = _check_size(size)
    n = _frames(seconds, fps)
    plan_rng, render_seed = np.random.default_rng([seed, 1]), [seed, 2]
    plans = schedule_events(n, fps, plan_rng, events, cfg)
    truths = [p.truth(fps, source) for p in plans]
    face_rig(identity)                      # detect now: errors surface before iterating
    return _render_clip(identity, plans, n, fps, size, render_seed, cfg), truths


@dataclass(frozen=True)
class ClipPose:
    """Where a standard clip's face is: the still -> frame placement (3x3), the face centre
    in the frame, the head's slow drift and the face's jaw width in the frame. ``at(t)``:
    the still -> frame transform at t s, the one the renderer warps the head with."""

    place: np.ndarray
    centre: np.ndarray
    drift: _Drift
    face_width: float

    def at(self, t: float) -> np.ndarray:
        dx, dy, ang, dz = self.drift.at(t)
        return head_motion(dx, dy, ang, dz, self.centre) @ self.place


def clip_pose(still: FaceStill, size: tuple[int, int], rng: np.random.Generator, cfg: SynthConfig) -> ClipPose:
    """The first draws of a standard clip's render seed: face size, roll and offset in the
    frame, then the drift. The renderer and anything that needs the face's position in a
    frame (train.synth.multiface's face boxes) draw them the same way."""
    scale_to_frame = min(size[0] / 640, size[1] / 480)
    face_w = float(rng.uniform(*cfg.face_width)) * scale_to_frame
    place = placement(still, size, face_w, float(rng.uniform(-cfg.pose_deg, cfg.pose_deg)),
                      (float(rng.uniform(-1, 1)) * cfg.offset_frac[0] * size[0],
                       float(rng.uniform(-1, 1)) * cfg.offset_frac[1] * size[1]))
    centre = transform_points(_face_centre(still.landmarks)[None], place[:2])[0]
    return ClipPose(place, centre, _Drift(rng, cfg), face_w)


def _render_clip(identity: str, plans: list[EventPlan], n: int, fps: float, size: tuple[int, int],
                 seed, cfg: SynthConfig) -> Iterator[np.ndarray]:
    """Frames of a clip. The scene (still placed in the frame) is rendered once; per frame
    only the head region is re-rendered: AU warp in still pixels (face ROI, during events),
    head drift by one affine warp of that region over the static background, then the
    camera's gain, noise and JPEG."""
    rng = np.random.default_rng(seed)
    rig = face_rig(identity)
    still = rig.still
    pose = clip_pose(still, size, rng, cfg)
    place, centre, drift, face_w = pose.place, pose.centre, pose.drift, pose.face_width
    lm_frame = transform_points(still.landmarks, place[:2])
    base = _apply_cast(still.image, _cast_gains(rng, cfg.colour_cast))
    bank = _noise_bank(rng, size, float(rng.uniform(*cfg.noise_sigma)))
    look = CameraLook(rng, cfg, bank)
    fields = {i: rig.field(p.aus, p.sides) for i, p in enumerate(plans)}

    scene = cv2.warpAffine(base, place[:2], size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    drift_room = 3 * (cfg.drift_px + cfg.drift_deg * face_w / 60 + cfg.drift_scale * face_w) + 2
    (x0, y0, x1, y1), mask = head_region(lm_frame, size, drift_room)
    to_roi = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1.0]])
    background = np.ascontiguousarray(scene[y0:y1, x0:x1])
    inv_mask = 1.0 - mask
    work = base.copy()
    active = None
    for i in range(n):
        t = i / fps
        now = next((k for k, p in enumerate(plans) if p.onset_frame <= i <= p.offset_frame), None)
        if now is not None:
            p = plans[now]
            env = float(p.envelope(i))
            if p.kind == "blink":
                amount = env * p.amplitude * rig.eye_opening
            else:   # amplitude quoted at REF_FACE_WIDTH in the frame, converted to still px
                amount = env * p.amplitude * still.face_width / REF_FACE_WIDTH
            rig.warp(fields[now], amount, source=base, out=work)
        elif active is not None:
            work[rig.y0:rig.y1, rig.x0:rig.x1] = base[rig.y0:rig.y1, rig.x0:rig.x1]
        active = now
        dx, dy, ang, dz = drift.at(t)
        m = to_roi @ head_motion(dx, dy, ang, dz, centre) @ place
        head = cv2.warpAffine(work, m[:2], (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
        frame = scene.copy()
        frame[y0:y1, x0:x1] = cv2.blendLinear(head, background, mask, inv_mask)
        frame = look.apply(frame, t, rng)
        yield frame


def write_clip(path: str | Path, identity: str = "sample_video", fps: float = 200.0, seconds: float = 10.0,
               events: str | Sequence = "mixed", size: tuple[int, int] = (640, 480), seed: int = 0,
               config: SynthConfig | None = None) -> tuple[Path, Path, list[GroundTruth]]:
    """Write a clip (.avi = MJPG, .mp4 = mp4v: both round-trip with OpenCV here) and its
    ground truth (JSON lines, core.events.GroundTruth). Returns (video, gt, truths)."""
    video, gt, truths, _ = write_rendered(
        path, fps, size, lambda source: make_clip(identity, fps, seconds, events, size, seed, config, source=source))
    return video, gt, truths
