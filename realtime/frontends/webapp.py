"""The browser demo: live webcam recognition and recorded videos, one Pipeline per session.

    python run_live.py --gradio [--port 7860] [--host 0.0.0.0] [--share --auth user:password]
    python -m realtime.webapp --engine runs/demo/best.safetensors      # same, without run_live.py

Built on the same path as run_live.py (realtime.pipeline, STYLE.md "one pipeline, many
front ends"); nothing here spots, aligns or recognises by itself.

Tabs
- Live: the browser's webcam streams JPEG frames to the server (Gradio 6 ``Image``
  streaming, REALTIME.md "Browser demo facts": stream_every 0.05 s, mirror off, 640x480
  requested); each frame goes through the session's own ``Pipeline``; the annotated frame
  comes back as an in-memory JPEG (a data URL: live frames are never written to disk),
  with a table of events (provisional, then final) and the achieved rate and per-stage
  latency. A pause longer than ``restart_gap_s`` starts a new stream (and calibration).
- Recording: an uploaded video (size and duration limits, optional true-fps override for
  high-speed files) runs through ``sources.open_source`` + ``Pipeline`` + the sinks of
  run_live.py (EventLog, SignalCSV) and ``webcodec.BrowserVideoWriter`` (H.264/VP8: what
  OpenCV writes does not play in browsers); out come the annotated video, a plot of the
  motion signal with the spotted intervals and labels, the events table and the files.
- Info: weights, engine, precision, device, and what the default weights are.

Sessions and files (issue "hostile input")
- Each browser session gets a ``WebSession`` (in a ``gr.State``): its own live pipeline
  (tracker, motion signal, spotter, recognition worker; the loaded recogniser is shared)
  and its own output folder. Sessions never read each other's data. The session is
  closed when the tab closes (``Blocks.unload``), after ``session_idle_s`` without use,
  and by the State's delete callback as a last resort.
- Uploads: Gradio refuses files over ``max_upload_mb`` (``launch(max_file_size=...)``);
  the handler checks size and duration again, accepts only files inside Gradio's upload
  folder (a path typed by a user is refused), moves the upload into the session folder
  and deletes it after processing. Each session keeps only its latest results; Gradio's
  own cached copies are deleted after ``cache_age_s`` (``delete_cache``).
- Analytics are off (GRADIO_ANALYTICS_ENABLED=False). Use ``--auth`` with ``--share``.
"""
from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no usage reports

import argparse
import base64
import logging
import math
import shutil
import tempfile
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import gradio as gr
import numpy as np
from gradio.data_classes import ImageData

from realtime.events import Event

log = logging.getLogger("realtime.webapp")

EVENT_COLUMNS = ("apex_t", "kind", "label", "confidence", "onset_frame", "apex_frame", "offset_frame",
                 "decision_ms", "status")
VIDEO_TYPES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".y4m")
DEMO_NOTE = ("The default weights (engines/assets/moext_demo.safetensors) are demonstration weights trained "
             "only on synthetic micro-expressions (real face photos animated by train/synth.py). They were never "
             "trained on real micro-expression data: their labels show how the system works, they are not a "
             "measurement of anyone's emotions.")
PRIVACY_NOTE = ("Webcam frames are processed in memory and not stored. Uploaded videos are deleted after "
                "processing; results stay in this browser session's own folder and are removed when the "
                "session ends. Record other people only with their consent.")


class UploadRefused(ValueError):
    """An uploaded video that the demo will not process; the message says why and what to do."""


# ---------------------------------------------------------------------------------------
# configuration


@dataclass
class WebConfig:
    """Settings of the web demo (``launch`` fills them from run_live.py's arguments)."""

    engine: str = "auto"                 # "auto" (demo weights) | checkpoint/engine path | "none"
    device: str = "auto"
    tracker: str = "fast"
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
    video_codec: str = "auto"            # realtime.webcodec: "auto" | "h264" | "vp8"
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
                   tracker=getattr(args, "tracker", "fast"), calibration_s=getattr(args, "calibration", None))


# ---------------------------------------------------------------------------------------
# small pure helpers


