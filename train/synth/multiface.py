"""Clips with several people side by side: every face of a panel, an interview, a group call.

Owns ``make_multi_clip`` / ``write_multi_clip`` (two or three real faces in one frame, each
animated independently, ground truth per face), the per-face schedule
(``schedule_face``: a macro-expression, a blink and two micro-expressions in random order,
then more as the standard "mixed" mode draws them), the composition of the faces' panels
(cross-faded seams) and the one camera they are all seen through.

Each face is a standard clip of its own (clips._render_clip, its own seeds, its own
events, head drift and roll) rendered into a panel of the frame without the camera's
nuisance; the panels overlap by ``SEAM_PX`` and are cross-faded there, so the defocused
backgrounds of the stills run into each other instead of meeting at a hard line. The camera
(exposure, slow light drift, flicker, sensor noise, occasional JPEG) is then applied once to
the whole frame, as one camera would.

Ground truth: one ``core.events.GroundTruth`` per interval as for a single face, with
``face_box`` = [x, y, width, height] (integers, frame pixels) of that interval's face at its
apex: ``core.face.box_from_landmarks`` (the tracker's box convention) of the still's 68
landmarks moved by the face's placement and drift at the apex (clips.clip_pose: the same
draws the renderer makes). The expression's own few-pixel motion of the landmarks is not
included. Boxes of different faces never overlap; the ground truth is in time order.
"""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from core.events import GroundTruth
from core.face import box_from_landmarks, transform_points
from train.synth.camera import CameraLook, _check_size, _noise_bank
from train.synth.clips import _render_clip, clip_pose
from train.synth.config import KINDS, LEAD_IN_S, MIN_GAP_S, SynthConfig
from train.synth.identities import IDENTITIES, identities_for
from train.synth.output import write_rendered
from train.synth.rig import face_rig
from train.synth.timing import EventPlan, _frames, sample_event

FACE_COUNTS = (2, 3)
PANEL_SIZE = (640, 480)         # one face's share of the default frame (faces * 640 x 480)
SEAM_PX = 96                    # neighbouring panels overlap (and are cross-faded) this wide
MIN_FACE_SCALE = 0.75           # panel scale vs 640x480: faces stay >= ~100 px wide (BlazeFace)
REQUIRED = ("macro", "blink", "micro", "micro")   # every face holds these, in random order
MIN_SECONDS = 8.5               # REQUIRED always fits: 1.5 s lead + 2.2 + 0.3 + 2 x 0.48 s + 3 gaps + tail


def default_size(faces: int) -> tuple[int, int]:
    """The frame of a ``faces``-face clip: one 640x480 panel per face, side by side."""
    return PANEL_SIZE[0] * faces, PANEL_SIZE[1]


def pick_identities(faces: int, split_or_names: str | Sequence[str] = "eval", start: int = 0) -> list[str]:
    """``faces`` identities of a split (or a list), different people first: the split's
    identities ordered so that each person appears once before any appears twice, then
    taken cyclically from ``start``."""
    names = identities_for(split_or_names)
    seen: dict[str, int] = {}
    ranked = []
    for n in names:
        k = seen.get(IDENTITIES[n].person, 0)
        seen[IDENTITIES[n].person] = k + 1
        ranked.append((k, len(ranked), n))
    order = [n for _, _, n in sorted(ranked)]
    return [order[(start + i) % len(order)] for i in range(faces)]


