"""The common ground of every frame source: ``Frame``, the ``Source`` base class, the
errors raised at open time, and the small helpers the file, folder, camera and stream
sources share (frame-rate checks, natural sorting, truncation tolerance, stream
detection, ``SafeCapture`` around ``cv2.VideoCapture``). Nothing here reads frames by
itself; see ``realtime.stages.sources`` for the policies every source follows."""
from __future__ import annotations

import logging
import math
import os
import re
import stat
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator

import cv2
import numpy as np

from core.face import ensure_bgr

log = logging.getLogger("realtime.stages.sources")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
MAX_FPS = 10_000.0          # anything above is a broken header, not a camera
MAX_SIDE = 16_384           # refuse absurd frame sizes before allocating them


class SourceError(RuntimeError):
    """A frame source that could not be opened or read; the message says what to do."""


class CameraError(SourceError):
    """A camera index that does not open, or a camera that stopped delivering frames."""


class VideoFileError(SourceError):
    """A video path that is missing, not a video, or whose header is unusable."""


class ImageFolderError(SourceError):
    """A frame folder that is missing, empty or holds no readable image."""


@dataclass
class Frame:
    """One frame and its timing (see the module docstring for the clocks)."""

    index: int
    t: float
    image: np.ndarray  # (H, W, 3) uint8 BGR
    captured_at: float = field(default_factory=time.perf_counter)
    decode_ms: float = 0.0
    # (tracking results, tracker exception or None) when Pipeline.track_ahead tracked it already
    tracked: tuple | None = field(default=None, repr=False)

    @classmethod
    def from_array(cls, image: np.ndarray, index: int, fps: float | None = None,
                   t: float | None = None) -> "Frame":
        """Wrap an array from elsewhere (a browser stream, a test): ``t`` defaults to index / fps."""
        if t is None:
            if not fps:
                raise ValueError("give t, or fps so that t = index / fps")
            t = index / fps
        return cls(index=index, t=float(t), image=ensure_bgr(np.asarray(image)))


class Source:
    """Base class: iteration yields ``Frame``s; see the module docstring."""

    live = False

    def __init__(self, name: str, fps: float) -> None:
        self.name = name
        self.fps = float(fps)
        self.frames_read = 0
        self.dropped = 0
        self.faults: dict[str, int] = {}
        self.end_reason: str | None = None
        self.messages: list[str] = []
        self.size: tuple[int, int] | None = None  # (width, height) of the first frame
        self._closed = False

    # -- reporting ------------------------------------------------------------------
    def _fault(self, kind: str, message: str | None = None, *, once: bool = False, count: int = 1) -> None:
        first = kind not in self.faults
        self.faults[kind] = self.faults.get(kind, 0) + count
        if message and (first or not once):
            self._say(message)

    def _say(self, message: str) -> None:
        self.messages.append(message)
        log.warning(message)

    def _conform(self, image: np.ndarray, index: int) -> np.ndarray:
        """Three channels, and the first frame's size for every later frame."""
        image = ensure_bgr(image)
        h, w = image.shape[:2]
        if self.size is None:
            self.size = (w, h)
        elif (w, h) != self.size:
            self._fault("size_change", f"{self.name}: frame {index} is {w}x{h}, not "
                        f"{self.size[0]}x{self.size[1]} like the first frame; resizing such frames "
                        "to the first size (counted as faults['size_change'])", once=True)
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        return image

    # -- interface --------------------------------------------------------------------
    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> dict:
        return {"name": self.name, "fps": self.fps, "live": self.live, "size": self.size,
                "frames_read": self.frames_read, "dropped": self.dropped,
                "faults": dict(self.faults), "end_reason": self.end_reason}


# ---------------------------------------------------------------------------------------
# small pure helpers


def natural_key(name: str) -> list:
    """Sort key putting img2 before img10 (dataset frame folders are numbered, not padded)."""
    return [int(s) if s.isdigit() else s.lower() for s in re.split(r"(\d+)", name)]


def truncation_tolerance(header_frames: int) -> int:
    """Frames a file may fall short of its header before it counts as truncated (headers of
    MP4/MOV often estimate the count from duration x rate)."""
    return max(2, int(math.ceil(0.05 * header_frames)))


def check_fps(fps: float | None, where: str, *, hint: str) -> float:
    if fps is None or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0 or fps > MAX_FPS:
        raise VideoFileError(f"{where}: frame rate {fps!r} is not usable ({hint})")
    return float(fps)


class quiet_opencv:
    """Silence OpenCV's own warnings while probing (a missing camera prints a page of them)."""

    def __enter__(self):
        try:
            self._level = cv2.utils.logging.getLogLevel()
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        except Exception:  # older builds have no logging module
            self._level = None
        return self

    def __exit__(self, *exc):
        if self._level is not None:
            cv2.utils.logging.setLogLevel(self._level)


class SafeCapture:
    """A cv2.VideoCapture whose ``release`` never runs under a read in progress.

    A live source's reader thread can be blocked inside FFmpeg or V4L2 (a stalled pipe,
    an unplugged camera) when the frame loop gives up and closes the source; releasing
    the capture then frees memory the blocked read still uses, and the process dies with
    SIGSEGV when the read wakes up. Here a release requested during a read is carried out
    by the reading thread as soon as its read returns."""

    def __init__(self, cap: cv2.VideoCapture) -> None:
        self.cap = cap
        self._lock = threading.Lock()
        self._reading = False
        self._release_pending = False
        self.released = False

    def read(self) -> tuple[bool, np.ndarray | None]:
        with self._lock:
            if self.released or self._release_pending:
                return False, None
            self._reading = True
        try:
            return self.cap.read()
        finally:
            with self._lock:
                self._reading = False
                if self._release_pending:
                    self._release_now()

    def release(self) -> None:
        with self._lock:
            if self._reading:
                self._release_pending = True
            else:
                self._release_now()

    def _release_now(self) -> None:
        if not self.released:
            self.released = True
            self.cap.release()

    def get(self, prop: int) -> float:
        return self.cap.get(prop)

    def set(self, prop: int, value: float) -> bool:
        return self.cap.set(prop, value)

    def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
        return not self.released and self.cap.isOpened()


def is_stream(video: str | os.PathLike) -> bool:
    """A URL, FIFO, socket or character device (``/dev/stdin``): frames arrive live, at
    the producer's pace, and may stop; not a file that can be read to its end."""
    s = str(video)
    if "://" in s:
        return True
    try:
        mode = os.stat(s).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode)

