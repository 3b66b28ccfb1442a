"""Annotated video that a browser plays (REALTIME.md, "Browser demo facts").

Chromium does not play what OpenCV's usual writers produce here (mp4v, MJPG, XVID,
FFV1), so the web demo encodes its annotated recording separately:

- "h264": H.264 (yuv420p) in MP4 with the index at the front ("faststart"), through
  PyAV (``pip install av``; its wheel bundles FFmpeg with libx264). Plays in Chromium,
  Chrome, Edge, Firefox and Safari. The default when PyAV is installed.
- "vp8": VP8 in WebM through OpenCV's own FFmpeg (libvpx is in the opencv-python
  wheel; no extra package), about ten times slower to encode. Plays in Chromium, Chrome,
  Edge and Firefox. The fallback without PyAV.

``BrowserVideoWriter`` is a sink (realtime.stages.sinks.Sink) like ``AnnotatedVideoWriter``:

    writer = BrowserVideoWriter("out/annotated", fps=src.fps)   # suffix chosen by codec
    for frame in src:
        writer.handle(pipeline.process(frame))
    writer.close()
    writer.path, writer.codec, writer.mime_type          # out/annotated.mp4, "h264", "video/mp4"

``probe(path)`` reads back codec, size, frame count and rate (tests, sanity checks).
"""
from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from realtime.stages.results import FrameResult
from realtime.stages.sinks import Sink, SinkError

CODECS = ("h264", "vp8")
SUFFIX = {"h264": ".mp4", "vp8": ".webm"}
MIME = {"h264": "video/mp4", "vp8": "video/webm"}
BROWSER_CODECS = {"h264", "vp8", "vp9", "av1"}  # codec names (FFmpeg's) that browsers decode


def pyav_available() -> bool:
    return importlib.util.find_spec("av") is not None


def available_codecs() -> list[str]:
    """Codecs this installation can write, preferred first."""
    return (["h264"] if pyav_available() else []) + ["vp8"]


def choose_codec(codec: str = "auto") -> str:
    """"auto" -> the best available; a named codec is checked to be writable here."""
    if codec == "auto":
        return available_codecs()[0]
    if codec not in CODECS:
        raise ValueError(f"browser video codec must be 'auto' or one of {CODECS}, got {codec!r}")
    if codec == "h264" and not pyav_available():
        raise SinkError("H.264 video needs PyAV: pip install av (or use codec 'vp8', slower, no extra package)")
    return codec


def even_size(w: int, h: int) -> tuple[int, int]:
    """4:2:0 chroma needs even sides: drop the last column/row of odd-sized frames."""
    return w - (w % 2), h - (h % 2)


def rate_fraction(fps: float) -> Fraction:
    """29.97 -> 30000/1001, 200 -> 200/1: an exact container rate for a float fps."""
    return Fraction(fps).limit_denominator(1001)


