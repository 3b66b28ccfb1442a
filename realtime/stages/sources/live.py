"""Live frame sources, read by a background thread that keeps only the newest frame:
cameras (``CameraSource``), and videos read like a camera (``LiveVideoSource``: a file
played at its own rate, or a stream such as a FIFO, ``/dev/stdin`` or an rtsp:// URL).
``LiveSource`` holds what they share: stale frames counted as drops, stall detection and
the retry-or-exit policy when a device stops delivering."""
from __future__ import annotations

import math
import os
import sys
import time
from typing import Iterator

import cv2

from realtime.stages.sources.base import (
    MAX_FPS, CameraError, Frame, SafeCapture, Source, SourceError, is_stream, quiet_opencv,
)
from realtime.stages.sources.decode import LatestFrameReader
from realtime.stages.sources.files import VideoFileSource


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
        self._reader: LatestFrameReader | None = None

    def _start(self) -> None:
        self._reader = LatestFrameReader(self)
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
        with quiet_opencv():
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

