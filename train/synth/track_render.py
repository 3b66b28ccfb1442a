"""Rendering overlapping Tracks into frames: the hard clips' and the sequences' renderer.

Owns ``_render_tracks`` (as the standard clips' renderer, with tracks that overlap: the
face-warp tracks' fields summed into one remap of the face ROI, head tracks, drift,
breathing and jitter composed into one affine warp of the head region, light tracks as a
moving gain map, then the camera's gain, flicker, noise and JPEG) and the shading of the
mouth's inside where a jaw field parts the lips (``_darken_mouth``, MOUTH_DARK).
"""
from __future__ import annotations

import math
from typing import Iterator

import cv2
import numpy as np

from core.face import transform_points
from train.synth.camera import (
    CameraLook,
    _apply_cast,
    _cast_gains,
    _Drift,
    _face_centre,
    _noise_bank_blurred,
    head_motion,
    head_region,
    placement,
)
from train.synth.config import REF_FACE_WIDTH, SynthConfig
from train.synth.rig import _gaze_field, face_axes, face_field, face_rig
from train.synth.tracks import SPEECH_FIELDS, Track

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
    look = CameraLook(rng, cam, bank)
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
        frame = look.apply(frame, t, rng)
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