def schedule_face(n_frames: int, fps: float, rng: np.random.Generator, cfg: SynthConfig) -> list[EventPlan]:
    """One face's events: after a neutral lead-in of LEAD_IN_S plus up to 0.5 s (so faces
    do not start together), REQUIRED in random order MIN_GAP_S apart, then events of the
    "mixed" mode with the standard clips' gaps until the clip ends."""
    lead, gap, tail = math.ceil(LEAD_IN_S * fps), math.ceil(MIN_GAP_S * fps), math.ceil(0.2 * fps)
    last = n_frames - 1 - tail
    f = lead + int(rng.integers(0, max(1, int(fps // 2))))
    plans: list[EventPlan] = []
    for kind in rng.permutation(REQUIRED):
        plan = sample_event(str(kind), None, f, fps, rng, cfg)
        if plan.offset_frame > last:
            raise ValueError(f"a clip of {n_frames / fps:g} s is too short for every face to hold "
                             f"{', '.join(REQUIRED)}: make it at least {MIN_SECONDS:g} s long")
        plans.append(plan)
        f = plan.offset_frame + gap
    p = np.asarray(cfg.mix, float) / sum(cfg.mix)
    while True:
        f += _frames(float(rng.uniform(*cfg.gap_extra_s)), fps)
        plan = sample_event(KINDS[int(rng.choice(3, p=p))], None, f, fps, rng, cfg)
        if plan.offset_frame > last:
            return plans
        plans.append(plan)
        f = plan.offset_frame + gap


def face_box_xywh(landmarks68: np.ndarray) -> list[int]:
    """[x, y, width, height] (integers) of the tracker's box for these 68 landmarks."""
    b = box_from_landmarks(landmarks68)
    return [int(round(b.left)), int(round(b.top)), int(round(b.width)), int(round(b.height))]


def _layout(size: tuple[int, int], faces: int) -> tuple[list[int], tuple[int, int], int]:
    """Slot boundaries along x (faces + 1 of them), the panel size (each panel reaches
    SEAM_PX / 2 past its slot on both sides) and the seam's half width."""
    w, h = size
    bounds = [int(round(i * w / faces)) for i in range(faces + 1)]
    half = SEAM_PX // 2
    panel = (max(b - a for a, b in zip(bounds, bounds[1:])) + 2 * half, h)
    if min(panel[0] / PANEL_SIZE[0], h / PANEL_SIZE[1]) < MIN_FACE_SCALE:
        need = (int(math.ceil(MIN_FACE_SCALE * PANEL_SIZE[0])) - 2 * half,
                int(math.ceil(MIN_FACE_SCALE * PANEL_SIZE[1])))
        raise ValueError(f"a {w}x{h} frame is too small for {faces} faces: each face needs at least "
                         f"{need[0]}x{need[1]} px (e.g. --size {need[0] * faces}x{need[1]}), so the face "
                         f"detector finds it")
    return bounds, panel, half


def _seam_weights(h: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Cross-fade weights across a seam (left panel, right panel): a smooth step."""
    u = (np.arange(width, dtype=np.float32) + 0.5) / width
    right = np.broadcast_to(u * u * (3 - 2 * u), (h, width)).astype(np.float32)
    return np.ascontiguousarray(1 - right), np.ascontiguousarray(right)


def make_multi_clip(identities: Sequence[str], fps: float = 200.0, seconds: float = 10.0,
                    size: tuple[int, int] | None = None, seed: int = 0, config: SynthConfig | None = None,
                    source: str = "") -> tuple[Iterator[np.ndarray], list[GroundTruth]]:
    """A clip of 2 or 3 faces side by side: (lazy iterator of BGR frames, ground truth with
    ``face_box`` on every interval, in time order). Face k (left to right) is
    ``identities[k]``, with its own events (schedule_face, seed [seed, k, 1]) and look
    (seed [seed, k, 2]); the camera draws from [seed, 99]. ``size``: default one 640x480
    panel per face. Deterministic for the same arguments."""
    faces = len(identities)
    if faces not in FACE_COUNTS:
        raise ValueError(f"a multi-face clip holds {' or '.join(map(str, FACE_COUNTS))} faces, got {faces}")
    if fps <= 0 or seconds <= 0:
        raise ValueError(f"fps and seconds must be positive, got fps={fps}, seconds={seconds}")
    if seconds < MIN_SECONDS:
        raise ValueError(f"multi-face clips are at least {MIN_SECONDS:g} s long (every face holds "
                         f"{', '.join(REQUIRED)}), got {seconds:g} s")
    cam = config or SynthConfig()
    size = _check_size(size or default_size(faces))
    bounds, panel, half = _layout(size, faces)
    # each face's own render: placement, drift and colour, without the camera's nuisance
    face_cfg = replace(cam, clip_gain=(1.0, 1.0), light_drift=0.0, flicker=0.0, noise_sigma=(0.0, 0.0),
                       jpeg_fraction=0.0)
    n = _frames(seconds, fps)
    truths: list[GroundTruth] = []
    renders = []
    for k, identity in enumerate(identities):
        still = face_rig(identity).still        # detect now: errors surface before iterating
        plans = schedule_face(n, fps, np.random.default_rng([seed, k, 1]), face_cfg)
        pose = clip_pose(still, panel, np.random.default_rng([seed, k, 2]), face_cfg)
        x0 = bounds[k] - half
        for p in plans:
            lm = transform_points(still.landmarks, pose.at(p.apex_frame / fps)[:2]) + (x0, 0)
            truths.append(replace(p.truth(fps, source), face_box=face_box_xywh(lm)))
        renders.append((x0, _render_clip(identity, plans, n, fps, panel, [seed, k, 2], face_cfg)))
    truths.sort(key=lambda t: (t.onset_frame, t.face_box[0]))
    return _compose(renders, n, fps, size, bounds, half, cam, np.random.default_rng([seed, 99])), truths


def _compose(renders: list[tuple[int, Iterator[np.ndarray]]], n: int, fps: float, size: tuple[int, int],
             bounds: list[int], half: int, cam: SynthConfig, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """The faces' panels into one frame (cross-faded seams), then one camera over it:
    exposure, slow light drift, flicker, sensor noise and occasional JPEG (``cam``)."""
    w, h = size
    bank = _noise_bank(rng, size, float(rng.uniform(*cam.noise_sigma)))
    look = CameraLook(rng, cam, bank)
    left_w, right_w = _seam_weights(h, 2 * half)
    last = len(renders) - 1
    for i in range(n):
        t = i / fps
        panels = [(x0, next(frames)) for x0, frames in renders]
        frame = np.empty((h, w, 3), np.uint8)
        for k, (x0, p) in enumerate(panels):
            lo = 0 if k == 0 else bounds[k] + half
            hi = w if k == last else bounds[k + 1] - half
            frame[:, lo:hi] = p[:, lo - x0:hi - x0]
            if k > 0:                          # the seam with the panel on the left
                a, b = bounds[k] - half, bounds[k] + half
                px0, prev = panels[k - 1]
                frame[:, a:b] = cv2.blendLinear(prev[:, a - px0:b - px0], p[:, a - x0:b - x0], left_w, right_w)
        frame = look.apply(frame, t, rng)
        yield frame


def write_multi_clip(path: str | Path, identities: Sequence[str], fps: float = 200.0, seconds: float = 10.0,
                     size: tuple[int, int] | None = None, seed: int = 0,
                     config: SynthConfig | None = None) -> tuple[Path, Path, list[GroundTruth]]:
    """Write a multi-face clip (.avi = MJPG, .mp4 = mp4v) and its ground truth beside it
    (clip.gt.jsonl, ``face_box`` on every line). Returns (video, gt, truths)."""
    size = _check_size(size or default_size(len(identities)))
    video, gt, truths, _ = write_rendered(
        path, fps, size, lambda source: make_multi_clip(identities, fps, seconds, size, seed, config, source),
        threaded=True)
    return video, gt, truths
