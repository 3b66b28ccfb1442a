"""Where results go: annotated video, per-frame signal table, event log, console.

Every sink has the same two methods (DeepLabCut-Live's Processor idea):
``handle(result: FrameResult)`` once per processed frame, and ``close()``. A front end
builds the list it needs and feeds each frame's result to all of them:

    sinks = [AnnotatedVideoWriter("out/annotated.mp4", fps=src.fps),
             SignalCSV("out/signal.csv"), EventLog("out/events.jsonl")]
    for frame in src:
        r = pipeline.process(frame)
        for s in sinks: s.handle(r)
    late = pipeline.close()                             # events finalised at the end: once,
    for s in sinks: s.handle_events(late)               # then to every sink
    for s in sinks: s.close()

Tables (py-feat style: stable column names, one row per frame or per event):
- events: JSON lines, one ``core.events.Event`` per FINAL event, written and flushed
  as it happens (``EventWriter``); read back with ``core.events.read_events``.
- signal CSV: ``frame, t, found, face_id, n_faces, value, threshold, in_event`` then one
  column per motion region (e.g. ``brows, eyes, mouth, nose_ref``); empty cells where no
  face was tracked.
- annotated video: every source frame (the overlay where one was drawn), at the source
  rate, with OpenCV's mp4v (.mp4/.mov) or MJPG (.avi/.mkv). Browsers do not play these
  codecs (REALTIME.md): a page needs a separate encoder.
"""
from __future__ import annotations

import csv
import math
import os
import sys
from pathlib import Path
from typing import IO, Iterable

import cv2
import numpy as np

from core.events import Event, EventWriter
from realtime.stages.results import FrameResult, RunSummary

FOURCC_BY_SUFFIX = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}
SIGNAL_COLUMNS = ("frame", "t", "found", "face_id", "n_faces", "value", "score", "threshold", "in_event")


class SinkError(RuntimeError):
    """An output that cannot be written; the message names the path and the fix."""


class Sink:
    """Base class: ``handle`` each frame's result, ``handle_events`` late events, ``close``."""

    def handle(self, result: FrameResult) -> None:
        pass

    def handle_events(self, events: Iterable[Event]) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class AnnotatedVideoWriter(Sink):
    """Write every frame (annotated when an overlay was drawn) to a video file."""

    def __init__(self, path: str | os.PathLike, fps: float, fourcc: str | None = None) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if fourcc is None:
            if suffix not in FOURCC_BY_SUFFIX:
                raise SinkError(f"{self.path}: cannot record to '{suffix or 'no extension'}'; "
                                f"use one of {', '.join(FOURCC_BY_SUFFIX)} (e.g. --record out/annotated.mp4)")
            fourcc = FOURCC_BY_SUFFIX[suffix]
        if not (fps and math.isfinite(fps) and fps > 0):
            raise SinkError(f"{self.path}: need a positive frame rate to record, got {fps!r}")
        self.fps = float(fps)
        self.fourcc = fourcc
        self.frames = 0
        self.size: tuple[int, int] | None = None
        self._writer: cv2.VideoWriter | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SinkError(f"{self.path}: cannot create its folder ({e}); choose a writable path") from None

    def _open(self, size: tuple[int, int]) -> None:
        self.size = size
        w = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, size)
        if not w.isOpened():
            raise SinkError(f"{self.path}: OpenCV could not open a {self.fourcc} writer at {size[0]}x{size[1]} "
                            f"{self.fps:g} fps; check the folder is writable, or record to .avi (MJPG)")
        self._writer = w

    def write(self, image: np.ndarray) -> None:
        h, w = image.shape[:2]
        if self._writer is None:
            self._open((w, h))
        if (w, h) != self.size:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        self._writer.write(np.ascontiguousarray(image))
        self.frames += 1

    def handle(self, result: FrameResult) -> None:
        self.write(result.overlay if result.overlay is not None else result.frame.image)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


