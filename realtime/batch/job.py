"""One recording of a batch (``realtime.batch.job``): its key, the job a worker runs, its outputs.

``run_job`` is the one per-recording function (the batch runner's, and through it
``realtime.evaluate``'s): the recording goes through ``realtime.stages.recording`` (the
settings, read-ahead, Pipeline, EventLog and SignalCSV of run_live.py) and its folder
(events.jsonl, signal.csv, result.json) is written under ``.partial/`` and published into
``recordings/<id>/`` in one rename, result.json last. This module owns that resume state:
the key a result is trusted under (the settings, the engine file's and the input file's
fingerprints, the true rate), reading and writing result.json, the folder name of a
recording id, and ``EngineLoadError``. The worker's recogniser comes from
``engines.recognizer.load_engine``, loaded once per process.
"""
from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psutil

from engines.recognizer import DEMO_WEIGHTS, load_engine
from realtime.batch.discovery import BatchError
from realtime.stages.recording import RecordingSettings, drive, make_pipeline
from realtime.stages.sinks import EventLog, SignalCSV
from realtime.stages.sources import IMAGE_EXTENSIONS, SourceError, open_source

try:
    import resource      # POSIX only: this process's peak RSS (Windows: psutil's peak working set)
except ImportError:
    resource = None

log = logging.getLogger("realtime.batch.job")

RESULT_FORMAT = 1
CHUNK = 1 << 20                 # bytes of the head and the tail of a file that go into its fingerprint


class EngineLoadError(RuntimeError):
    """The recogniser could not be loaded in a worker: every recording would fail alike."""


def dirname_for(rid: str) -> str:
    """A recording id -> its folder name under recordings/ (safe on every filesystem)."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", rid.replace("/", "__")).strip("._") or "recording"
    if len(s) > 100 or s != rid.replace("/", "__"):
        s = f"{s[:100]}-{hashlib.sha256(rid.encode()).hexdigest()[:8]}"
    return s


# =========================================================================================
# keys: what makes a result reusable


def input_fingerprint(path: Path) -> str:
    """Size and first / last MiB of a file (for a folder of frames: every image's name and
    size, and the first and last image's head). Cheap on hours of video; a re-encoded or
    replaced file changes it. OSError when the input cannot be read."""
    h = hashlib.sha256()
    if path.is_dir():
        imgs = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        h.update(f"dir:{len(imgs)}".encode())
        for p in imgs:
            h.update(f"{p.name}:{p.stat().st_size};".encode())
        for p in imgs[:1] + imgs[-1:]:
            with open(p, "rb") as fh:
                h.update(fh.read(CHUNK))
    else:
        size = path.stat().st_size
        h.update(f"file:{size}".encode())
        with open(path, "rb") as fh:
            h.update(fh.read(CHUNK))
            if size > 2 * CHUNK:
                fh.seek(size - CHUNK)
                h.update(fh.read(CHUNK))
            elif size > CHUNK:
                h.update(fh.read())
    return h.hexdigest()[:16]


def engine_fingerprint(spec: str) -> str:
    """The engine's own identity: "none", or the weights / engine file's fingerprint.
    BatchError when the file is not there."""
    if str(spec).lower() == "none":
        return "none"
    if spec == "auto":
        if not DEMO_WEIGHTS.is_file():
            raise BatchError(f"--engine auto: the demo weights {DEMO_WEIGHTS} are missing; restore them, pass "
                             "--engine PATH, or --engine none for spotting only")
        return "auto:" + input_fingerprint(DEMO_WEIGHTS)
    p = Path(spec)
    if not p.is_file():
        raise BatchError(f"--engine {spec}: no such file; give a .safetensors / .onnx / .plan file, auto or none")
    return p.suffix.lower() + ":" + input_fingerprint(p)


def recording_key(settings_key: str, input_key: str, fps: float | None) -> str:
    return hashlib.sha256(f"{settings_key}|{input_key}|{fps!r}".encode()).hexdigest()[:16]


# =========================================================================================
# one recording (runs in a worker)


@dataclass
class Job:
    """Everything a worker needs for one recording (plain values: it travels to processes
    and Ray tasks)."""

    index: int
    rid: str
    path: str
    out: str                 # the recording's final folder (recordings/<id>)
    partial: str             # where it is written first (.partial/)
    key: str
    settings: dict
    fps: float | None = None
    subject: str = ""
    session: str = ""
    threads: int = 1
    log_level: int = logging.ERROR


_ENGINES: dict = {}


def _recognizer(settings: RecordingSettings, threads: int):
    """The worker's recogniser for these settings (engines.recognizer.load_engine, once per
    process); None for spotting only."""
    k = (settings.engine, settings.device, threads)
    if k not in _ENGINES:
        try:
            _ENGINES[k], _ = load_engine(settings.engine, settings.device, threads=threads)
        except Exception as e:
            raise EngineLoadError(f"--engine {settings.engine}: {e}") from None
    return _ENGINES[k]


def peak_rss_mb() -> float:
    """This process's peak resident memory, MiB."""
    if resource is not None:
        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return r / (1024.0 * 1024.0) if sys.platform == "darwin" else r / 1024.0
    mi = psutil.Process().memory_info()   # Windows
    return getattr(mi, "peak_wset", mi.rss) / 2 ** 20


