"""The rolling buffer of face regions the recognition pair is cut from.

Each frame with a face leaves a copy of its face region (the 224x224 crop's footprint
grown by a margin, not the whole frame) and that frame's own raw alignment transform;
the last ``seconds`` of them are kept, plus the frames pinned while an event is open
(its onset and peak), so that the (onset, apex) pair can be aligned once the apex is
confirmed. Also the geometry that goes with it: which image region a crop shows
(``crop_footprint``, ``region_of``) and a transform moved into a region's own
coordinates (``shift_transform``)."""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Iterable

import cv2
import numpy as np

from core.face import CROP_SIZE


def crop_footprint(transform: np.ndarray, size: int = CROP_SIZE) -> tuple[float, float, float, float]:
    """Bounding box (x0, y0, x1, y1), in image pixels, of what a size x size crop shows."""
    inv = cv2.invertAffineTransform(np.asarray(transform, np.float64))
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64)
    pts = corners @ inv[:, :2].T + inv[:, 2]
    return float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())


def region_of(image_wh: tuple[int, int], transform: np.ndarray, margin: float) -> tuple[int, int, int, int]:
    """Integer region (x0, y0, x1, y1) inside the image covering the crop footprint plus margin."""
    x0, y0, x1, y1 = crop_footprint(transform)
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    w, h = image_wh
    a, b = max(0, int(math.floor(x0 - mx))), max(0, int(math.floor(y0 - my)))
    c, d = min(w, int(math.ceil(x1 + mx))), min(h, int(math.ceil(y1 + my)))
    if c <= a or d <= b:  # the face is (almost) entirely outside: keep the whole frame
        return 0, 0, w, h
    return a, b, c, d


def shift_transform(transform: np.ndarray, offset: tuple[float, float]) -> np.ndarray:
    """The transform for a region cut at ``offset`` = (x0, y0): image p = region r + offset,
    so crop = A p + b = A r + (A offset + b)."""
    m = np.asarray(transform, np.float64).copy()
    m[:, 2] = m[:, :2] @ np.asarray(offset, np.float64) + m[:, 2]
    return m


@dataclass
class BufferedFrame:
    """One frame in the rolling buffer: a face-region copy and the frame's own transform."""

    index: int
    t: float
    captured_at: float
    region: np.ndarray        # (h, w, 3) BGR copy of the face region
    offset: tuple[int, int]   # (x0, y0) of the region in the frame
    transform: np.ndarray     # 2x3 raw alignment transform of this frame (image -> crop)
    box: tuple[int, int, int, int] | None = None   # the face box (x, y, w, h), source pixels


class FrameBuffer:
    """The last ``seconds`` of face regions, looked up by frame index.

    ``pin`` keeps chosen frames past that horizon (the open event's onset and peak: a
    macro-expression may last longer than the buffer)."""

    def __init__(self, fps: float, seconds: float) -> None:
        self.maxlen = int(math.ceil(fps * seconds)) + 2
        self._items: deque[BufferedFrame] = deque()
        self._by_index: dict[int, BufferedFrame] = {}
        self._pinned: dict[int, BufferedFrame] = {}

    def add(self, item: BufferedFrame) -> None:
        self._items.append(item)
        self._by_index[item.index] = item
        while len(self._items) > self.maxlen:
            old = self._items.popleft()
            self._by_index.pop(old.index, None)

    def get(self, index: int) -> BufferedFrame | None:
        return self._by_index.get(index) or self._pinned.get(index)

    def pin_only(self, indices: Iterable[int]) -> None:
        """Pin exactly these frames (those still held); unpin every other."""
        keep = {}
        for i in indices:
            item = self.get(i)
            if item is not None:
                keep[i] = item
        self._pinned = keep

    def last(self) -> BufferedFrame | None:
        return self._items[-1] if self._items else None

    def clear(self) -> None:
        self._items.clear()
        self._by_index.clear()
        self._pinned.clear()

    def __len__(self) -> int:
        return len(self._items)
