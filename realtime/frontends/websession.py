"""One browser session of the web demo: its settings, its live stream and its folder.

``WebConfig`` holds the demo's settings (limits, stream rate, session lifetime).
``LiveStream`` is a session's live tab: its own ``Pipeline`` (tracker, motion signal,
spotter, recognition worker; the loaded recogniser is shared), fed with the browser's
webcam frames one at a time (newest-frame policy: a frame arriving while the previous
one is processed is dropped and counted), returning the annotated frame as an in-memory
JPEG and keeping the rows of the events table. ``WebSession`` adds the session's private
output folder; sessions never read each other's data. The ``SessionHost`` they live in
is ``realtime.frontends.webhandlers.WebApp``.
"""
from __future__ import annotations

import argparse
import logging
import math
import shutil
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import pandas as pd

from core.events import Event
from realtime.stages.multitrack import MAX_FACES
from realtime.stages.pipeline import Pipeline
from realtime.stages.sources import Frame

log = logging.getLogger("realtime.frontends.webapp")

EVENT_COLUMNS = ("face", "apex_t", "kind", "label", "confidence", "onset_frame", "apex_frame", "offset_frame",
                 "decision_ms", "status")


class UploadRefused(ValueError):
    """An uploaded video that the demo will not process; the message says why and what to do."""


# ---------------------------------------------------------------------------------------
# configuration


@dataclass
class WebConfig:
    """Settings of the web demo (``launch`` fills them from run_live.py's arguments)."""

    engine: str = "auto"                 # "auto" (demo weights) | checkpoint/engine path | "none"
    device: str = "auto"
    runtime: str = "best"                # the engine that runs weights (engines.recognizer.CHECKPOINT_ENGINES)
    tracker: str = "fast"
    max_faces: int = MAX_FACES           # faces followed at once in each stream
    calibration_s: float | None = None   # the spotter's warm start at the start of a stream (None: its default)
    # live tab (REALTIME.md "Browser demo facts")
    stream_every: float = 0.05           # s between webcam frames sent (Gradio's default 0.5 is 2 fps)
    live_fps: float = 20.0               # nominal rate of the browser stream (the pipeline's fps)
    camera_width: int = 640
    camera_height: int = 480
    live_concurrency: int = 4            # live frames processed at once (across sessions)
    max_live: int = 8                    # live pipelines open at once; least recently used closed beyond
    restart_gap_s: float = 2.0           # a pause this long starts a new stream (fresh calibration)
    jpeg_quality: int = 80               # annotated live frames sent back
    table_rows: int = 50                 # newest events shown in the live table
    # recording tab
    max_upload_mb: float = 200.0
    max_duration_s: float = 120.0        # at the video's true frame rate
    max_frames: int = 24_000
    probe_timeout_s: float = 30.0        # an upload's header is read in a child process first (sources.probe_video)
    recording_concurrency: int = 1       # videos processed at once (CPU-heavy)
    video_codec: str = "auto"            # realtime.frontends.webcodec: "auto" | "h264" | "vp8"
    # sessions and files
    session_idle_s: float = 1800.0       # a session unused this long is closed (pipeline, files)
    cache_age_s: int = 3600              # Gradio's cached copies of outputs older than this are deleted
    work_dir: str | None = None          # parent of the per-session folders (default: a new temp dir)
    upload_roots: tuple[str, ...] = ()   # further folders uploads may come from (tests); Gradio's is always in

    def __post_init__(self) -> None:
        if not self.stream_every > 0:
            raise ValueError(f"stream_every must be positive seconds, got {self.stream_every!r}")
        if not self.live_fps > 0:
            raise ValueError(f"live_fps must be positive, got {self.live_fps!r}")
        if not self.max_upload_mb > 0 or not self.max_duration_s > 0:
            raise ValueError("max_upload_mb and max_duration_s must be positive")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "WebConfig":
        return cls(engine=getattr(args, "engine", "auto"), device=getattr(args, "device", "auto"),
                   runtime=getattr(args, "runtime", "best"),
                   tracker=getattr(args, "tracker", "fast"), max_faces=getattr(args, "max_faces", MAX_FACES),
                   calibration_s=getattr(args, "calibration", None))