class _Progress:
    """A sink that reports frames done every ``every_s`` seconds (the batch's bar)."""

    def __init__(self, report: Callable[[int, int], None], index: int, every_s: float = 0.5) -> None:
        self.report, self.index, self.every_s = report, index, every_s
        self.n = self.sent = 0
        self.last = time.monotonic()

    def handle(self, result) -> None:
        self.n += 1
        now = time.monotonic()
        if now - self.last >= self.every_s:
            try:
                self.report(self.index, self.n - self.sent)
            except Exception:   # progress must never fail a recording
                pass
            self.sent, self.last = self.n, now

    def handle_events(self, events) -> None:
        pass

    def close(self) -> None:
        pass


def _fsync_tree(folder: Path) -> None:
    for p in folder.iterdir():
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)


def publish(tmp: Path, final: Path) -> None:
    """Move a complete result folder into place in one rename (an older one is moved
    aside first and removed); a run killed in between leaves no result, never half of one."""
    final.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(10):
        if final.exists():
            trash = tmp.parent / f"old-{final.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
            try:
                os.replace(final, trash)
            except FileNotFoundError:
                pass
            else:
                shutil.rmtree(trash, ignore_errors=True)
        try:
            os.rename(tmp, final)
            return
        except OSError as e:   # another writer put one there in between: move it aside again
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.EACCES):
                raise
    raise OSError(f"{final}: could not be replaced (another batch keeps writing it?)")


def write_result(folder: Path, result: dict) -> None:
    tmp = folder / "result.json.tmp"
    tmp.write_text(json.dumps(result, indent=1, allow_nan=False, default=str), encoding="utf-8")
    os.replace(tmp, folder / "result.json")


