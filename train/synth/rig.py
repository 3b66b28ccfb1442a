"""The expression model: action units (AUs) as displacement fields anchored on a face's landmarks.

Owns the AU anchors (``AU_ANCHORS``: Gaussian-weighted displacements around dlib's 68
points, one list per AU), ``FaceRig`` (a still prepared for warping: a face ROI grid, one
cached unit field per AU and side, and ``warp`` by cv2.remap), the jaw fields that part the
lips (``JAW_AUS``, ``jaw_field``, ``face_field``) and the gaze field, and which AUs make each
class's expression (``CLASS_AUS``, ``sample_aus``, ``sample_sides``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import cv2
import numpy as np

from core.protocols import DEMO_3
from train.synth.identities import FaceStill, load_still


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