def event_row(e: Event, status: str) -> dict:
    """One row of the events table (EVENT_COLUMNS)."""
    conf = e.probs.get(e.label) if e.label else None
    return {"apex_t": round(e.apex_t, 3), "kind": e.kind, "label": e.label or "",
            "confidence": None if conf is None else round(float(conf), 3),
            "onset_frame": e.onset_frame, "apex_frame": e.apex_frame, "offset_frame": e.offset_frame,
            "decision_ms": round(e.latency_ms.get("decision", float("nan")), 1), "status": status}


def events_table(rows: list[dict]):
    """A pandas table with EVENT_COLUMNS (empty tables keep their header)."""
    import pandas as pd

    return pd.DataFrame(rows, columns=list(EVENT_COLUMNS))


def encode_jpeg(image_bgr: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def is_inside(path: Path, root: Path) -> bool:
    """``path`` (resolved, links followed) lies inside ``root``."""
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except (ValueError, OSError):
        return False


def parse_auth(spec: str | None) -> tuple[str, str] | None:
    """"user:password" -> (user, password); the password may contain ':'."""
    if not spec:
        return None
    user, sep, password = spec.partition(":")
    if not sep or not user or not password:
        raise ValueError(f"--auth must be USER:PASSWORD with both parts non-empty, got {spec!r}")
    return user, password


def signal_figure(t: np.ndarray, value: np.ndarray, threshold: np.ndarray, events: list[Event], title: str):
    """Matplotlib figure: the spotter's score (motion in multiples of the face's calm level;
    nan = no face, log scale), its threshold, and each
    spotted interval shaded (micro amber, macro grey) with its label at the apex."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.2), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    for e in events:
        colour = "#f0a020" if e.kind == "micro" else "#9a9a9a"
        ax.axvspan(e.onset_t, max(e.offset_t, e.onset_t + 1e-3), color=colour, alpha=0.35, lw=0)
    ax.plot(t, value, lw=1.0, color="#1f5fa8", label="motion score")
    if np.isfinite(threshold).any():
        ax.plot(t, threshold, lw=0.9, ls="--", color="#c03030", label="threshold")
    top = np.nanmax(value) if np.isfinite(value).any() else 1.0
    for e in events:
        conf = e.probs.get(e.label) if e.label else None
        text = f"{e.kind}: {e.label or 'no label'}" + (f" {conf:.2f}" if conf is not None else "")
        ax.annotate(text, (e.apex_t, top), xytext=(0, 2), textcoords="offset points", ha="center",
                    va="bottom", fontsize=8, rotation=0, clip_on=False)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("motion / calm level")
    ax.set_title(title, fontsize=10)
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.3, top=max(top * 1.5, 10.0))
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.25)
    return fig


def engine_markdown(info: dict, config: WebConfig, note: str = "") -> str:
    """The Info panel text: what runs, and what the default weights are."""
    from engines.recognizer import DEMO_WEIGHTS

    lines = ["### Model"]
    if not info.get("engine"):
        lines.append("**No recogniser loaded: spotting only** (events are found but carry no label).")
        if note:
            lines.append(f"\n> {note}")
    else:
        weights = info.get("weights") or ""
        is_demo = bool(weights) and Path(weights).resolve() == DEMO_WEIGHTS.resolve()
        rows = [("weights", Path(weights).name + (" (bundled demo weights)" if is_demo else "")),
                ("checkpoint hash", (info.get("checkpoint_hash") or "")[:16]),
                ("engine", info.get("engine")), ("precision", info.get("precision")),
                ("device", info.get("device")), ("classes", ", ".join(info.get("classes") or [])),
                ("network width", info.get("width")), ("parameters", f"{info.get('params', 0):,}")]
        lines += ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows if v not in (None, "")]
        if is_demo or config.engine == "auto":
            lines.append(f"\n**{DEMO_NOTE}**")
        for f in info.get("fallbacks") or []:
            lines.append(f"\n> engine fallback: {f}")
    lines += ["", "### Pipeline", f"face tracker `{config.tracker}`; live stream requested at "
              f"{config.camera_width}x{config.camera_height}, one frame every {config.stream_every:g} s; "
              f"uploads up to {config.max_upload_mb:g} MB and {config.max_duration_s:g} s.",
              "", "### Privacy", PRIVACY_NOTE,
              "", "Automatic micro-expression recognition reports brief facial movements and a guess at "
              "their category; it cannot tell what a person feels or whether they are lying."]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# sinks used by the recording tab (besides those of run_live.py)


class SignalTrace:
    """Sink keeping the per-frame motion signal in memory for the plot (bounded by the
    frame limit of an upload)."""

    def __init__(self) -> None:
        self.t: list[float] = []
        self.value: list[float] = []
        self.threshold: list[float] = []

    def handle(self, r) -> None:
        self.t.append(r.t)
        self.value.append(np.nan if r.score is None else r.score)
        self.threshold.append(np.nan if r.threshold is None else r.threshold)

    def handle_events(self, events) -> None:
        pass

    def close(self) -> None:
        pass

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (np.asarray(self.t, float), np.asarray(self.value, float), np.asarray(self.threshold, float))


# ---------------------------------------------------------------------------------------
# per-session state


@dataclass
class JpegFrame:
    """An encoded frame for the live output (shown from memory, see ``MemoryImage``)."""

    data: bytes


class LiveStream:
    """The live tab of one session: its own Pipeline, fed with browser frames.

    ``step`` is called once per received frame; frames of one session never run at the
    same time (a frame arriving while the previous one is processed is dropped and
    counted: newest-frame policy, as for cameras in realtime.sources)."""

    def __init__(self, app: "WebApp", session_id: str) -> None:
        self.app = app
        self.session_id = session_id
        self.lock = threading.Lock()
        self.pipeline = None
        self.stream_no = 0          # streams started in this session (restarts after pauses)
        self.index = 0              # frame index within the current stream
        self.t0 = 0.0
        self.size: tuple[int, int] | None = None
        self.last_arrival: float | None = None
        self.arrivals: deque[float] = deque(maxlen=41)
        self.handler_ms: deque[float] = deque(maxlen=200)
        self.frames = 0             # frames processed in this session (all streams)
        self.frames_with_face = 0
        self.busy_dropped = 0
        self.events_final = 0
        self.rows: dict[tuple[int, int], dict] = {}
        self.rows_version = 0
        self.last_message: str | None = None
        self.closed = False

    # -- pipeline lifecycle ------------------------------------------------------------
    def _start_stream(self, size: tuple[int, int]) -> None:
        self._close_pipeline()
        self.app.make_room_for_live(self)
        self.pipeline = self.app.new_pipeline(self.app.config.live_fps, f"browser:{self.session_id[:8]}")
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
        """Process one RGB frame from the browser; returns the annotated frame (None when
        the frame was dropped because the previous one is still being processed)."""
        from realtime.sources import Frame

        arrival = time.perf_counter()
        if not self.lock.acquire(blocking=False):
            self.busy_dropped += 1
            return None
        try:
            if self.closed:
                raise RuntimeError("this browser session was closed; reload the page")
            image = np.asarray(image_rgb)
            if image.ndim == 2:
                image = np.repeat(image[:, :, None], 3, axis=2)
            if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
                raise ValueError(f"expected an RGB uint8 frame, got shape {image.shape} {image.dtype}")
            bgr = cv2.cvtColor(image, cv2.COLOR_RGBA2BGR if image.shape[2] == 4 else cv2.COLOR_RGB2BGR)
            size = (bgr.shape[1], bgr.shape[0])
            gap = arrival - self.last_arrival if self.last_arrival is not None else math.inf
            if self.pipeline is None or gap > self.app.config.restart_gap_s or size != self.size:
                self._start_stream(size)
            self.last_arrival = arrival
            self.app.touch(self.session_id)
            frame = Frame(index=self.index, t=arrival - self.t0, image=bgr, captured_at=arrival)
            self.index += 1
            r = self.pipeline.process(frame)
            self.frames += 1
            self.frames_with_face += int(r.found)
            self.last_message = r.message
            for e in r.new_events:
                final = e.finalised_t is not None
                self.events_final += int(final)
                self.rows[(self.stream_no, e.onset_frame)] = event_row(e, "final" if final else "provisional")
                self.rows_version += 1
            while len(self.rows) > self.app.config.table_rows:
                self.rows.pop(next(iter(self.rows)))
            out = r.overlay if r.overlay is not None else bgr
            jpeg = JpegFrame(encode_jpeg(out, self.app.config.jpeg_quality))
            self.arrivals.append(arrival)
            self.handler_ms.append((time.perf_counter() - arrival) * 1e3)
            return jpeg
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
                f"events {s['events']} · {status} · server time per frame p50 {s['server_ms_p50']} ms")
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

    def __init__(self, app: "WebApp", session_id: str) -> None:
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


def _delete_session_state(value) -> None:
    """gr.State delete callback (runs when Gradio expires the session's state)."""
    if isinstance(value, WebSession):
        value.close()


# ---------------------------------------------------------------------------------------
# the app


@dataclass
class RecordingResult:
    video: Path
    events: list[Event]
    events_path: Path
    signal_path: Path
    figure: Any
    summary: Any               # realtime.pipeline.RunSummary
    table: Any                 # pandas DataFrame (EVENT_COLUMNS)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        s = self.summary
        lines = [f"**{s.events} events** ({s.micro} micro, {s.macro} macro) in {s.frames} frames at "
                 f"{s.source_fps:g} fps; face found in {s.face_share:.0%} of frames; processed at "
                 f"{s.achieved_fps:.1f} fps (real-time factor {s.realtime_factor:.2f})."]
        lines += [f"> {n}" for n in self.notes]
        return "\n\n".join(lines)


class WebApp:
    """Everything behind the page: config, the shared recogniser, the sessions, the handlers.

    ``build()`` makes the gr.Blocks; the handlers (``live_step``, ``analyse_upload``) are
    plain methods, callable without a browser (tests)."""

    def __init__(self, config: WebConfig | None = None, recognizer: Any = None, *, note: str = "") -> None:
        self.config = cfg = config or WebConfig()
        self.recognizer = recognizer
        self.owns_recognizer = False   # True when loaded here (load): closed with the app
        self.note = note
        self._own_root = cfg.work_dir is None
        self.root = Path(cfg.work_dir) if cfg.work_dir else Path(tempfile.mkdtemp(prefix="moext-web-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.sessions: dict[str, WebSession] = {}
        self._lock = threading.Lock()
        self.closed = False

    # -- engine ----------------------------------------------------------------------------
    @classmethod
    def load(cls, config: WebConfig) -> "WebApp":
        """Load ``config.engine`` once for all sessions; "auto" without the demo weights
        runs spotting only (as run_live.py does)."""
        from realtime.pipeline import load_recognizer

        note = ""
        recognizer = None
        if str(config.engine).lower() != "none":
            try:
                recognizer = load_recognizer(config.engine, config.device)
            except FileNotFoundError as e:
                if config.engine != "auto":
                    raise
                note = f"{e}. Running spotting only: pass --engine PATH to label events."
                log.warning(note)
        app = cls(config, recognizer, note=note)
        app.owns_recognizer = recognizer is not None
        return app

    def engine_info(self) -> dict:
        if self.recognizer is None:
            return {"engine": None}
        try:
            return self.recognizer.info()
        except Exception as e:
            return {"engine": getattr(self.recognizer, "name", "?"), "error": str(e)}

    def new_pipeline(self, fps: float, source_name: str):
        """A Pipeline on the shared recogniser (its own tracker, spotter and worker)."""
        from realtime.pipeline import Pipeline, PipelineConfig

        cfg = self.config
        pc = PipelineConfig(fps=fps, tracker=cfg.tracker, engine=cfg.engine if self.recognizer is not None else "none",
                            device=cfg.device, draw=True, draw_fps=None, calibration_s=cfg.calibration_s)
        return Pipeline(pc, self.recognizer, source_name=source_name)

    # -- sessions --------------------------------------------------------------------------
    def session(self, state: WebSession | None, request: Any = None) -> WebSession:
        """The caller's session: the one in its gr.State, else a new one."""
        if isinstance(state, WebSession) and not state.closed:
            state.last_used = time.monotonic()
            return state
        if self.closed:
            raise RuntimeError("the web demo was shut down")
        sid = getattr(request, "session_hash", None) or uuid.uuid4().hex
        self.reap()
        s = WebSession(self, str(sid))
        with self._lock:
            old = self.sessions.pop(s.id, None)
            self.sessions[s.id] = s
        if old is not None and old is not state:
            old.close()
        return s

    def touch(self, session_id: str) -> None:
        s = self.sessions.get(session_id)
        if s is not None:
            s.last_used = time.monotonic()

    def close_session(self, session_id: str | None) -> None:
        """The browser tab closed (Blocks.unload) or the session expired."""
        if not session_id:
            return
        with self._lock:
            s = self.sessions.pop(session_id, None)
        if s is not None:
            s.close()

    def reap(self) -> None:
        """Close sessions unused for ``session_idle_s`` (tabs left open, lost connections)."""
        now = time.monotonic()
        with self._lock:
            stale = [k for k, s in self.sessions.items() if now - s.last_used > self.config.session_idle_s]
            gone = [self.sessions.pop(k) for k in stale]
        for s in gone:
            s.close()

    def make_room_for_live(self, stream: LiveStream) -> None:
        """At most ``max_live`` pipelines: close the least recently fed ones (they restart
        when their session sends frames again)."""
        with self._lock:
            live = [s.live for s in self.sessions.values() if s.live is not stream and s.live.active]
        excess = len(live) + 1 - self.config.max_live
        if excess <= 0:
            return
        live.sort(key=lambda x: x.last_arrival or 0.0)
        for other in live[:excess]:
            if other.last_arrival is not None and time.perf_counter() - other.last_arrival < self.config.restart_gap_s:
                raise RuntimeError(f"the demo is serving its maximum of {self.config.max_live} live streams; "
                                   "try again in a minute")
            other.release()

    def close(self) -> None:
        """Shut down: every session, the recogniser, the work folder."""
        self.closed = True
        with self._lock:
            sessions, self.sessions = list(self.sessions.values()), {}
        for s in sessions:
            s.close()
        if self.recognizer is not None and self.owns_recognizer:
            try:
                self.recognizer.close()
            except Exception:
                pass
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- live handler ------------------------------------------------------------------------
    def live_step(self, image: np.ndarray | None, state: WebSession | None, request: Any = None):
        """Stream handler: (annotated frame, events table, stats markdown, session).

        Outputs that did not change are skipped (``gr.skip()``) to keep each response small."""
        session = self.session(state, request)
        if image is None:
            return gr.skip(), gr.skip(), gr.skip(), session
        live = session.live
        version = live.rows_version
        try:
            jpeg = live.step(image)
        except RuntimeError as e:
            return gr.skip(), gr.skip(), f"**{e}**", session
        if jpeg is None:  # previous frame still running: this one is dropped
            return gr.skip(), gr.skip(), gr.skip(), session
        table = live.table() if live.rows_version != version or live.frames == 1 else gr.skip()
        stats = live.stats_markdown() if live.frames % 5 == 1 else gr.skip()
        return jpeg, table, stats, session

    def live_recalibrate(self, state: WebSession | None, request: Any = None):
        session = self.session(state, request)
        session.live.recalibrate()
        return session

    def live_clear(self, state: WebSession | None, request: Any = None):
        session = self.session(state, request)
        session.live.clear_events()
        return session.live.table(), session

    # -- recording handler ---------------------------------------------------------------------
    def upload_roots(self) -> list[Path]:
        from gradio.utils import get_upload_folder

        return [Path(get_upload_folder())] + [Path(p) for p in self.config.upload_roots]

    def check_upload(self, path: str | os.PathLike | None) -> Path:
        """The uploaded file, if it is one that may be processed: inside an upload folder (a
        path typed by a user is refused and never touched), a regular file with a video
        extension, not over the size limit. A refused upload is deleted. Raises UploadRefused."""
        if path is None or str(path) == "":
            raise UploadRefused("no video uploaded: drop a video file on the upload box first")
        if isinstance(path, dict):  # FileData as a dict
            path = path.get("path") or ""
        p = Path(os.path.abspath(str(path)))
        roots = self.upload_roots()
        if not any(is_inside(p, root) for root in roots) or p.is_symlink():
            raise UploadRefused("only files uploaded through this page are processed; upload the video with "
                                "the upload box")
        if not p.is_file():
            raise UploadRefused("the uploaded file is gone or not a regular file; upload the video again")
        why = None
        size_mb = p.stat().st_size / 2**20
        if p.suffix.lower() not in VIDEO_TYPES:
            why = (f"'{p.suffix or 'no extension'}' files are not accepted; upload a video "
                   f"({', '.join(VIDEO_TYPES)})")
        elif size_mb > self.config.max_upload_mb:
            why = (f"the video is {size_mb:.1f} MB; this demo accepts up to {self.config.max_upload_mb:g} MB: cut or "
                   "compress it, or run it locally (python run_live.py --video FILE --headless --record OUT.mp4 "
                   "--events OUT.jsonl)")
        if why is not None:
            p.unlink(missing_ok=True)
            _remove_empty_parent(p, roots)
            raise UploadRefused(why)
        return p

    def analyse(self, video: Path, fps: float | None, out_dir: Path, progress: Callable | None = None,
                name: str | None = None) -> RecordingResult:
        """Run a video through Pipeline + sinks (run_live.py's path) into ``out_dir``."""
        from realtime.sinks import EventLog, SignalCSV
        from realtime.sources import SourceError, open_source, probe_video
        from realtime.webcodec import BrowserVideoWriter

        cfg = self.config
        try:
            probe_video(video, timeout=cfg.probe_timeout_s)   # a decoder crash or hang stays in a child
            source = open_source(video=video, fps=fps)
        except SourceError as e:
            raise UploadRefused(str(e).replace(str(video), name or video.name)) from None
        notes = []
        sinks = []
        try:
            total = source.header_frames
            duration = total / source.fps if total else None
            if duration is not None and (duration > cfg.max_duration_s or total > cfg.max_frames):
                raise UploadRefused(
                    f"the video lasts {duration:.1f} s ({total} frames at {source.fps:g} fps); this demo accepts up "
                    f"to {cfg.max_duration_s:g} s and {cfg.max_frames} frames: cut it, or run it locally (python "
                    "run_live.py --video FILE --fps F --headless --record OUT.mp4 --events OUT.jsonl)")
            stem = Path(name or video.name).stem[:60] or "video"
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)
            pipe = self.new_pipeline(source.fps, name or video.name)
            pipe.prime_from(source)     # a recording: learn the calm level before its first frame
            trace = SignalTrace()
            writer = BrowserVideoWriter(out_dir / f"{safe}-annotated", fps=source.fps, codec=cfg.video_codec)
            sinks = [writer, SignalCSV(out_dir / f"{safe}.signal.csv"), EventLog(out_dir / f"{safe}.events.jsonl"),
                     trace]
            n = 0
            for frame in source:
                r = pipe.process(frame)
                for s in sinks:
                    s.handle(r)
                n += 1
                if progress is not None and n % 10 == 0:
                    progress(n, total)
                if n >= cfg.max_frames:
                    notes.append(f"stopped after {n} frames (the demo's limit); run longer videos locally")
                    break
            if n == 0:
                raise UploadRefused(f"no frame of {name or video.name} could be decoded; check that it plays "
                                    "elsewhere, or re-encode it (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4)")
            late = pipe.close(wait=True)       # once: the events finalised at the end go to every sink
            for s in sinks:
                s.handle_events(late)
            summary = pipe.summary(source)
        finally:
            for s in sinks:
                try:
                    s.close()
                except Exception as e:
                    log.error("closing %s failed: %s", type(s).__name__, e)
            source.close()
        if summary.end_reason:
            notes.append(summary.end_reason.replace(str(video), name or video.name))
        if summary.faults:
            notes.append("faults: " + ", ".join(f"{k} {v}" for k, v in sorted(summary.faults.items())))
        events = pipe.events
        t, value, threshold = trace.arrays()
        fig = signal_figure(t, value, threshold, events, f"{name or video.name}: motion signal and spotted events")
        return RecordingResult(video=writer.path, events=events, events_path=sinks[2].path,
                               signal_path=sinks[1].path, figure=fig, summary=summary,
                               table=events_table([event_row(e, "final") for e in events]), notes=notes)

    def analyse_upload(self, upload: str | None, fps: float | None, state: WebSession | None,
                       request: Any = None, progress: Callable | None = None) -> tuple:
        """Recording handler: (annotated video, plot, events table, files, summary, upload, session).

        The upload is moved into the session's folder and deleted when done, whatever happens."""
        session = self.session(state, request)
        p = self.check_upload(upload)
        name = p.name
        run_dir = session.new_run_dir()
        moved = run_dir / ("upload" + p.suffix.lower())
        try:
            shutil.move(str(p), moved)  # out of Gradio's shared upload folder: this session only
        except OSError as e:
            raise UploadRefused(f"the upload could not be read ({e.strerror or e}); upload the video again") from None
        try:
            _remove_empty_parent(p, self.upload_roots())
            try:
                fps = float(fps) if fps else None
            except (TypeError, ValueError):
                fps = math.nan
            if fps is not None and not (0 < fps <= 10_000):
                raise UploadRefused(f"frame rate {fps} is not usable: give the true rate (e.g. 200 for a "
                                    "high-speed camera) or 0 to use the file's header")
            result = self.analyse(moved, fps, run_dir, progress, name=name)
        except BaseException:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
        finally:
            moved.unlink(missing_ok=True)
        session.last_used = time.monotonic()
        files = [str(result.events_path), str(result.signal_path)]
        return (str(result.video), result.figure, result.table, files, result.markdown(), None, session)

    # -- the page ----------------------------------------------------------------------------------
    def build(self):
        """The gr.Blocks of the demo (not launched)."""
        cfg = self.config
        app = self

        def live(image, state, request: gr.Request):
            return app.live_step(image, state, request)

        def recalibrate(state, request: gr.Request):
            return app.live_recalibrate(state, request)

        def clear(state, request: gr.Request):
            return app.live_clear(state, request)

        def record(upload, fps, state, request: gr.Request, progress=gr.Progress()):
            def report(n, total):
                if total:
                    progress(min(1.0, n / total), desc=f"frame {n} of {total}")
                else:
                    progress(None, desc=f"frame {n}")
            try:
                return app.analyse_upload(upload, fps, state, request, report)
            except UploadRefused as e:
                raise gr.Error(str(e), title="Video not processed") from None

        def unload(request: gr.Request):
            app.close_session(getattr(request, "session_hash", None))

        with gr.Blocks(title="MoExt live: micro-expression recognition", analytics_enabled=False,
                       delete_cache=(max(60, cfg.cache_age_s // 4), cfg.cache_age_s)) as demo:
            gr.Markdown("# Micro-expression recognition\nFace tracking, onset/apex spotting and recognition of "
                        "(onset, apex) pairs, live from your webcam or on a recorded video.")
            state = gr.State(None, delete_callback=_delete_session_state, time_to_live=cfg.session_idle_s)
            with gr.Tab("Live", id="live"):
                with gr.Row():
                    cam = gr.Image(
                        label="Webcam", sources=["webcam"], streaming=True, type="numpy", elem_id="webcam",
                        webcam_options=gr.WebcamOptions(mirror=False, constraints={
                            "video": {"width": {"ideal": cfg.camera_width}, "height": {"ideal": cfg.camera_height}},
                            "audio": False}))
                    shown = MemoryImage(label="Annotated", show_label=False, type="numpy", interactive=False,
                                        elem_id="annotated", format="jpeg")
                stats = gr.Markdown("Start the webcam: the first second calibrates on a neutral face.",
                                    elem_id="live-stats")
                with gr.Row():
                    recal = gr.Button("Recalibrate (keep a neutral face)", size="sm")
                    clear_btn = gr.Button("Clear events", size="sm")
                table = gr.Dataframe(value=events_table([]), label="Events (newest first)", interactive=False,
                                     elem_id="live-events", max_height=320)
                cam.stream(live, inputs=[cam, state], outputs=[shown, table, stats, state],
                           stream_every=cfg.stream_every, concurrency_limit=cfg.live_concurrency,
                           concurrency_id="live", show_progress="hidden")
                recal.click(recalibrate, inputs=[state], outputs=[state], show_progress="hidden")
                clear_btn.click(clear, inputs=[state], outputs=[table, state], show_progress="hidden")
            with gr.Tab("Recording", id="recording"):
                with gr.Row():
                    with gr.Column(scale=1):
                        upload = gr.File(label=f"Video (up to {cfg.max_upload_mb:g} MB, {cfg.max_duration_s:g} s)",
                                         file_types=list(VIDEO_TYPES), type="filepath", elem_id="upload")
                        fps_box = gr.Number(label="True frame rate (fps); 0 = from the file. High-speed cameras: "
                                                  "give their rate (e.g. 200)", value=0, minimum=0, maximum=10_000,
                                            precision=None, elem_id="fps")
                        run_btn = gr.Button("Analyse", variant="primary", elem_id="analyse")
                        summary = gr.Markdown(elem_id="rec-summary")
                        files = gr.File(label="Events (JSON lines) and motion signal (CSV)", file_count="multiple",
                                        interactive=False, elem_id="rec-files")
                    with gr.Column(scale=2):
                        video = gr.Video(label="Annotated video", interactive=False, elem_id="rec-video",
                                         autoplay=False, loop=False)
                plot = gr.Plot(label="Motion signal and spotted events", elem_id="rec-plot")
                rec_table = gr.Dataframe(value=events_table([]), label="Events", interactive=False,
                                         elem_id="rec-events", max_height=320)
                run_btn.click(record, inputs=[upload, fps_box, state],
                              outputs=[video, plot, rec_table, files, summary, upload, state],
                              concurrency_limit=cfg.recording_concurrency, concurrency_id="recording")
            with gr.Tab("Info", id="info"):
                gr.Markdown(engine_markdown(self.engine_info(), cfg, self.note), elem_id="info")
            demo.unload(unload)
        demo.queue(max_size=max(16, 4 * cfg.max_live))
        demo.moext_app = self  # the handlers and sessions behind this page (tests, launch)
        return demo


def _remove_empty_parent(path: Path, roots: list[Path]) -> None:
    """Gradio keeps each upload in its own folder: remove it once empty (never a root)."""
    parent = path.parent
    if any(parent.resolve() == r.resolve() for r in roots):
        return
    try:
        parent.rmdir()
    except OSError:
        pass


class MemoryImage(gr.Image):
    """gr.Image whose ``JpegFrame`` values go to the page as data URLs: no file per live frame
    (a plain gr.Image writes every output frame into Gradio's cache folder)."""

    is_template = True  # rendered by Gradio's own Image component

    def postprocess(self, value):
        if isinstance(value, JpegFrame):
            return ImageData(url="data:image/jpeg;base64," + base64.b64encode(value.data).decode("ascii"),
                             mime_type="image/jpeg")
        return super().postprocess(value)


# ---------------------------------------------------------------------------------------
# entry points


def build_app(config: WebConfig | None = None, recognizer: Any = None) -> "Any":
    """The demo's gr.Blocks (not launched). ``recognizer``: an already loaded
    engines.recognizer.Recognizer to share (else ``config.engine`` is loaded; "none" or
    missing demo weights: spotting only). ``demo.moext_app`` is the WebApp behind it."""
    config = config or WebConfig()
    if recognizer is not None:
        app = WebApp(config, recognizer)
    else:
        app = WebApp.load(config)
    return app.build()


def launch(args: argparse.Namespace) -> int:
    """Start the demo for run_live.py's parsed arguments (--host --port --share --auth,
    --engine --device --tracker --calibration); blocks until Ctrl+C. Returns the exit status."""
    config = WebConfig.from_args(args)
    try:
        auth = parse_auth(getattr(args, "auth", None))
    except ValueError as e:
        print(f"error: {e}", flush=True)
        return 2
    try:
        app = WebApp.load(config)
    except Exception as e:
        print(f"error: --engine {config.engine}: {e}", flush=True)
        return 2
    demo = app.build()
    share = bool(getattr(args, "share", False))
    if share and auth is None:
        print("warning: --share makes the demo reachable by anyone with the link; add --auth USER:PASSWORD",
              flush=True)
    try:
        _, local_url, share_url = demo.launch(
            server_name=getattr(args, "host", "127.0.0.1"), server_port=getattr(args, "port", 7860), share=share,
            auth=auth, max_file_size=f"{int(config.max_upload_mb)}mb", prevent_thread_lock=True, quiet=True,
            show_error=True, ssr_mode=False)
    except OSError as e:
        app.close()
        print(f"error: could not start the web server on {getattr(args, 'host', '')}:{getattr(args, 'port', '')} "
              f"({e}); choose another --port", flush=True)
        return 2
    print(f"web demo running at {local_url}" + (f" and {share_url}" if share_url else ""), flush=True)
    if share and not share_url:
        print("warning: no share link could be created (it needs internet access to gradio.live)", flush=True)
    print("press Ctrl+C to stop", flush=True)
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        demo.close()
        app.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    from realtime.cli import build_parser

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    return launch(args)


if __name__ == "__main__":
    raise SystemExit(main())
