"""Frame sources for the live path: camera, video file, folder of images, in-memory arrays.

One interface for everything that produces frames (REALTIME.md, "source"):

    with open_source(video="clip.mp4") as src:        # or camera=0, images="dir/", ...
        for frame in src:                              # Frame(index, t, image, captured_at)
            result = pipeline.process(frame)

``Frame``
    ``index``        frame number from the start of the source. For files and folders it
                     counts every frame of the file. For live sources it counts every frame
                     the device delivered, so frames dropped as stale leave gaps.
    ``t``            seconds from the start of the source: ``index / fps`` for files and
                     folders (the recording's own clock, so a 200 fps file is timed at 200
                     fps however fast we decode it); the capture clock for cameras and
                     streams (``time.perf_counter()`` at capture minus the first frame's).
    ``image``        OpenCV BGR uint8 (H, W, 3); greyscale input gets three equal channels.
    ``captured_at``  ``time.perf_counter()`` when the frame loop got the frame (frame latency
                     runs from here; a file's frames decoded ahead count from when they are
                     taken, not from when they waited in the read-ahead queue).
    ``decode_ms``    time spent reading/decoding it (the "decode" stage).

``Source`` (from ``open_source``)
    ``.fps``, ``.name``, ``.size`` (w, h), ``.live`` (True for cameras, streams and
    ``realtime`` files), ``.frames_read``, ``.dropped`` (stale frames a live source discarded), ``.faults``
    (dict: kind -> count), ``.end_reason`` (None, or why the stream stopped early),
    ``.messages`` (the warnings shown to the user), iteration, ``.close()``, context manager.

Policies (each one a user relies on):
- Live sources (cameras; streams: FIFOs, ``/dev/stdin``, URLs; files opened with
  ``realtime=True``) read in a background thread that keeps only the NEWEST frame: the
  frame loop never waits on a backlog and a slow consumer shows up as ``dropped``, never
  as lag. Files and folders otherwise drop nothing (benchmark mode); a video file is
  decoded ``read_ahead`` frames ahead in a background thread (OpenCV's decoder releases
  the GIL, so decoding runs on another core while the frame loop works), waiting when
  that many frames are ready.
- A frame whose size differs from the first frame's is resized to the first size and
  counted as ``faults["size_change"]`` (the tracker, the smoothed alignment and the video
  writer all assume one size per stream).
- A file that fails to decode mid-way (truncated or corrupt) ends the stream cleanly:
  ``end_reason`` says how many frames were read out of how many the header announced,
  ``faults["truncated"]`` is counted. Isolated undecodable frames are skipped
  (``faults["corrupt_frame"]``) as long as decoding resumes within a few frames.
- An unreadable image in a folder is skipped (``faults["unreadable_image"]``).
- A live source that delivers nothing for ``stall_timeout`` seconds (default 1 s) is
  reported (``faults["stall"]``); then, per ``on_stall``, it is waited for / reopened
  ("retry", up to ``max_retries`` times) or the stream ends ("exit"). No hang either way,
  and no crash when a read blocked in the driver wakes up after the source was closed
  (``SafeCapture``).

Errors at open time raise a ``SourceError`` subclass whose message says which input was
wrong and what to do.
"""
from __future__ import annotations

import logging
import math
import os
import queue
import re
import stat
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

from realtime.face import ensure_bgr

log = logging.getLogger("realtime.sources")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
MAX_FPS = 10_000.0          # anything above is a broken header, not a camera
MAX_SIDE = 16_384           # refuse absurd frame sizes before allocating them
CORRUPT_RUN_LIMIT = 5       # consecutive undecodable frames before a file counts as truncated
READ_AHEAD_BYTES = 256 << 20  # decoded frames a file source may hold ahead, in bytes (huge frames: fewer)


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


class _quiet_opencv:
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


# ---------------------------------------------------------------------------------------
# files and folders (nothing dropped)


