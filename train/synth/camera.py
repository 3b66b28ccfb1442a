"""The camera between the animated still and a frame: placement, head motion, light, noise, JPEG.

Owns the similarity that places a still's face in the frame (``placement``), slow head
drift (``_Drift``) and frame-space head motion (``head_motion``), the head region that is
re-rendered per frame over a static background (``head_region``), sensor noise banks
(plain and demosaic-blurred), white balance casts, JPEG re-encoding and the frame-size
check every generator applies (``_check_size``).
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from train.synth.config import SynthConfig
from train.synth.identities import FaceStill


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


def _check_size(size) -> tuple[int, int]:
    w, h = (int(v) for v in size)
    if w < 64 or h < 64:
        raise ValueError(f"frame size must be at least 64x64, got {w}x{h}")
    return w, h


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


class CameraLook:
    """One camera's look over a whole clip, drawn once from ``rng`` (after the sensor-noise
    ``bank``): exposure gain, slow light drift, mains flicker; ``apply`` puts it, the sensor
    noise and occasional JPEG on each frame."""

    def __init__(self, rng: np.random.Generator, cfg: SynthConfig, bank) -> None:
        self.cfg, self.bank = cfg, bank
        self.gain0 = float(rng.uniform(*cfg.clip_gain))
        self.slow_w, self.slow_p = 2 * np.pi / rng.uniform(3, 10), rng.uniform(0, 2 * np.pi)
        self.fl_w, self.fl_p = 2 * np.pi * rng.uniform(*cfg.flicker_hz), rng.uniform(0, 2 * np.pi)

    def apply(self, frame: np.ndarray, t: float, rng: np.random.Generator) -> np.ndarray:
        cfg = self.cfg
        gain = self.gain0 * (1 + cfg.light_drift * (math.sin(self.slow_w * t + self.slow_p) - math.sin(self.slow_p))
                             + cfg.flicker * math.sin(self.fl_w * t + self.fl_p))
        if gain != 1.0:
            frame = cv2.convertScaleAbs(frame, alpha=gain)
        frame = _add_noise(frame, self.bank, rng)
        if cfg.jpeg_fraction > 0 and rng.random() < cfg.jpeg_fraction:
            frame = _jpeg(frame, int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)))
        return frame
