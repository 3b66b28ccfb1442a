"""Recordings as frame sources, read to their end with nothing dropped: video files
(``VideoFileSource``, decoded ahead in a background thread), folders of frame images
(``ImageFolderSource``) and frames already in memory (``ArraySource``); and
``probe_video``, which reads an untrusted file's header in a child process first (web
uploads), so that a decoder crash or hang never takes this process down."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

from realtime.stages.sources.base import (
    IMAGE_EXTENSIONS, MAX_FPS, MAX_SIDE, Frame, ImageFolderError, SafeCapture, Source, VideoFileError, check_fps,
    is_stream, natural_key, quiet_opencv, truncation_tolerance,
)
from realtime.stages.sources.decode import ReadAhead

CORRUPT_RUN_LIMIT = 5       # consecutive undecodable frames before a file counts as truncated
READ_AHEAD_BYTES = 256 << 20  # decoded frames a file source may hold ahead, in bytes (huge frames: fewer)


class VideoFileSource(Source):
    """A video file decoded with OpenCV/FFmpeg; ``fps`` overrides a wrong header.

    read_ahead: frames decoded ahead in a background thread (0: decode in the caller's
    thread, as ``LiveVideoSource``'s own reader does); fewer when that many frames would
    take more than ``READ_AHEAD_BYTES`` (none at all for frames larger than that)."""

    def __init__(self, path: str | os.PathLike, fps: float | None = None, *, read_ahead: int = 8) -> None:
        self.read_ahead = int(read_ahead)
        url = "://" in str(path)
        p = Path(path) if not url else path
        if not url and not p.exists():
            raise VideoFileError(f"video {p} does not exist: check the path")
        if not url and p.is_dir():
            raise VideoFileError(f"video {p} is a folder: use --images {p} --fps F for a folder of frames")
        with quiet_opencv():
            cap = cv2.VideoCapture(str(p))
        if not cap.isOpened():
            cap.release()
            raise VideoFileError(
                f"video {p} could not be opened: it is not a video OpenCV/FFmpeg can decode, or it is "
                "truncated (an MP4/MOV cut off before its index, the 'moov' atom, cannot be read at all). "
                "Check the file plays elsewhere; re-encode it (e.g. ffmpeg -i IN -c:v mjpeg OUT.avi) or "
                "pass a folder of frames with --images DIR --fps F"
            )
        w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if w > MAX_SIDE or h > MAX_SIDE or w < 0 or h < 0:
            cap.release()
            raise VideoFileError(f"video {p}: header says {w}x{h} pixels, which is not a plausible frame size; "
                                 "the file is corrupt or not a video")
        header_fps = cap.get(cv2.CAP_PROP_FPS)
        if fps is None:
            try:
                fps = check_fps(header_fps, f"video {p}",
                                hint="the header gives no valid rate; pass the true rate with --fps F")
            except VideoFileError:
                cap.release()
                raise
        else:
            fps = check_fps(fps, f"video {p}", hint="--fps must be a positive number of frames per second")
        super().__init__(str(p) if url else p.name, fps)
        self.path = p
        self.header_fps = float(header_fps) if math.isfinite(header_fps) else 0.0
        n = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.header_frames = int(n) if math.isfinite(n) and 0 < n < 1e9 and not is_stream(path) else None
        self._cap = SafeCapture(cap)
        self.read_ahead = max(0, min(self.read_ahead, READ_AHEAD_BYTES // max(1, w * h * 3)))

    def reopen(self) -> "VideoFileSource":
        """The same recording from its first frame (a second reader: recordings are read ahead)."""
        return VideoFileSource(self.path, self.fps, read_ahead=self.read_ahead)

    def __iter__(self) -> Iterator[Frame]:
        ahead = ReadAhead(self._frames(), self.read_ahead, f"decode:{self.name}") if self.read_ahead > 0 else None
        try:
            yield from (ahead if ahead is not None else self._frames())
        finally:  # ended, abandoned or closed: the capture goes (after a read in progress)
            if ahead is not None:
                self._closed = True
                ahead.stop()
            self._cap.release()

    def _frames(self) -> Iterator[Frame]:
        cap, index, bad_run = self._cap, 0, 0
        while not self._closed:
            t0 = time.perf_counter()
            ok, image = cap.read()
            t1 = time.perf_counter()
            if not ok or image is None:
                # End of stream, or a frame FFmpeg could not decode. Before the announced
                # length, try a few more frames before calling it the end.
                if self.header_frames is not None and index < self.header_frames - 1 and bad_run < CORRUPT_RUN_LIMIT:
                    bad_run += 1
                    index += 1
                    continue
                break
            if bad_run:
                self._fault("corrupt_frame", f"{self.name}: {bad_run} undecodable frame(s) before frame "
                            f"{index} were skipped (counted as faults['corrupt_frame'])", count=bad_run)
                bad_run = 0
            image = self._conform(image, index)
            self.frames_read += 1
            yield Frame(index=index, t=index / self.fps, image=image, captured_at=t1,
                        decode_ms=(t1 - t0) * 1e3)
            index += 1
        if not self._closed and self.header_frames is not None:
            # Frame counts in headers are often estimates (duration x rate): only a clear
            # shortfall is a truncated file.
            missing = self.header_frames - self.frames_read - self.faults.get("corrupt_frame", 0)
            if self.frames_read == 0 or missing > truncation_tolerance(self.header_frames):
                self._fault("truncated")
                self.end_reason = (f"{self.name}: decoding stopped after {self.frames_read} of "
                                   f"{self.header_frames} frames announced by the header; the file is "
                                   "truncated or corrupt" + (" (results cover the frames read)" if self.frames_read
                                                             else ""))
                self._say(self.end_reason)
        self.close()

    def close(self) -> None:
        super().close()
        self._cap.release()


class ImageFolderSource(Source):
    """A folder of frame images (as CASME II / SAMM ship), sorted naturally; needs ``fps``."""

    def __init__(self, folder: str | os.PathLike, fps: float | None) -> None:
        d = Path(folder)
        if not d.exists():
            raise ImageFolderError(f"image folder {d} does not exist: check the path")
        if not d.is_dir():
            raise ImageFolderError(f"{d} is a file, not a folder: use --video {d} for a video file")
        if fps is None:
            raise ImageFolderError(f"image folder {d}: a folder of frames has no frame rate; give it with "
                                   "--fps F (CASME II and SAMM are 200, SMIC-HS 100, CAS(ME)^3 30)")
        fps = check_fps(fps, f"image folder {d}", hint="--fps must be a positive number of frames per second")
        files = sorted((f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS),
                       key=lambda f: natural_key(f.name))
        if not files:
            raise ImageFolderError(f"image folder {d} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                                   "point --images at the folder that contains the frames")
        super().__init__(d.name, fps)
        self.folder = d
        self.files = files
        self.header_frames = len(files)

    def reopen(self) -> "ImageFolderSource":
        """The same folder from its first frame (a second reader: recordings are read ahead)."""
        return ImageFolderSource(self.folder, self.fps)

    def __iter__(self) -> Iterator[Frame]:
        for index, f in enumerate(self.files):
            if self._closed:
                break
            t0 = time.perf_counter()
            image = cv2.imread(str(f), cv2.IMREAD_COLOR)
            t1 = time.perf_counter()
            if image is None:
                self._fault("unreadable_image", f"{f}: not a readable image, skipped "
                            "(counted as faults['unreadable_image'])")
                continue
            image = self._conform(image, index)
            self.frames_read += 1
            yield Frame(index=index, t=index / self.fps, image=image, captured_at=t1,
                        decode_ms=(t1 - t0) * 1e3)
        if self.frames_read == 0 and not self._closed:
            self.end_reason = f"image folder {self.folder}: none of its {len(self.files)} images could be read"
            self._say(self.end_reason)
        self.close()


class ArraySource(Source):
    """Frames already in memory (tests, benchmarks, a clip built from a still image)."""

    def __init__(self, images: Iterable[np.ndarray], fps: float, name: str = "frames") -> None:
        super().__init__(name, check_fps(fps, name, hint="fps must be positive"))
        self._images = images

    def __iter__(self) -> Iterator[Frame]:
        for index, image in enumerate(self._images):
            if self._closed:
                break
            t0 = time.perf_counter()
            image = self._conform(np.asarray(image), index)
            t1 = time.perf_counter()
            self.frames_read += 1
            yield Frame(index=index, t=index / self.fps, image=image, captured_at=t1,
                        decode_ms=(t1 - t0) * 1e3)
        self.close()


# ---------------------------------------------------------------------------------------
# probing untrusted files in a child process

# Runs in a separate interpreter: FFmpeg's demuxers and decoders are native code, and a
# hostile header can crash them (SIGSEGV) or make them allocate without bound. The child
# gets an address-space limit; the parent turns a crash or a hang into a VideoFileError.
_PROBE_CHILD = r"""
import json, sys
try:
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
except Exception:
    pass
import cv2
path = sys.argv[1]
cap = cv2.VideoCapture(path)
if not cap.isOpened():
    print(json.dumps({"opened": False}), flush=True)
    sys.exit(0)
info = {"opened": True, "width": cap.get(cv2.CAP_PROP_FRAME_WIDTH), "height": cap.get(cv2.CAP_PROP_FRAME_HEIGHT),
        "fps": cap.get(cv2.CAP_PROP_FPS), "frames": cap.get(cv2.CAP_PROP_FRAME_COUNT)}
ok, img = cap.read()
info["first_frame"] = list(img.shape) if ok and img is not None else None
cap.release()
print(json.dumps(info), flush=True)
"""


@dataclass
class VideoInfo:
    """What a child process could read of a video without endangering this one."""

    path: Path
    width: int
    height: int
    fps: float | None           # None when the header gives no plausible rate
    frames: int | None          # None when the header gives no plausible count


def probe_video(path: str | os.PathLike, *, timeout: float = 30.0) -> VideoInfo:
    """Open ``path`` in a child process, decode its first frame, and return its header.

    For files from people this process does not trust (web uploads): a decoder crash or
    hang takes down or stalls only the child, and comes back here as a ``VideoFileError``
    naming the file. Sizes above ``MAX_SIDE`` and rates above ``MAX_FPS`` are refused too.
    """
    p = Path(path)
    if not p.is_file():
        raise VideoFileError(f"video {p} does not exist or is not a file: check the path")
    env = dict(os.environ, OPENCV_LOG_LEVEL="SILENT", OPENCV_FFMPEG_LOGLEVEL="-8", OMP_NUM_THREADS="1")
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE_CHILD, str(p)], capture_output=True, text=True,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise VideoFileError(f"video {p}: decoding its header did not finish within {timeout:g} s; the file "
                             "is corrupt or not a video (re-encode it, e.g. ffmpeg -i IN -c:v mjpeg OUT.avi)") from None
    if done.returncode < 0:
        raise VideoFileError(f"video {p}: the video decoder crashed on this file (signal {-done.returncode}); "
                             "it is corrupt or hostile. Re-encode it from the original if it is yours")
    try:
        info = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise VideoFileError(f"video {p}: the decoder stopped without an answer (exit status "
                             f"{done.returncode}); the file is corrupt or too large to decode") from None
    if not info.get("opened"):
        raise VideoFileError(f"video {p} could not be opened: it is not a video OpenCV/FFmpeg can decode, or it "
                             "is truncated. Check the file plays elsewhere, or re-encode it")
    shape = info.get("first_frame")
    if not shape:
        raise VideoFileError(f"video {p}: no frame could be decoded; the file is empty, truncated or corrupt")
    h, w = int(shape[0]), int(shape[1])
    if not (0 < w <= MAX_SIDE and 0 < h <= MAX_SIDE):
        raise VideoFileError(f"video {p}: frames of {w}x{h} pixels are not a plausible size; the file is corrupt")
    fps = info.get("fps")
    fps = float(fps) if isinstance(fps, (int, float)) and math.isfinite(fps) and 0 < fps <= MAX_FPS else None
    n = info.get("frames")
    frames = int(n) if isinstance(n, (int, float)) and math.isfinite(n) and 0 < n < 1e9 else None
    return VideoInfo(p, w, h, fps, frames)

