"""Y4M (YUV4MPEG2) files for Chromium's fake webcam, with a frame number drawn in.

Chromium plays a Y4M file as its camera with
``--use-fake-device-for-media-stream --use-file-for-fake-video-capture=FILE.y4m``
(REALTIME.md, "Browser demo facts"), looping at the rate in the header. The format is a
text header line, then per frame ``FRAME\\n`` and the raw I420 planes (Y, then U and V
at half resolution).

``stamp_counter`` draws a frame number as a row of black/white cells so that a page (or
a test) can read which source frame a displayed image shows: comparing the number on the
camera preview with the number on the annotated image that came back gives the
camera-to-screen latency. The cells sit at the left edge, mid-height, away from the face
and from the overlay's status text (top) and motion curve (bottom).

    frames = [stamp_counter(f, i) for i, f in enumerate(frames_bgr)]
    write_y4m("cam.y4m", frames, fps=30)
    read_counter(image_bgr)  # -> frame number or None
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

COUNTER_BITS = 10          # frame numbers 0..1023 (the clip loops well before)
COUNTER_CELL = 14          # px per cell side: survives two JPEG round trips
COUNTER_ORIGIN = (4, 226)  # (x, y) of the first cell's top-left corner at 640x480
# cells: [white guard] [bit 9] ... [bit 0] [black guard]


def counter_cells(origin: tuple[int, int] = COUNTER_ORIGIN, cell: int = COUNTER_CELL,
                  bits: int = COUNTER_BITS) -> list[tuple[int, int]]:
    """Centres (x, y) of the cells, guards included, left to right."""
    x0, y0 = origin
    return [(x0 + i * cell + cell // 2, y0 + cell // 2) for i in range(bits + 2)]


def stamp_counter(image_bgr: np.ndarray, n: int, *, origin: tuple[int, int] = COUNTER_ORIGIN,
                  cell: int = COUNTER_CELL, bits: int = COUNTER_BITS) -> np.ndarray:
    """A copy of the frame with ``n`` (mod 2**bits) drawn as cells (white = 1)."""
    out = image_bgr.copy()
    n %= 2 ** bits
    values = [1] + [(n >> (bits - 1 - i)) & 1 for i in range(bits)] + [0]
    x0, y0 = origin
    for i, v in enumerate(values):
        out[y0:y0 + cell, x0 + i * cell:x0 + (i + 1) * cell] = 255 if v else 0
    return out


def read_counter(image_bgr: np.ndarray, *, origin: tuple[int, int] = COUNTER_ORIGIN, cell: int = COUNTER_CELL,
                 bits: int = COUNTER_BITS) -> int | None:
    """The number drawn by ``stamp_counter``, or None when the guards are not there."""
    grey = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY) if image_bgr.ndim == 3 else image_bgr
    r = max(1, cell // 4)
    levels = [float(grey[y - r:y + r, x - r:x + r].mean()) for x, y in counter_cells(origin, cell, bits)]
    if levels[0] < 160 or levels[-1] > 96:
        return None
    n = 0
    for v in levels[1:-1]:
        n = (n << 1) | int(v > 128)
    return n


def y4m_header(width: int, height: int, fps: int) -> bytes:
    return f"YUV4MPEG2 W{width} H{height} F{int(fps)}:1 Ip A1:1 C420jpeg\n".encode("ascii")


def write_y4m(path: str | Path, frames_bgr: Iterable[np.ndarray], fps: int = 30) -> Path:
    """Write BGR uint8 frames (even width and height, all the same size) as a Y4M file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = None
    count = 0
    with open(path, "wb") as f:
        for frame in frames_bgr:
            h, w = frame.shape[:2]
            if size is None:
                if w % 2 or h % 2:
                    raise ValueError(f"Y4M 4:2:0 needs even frame sides, got {w}x{h}")
                size = (w, h)
                f.write(y4m_header(w, h, fps))
            elif (w, h) != size:
                raise ValueError(f"frame {count} is {w}x{h}, the first was {size[0]}x{size[1]}")
            f.write(b"FRAME\n")
            f.write(cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())  # (h*3/2, w): Y, U, V planes
            count += 1
    if count == 0:
        raise ValueError("no frames to write")
    return path


def read_y4m(path: str | Path) -> tuple[list[np.ndarray], int]:
    """(BGR frames, fps) of a Y4M file written by ``write_y4m`` (tests of the writer)."""
    data = Path(path).read_bytes()
    head, _, rest = data.partition(b"\n")
    fields = head.decode("ascii").split()
    if fields[0] != "YUV4MPEG2":
        raise ValueError(f"{path}: not a Y4M file")
    w = int(next(x[1:] for x in fields if x.startswith("W")))
    h = int(next(x[1:] for x in fields if x.startswith("H")))
    fps = int(next(x[1:] for x in fields if x.startswith("F")).split(":")[0])
    size = w * h * 3 // 2
    frames = []
    pos = 0
    while pos < len(rest):
        nl = rest.index(b"\n", pos)
        pos = nl + 1
        yuv = np.frombuffer(rest[pos:pos + size], np.uint8).reshape(h * 3 // 2, w)
        frames.append(cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR_I420))
        pos += size
    return frames, fps


def event_clip_frames(seconds: float = 6.0, onsets: tuple[float, ...] = (1.5, 3.5),
                      labels: tuple[str, ...] = ("positive", "surprise"), amplitude: float = 8.0, fps: int = 30,
                      size: tuple[int, int] = (640, 480), seed: int = 1, counter: bool = True):
    """Frames (BGR) of a real face (train.synth's ``sample_video`` still, from the bundled
    real clip) with clear synthetic micro-expressions at ``onsets`` (s), and the ground
    truth, with train.synth's camera (slow head drift, noise, light flicker). ``counter``
    stamps each frame's number (``stamp_counter``). The first second is neutral (the
    spotter calibrates on it)."""
    from train.synth import EventSpec, make_clip

    events = [EventSpec("micro", label, onset_t=t, amplitude=amplitude) for t, label in zip(onsets, labels)]
    frames, truth = make_clip("sample_video", fps=fps, seconds=seconds, events=events, size=size, seed=seed)
    frames = list(frames)
    if counter:
        frames = [stamp_counter(f, i) for i, f in enumerate(frames)]
    return frames, truth