class _ReadAhead:
    """Runs a frame generator in a background thread, at most ``depth`` frames ahead.

    Nothing is dropped: the thread waits while ``depth`` frames are ready. The generator
    is iterated and closed in that thread only; its exception is raised in the consumer.
    """

    _END = object()

    def __init__(self, frames: Iterator[Frame], depth: int, name: str) -> None:
        self._frames = frames
        self._q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        end = self._END
        try:
            for frame in self._frames:
                if not self._put(frame):
                    break
        except BaseException as e:  # handed to the consumer, raised there
            end = e
        finally:
            self._frames.close()
        self._put(end)

    def __iter__(self) -> Iterator[Frame]:
        while True:
            item = self._q.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            item.captured_at = time.perf_counter()
            yield item

    def stop(self, timeout: float = 5.0) -> None:
        """Stop decoding ahead; waits up to ``timeout`` for a read in progress."""
        self._stop.set()
        self._thread.join(timeout)


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
        with _quiet_opencv():
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
        ahead = _ReadAhead(self._frames(), self.read_ahead, f"decode:{self.name}") if self.read_ahead > 0 else None
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
# live sources (newest frame only)


class _LatestFrameReader:
    """Background reader keeping only the newest frame (stale ones are counted as drops)."""

    def __init__(self, owner: "LiveSource") -> None:
        self.owner = owner
        self.cond = threading.Condition()
        self.latest: Frame | None = None
        self.finished = False   # the device/file has no more frames (or failed)
        self.stop = False
        self.thread = threading.Thread(target=self._run, name=f"source:{owner.name}", daemon=True)

    def _run(self) -> None:
        try:
            for frame in self.owner._read_forever():
                with self.cond:
                    if self.stop:
                        break
                    if self.latest is not None:
                        self.owner.dropped += 1  # never consumed: stale by now
                    self.latest = frame
                    self.cond.notify()
        except Exception as e:  # a backend that throws must not kill the process silently
            self.owner._fault("reader_error", f"{self.owner.name}: reading failed ({type(e).__name__}: {e})")
        finally:
            with self.cond:
                self.finished = True
                self.cond.notify()

    def take(self, timeout: float) -> Frame | None | bool:
        """The newest frame; None on timeout; False when the reader has finished."""
        with self.cond:
            if self.latest is None and not self.finished:
                self.cond.wait(timeout)
            if self.latest is not None:
                frame, self.latest = self.latest, None
                return frame
            return False if self.finished else None


class LiveSource(Source):
    """A source read by a background thread that keeps only the newest frame.

    Subclasses implement ``_open()`` (may raise SourceError) and ``_read_forever()``
    (a generator of Frames that ends when the device ends). Stall handling is here.
    """

    live = True

    def __init__(self, name: str, fps: float, *, stall_timeout: float = 1.0, on_stall: str = "exit",
                 max_retries: int = 10) -> None:
        super().__init__(name, fps)
        if on_stall not in ("retry", "exit"):
            raise ValueError(f"on_stall must be 'retry' or 'exit', got {on_stall!r}")
        self.stall_timeout = float(stall_timeout)
        self.on_stall = on_stall
        self.max_retries = int(max_retries)
        self.retries = 0
        self._reader: _LatestFrameReader | None = None

    def _start(self) -> None:
        self._reader = _LatestFrameReader(self)
        self._reader.thread.start()

    def _stop_reader(self) -> None:
        r, self._reader = self._reader, None
        if r is not None:
            with r.cond:
                r.stop = True
            r.thread.join(timeout=0.5)  # a reader stuck in a driver call is left to die with the process

    def __iter__(self) -> Iterator[Frame]:
        if self._reader is None and not self._closed:
            self._start()
        while not self._closed and self._reader is not None:
            got = self._reader.take(self.stall_timeout)
            if isinstance(got, Frame):
                self.frames_read += 1
                self.retries = 0  # a working source earns a fresh set of retries
                yield got
                continue
            if got is False and not self._device_lost():
                break  # a recording or a pipe that simply ended
            if got is None:
                # Nothing within the timeout; the reader may still be blocked inside the
                # driver, so the device is not touched from here: wait again or give up.
                what = f"delivered no frame for {self.stall_timeout:g} s"
            else:
                what = "stopped delivering frames"
            self._fault("stall", f"{self.name}: {what} (unplugged, busy or stalled)")
            if self.on_stall == "retry" and self.retries < self.max_retries:
                self.retries += 1
                if got is False:
                    self._say(f"{self.name}: reopening (attempt {self.retries} of {self.max_retries})")
                    self._stop_reader()
                    try:
                        self._reopen()
                    except SourceError as e:
                        self._say(str(e))
                        time.sleep(min(1.0, self.stall_timeout))
                    self._start()
                else:
                    self._say(f"{self.name}: still waiting (attempt {self.retries} of {self.max_retries})")
                continue
            self.end_reason = f"{self.name}: {what}; stopped" + (
                " (use --on-stall retry to keep trying)" if self.on_stall == "exit"
                else f" after {self.retries} retries")
            self._say(self.end_reason)
            break
        self.close()

    def _device_lost(self) -> bool:
        return True

    def _reopen(self) -> None:
        pass

    def close(self) -> None:
        super().close()
        self._stop_reader()