class SignalCSV(Sink):
    """One row per processed frame and followed face (``face_id``; one row with ``found`` 0
    when there is none): the motion signal each face's spotter saw (see module docstring).

    Region columns are taken from the first frame with a face; rows before it are held
    back (at most ``hold`` of them) so the header is complete.
    """

    def __init__(self, path: str | os.PathLike, *, hold: int = 2000, flush_every: int = 200) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh: IO[str] | None = open(self.path, "w", newline="", encoding="utf-8")
        except OSError as e:
            raise SinkError(f"{self.path}: cannot write the signal table ({e}); choose a writable path") from None
        self._writer: csv.DictWriter | None = None
        self._held: list[dict] = []
        self.hold = hold
        self.flush_every = flush_every
        self.rows = 0
        self.regions: tuple[str, ...] | None = None

    def _start(self, regions: tuple[str, ...]) -> None:
        self.regions = regions
        self._writer = csv.DictWriter(self._fh, fieldnames=list(SIGNAL_COLUMNS) + list(regions),
                                      extrasaction="ignore", restval="")
        self._writer.writeheader()
        for row in self._held:
            self._writer.writerow(row)
        self._held = []

    def write_row(self, row: dict, regions: dict[str, float] | None = None) -> None:
        row = dict(row)
        if regions:
            row.update(regions)
        if self._writer is None:
            if regions:
                self._start(tuple(regions))
            else:
                self._held.append(row)
                if len(self._held) >= self.hold:
                    self._start(())
                return
        self._writer.writerow(row)
        self.rows += 1
        if self.rows % self.flush_every == 0:
            self._fh.flush()

    def handle(self, result: FrameResult) -> None:
        for row, regions in result.signal_rows():
            self.write_row(row, regions)

    def close(self) -> None:
        if self._fh is None:
            return
        if self._writer is None:
            self._start(())
        self._fh.close()
        self._fh = None


class EventLog(Sink):
    """Final events as JSON lines, flushed line by line (``core.events.EventWriter``).

    The file is truncated at the start of a run (one file per run).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            open(self.path, "w").close()
            self._writer = EventWriter(self.path)
        except OSError as e:
            raise SinkError(f"{self.path}: cannot write the event log ({e}); choose a writable path") from None

    @property
    def count(self) -> int:
        return self._writer.count

    def handle(self, result: FrameResult) -> None:
        self.handle_events(result.final_events)

    def handle_events(self, events: Iterable[Event]) -> None:
        for e in events:
            if e.finalised_t is not None:
                self._writer.write(e)

    def close(self) -> None:
        self._writer.close()


class EventList(Sink):
    """Keep the final events in memory (``events``), e.g. to compare a run with its ground truth."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def handle(self, result: FrameResult) -> None:
        self.handle_events(result.final_events)

    def handle_events(self, events: Iterable[Event]) -> None:
        self.events.extend(e for e in events if e.finalised_t is not None)


def format_event(e: Event) -> str:
    """One line for the console: when, what, how sure, how late."""
    label = e.label or "(unlabelled)"
    conf = f" p={e.probs[e.label]:.2f}" if e.label and e.label in e.probs else ""
    lat = e.latency_ms.get("decision")
    face = f" face #{e.face_id}" if e.face_id is not None else ""
    return (f"[{e.apex_t:8.3f} s] {e.kind:5s} {label}{conf}  frames {e.onset_frame}-{e.apex_frame}-{e.offset_frame}"
            f"{face}" + (f"  decision {lat:.0f} ms" if lat is not None else ""))


class ConsolePrinter(Sink):
    """Print each final event as it happens."""

    def __init__(self, file: IO[str] | None = None) -> None:
        self.file = file or sys.stdout

    def handle(self, result: FrameResult) -> None:
        self.handle_events(result.final_events)

    def handle_events(self, events: Iterable[Event]) -> None:
        for e in events:
            if e.finalised_t is not None:
                print(format_event(e), file=self.file, flush=True)


def print_summary(summary: RunSummary, file: IO[str] | None = None) -> None:
    print(summary.format(), file=file or sys.stdout, flush=True)