# ---------------------------------------------------------------------------------------
# small pure helpers


def event_row(e: Event, status: str) -> dict:
    """One row of the events table (EVENT_COLUMNS)."""
    conf = e.probs.get(e.label) if e.label else None
    return {"face": "" if e.face_id is None else f"#{e.face_id}", "apex_t": round(e.apex_t, 3), "kind": e.kind, "label": e.label or "",
            "confidence": None if conf is None else round(float(conf), 3),
            "onset_frame": e.onset_frame, "apex_frame": e.apex_frame, "offset_frame": e.offset_frame,
            "decision_ms": round(e.latency_ms.get("decision", float("nan")), 1), "status": status}


def events_table(rows: list[dict]) -> pd.DataFrame:
    """A pandas table with EVENT_COLUMNS (empty tables keep their header)."""
    return pd.DataFrame(rows, columns=list(EVENT_COLUMNS))


def encode_jpeg(image_bgr: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


# ---------------------------------------------------------------------------------------
# per-session state


@dataclass
class JpegFrame:
    """An encoded frame for the live output (shown from memory, see ``MemoryImage``)."""

    data: bytes


class SessionHost(Protocol):
    """What sessions need from the app that holds them (``webhandlers.WebApp``)."""

    config: WebConfig
    root: Path

    def new_pipeline(self, fps: float, source_name: str) -> Pipeline: ...

    def make_room_for_live(self, stream: LiveStream) -> None: ...

    def touch(self, session_id: str) -> None: ...


class LiveStream:
    """The live tab of one session: its own Pipeline, fed with browser frames.

    ``step`` is called once per received frame; frames of one session never run at the
    same time (a frame arriving while the previous one is processed is dropped and
    counted: newest-frame policy, as for cameras in realtime.stages.sources)."""

    def __init__(self, app: SessionHost, session_id: str) -> None:
        self.app = app
        self.session_id = session_id
        self.lock = threading.Lock()
        self.pipeline: Pipeline | None = None
        self.nominal_fps = app.config.live_fps  # the stream's expected rate (WebRTC: the webcam's)
        self.stream_no = 0          # streams started in this session (restarts after pauses)
        self.index = 0              # frame index within the current stream
        self.t0 = 0.0
        self.size: tuple[int, int] | None = None
        self.last_arrival: float | None = None
        self.source_t0: float | None = None      # the stream's first sender timestamp (WebRTC)
        self.last_source_t: float | None = None
        self.last_t: float | None = None          # the last frame's time in the pipeline (s since the stream's start)
        self.arrivals: deque[float] = deque(maxlen=41)
        self.handler_ms: deque[float] = deque(maxlen=200)
        self.frames = 0             # frames processed in this session (all streams)
        self.frames_with_face = 0
        self.busy_dropped = 0
        self.events_final = 0
        self.events_by_face: dict[str, int] = {}   # "#id" -> final events
        self.rows: dict[tuple[int, int, int], dict] = {}   # (stream, onset frame, face id) -> row
        self.rows_version = 0
        self.last_message: str | None = None
        self.closed = False

    # -- pipeline lifecycle ------------------------------------------------------------
    def _start_stream(self, size: tuple[int, int]) -> None:
        self._close_pipeline()
        self.app.make_room_for_live(self)
        self.pipeline = self.app.new_pipeline(self.nominal_fps, f"browser:{self.session_id[:8]}")
        self.stream_no += 1
        self.index = 0
        self.t0 = time.perf_counter()
        self.size = size

    def _close_pipeline(self) -> None:
        pipe, self.pipeline = self.pipeline, None
        if pipe is not None:
            try:
                pipe.close(wait=False)
            except Exception as e:  # closing must never take the session down
                log.warning("closing a live pipeline failed: %s", e)

    def release(self) -> None:
        """Close the pipeline (resources back); the next frame starts a new stream."""
        with self.lock:
            self._close_pipeline()

    def close(self) -> None:
        self.closed = True
        self.release()

    @property
    def active(self) -> bool:
        return self.pipeline is not None

    def recalibrate(self) -> None:
        with self.lock:
            if self.pipeline is not None:
                self.pipeline.recalibrate()

    def clear_events(self) -> None:
        with self.lock:
            self.rows.clear()
            self.rows_version += 1

    # -- one frame -------------------------------------------------------------------------
    def step(self, image_rgb: np.ndarray) -> JpegFrame | None:
        """Process one RGB frame from the browser (Gradio's stream); returns the annotated
        frame as JPEG (None when the frame was dropped because the previous one is still
        being processed)."""
        arrival = time.perf_counter()
        image = np.asarray(image_rgb)
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 frame, got shape {image.shape} {image.dtype}")
        bgr = cv2.cvtColor(image, cv2.COLOR_RGBA2BGR if image.shape[2] == 4 else cv2.COLOR_RGB2BGR)
        return self.process(bgr, arrival, encode=True)

    def process(self, bgr: np.ndarray, arrival: float, *, source_t: float | None = None,
                encode: bool = False) -> np.ndarray | JpegFrame | None:
        """One BGR frame that arrived at ``arrival`` (time.perf_counter) through the session's
        pipeline: the annotated frame (BGR, or JPEG with ``encode``), None when dropped because
        the previous frame is still being processed. Used by both transports (Gradio's stream,
        ``step``; WebRTC, realtime.frontends.webrtc).

        ``source_t``: the frame's capture time in seconds on the sender's clock (WebRTC's
        timestamps), which the pipeline's time windows then follow instead of the arrival
        times (network jitter and the browser's pacing stay out of them); a timestamp that
        goes back starts a new stream."""
        if not self.lock.acquire(blocking=False):
            self.busy_dropped += 1
            return None
        try:
            if self.closed:
                raise RuntimeError("this browser session was closed; reload the page")
            size = (bgr.shape[1], bgr.shape[0])
            gap = arrival - self.last_arrival if self.last_arrival is not None else math.inf
            went_back = source_t is not None and self.last_source_t is not None and source_t < self.last_source_t
            if self.pipeline is None or gap > self.app.config.restart_gap_s or size != self.size or went_back:
                self._start_stream(size)
                self.source_t0 = source_t
            self.last_arrival, self.last_source_t = arrival, source_t
            self.app.touch(self.session_id)
            t = arrival - self.t0 if source_t is None or self.source_t0 is None else source_t - self.source_t0
            self.last_t = t
            frame = Frame(index=self.index, t=t, image=bgr, captured_at=arrival)
            self.index += 1
            r = self.pipeline.process(frame)
            self.frames += 1
            self.frames_with_face += int(r.found)
            self.last_message = r.message
            for e in r.new_events:
                final = e.finalised_t is not None
                self.events_final += int(final)
                if final:
                    face = "" if e.face_id is None else f"#{e.face_id}"
                    self.events_by_face[face] = self.events_by_face.get(face, 0) + 1
                self.rows[(self.stream_no, e.onset_frame, -1 if e.face_id is None else e.face_id)] = event_row(e, "final" if final else "provisional")
                self.rows_version += 1
            for face_id, onset_frame in r.withdrawn:   # shown, then judged not an expression
                key = (self.stream_no, onset_frame, -1 if face_id is None else face_id)
                if key in self.rows:
                    self.rows[key] = {**self.rows[key], "status": "withdrawn"}
                    self.rows_version += 1
            while len(self.rows) > self.app.config.table_rows:
                self.rows.pop(next(iter(self.rows)))
            out = r.overlay if r.overlay is not None else bgr
            if encode:
                out = JpegFrame(encode_jpeg(out, self.app.config.jpeg_quality))
            self.arrivals.append(arrival)
            self.handler_ms.append((time.perf_counter() - arrival) * 1e3)
            return out
        finally:
            self.lock.release()

    # -- what the page shows -----------------------------------------------------------------
    def table(self):
        rows = sorted(self.rows.items(), key=lambda kv: kv[0], reverse=True)  # newest stream/onset first
        return events_table([r for _, r in rows])

    def achieved_fps(self) -> float:
        a = self.arrivals
        if len(a) < 2 or a[-1] <= a[0]:
            return 0.0
        return (len(a) - 1) / (a[-1] - a[0])

    def stats(self) -> dict:
        """Figures for the page and the tests: rate, counts, per-stage latency (ms)."""
        pipe = self.pipeline
        stages = {}
        calibrating = False
        if pipe is not None:
            for name, s in pipe.stats.items():
                if s.n:
                    sm = s.summary()
                    stages[name] = {"p50": round(sm["p50"], 2), "p95": round(sm["p95"], 2)}
            calibrating = bool(pipe.spotter.calibrating)
        handler = sorted(self.handler_ms)
        return {"fps": round(self.achieved_fps(), 2), "frames": self.frames,
                "frames_with_face": self.frames_with_face, "events": self.events_final,
                "events_by_face": dict(sorted(self.events_by_face.items())),
                "dropped_busy": self.busy_dropped, "stream": self.stream_no, "calibrating": calibrating,
                "message": self.last_message,
                "server_ms_p50": round(handler[len(handler) // 2], 1) if handler else None,
                "stages": stages}

    def stats_markdown(self) -> str:
        s = self.stats()
        if not s["frames"]:
            return "Start the webcam: the first second calibrates on a neutral face."
        status = "calibrating: keep a neutral face" if s["calibrating"] else (s["message"] or "tracking")
        head = (f"**{s['fps']:.1f} fps** processed · frames {s['frames']} (face in {s['frames_with_face']}) · "
                f"events {s['events']}"
                + (" (" + ", ".join(f"{k}: {v}" for k, v in s["events_by_face"].items()) + ")"
                   if len(s["events_by_face"]) > 1 else "")
                + f" · {status} · server time per frame p50 {s['server_ms_p50']} ms")
        if not s["stages"]:
            return head
        names = [n for n in ("decode", "detect", "landmarks", "align", "motion", "spot", "infer", "draw",
                             "process") if n in s["stages"]]
        table = ["| stage | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|",
                 "| p50 ms | " + " | ".join(f"{s['stages'][n]['p50']:.1f}" for n in names) + " |",
                 "| p95 ms | " + " | ".join(f"{s['stages'][n]['p95']:.1f}" for n in names) + " |"]
        return head + "\n\n" + "\n".join(table)


class WebSession:
    """One browser session: its live stream and its private output folder."""

    def __init__(self, app: SessionHost, session_id: str) -> None:
        self.id = session_id
        self.app = app
        self.dir = app.root / f"s-{session_id[:16]}-{uuid.uuid4().hex[:8]}"
        self.dir.mkdir(parents=True, exist_ok=False)
        self.live = LiveStream(app, session_id)
        self.last_used = time.monotonic()
        self.runs = 0
        self.closed = False

    def new_run_dir(self) -> Path:
        """A fresh folder for one recording's outputs; earlier runs' files are deleted."""
        for old in self.dir.glob("run-*"):
            shutil.rmtree(old, ignore_errors=True)
        self.runs += 1
        d = self.dir / f"run-{self.runs}"
        d.mkdir()
        return d

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.live.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __deepcopy__(self, memo):  # Gradio may copy state values; a session is shared, never copied
        return self


def delete_session_state(value) -> None:
    """gr.State delete callback (runs when Gradio expires the session's state)."""
    if isinstance(value, WebSession):
        value.close()