class CameraSource(LiveSource):
    """A camera by index (cv2.VideoCapture) with optional resolution / rate requests."""

    def __init__(self, index: int, *, width: int | None = None, height: int | None = None,
                 fps: float | None = None, stall_timeout: float = 1.0, on_stall: str = "exit",
                 max_retries: int = 10) -> None:
        self.index = int(index)
        self.request = {"width": width, "height": height, "fps": fps}
        cap = self._open()
        got_fps = cap.get(cv2.CAP_PROP_FPS)
        rate = got_fps if math.isfinite(got_fps) and 0 < got_fps <= MAX_FPS else (fps or 30.0)
        super().__init__(f"camera {self.index}", rate, stall_timeout=stall_timeout, on_stall=on_stall,
                         max_retries=max_retries)
        self._cap = SafeCapture(cap)
        self._t0: float | None = None
        self._seq = 0

    def _open(self) -> cv2.VideoCapture:
        with _quiet_opencv():
            cap = cv2.VideoCapture(self.index)
        if not cap.isOpened():
            cap.release()
            hint = ("list cameras with `ls /dev/video*` or `v4l2-ctl --list-devices`; your user needs "
                    "access to the device (group 'video')" if sys.platform.startswith("linux") else
                    "check which index your camera has, and that this program may use the camera "
                    "(macOS: System Settings > Privacy > Camera; Windows: Settings > Privacy > Camera)")
            raise CameraError(f"camera {self.index} could not be opened: check the index ({hint}), that no other "
                              "program holds the camera, or use --video PATH for a recording")
        r = self.request
        if r["width"]:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, int(r["width"]))
        if r["height"]:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, int(r["height"]))
        if r["fps"]:
            cap.set(cv2.CAP_PROP_FPS, float(r["fps"]))
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # ask the driver for the newest frame, too
        return cap

    def _reopen(self) -> None:
        self._cap.release()
        self._cap = SafeCapture(self._open())

    def _read_forever(self) -> Iterator[Frame]:
        cap = self._cap
        while True:
            t0 = time.perf_counter()
            ok, image = cap.read()
            t1 = time.perf_counter()
            if not ok or image is None:
                return
            if self._t0 is None:
                self._t0 = t1
            index, self._seq = self._seq, self._seq + 1
            yield Frame(index=index, t=t1 - self._t0, image=self._conform(image, index), captured_at=t1,
                        decode_ms=(t1 - t0) * 1e3)

    def close(self) -> None:
        super().close()
        self._cap.release()  # deferred to the reader if it is blocked inside the driver