class BrowserVideoWriter(Sink):
    """Write BGR frames as browser-playable video (see the module docstring).

    ``path``: where to write; its suffix is replaced by the codec's (.mp4 / .webm).
    ``quality``: H.264 constant rate factor (lower is better, 18-28 sensible)."""

    def __init__(self, path: str | os.PathLike, fps: float, codec: str = "auto", *, quality: int = 23,
                 preset: str = "superfast") -> None:
        if not (fps and math.isfinite(fps) and fps > 0):
            raise SinkError(f"{path}: need a positive frame rate to encode video, got {fps!r}")
        self.codec = choose_codec(codec)
        self.path = Path(path).with_suffix(SUFFIX[self.codec])
        self.mime_type = MIME[self.codec]
        self.fps = float(fps)
        self.quality = int(quality)
        self.preset = preset
        self.frames = 0
        self.size: tuple[int, int] | None = None   # (w, h) written
        self._first_size: tuple[int, int] | None = None
        self._container = None
        self._stream = None
        self._cv_writer: cv2.VideoWriter | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SinkError(f"{self.path}: cannot create its folder ({e}); choose a writable path") from None

    # -- opening on the first frame (its size fixes the stream's) --------------------------
    def _open(self, w: int, h: int) -> None:
        self._first_size = (w, h)
        self.size = even_size(w, h)
        if self.size[0] < 2 or self.size[1] < 2:
            raise SinkError(f"{self.path}: frames of {w}x{h} pixels are too small to encode")
        if self.codec == "h264":
            import av  # optional (PyAV, for H.264): without it the writer falls back to VP8

            try:
                self._container = av.open(str(self.path), mode="w", options={"movflags": "+faststart"})
                s = self._container.add_stream("libx264", rate=rate_fraction(self.fps),
                                               options={"preset": self.preset, "crf": str(self.quality)})
            except Exception as e:
                self._close_container()
                raise SinkError(f"{self.path}: could not start an H.264 encoder ({type(e).__name__}: {e}); "
                                "reinstall PyAV (pip install --force-reinstall av) or use codec 'vp8'") from None
            s.width, s.height = self.size
            s.pix_fmt = "yuv420p"
            self._stream = s
        else:
            w = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"VP80"), self.fps, self.size)
            if not w.isOpened():
                raise SinkError(f"{self.path}: OpenCV could not open a VP8 (WebM) writer; install PyAV "
                                "(pip install av) for H.264 instead")
            self._cv_writer = w

    def write(self, image: np.ndarray) -> None:
        """Append one BGR uint8 frame (later frames of another size are resized)."""
        h, w = image.shape[:2]
        if self.size is None:
            self._open(w, h)
        tw, th = self.size
        if (w, h) == self._first_size:
            image = image[:th, :tw]
        else:  # a frame of another size mid-stream (the sources count it as a fault)
            image = cv2.resize(image, (tw, th), interpolation=cv2.INTER_AREA)
        image = np.ascontiguousarray(image)
        if self._stream is not None:
            import av  # optional (PyAV): only an H.264 stream, opened above, gets here

            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        else:
            self._cv_writer.write(image)
        self.frames += 1

    def handle(self, result: FrameResult) -> None:
        self.write(result.overlay if result.overlay is not None else result.frame.image)

    def _close_container(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            finally:
                self._container = None
                self._stream = None

    def close(self) -> None:
        if self._stream is not None:
            for packet in self._stream.encode():  # flush the encoder's delayed frames
                self._container.mux(packet)
        self._close_container()
        if self._cv_writer is not None:
            self._cv_writer.release()
            self._cv_writer = None


@dataclass
class VideoProbe:
    codec: str            # FFmpeg's codec name: "h264", "vp8", ...
    width: int
    height: int
    frames: int
    fps: float

    @property
    def browser_playable(self) -> bool:
        return self.codec in BROWSER_CODECS


def probe(path: str | os.PathLike) -> VideoProbe:
    """Codec, size, frame count (decoded) and rate of a video file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such video file")
    if pyav_available():
        import av  # optional (PyAV): OpenCV reads the file back when it is missing

        with av.open(str(path)) as f:
            s = f.streams.video[0]
            n = sum(1 for _ in f.decode(s))
            rate = float(s.average_rate or s.guessed_rate or 0)
            return VideoProbe(s.codec_context.name, s.codec_context.width, s.codec_context.height, n, rate)
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise SinkError(f"{path}: not a video OpenCV can read")
        fourcc = int(cap.get(cv2.CAP_PROP_FOURCC))
        tag = "".join(chr((fourcc >> 8 * i) & 0xFF) for i in range(4)).strip().lower()
        codec = {"vp80": "vp8", "vp90": "vp9", "avc1": "h264", "h264": "h264", "av01": "av1"}.get(tag, tag)
        n = 0
        while cap.read()[0]:
            n += 1
        return VideoProbe(codec, int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                          n, float(cap.get(cv2.CAP_PROP_FPS)))
    finally:
        cap.release()