def read_result(folder: Path) -> dict | None:
    """A recording folder's published result.json, or None (missing, unreadable, another format)."""
    try:
        r = json.loads((folder / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return r if isinstance(r, dict) and r.get("format") == RESULT_FORMAT else None


def _base_result(job: Job) -> dict:
    return {"format": RESULT_FORMAT, "recording": job.rid, "path": job.path, "subject": job.subject,
            "session": job.session, "given_fps": job.fps, "key": job.key, "status": "failed", "error": None,
            "fps": None, "frames": 0, "frames_with_face": 0, "face_share": 0.0, "duration_s": 0.0, "events": 0,
            "micro": 0, "macro": 0, "unlabelled": 0, "faults": {}, "rejected": {}, "end_reason": None,
            "lookahead_frames": 0, "warnings": [], "partial_outputs": False}


def _finish(job: Job, result: dict, tmp: Path, started: float, t0: float) -> dict:
    result.update({"wall_s": round(time.perf_counter() - t0, 3),
                   "worker": f"{socket.gethostname()}:{os.getpid()}",
                   "worker_peak_rss_mb": round(peak_rss_mb(), 1),
                   "started_at": _dt.datetime.fromtimestamp(started).isoformat(timespec="seconds"),
                   "finished_at": _dt.datetime.now().isoformat(timespec="seconds")})
    frames, wall = result.get("frames") or 0, result["wall_s"]
    result["achieved_fps"] = round(frames / wall, 2) if wall > 0 else None
    write_result(tmp, result)
    _fsync_tree(tmp)
    publish(tmp, Path(job.out))
    return result


def run_job(job: Job, *, recognizer=None, report: Callable[[int, int], None] | None = None) -> dict:
    """Analyse one recording and publish its folder (events.jsonl, signal.csv,
    result.json); returns the result (result.json's content). The batch runner's and
    realtime.evaluate's one per-recording function: the recording goes through
    realtime.stages.recording (the settings, read-ahead, Pipeline, EventLog and SignalCSV of
    run_live.py). ``recognizer``: a loaded one to use (in-process runs), else the worker
    loads ``settings.engine`` once. Never raises for a bad recording (the result says
    failed, with the error); raises EngineLoadError when the engine cannot be loaded, and
    KeyboardInterrupt (nothing published) when interrupted."""
    started, t0 = time.time(), time.perf_counter()
    settings = RecordingSettings.from_dict(job.settings)
    tmp = Path(job.partial) / f"{Path(job.out).name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True, exist_ok=False)
    result = _base_result(job)
    try:
        path = Path(job.path)
        try:
            source = open_source(images=path, fps=job.fps) if path.is_dir() else open_source(video=path, fps=job.fps)
        except SourceError as e:
            hint = (" (its true rate goes in the manifest's fps column, or --fps)"
                    if path.is_dir() and job.fps is None and "--fps" not in str(e) else "")
            raise _Failed(f"cannot be opened: {e}{hint}") from None
        with source:
            rec = recognizer if recognizer is not None else _recognizer(settings, job.threads)
            pipe = make_pipeline(source, settings, rec)
            sinks = [EventLog(tmp / "events.jsonl"), SignalCSV(tmp / "signal.csv")]
            if report is not None:
                sinks.append(_Progress(report, job.index))
            try:
                outcome = drive(source, pipe, sinks, close_timeout=120.0)
            finally:
                for s in sinks:
                    s.close()
            if outcome.interrupted:
                raise KeyboardInterrupt
            s = outcome.summary
            result.update({
                "fps": source.fps, "frames": s.frames, "frames_with_face": s.frames_with_face,
                "face_share": round(s.face_share, 4), "duration_s": round(s.frames / source.fps, 3),
                "events": s.events, "micro": s.micro, "macro": s.macro, "unlabelled": s.unlabelled,
                "faults": dict(s.faults), "rejected": dict(s.rejected), "end_reason": s.end_reason,
                "lookahead_frames": s.lookahead_frames, "warnings": list(source.messages)[:20],
                "engine": s.engine or "none", "tracker": s.tracker, "partial_outputs": True})
        if s.end_reason:
            result["error"] = (f"{s.end_reason}; its events up to there are in recordings/{Path(job.out).name}/ "
                               "but are left out of the combined tables")
        elif s.frames == 0:
            result["error"] = "no frame could be decoded; the file is empty or not a video"
        else:
            result["status"], result["partial_outputs"] = "done", False
    except KeyboardInterrupt:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except EngineLoadError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except _Failed as e:
        result["error"] = str(e)
    except Exception as e:   # a bad recording must not stop the batch: listed with its error
        result["error"] = f"{type(e).__name__}: {e}"
        log.debug("recording %s failed", job.rid, exc_info=True)
    return _finish(job, result, tmp, started, t0)


class _Failed(Exception):
    pass


def failed_result(job: Job, error: str) -> dict:
    """Publish a failed result written by the driver (a worker that died on the recording)."""
    started, t0 = time.time(), time.perf_counter()
    tmp = Path(job.partial) / f"{Path(job.out).name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True, exist_ok=False)
    r = _base_result(job)
    r["error"] = error
    r = _finish(job, r, tmp, started, t0)
    r["worker"], r["worker_peak_rss_mb"] = None, None
    return r