class LiveVideoSource(LiveSource):
    """A video read like a camera: background reader, newest frame only, drops counted,
    stall detection.

    Two cases. A regular file opened with ``realtime=True`` is played at its own rate
    (rehearsing live behaviour on a recording); ``t`` stays the file's clock (index / fps)
    so events line up with the recording, and its end is a normal end. A stream (a FIFO,
    ``/dev/stdin``, a URL such as rtsp://; see ``is_stream``) arrives at the producer's
    pace; ``t`` is the arrival clock, as for cameras. A stream that stalls is reported
    after ``stall_timeout``; the end of a pipe is a normal end, while a URL that ends is a
    lost connection and is reopened with ``on_stall="retry"``.
    """

    def __init__(self, path: str | os.PathLike, fps: float | None = None, *, stall_timeout: float = 1.0,
                 on_stall: str = "exit", max_retries: int = 10) -> None:
        self.stream = is_stream(path)
        self.url = "://" in str(path)
        self._fps_override = fps
        self._file = VideoFileSource(path, fps, read_ahead=0)
        super().__init__(self._file.name, self._file.fps, stall_timeout=stall_timeout, on_stall=on_stall,
                         max_retries=max_retries)
        self.path = self._file.path
        self.header_frames = self._file.header_frames
        self._seq = 0
        self._t0: float | None = None

    def _device_lost(self) -> bool:
        return self.url

    def _reopen(self) -> None:
        self._merge_faults()
        self._file.close()
        self._file = VideoFileSource(self.path, self._fps_override, read_ahead=0)

    def _read_forever(self) -> Iterator[Frame]:
        start = None
        for frame in self._file:
            now = time.perf_counter()
            if self.stream:  # the producer sets the pace; time frames by their arrival
                if self._t0 is None:
                    self._t0 = now
                frame.index, frame.t = self._seq, now - self._t0
                self._seq += 1
            else:            # a recording played at its own rate
                if start is None:
                    start = now
                delay = start + frame.t - now
                if delay > 0:
                    time.sleep(delay)
            frame.captured_at = time.perf_counter()
            yield frame

    def _merge_faults(self) -> None:
        for k, v in self._file.faults.items():
            self.faults[k] = self.faults.get(k, 0) + v
        self._file.faults = {}
        self.size = self.size or self._file.size
        if self._file.end_reason and not self.end_reason:
            self.end_reason = self._file.end_reason

    def __iter__(self) -> Iterator[Frame]:
        yield from super().__iter__()
        self._merge_faults()

    def close(self) -> None:
        super().close()
        self._file.close()  # waits for a read in progress (SafeCapture)


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
    import json
    import subprocess

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


# ---------------------------------------------------------------------------------------


def open_source(camera: int | None = None, video: str | os.PathLike | None = None,
                images: str | os.PathLike | None = None, *, fps: float | None = None,
                width: int | None = None, height: int | None = None, camera_fps: float | None = None,
                realtime: bool = False, stall_timeout: float = 1.0, on_stall: str = "exit",
                max_retries: int = 10) -> Source:
    """Open exactly one of ``camera`` (index), ``video`` (path) or ``images`` (folder).

    ``fps`` overrides a video header (high-speed recordings often carry 25 or 30) and is
    required for an image folder. ``width``/``height``/``camera_fps`` are requests to a
    camera (the driver may pick the nearest mode; ``.size`` and ``.fps`` say what it gave).
    ``realtime=True`` plays a video at its own rate with the live (newest-frame) policy;
    streams (FIFOs, ``/dev/stdin``, URLs) always get it, with stall detection.
    ``stall_timeout``/``on_stall``/``max_retries`` govern live sources that stop delivering.
    """
    given = [n for n, v in (("camera", camera), ("video", video), ("images", images)) if v is not None]
    if len(given) != 1:
        raise SourceError(f"give exactly one source (camera, video or images), got {given or 'none'}")
    if camera is not None:
        if isinstance(camera, bool) or not isinstance(camera, (int, np.integer)) or camera < 0:
            raise CameraError(f"camera index must be a non-negative integer, got {camera!r}")
        return CameraSource(int(camera), width=width, height=height, fps=camera_fps,
                            stall_timeout=stall_timeout, on_stall=on_stall, max_retries=max_retries)
    if video is not None:
        if realtime or is_stream(video):
            return LiveVideoSource(video, fps, stall_timeout=stall_timeout, on_stall=on_stall,
                                   max_retries=max_retries)
        return VideoFileSource(video, fps)
    return ImageFolderSource(images, fps)
