"""Everything behind the web demo's page: the shared recogniser, the sessions, the handlers.

``WebApp`` loads the engine once (``engines.recognizer.load_engine``) for every session,
makes each session's ``Pipeline``, keeps the sessions (closing those left idle and the
least recently fed live streams beyond ``max_live``) and answers the page:
``live_step`` (one webcam frame), ``live_recalibrate`` / ``live_clear``, and
``analyse_upload`` for the recording tab: an uploaded video is checked (inside Gradio's
upload folder, a video extension, size and duration limits, its header read in a child
process first), moved into the session's folder, run through ``open_source`` +
``Pipeline`` + the sinks of run_live.py (EventLog, SignalCSV) and
``webcodec.BrowserVideoWriter``, and deleted. The handlers are plain methods, callable
without a browser (tests); ``realtime.frontends.webapp`` lays out the page around them.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import gradio as gr
import numpy as np
import pandas as pd
from gradio.utils import get_upload_folder
from matplotlib.figure import Figure

from core.events import Event
from engines.recognizer import load_engine
from realtime.frontends.webcodec import BrowserVideoWriter
from realtime.frontends.websession import (
    LiveStream, UploadRefused, WebConfig, WebSession, event_row, events_table,
)
from realtime.stages.pipeline import Pipeline, PipelineConfig
from realtime.stages.results import RunSummary
from realtime.stages.sinks import EventLog, SignalCSV
from realtime.stages.sources import SourceError, open_source, probe_video

log = logging.getLogger("realtime.frontends.webapp")

VIDEO_TYPES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".y4m")


def is_inside(path: Path, root: Path) -> bool:
    """``path`` (resolved, links followed) lies inside ``root``."""
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except (ValueError, OSError):
        return False


FACE_COLOURS = ("#1f5fa8", "#2a9d55", "#8e44ad", "#d35400")


def signal_figure(t: np.ndarray, scores: dict, threshold: np.ndarray, events: list[Event], title: str):
    """Matplotlib figure: each face's spotter score (motion in multiples of that face's calm
    level; ``scores``: face id -> values at ``t``, nan = not followed; log scale), the
    threshold, and each spotted interval shaded (micro amber, macro grey) with its label at
    the apex (and its face, when there are several)."""
    fig = Figure(figsize=(9, 3.2), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    for e in events:
        colour = "#f0a020" if e.kind == "micro" else "#9a9a9a"
        ax.axvspan(e.onset_t, max(e.offset_t, e.onset_t + 1e-3), color=colour, alpha=0.35, lw=0)
    several = len(scores) > 1
    for n, (face, value) in enumerate(sorted(scores.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))):
        ax.plot(t, value, lw=1.0, color=FACE_COLOURS[n % len(FACE_COLOURS)],
                label=f"face #{face} motion score" if several else "motion score")
    if np.isfinite(threshold).any():
        ax.plot(t, threshold, lw=0.9, ls="--", color="#c03030", label="threshold")
    finite = [v[np.isfinite(v)] for v in scores.values()]
    top = max((float(v.max()) for v in finite if v.size), default=1.0)
    for e in events:
        conf = e.probs.get(e.label) if e.label else None
        text = (f"#{e.face_id} " if several and e.face_id is not None else "") \
            + f"{e.kind}: {e.label or 'no label'}" + (f" {conf:.2f}" if conf is not None else "")
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


# ---------------------------------------------------------------------------------------
# sinks used by the recording tab (besides those of run_live.py)


class SignalTrace:
    """Sink keeping each face's per-frame motion score in memory for the plot (bounded by
    the frame limit of an upload)."""

    def __init__(self) -> None:
        self.t: list[float] = []
        self.scores: dict[int | None, list[float]] = {}   # face id -> score per frame (nan: not followed)
        self.threshold: list[float] = []

    def handle(self, r) -> None:
        n = len(self.t)
        self.t.append(r.t)
        for f in r.faces:
            col = self.scores.setdefault(f.face_id, [np.nan] * n)
            col.append(np.nan if f.score is None else f.score)
        for col in self.scores.values():
            if len(col) == n:
                col.append(np.nan)
        self.threshold.append(np.nan if r.threshold is None else r.threshold)

    def handle_events(self, events) -> None:
        pass

    def close(self) -> None:
        pass

    def arrays(self) -> tuple[np.ndarray, dict, np.ndarray]:
        """(t, {face id: scores}, threshold); one all-nan line when no face was followed."""
        scores = {k: np.asarray(v, float) for k, v in self.scores.items()} or {None: np.full(len(self.t), np.nan)}
        return np.asarray(self.t, float), scores, np.asarray(self.threshold, float)


# ---------------------------------------------------------------------------------------
# the app


@dataclass
class RecordingResult:
    video: Path
    events: list[Event]
    events_path: Path
    signal_path: Path
    figure: Figure
    summary: RunSummary
    table: pd.DataFrame        # EVENT_COLUMNS
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
        self.rtc = None                # realtime.frontends.webrtc.RtcPeers once mounted
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
        runs spotting only (as run_live.py does: ``engines.recognizer.load_engine``)."""
        recognizer, note = load_engine(config.engine, config.device, engine=config.runtime)
        if recognizer is None and config.engine == "auto":   # demo weights missing: say so
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

    def new_pipeline(self, fps: float, source_name: str) -> Pipeline:
        """A Pipeline on the shared recogniser (its own tracker, spotter and worker)."""
        cfg = self.config
        pc = PipelineConfig(fps=fps, tracker=cfg.tracker, max_faces=cfg.max_faces, engine=cfg.engine if self.recognizer is not None else "none",
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
        """Shut down: WebRTC connections, every session, the recogniser, the work folder."""
        self.closed = True
        if self.rtc is not None:
            self.rtc.close()
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
        t, scores, threshold = trace.arrays()
        fig = signal_figure(t, scores, threshold, events, f"{name or video.name}: motion signal and spotted events")
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


def _remove_empty_parent(path: Path, roots: list[Path]) -> None:
    """Gradio keeps each upload in its own folder: remove it once empty (never a root)."""
    parent = path.parent
    if any(parent.resolve() == r.resolve() for r in roots):
        return
    try:
        parent.rmdir()
    except OSError:
        pass
