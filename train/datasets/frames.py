"""Frame files of a clip folder: finding, numbering, ordering and reading them.

Owns how a release's frame files are named and ordered (``trailing_number``,
``natural_key``, ``image_files``), ``FrameIndex`` (frame number -> file of one clip
folder, by the number ending each name or by position), ``read_frame`` (BGR uint8;
greyscale made three-channel with core.face.ensure_bgr, as the live path does), and which
frame stands in for an unannotated apex (``middle_frame``) or for a macro-expression's
apex (``pseudo_apex_frame``: the frame PSEUDO_APEX_STEP frames on disk after the onset, i.e.
the paper's 5th frame counting the onset as the 1st).
"""
from __future__ import annotations

import bisect
import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from core.face import ensure_bgr

# Macro-expressions: the paper's pseudo-apex is "the 5th frame of each macro-expression sample",
# counting the onset as the 1st (MOEXT.md): index onset + 4 in the frames on disk.
PSEUDO_APEX_STEP = 4
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


class FrameReadError(FileNotFoundError):
    """A frame file that is missing or that OpenCV cannot decode."""


_TRAILING_NUMBER = re.compile(r"(\d+)(?!.*\d)")


def trailing_number(name: str) -> int | None:
    """The last run of digits in a file name's stem: img46 -> 46, 006_05562 -> 5562."""
    m = _TRAILING_NUMBER.search(Path(name).stem)
    return int(m.group(1)) if m else None


def natural_key(name: str) -> tuple:
    """Sort key that orders frame2 before frame10."""
    return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name))


def image_files(folder: Path) -> list[str]:
    """Image file names in ``folder``, naturally sorted ([] if it is not a folder)."""
    try:
        names = [e.name for e in os.scandir(folder) if e.is_file() and not e.name.startswith(".")
                 and Path(e.name).suffix.lower() in IMAGE_EXTS]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(names, key=natural_key)


@dataclass(eq=False)
class FrameIndex:
    """The frames of one clip folder: frame number -> file name.

    Shared by every sample cut from the same clip (CAS(ME)^3 clips hold many events)."""

    dir: Path
    names: dict[int, str]

    @cached_property
    def numbers(self) -> list[int]:
        return sorted(self.names)

    def __contains__(self, n: int) -> bool:
        return n in self.names

    def __len__(self) -> int:
        return len(self.names)

    def path(self, n: int) -> Path:
        try:
            return self.dir / self.names[n]
        except KeyError:
            lo, hi = (self.numbers[0], self.numbers[-1]) if self.names else (None, None)
            raise FrameReadError(
                f"{self.dir}: no frame number {n} (this clip has {len(self.names)} frames, "
                f"numbers {lo}..{hi})"
            ) from None

    @classmethod
    def by_number(cls, folder: Path, prefer_reg: bool = False) -> "FrameIndex":
        """Index frames by the number that ends their file name.

        When a folder holds both img46.jpg and reg_img46.jpg, ``prefer_reg`` chooses."""
        names: dict[int, str] = {}
        for name in image_files(folder):
            n = trailing_number(name)
            if n is None:
                continue
            if n in names:
                is_reg = name.lower().startswith("reg")
                if is_reg != prefer_reg:
                    continue
            names[n] = name
        return cls(folder, names)

    @classmethod
    def by_position(cls, folder: Path) -> "FrameIndex":
        """Index frames by their 0-based position in the naturally sorted file list."""
        return cls(folder, dict(enumerate(image_files(folder))))


def read_frame(path: str | Path) -> np.ndarray:
    """Read one frame as BGR uint8 (H, W, 3); greyscale gets three equal channels
    (core.face.ensure_bgr, the same call the live path makes)."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        what = "missing" if not Path(path).is_file() else "not an image OpenCV can decode"
        raise FrameReadError(f"{path}: frame file {what}; check the dataset copy is complete")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise FrameReadError(f"{path}: unsupported pixel type {img.dtype}; expected 8-bit frames")
    return ensure_bgr(img)


def middle_frame(numbers: Sequence[int], onset: int, offset: int) -> int:
    """The existing frame nearest (onset + offset) / 2, the earlier one on a tie."""
    inside = [n for n in numbers if onset <= n <= offset] or list(numbers)
    target = (onset + offset) / 2
    return min(inside, key=lambda n: (abs(n - target), n))


def pseudo_apex_frame(numbers: Sequence[int], onset: int, offset: int, step: int = PSEUDO_APEX_STEP) -> int:
    """The frame ``step`` frames on disk after the onset (step 4: the 5th frame counting the
    onset as the 1st, the paper's pseudo-apex), at most the offset."""
    if step < 1:
        raise ValueError(f"pseudo-apex step must be >= 1 (frames after the onset), got {step}")
    i = bisect.bisect_left(numbers, onset)
    last = bisect.bisect_right(numbers, offset) - 1
    return numbers[max(i, min(i + step, last, len(numbers) - 1))]
