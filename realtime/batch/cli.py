"""Archives: spot and label every recording of a study (``python -m realtime.batch``).

    python -m realtime.batch study/ --out results/              # every video under study/, all cores
    python -m realtime.batch study.csv --out results/ --jobs 4   # a manifest: path, subject, session, fps
    python -m realtime.batch "study/**/*.avi" --out results/ --ray --ray-address auto

Each recording goes through the live path exactly as ``run_live.py --video FILE`` analyses
a file (``realtime.recording``: the same settings, read-ahead, pipeline, event log and
signal sinks), in worker processes (``--jobs N``) or Ray tasks (``--ray``). The one
per-recording function is ``run_job``; ``realtime.evaluate`` runs its videos through it too.

Inputs: video files, folders (searched recursively: video files, and folders of frames),
globs, and CSV manifests with a ``path`` column and optional ``subject``, ``session``,
``fps`` (the true frame rate) and ``recording`` (an id) columns; relative paths are taken
from the manifest's folder. A recording's id is its path relative to the folder given (or
its file name); ``--subject-pattern`` fills subject / session from the id with a regular
expression's named groups when there is no manifest.

Outputs under ``--out DIR``:

    recordings/<id>/events.jsonl    the event log (realtime.events.Event, JSON lines)
    recordings/<id>/signal.csv      the per-frame motion signal (realtime.sinks.SignalCSV)
    recordings/<id>/result.json     status, summary figures, error, the key it was made with
    manifest.csv                    every recording: done / failed / pending, error, key
    events.csv, events.parquet      every event of every done recording, with recording,
                                    subject and session columns
    recordings.csv, recordings.parquet   one row per recording (status, frames, events ...)
    report.md, report.html, plots/  counts per subject, class and kind; failures; throughput
    exports/elan/<id>.eaf           ELAN, a tier per face and kind (realtime.exports)
    exports/megc2022_spotting.csv   MEGC 2022 spotting submission format
    exports/intervals.csv           plain interval table (BORIS-style column names)
    batch.json                      settings, throughput, peak memory of the parent and workers

Resume: a recording's outputs are written in ``.partial/`` and moved into ``recordings/``
in one rename once complete, ``result.json`` last; a recording counts as done only through
that file, and only while its key (the settings, the engine file and the input file's
size and first / last MiB) is unchanged. A second run skips those; failed recordings are
retried with ``--retry-failed``; ``--force`` redoes all. A run killed at any point leaves
nothing a later run would trust (leftovers in ``.partial/`` are removed next time).

Failures: a recording that cannot be opened, decodes only part-way (truncated), crashes
its worker or raises is listed with its error in manifest.csv, recordings.csv and the
report, and the batch goes on. A truncated recording's outputs up to where decoding
stopped stay in its folder but are left out of the combined tables.

Exit status: 0 every recording done; 1 the batch finished but some recordings failed
(listed); 2 bad input or options (the message says which and what to do), or an engine
that cannot be loaded; 130 interrupted (run the same command again to finish).
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import errno
import glob
import hashlib
import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import sys
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from realtime.evaluate import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from realtime.recording import RecordingSettings

log = logging.getLogger("realtime.batch")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
RESULT_FORMAT = 1
CHUNK = 1 << 20                 # bytes of the head and the tail of a file that go into its fingerprint
MANIFEST_COLUMNS = ("recording", "path", "subject", "session", "fps", "status", "error", "frames", "events",
                    "micro", "macro", "key", "output", "updated")
EVENT_COLUMNS = ("recording", "subject", "session", "path", "face_id", "kind", "label", "confidence", "probs",
                 "onset_frame", "apex_frame", "offset_frame", "onset_t", "apex_t", "offset_t", "duration_ms", "fps",
                 "peak_motion", "latency_wait_ms", "decided_t", "finalised_t", "latency_decision_ms",
                 "latency_compute_ms", "latency_final_ms", "latency_infer_ms")
RECORDING_COLUMNS = ("recording", "subject", "session", "path", "status", "error", "fps", "frames", "duration_s",
                     "face_share", "events", "micro", "macro", "unlabelled", "not_expressions", "faults",
                     "lookahead_frames", "key", "wall_s", "achieved_fps", "worker", "worker_peak_rss_mb",
                     "finished_at")
TIMING_COLUMNS = frozenset({"decided_t", "finalised_t", "latency_decision_ms", "latency_compute_ms",
                            "latency_final_ms", "latency_infer_ms", "wall_s", "achieved_fps", "worker",
                            "worker_peak_rss_mb", "finished_at"})
"""Columns that depend on the machine's speed and load, not on the recording: two runs of
the same batch agree on every other column."""
EXPORTS = ("elan", "megc", "intervals")

EXAMPLES = """\
examples:
  python -m realtime.batch study/ --out results/                  # every video (and frame folder) under study/
  python -m realtime.batch study.csv --out results/ --jobs 4      # manifest: path,subject,session,fps
  python -m realtime.batch "study/**/*.avi" --fps 200 --out results/ --engine none
  python -m realtime.batch study/ --out results/ --subject-pattern "(?P<subject>sub\\d+)/(?P<session>ses\\d+)"
  python -m realtime.batch study/ --out results/ --ray                    # a local Ray runtime
  python -m realtime.batch study/ --out results/ --ray --ray-address auto # the Ray cluster this node is in
  python -m realtime.batch study/ --out results/ --retry-failed            # again: retry the failed ones only
  python -m realtime.batch --compare results_a/ results_b/                 # same tables apart from timing?
  python run_live.py --batch study/ --out results/ --jobs 2                # the same, from the front door

A second run with the same inputs and settings skips every finished recording; --force redoes
all. Outputs: manifest.csv (done / failed / pending), events.csv + .parquet, recordings.csv +
.parquet, report.md / report.html, exports/ (ELAN .eaf, MEGC 2022 spotting CSV, intervals CSV).
With --ray, inputs and --out must be at the same path on every node (shared storage) and the
project installed there (pip install -e ".[batch]"). Exit status: 0 all done, 1 some recordings
failed (listed), 2 bad input, 130 interrupted.
"""


class BatchError(ValueError):
    """An input, option or output folder that cannot be used; the message says what to do."""


class EngineLoadError(RuntimeError):
    """The recogniser could not be loaded in a worker: every recording would fail alike."""


# =========================================================================================
# inputs


@dataclass
class Recording:
    """One recording of the batch: an id, where it is, who and when, its true rate."""

    rid: str
    path: Path
    subject: str = ""
    session: str = ""
    fps: float | None = None
    problem: str | None = None      # known unusable before any analysis (manifest row naming no file)


def _is_video(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS


def _holds_images(d: Path) -> bool:
    try:
        return any(c.suffix.lower() in IMAGE_EXTENSIONS and c.is_file() for c in d.iterdir())
    except OSError:
        return False


def _walk(root: Path, skip: Sequence[Path] = ()) -> list[Path]:
    """Video files and folders of frames under ``root`` (hidden folders and ``skip`` not
    entered); a folder of frames is one recording, not searched further."""
    skip_r = {s.resolve() for s in skip}
    out: list[Path] = []
    if _holds_images(root):
        return [root]
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            children = sorted(d.iterdir())
        except OSError:
            continue
        for c in children:
            if c.name.startswith("."):
                continue
            if c.is_dir():
                if c.resolve() in skip_r:
                    continue
                if _holds_images(c):
                    out.append(c)
                else:
                    stack.append(c)
            elif c.suffix.lower() in VIDEO_EXTENSIONS:
                out.append(c)
    return sorted(out)


_MANIFEST_NAMES = {
    "path": ("path", "file", "video", "filename", "recording_path", "media"),
    "subject": ("subject", "participant", "subject_id"),
    "session": ("session", "session_id", "visit"),
    "fps": ("fps", "true_fps", "frame_rate", "framerate", "true fps"),
    "recording": ("recording", "recording_id", "id"),
}


def read_manifest(path: Path) -> list[Recording]:
    """A CSV manifest -> recordings (see the module docstring). Rows naming a file that
    does not exist are kept, with the problem, so that the batch lists them as failed."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as e:
        raise BatchError(f"manifest {path}: cannot be read ({e}); give a UTF-8 CSV file") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise BatchError(f"manifest {path}: is empty; it needs a header row with a 'path' column and one row per "
                         "recording")
    header = [c.strip().lower() for c in rows[0]]
    cols = {}
    for key, names in _MANIFEST_NAMES.items():
        for j, c in enumerate(header):
            if c in names:
                cols[key] = j
                break
    if "path" not in cols:
        raise BatchError(f"manifest {path}: no 'path' column in its header {rows[0]}; the columns are path "
                         "(required), subject, session, fps (true frame rate), recording (an id)")
    if len(rows) == 1:
        raise BatchError(f"manifest {path}: has a header but no recording rows")
    base = path.resolve().parent
    out = []
    for n, row in enumerate(rows[1:], 2):
        cell = lambda k: row[cols[k]].strip() if k in cols and cols[k] < len(row) else ""  # noqa: E731
        raw = cell("path")
        if not raw:
            raise BatchError(f"manifest {path} row {n}: the path cell is empty; fill it or delete the row")
        fps = None
        if cell("fps"):
            try:
                fps = float(cell("fps"))
            except ValueError:
                fps = math.nan
            if not (math.isfinite(fps) and fps > 0):
                raise BatchError(f"manifest {path} row {n}: fps {cell('fps')!r} is not a positive frame rate; "
                                 "write the true rate (e.g. 200) or leave the cell empty to use the file header")
        p = Path(raw).expanduser()
        p = p if p.is_absolute() else base / p
        rid = cell("recording") or Path(raw).as_posix()
        problem = None
        if not p.exists():
            problem = f"manifest {path.name} row {n}: {raw} does not exist (check the path; relative paths are " \
                      f"taken from the manifest's folder {base})"
        elif p.is_dir() and not _holds_images(p):
            problem = f"manifest {path.name} row {n}: {raw} is a folder without images; give a video file or a " \
                      "folder of frames"
        out.append(Recording(rid, p.resolve() if p.exists() else p, cell("subject"), cell("session"), fps, problem))
    return out


def collect(inputs: Sequence[str], *, fps: float | None = None, subject_pattern: str | None = None,
            skip: Sequence[Path] = ()) -> list[Recording]:
    """Files, folders, globs and CSV manifests -> recordings with unique ids (see the
    module docstring). BatchError for an input that names nothing usable."""
    if not inputs:
        raise BatchError("no INPUTS: give video files, folders, globs (quoted) or a CSV manifest")
    pattern = None
    if subject_pattern:
        try:
            pattern = re.compile(subject_pattern)
        except re.error as e:
            raise BatchError(f"--subject-pattern {subject_pattern!r} is not a regular expression ({e})") from None
        if not ({"subject", "session"} & set(pattern.groupindex)):
            raise BatchError(f"--subject-pattern {subject_pattern!r} has no (?P<subject>...) or (?P<session>...) "
                             "group; name the groups that hold them")
    recs: list[Recording] = []

    def add_path(p: Path, root: Path | None) -> None:
        rid = p.relative_to(root).as_posix() if root is not None and p != root else p.name
        recs.append(Recording(rid, p.resolve()))

    for raw in inputs:
        p = Path(raw).expanduser()
        if p.is_file() and p.suffix.lower() == ".csv":
            recs.extend(read_manifest(p))
        elif p.is_file():
            if p.suffix.lower() not in VIDEO_EXTENSIONS:
                raise BatchError(f"input {raw}: not a video ({', '.join(VIDEO_EXTENSIONS)}), a folder or a .csv "
                                 "manifest")
            add_path(p, None)
        elif p.is_dir():
            found = _walk(p, skip)
            if not found:
                raise BatchError(f"input {raw}: no video file ({', '.join(VIDEO_EXTENSIONS)}) or folder of frames "
                                 "under it; point at the folder that holds the recordings")
            for f in found:
                add_path(f, p if f != p else None)
        elif glob.has_magic(raw):
            matches = sorted(Path(m) for m in glob.glob(os.path.expanduser(raw), recursive=True))
            usable = [m for m in matches if _is_video(m) or (m.is_dir() and _holds_images(m))]
            if not usable:
                raise BatchError(f"input {raw}: the pattern matches no video file or folder of frames "
                                 f"({len(matches)} match(es) in all); quote it so the shell leaves it to us")
            for m in usable:
                add_path(m, None)
        else:
            raise BatchError(f"input {raw}: no such file or folder (and not a glob pattern); check the path")
    for r in recs:
        if r.fps is None and fps is not None:
            r.fps = fps
        if pattern is not None:
            m = pattern.search(r.rid)
            if m:
                g = m.groupdict()
                r.subject = r.subject or (g.get("subject") or "")
                r.session = r.session or (g.get("session") or "")
    # one recording per file (a file named twice is analysed once)
    seen: dict[Path, Recording] = {}
    for r in recs:
        seen.setdefault(r.path, r)
    recs = list(seen.values())
    # unique ids: a short hash of the full path where two share one
    count = Counter(r.rid for r in recs)
    for r in recs:
        if count[r.rid] > 1:
            r.rid = f"{r.rid}#{hashlib.sha256(str(r.path).encode()).hexdigest()[:6]}"
    return recs


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
        from engines.recognizer import DEMO_WEIGHTS

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
    """The worker's recogniser for these settings (loaded once per process)."""
    if str(settings.engine).lower() == "none":
        return None
    k = (settings.engine, settings.device, threads)
    if k not in _ENGINES:
        from engines.recognizer import Recognizer

        try:
            _ENGINES[k] = Recognizer.load(settings.engine, device=settings.device, threads=threads)
        except Exception as e:
            raise EngineLoadError(f"--engine {settings.engine}: {e}") from None
    return _ENGINES[k]


def peak_rss_mb() -> float:
    """This process's peak resident memory, MiB."""
    try:
        import resource

        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return r / (1024.0 * 1024.0) if sys.platform == "darwin" else r / 1024.0
    except ImportError:            # Windows
        import psutil

        mi = psutil.Process().memory_info()
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
    realtime.recording (the settings, read-ahead, Pipeline, EventLog and SignalCSV of
    run_live.py). ``recognizer``: a loaded one to use (in-process runs), else the worker
    loads ``settings.engine`` once. Never raises for a bad recording (the result says
    failed, with the error); raises EngineLoadError when the engine cannot be loaded, and
    KeyboardInterrupt (nothing published) when interrupted."""
    from realtime.recording import drive, make_pipeline
    from realtime.sinks import EventLog, SignalCSV
    from realtime.sources import SourceError, open_source

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


# =========================================================================================
# executors


def _quiet_native(level: int) -> None:
    """FFmpeg's and OpenCV's own console messages off (a truncated file prints one per bad
    frame; the batch reports it in the tables) unless debugging; before cv2 is imported."""
    if level > logging.DEBUG:
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")


def _worker_setup(threads: int, level: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    _quiet_native(level)
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s")
    logging.getLogger().setLevel(level)
    try:
        import cv2

        cv2.setNumThreads(threads)
    except Exception:
        pass
    if "torch" in sys.modules:
        try:
            sys.modules["torch"].set_num_threads(threads)
        except Exception:
            pass


_QUEUE = None


def _process_init(queue, threads: int, level: int) -> None:
    global _QUEUE
    _QUEUE = queue
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl+C is the driver's to handle
    _worker_setup(threads, level)


def _process_task(job: Job) -> dict:
    q = _QUEUE
    return run_job(job, report=(lambda i, n: q.put_nowait((i, n))) if q is not None else None)


def run_serial(jobs: Sequence[Job], *, recognizer=None, on_progress, on_result) -> None:
    """Jobs one after the other in this process (the pipeline's own log messages at the
    jobs' level meanwhile, as in a worker)."""
    logger = logging.getLogger("realtime")
    before = logger.level
    if jobs:
        logger.setLevel(jobs[0].log_level)
    try:
        for job in jobs:
            on_result(job, run_job(job, recognizer=recognizer, report=on_progress))
    finally:
        logger.setLevel(before)


def run_processes(jobs: Sequence[Job], workers: int, *, on_progress, on_result, max_tasks: int = 40) -> None:
    """Jobs in ``workers`` spawned processes, at most 2 per worker in flight; results in
    the order they finish. A worker that dies (killed, out of memory, a crash in native
    code) breaks the pool: it is made again and the recordings it held are retried once,
    then listed as failed."""
    import multiprocessing as mp
    import queue as _q
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    ctx = mp.get_context("spawn")
    progress = ctx.Queue()
    level = jobs[0].log_level if jobs else logging.ERROR
    threads = jobs[0].threads if jobs else 1

    def make_pool():
        kw = dict(max_workers=workers, mp_context=ctx, initializer=_process_init, initargs=(progress, threads, level))
        if sys.version_info >= (3, 11):
            kw["max_tasks_per_child"] = max_tasks    # a fresh process now and then: memory stays flat
        return ProcessPoolExecutor(**kw)

    def drain():
        while True:
            try:
                i, n = progress.get_nowait()
            except (_q.Empty, OSError, EOFError, ValueError):
                return
            on_progress(i, n)

    pending = deque(jobs)
    crashes: Counter = Counter()
    pool = make_pool()
    running: dict = {}
    try:
        while pending or running:
            while pending and len(running) < 2 * workers:
                job = pending.popleft()
                running[pool.submit(_process_task, job)] = job
            done, _ = wait(list(running), timeout=0.3, return_when=FIRST_COMPLETED)
            drain()
            broken = False
            for f in done:
                job = running.pop(f)
                try:
                    res = f.result()
                except BrokenProcessPool:
                    broken = True
                    crashes[job.index] += 1
                    if crashes[job.index] >= 2:
                        on_result(job, failed_result(job, "the worker process died while analysing it, twice "
                                                          "(killed, out of memory, or a crash in native code)"))
                    else:
                        pending.appendleft(job)
                    continue
                on_result(job, res)
            if broken:
                for f, job in list(running.items()):    # the rest of the broken pool's work goes again
                    pending.appendleft(job)
                running.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                log.warning("a worker process died; starting the pool again")
                pool = make_pool()
        drain()
    except BaseException:
        _terminate(pool)
        raise
    else:
        pool.shutdown(wait=True)


def _terminate(pool) -> None:
    for p in list((getattr(pool, "_processes", None) or {}).values()):
        try:
            p.terminate()
        except Exception:
            pass
    try:
        pool.shutdown(wait=False, cancel_futures=True)
    except Exception:
        pass


def _ray_task(job: Job, counter) -> dict:
    if not getattr(_ray_task, "ready", False):
        _worker_setup(job.threads, job.log_level)
        _ray_task.ready = True
    return run_job(job, report=(lambda i, n: counter.add.remote(i, n)) if counter is not None else None)


class _RayCounter:
    """Frames done per recording, pushed by the tasks, taken by the driver."""

    def __init__(self) -> None:
        self.items: list = []

    def add(self, i: int, n: int) -> None:
        self.items.append((i, n))

    def take(self) -> list:
        out, self.items = self.items, []
        return out


def ray_available() -> tuple[bool, str]:
    try:
        import ray  # noqa: F401
    except Exception as e:
        return False, (f"Ray is not installed ({type(e).__name__}: {e}); install the batch extra: "
                       "pip install -e \".[batch]\" (Ray wheels are Linux-only here)")
    return True, ""


def run_ray(jobs: Sequence[Job], *, address: str | None, cpus: int | None, on_progress, on_result) -> dict:
    """Jobs as Ray tasks (one CPU each) on the cluster at ``address`` ("auto": the one
    this node belongs to; None: a local runtime with ``cpus`` CPUs, stopped at the end).
    Returns what the cluster was ({"address", "cpus", "nodes"})."""
    ok, why = ray_available()
    if not ok:
        raise BatchError(f"--ray: {why}")
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        kw = dict(log_to_driver=False, logging_level=logging.ERROR, include_dashboard=False,
                  runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "OPENCV_LOG_LEVEL": "ERROR"}})
        if address:
            kw.pop("include_dashboard")
            ray.init(address=address, **kw)
        else:
            ray.init(num_cpus=cpus, object_store_memory=128 * 2 ** 20, **kw)
    info = {"address": address or "local", "cpus": int(ray.cluster_resources().get("CPU", 0)),
            "nodes": len([n for n in ray.nodes() if n.get("Alive")])}
    task = ray.remote(num_cpus=1, max_retries=1)(_ray_task)
    counter = ray.remote(num_cpus=0)(_RayCounter).remote()
    limit = max(2, 2 * info["cpus"])
    pending, running = deque(jobs), {}
    try:
        while pending or running:
            while pending and len(running) < limit:
                job = pending.popleft()
                running[task.remote(job, counter)] = job
            ready, _ = ray.wait(list(running), num_returns=1, timeout=0.3)
            for i, n in ray.get(counter.take.remote()):
                on_progress(i, n)
            for ref in ready:
                job = running.pop(ref)
                try:
                    res = ray.get(ref)
                except ray.exceptions.RayTaskError as e:
                    cause = getattr(e, "cause", None)
                    if isinstance(cause, (EngineLoadError, BatchError)):
                        raise cause from None
                    res = failed_result(job, f"the Ray task failed: {str(e).splitlines()[0][:500]}")
                except ray.exceptions.RayError as e:   # the worker died (killed, out of memory)
                    res = failed_result(job, f"the Ray worker died while analysing it ({type(e).__name__})")
                on_result(job, res)
        for i, n in ray.get(counter.take.remote()):
            on_progress(i, n)
    except BaseException:
        for ref in running:
            try:
                ray.cancel(ref, force=True)
            except Exception:
                pass
        raise
    finally:
        try:
            ray.kill(counter)
        except Exception:
            pass
        if started_here:
            ray.shutdown()
    return info


# =========================================================================================
# the batch: plan, run, tables


@dataclass
class BatchRun:
    """A batch's recordings and their results, in input order."""

    out: Path
    recordings: list[Recording]
    rows: dict[str, dict]                 # rid -> result (result.json) or a pending / failed stub
    analysed: int = 0                     # recordings analysed in this run
    skipped: int = 0                      # finished before and unchanged
    frames: int = 0                       # frames analysed in this run
    wall_s: float = 0.0
    executor: dict = field(default_factory=dict)
    interrupted: bool = False
    worker_rss: dict = field(default_factory=dict)   # worker -> peak RSS MiB

    def folder(self, rid: str) -> Path:
        return self.out / "recordings" / dirname_for(rid)

    def status_counts(self) -> Counter:
        return Counter(r["status"] for r in self.rows.values())


_KEEP = ("recording", "path", "subject", "session", "given_fps", "key", "status", "error", "fps", "frames",
         "frames_with_face", "duration_s", "events", "micro", "macro", "partial_outputs", "wall_s", "worker",
         "worker_peak_rss_mb", "finished_at")


def compact(result: dict) -> dict:
    """What the parent keeps of a result while the batch runs (memory per recording stays
    small however many there are; the tables read result.json again)."""
    return {k: result.get(k) for k in _KEEP}


def _read_result(folder: Path) -> dict | None:
    try:
        r = json.loads((folder / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return r if isinstance(r, dict) and r.get("format") == RESULT_FORMAT else None


def _clean_partial(partial: Path) -> None:
    """Remove what killed runs left in .partial/ (but not a live process's work)."""
    if not partial.is_dir():
        return
    try:
        import psutil

        alive = psutil.pid_exists
    except Exception:
        alive = lambda pid: False  # noqa: E731
    for p in partial.iterdir():
        m = re.search(r"\.(\d+)\.[0-9a-f]{6,8}$", p.name)
        if m and int(m.group(1)) != os.getpid() and alive(int(m.group(1))):
            continue
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def output_lock(out: str | os.PathLike) -> "_Lock":
    """Hold ``out`` for one batch (a context manager; BatchError when another holds it)."""
    Path(out).mkdir(parents=True, exist_ok=True)
    return _Lock(Path(out))


class _Lock:
    """One batch at a time per output folder."""

    def __init__(self, out: Path) -> None:
        self.path = out / ".lock"
        self.fh = None

    def __enter__(self):
        self.fh = open(self.path, "a+")
        try:
            import fcntl
        except ImportError:        # Windows: no lock
            return self
        try:
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.fh.seek(0)
            who = self.fh.read().strip() or "another process"
            self.fh.close()
            raise BatchError(f"--out {self.path.parent}: another batch ({who}) is writing there; wait for it to "
                             "finish or choose another --out") from None
        self.fh.seek(0)
        self.fh.truncate()
        self.fh.write(f"pid {os.getpid()} on {socket.gethostname()}")
        self.fh.flush()
        return self

    def __exit__(self, *exc):
        if self.fh is not None:
            self.fh.close()


def _stub(rec: Recording, status: str, error: str | None = None, key: str | None = None) -> dict:
    return {"recording": rec.rid, "path": str(rec.path), "subject": rec.subject, "session": rec.session,
            "given_fps": rec.fps, "status": status, "error": error, "key": key}


def write_manifest(run: BatchRun) -> Path:
    """manifest.csv: every recording with its status (atomic replace; also a valid input
    manifest: path, subject, session, fps)."""
    path = run.out / "manifest.csv"
    tmp = path.with_name("manifest.csv.tmp")
    now = _dt.datetime.now().isoformat(timespec="seconds")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(MANIFEST_COLUMNS)
        for rec in run.recordings:
            r = run.rows[rec.rid]
            w.writerow([rec.rid, str(rec.path), rec.subject, rec.session, "" if rec.fps is None else f"{rec.fps:g}",
                        r["status"], r.get("error") or "", r.get("frames", ""), r.get("events", ""),
                        r.get("micro", ""), r.get("macro", ""), r.get("key") or "",
                        f"recordings/{dirname_for(rec.rid)}" if r["status"] in ("done", "failed") and r.get("key")
                        else "", r.get("finished_at") or now])
    os.replace(tmp, path)
    return path


def run_recordings(recordings: list[Recording], settings: RecordingSettings, out: str | os.PathLike, *,
                   jobs: int = 1, ray: bool = False, ray_address: str | None = None, recognizer=None,
                   engine_id: str | None = None, force: bool = False, retry_failed: bool = False,
                   progress: bool = True, verbose: bool = False, log_level: int = logging.ERROR,
                   manifest: bool = True, lock: bool = True) -> BatchRun:
    """Plan (skip what is done and unchanged), run the rest (in-process with ``jobs`` 1,
    else ``jobs`` processes, or Ray), stream the results into ``out``. Returns the
    BatchRun; raises BatchError / EngineLoadError for unusable settings, KeyboardInterrupt
    (after saving the manifest) when interrupted. ``recognizer``: a loaded one for
    in-process runs (``engine_id`` names it in the key when settings.engine cannot).
    ``lock`` False: the caller holds the output folder's lock (``output_lock``)."""
    import contextlib

    from tqdm import tqdm

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BatchError(f"--out {out}: is a file; give a folder (it is created if missing)")
    try:
        (out / "recordings").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BatchError(f"--out {out}: cannot be created ({e}); choose a writable folder") from None
    partial = out / ".partial"
    partial.mkdir(exist_ok=True)
    if not recordings:
        raise BatchError("no recordings to analyse")
    engine_fp = engine_id or engine_fingerprint(settings.engine)
    settings_key = settings.key(engine_fp)
    cpus = os.cpu_count() or 1
    threads = 1 if ray else max(1, cpus // max(1, jobs))
    run = BatchRun(out, recordings, {})
    with (_Lock(out) if lock else contextlib.nullcontext()):
        _clean_partial(partial)
        todo: list[Job] = []
        for i, rec in enumerate(recordings):
            if rec.problem:
                run.rows[rec.rid] = _stub(rec, "failed", rec.problem)
                continue
            try:
                key = recording_key(settings_key, input_fingerprint(rec.path), rec.fps)
            except OSError as e:
                run.rows[rec.rid] = _stub(rec, "failed", f"cannot be read: {e}")
                continue
            folder = run.folder(rec.rid)
            old = _read_result(folder)
            if old is not None and old.get("key") == key and not force and (
                    old.get("status") == "done" or (old.get("status") == "failed" and not retry_failed)):
                old.update(recording=rec.rid, subject=rec.subject, session=rec.session)
                run.rows[rec.rid] = compact(old)
                run.skipped += 1
                continue
            run.rows[rec.rid] = _stub(rec, "pending", key=key)
            todo.append(Job(index=i, rid=rec.rid, path=str(rec.path), out=str(folder), partial=str(partial),
                            key=key, settings=settings.to_dict(), fps=rec.fps, subject=rec.subject,
                            session=rec.session, threads=threads, log_level=log_level))
        if manifest:
            write_manifest(run)
        if not todo:
            return run
        reported: Counter = Counter()
        total = {"frames": 0, "probed": 0}
        bar = tqdm(total=None, unit="frame", unit_scale=True, desc="batch", file=sys.stderr, dynamic_ncols=True,
                   disable=not progress, smoothing=0.1)
        stop_probe = threading.Event()

        def probe() -> None:       # header frame counts, for the bar's total and ETA
            for j in todo:
                if stop_probe.is_set():
                    return
                total["frames"] += _frame_count(Path(j.path)) or 0
                total["probed"] += 1

        prober = threading.Thread(target=probe, daemon=True, name="batch-probe")
        prober.start()
        counts = Counter()
        last_manifest = [time.monotonic()]

        def set_total() -> None:
            if total["probed"]:
                est = total["frames"] * len(todo) / total["probed"]
                if bar.total != int(est):
                    bar.total = int(est)
            bar.set_postfix_str(f"recordings {counts['done'] + counts['failed']}/{len(todo)}"
                                + (f", {counts['failed']} failed" if counts["failed"] else ""), refresh=False)

        finished: set[int] = set()

        def on_progress(i: int, n: int) -> None:
            if i in finished:        # a late report of a recording already counted in full
                return
            reported[i] += n
            bar.update(n)
            set_total()

        def on_result(job: Job, res: dict) -> None:
            res.update(recording=job.rid, subject=job.subject, session=job.session)
            run.rows[job.rid] = compact(res)
            run.analysed += 1
            frames = int(res.get("frames") or 0)
            run.frames += frames
            finished.add(job.index)
            if frames > reported[job.index]:
                bar.update(frames - reported[job.index])
            counts[res["status"]] += 1
            if res.get("worker"):
                run.worker_rss[res["worker"]] = max(run.worker_rss.get(res["worker"], 0.0),
                                                    float(res.get("worker_peak_rss_mb") or 0.0))
            set_total()
            bar.refresh()
            if res["status"] != "done":
                bar.write(f"FAILED {job.rid}: {res.get('error')}", file=sys.stderr)
            elif verbose:
                bar.write(f"done   {job.rid}: {frames} frames, {res.get('events', 0)} events "
                          f"({res.get('micro', 0)} micro, {res.get('macro', 0)} macro) in {res.get('wall_s')} s",
                          file=sys.stderr)
            if manifest and time.monotonic() - last_manifest[0] > 2.0:
                write_manifest(run)
                last_manifest[0] = time.monotonic()

        t0 = time.perf_counter()
        try:
            if ray:
                run.executor = {"kind": "ray", **run_ray(todo, address=ray_address, cpus=jobs, on_progress=on_progress,
                                                          on_result=on_result)}
            elif jobs <= 1 or len(todo) == 1:
                run.executor = {"kind": "in-process", "workers": 1}
                run_serial(todo, recognizer=recognizer, on_progress=on_progress, on_result=on_result)
            else:
                run.executor = {"kind": "processes", "workers": min(jobs, len(todo))}
                run_processes(todo, min(jobs, len(todo)), on_progress=on_progress, on_result=on_result)
        except KeyboardInterrupt:
            run.interrupted = True
            raise
        finally:
            stop_probe.set()
            run.wall_s = time.perf_counter() - t0
            bar.close()
            if manifest:
                write_manifest(run)
    return run


def _frame_count(path: Path) -> int | None:
    try:
        if path.is_dir():
            return sum(1 for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        import cv2

        cap = cv2.VideoCapture(str(path))
        try:
            n = cap.get(cv2.CAP_PROP_FRAME_COUNT) if cap.isOpened() else 0
        finally:
            cap.release()
        return int(n) if math.isfinite(n) and 0 < n < 1e9 else None
    except Exception:
        return None


# ----------------------------------------------------------------------------- combined tables

_PARQUET_TYPES = {"face_id": "int64", "onset_frame": "int64", "apex_frame": "int64", "offset_frame": "int64",
                  "frames": "int64", "events": "int64", "micro": "int64", "macro": "int64", "unlabelled": "int64",
                  "lookahead_frames": "int64"}
_FLOAT = {"confidence", "onset_t", "apex_t", "offset_t", "duration_ms", "fps", "peak_motion", "latency_wait_ms",
          "decided_t", "finalised_t", "latency_decision_ms", "latency_compute_ms", "latency_final_ms",
          "latency_infer_ms", "duration_s", "face_share", "wall_s", "achieved_fps", "worker_peak_rss_mb"}


def _schema(columns: Sequence[str]):
    import pyarrow as pa

    def t(c):
        if c in _PARQUET_TYPES:
            return pa.int64()
        return pa.float64() if c in _FLOAT else pa.string()
    return pa.schema([(c, t(c)) for c in columns])


class _TableWriter:
    """CSV (always) and Parquet (with pyarrow) of the same rows, written in row groups."""

    def __init__(self, csv_path: Path, columns: Sequence[str], parquet: bool, group: int = 5000) -> None:
        self.columns, self.group = tuple(columns), group
        self.csv_tmp = csv_path.with_name(csv_path.name + ".tmp")
        self.csv_path = csv_path
        self._fh = open(self.csv_tmp, "w", newline="", encoding="utf-8")
        self._w = csv.DictWriter(self._fh, fieldnames=self.columns, extrasaction="ignore", restval="")
        self._w.writeheader()
        self.rows = 0
        self._buf: list[dict] = []
        self._pq = None
        self.parquet_path = csv_path.with_suffix(".parquet") if parquet else None
        if parquet:
            import pyarrow.parquet as pq

            self._schema = _schema(self.columns)
            self._pq_tmp = self.parquet_path.with_name(self.parquet_path.name + ".tmp")
            self._pq = pq.ParquetWriter(self._pq_tmp, self._schema)

    def add(self, row: dict) -> None:
        self._w.writerow({k: ("" if v is None else v) for k, v in row.items()})
        self.rows += 1
        if self._pq is not None:
            self._buf.append({c: _cell(c, row.get(c)) for c in self.columns})
            if len(self._buf) >= self.group:
                self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self._buf:
            self._pq.write_table(pa.Table.from_pylist(self._buf, schema=self._schema))
            self._buf = []

    def close(self) -> None:
        self._fh.close()
        os.replace(self.csv_tmp, self.csv_path)
        if self._pq is not None:
            self._flush()
            self._pq.close()
            os.replace(self._pq_tmp, self.parquet_path)


def _cell(c: str, v):
    if v is None or v == "":
        return None
    if c in _PARQUET_TYPES:
        return int(v)
    if c in _FLOAT:
        return float(v)
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else str(v)


def parquet_available() -> bool:
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except Exception:
        return False
    return True


def event_rows(rec: Recording, folder: Path) -> Iterable[dict]:
    from realtime.events import read_events

    for e in read_events(folder / "events.jsonl"):
        lat = e.latency_ms
        conf = e.probs.get(e.label) if e.label else None
        yield {"recording": rec.rid, "subject": rec.subject, "session": rec.session, "path": str(rec.path),
               "face_id": e.face_id, "kind": e.kind, "label": e.label or "", "confidence": conf,
               "probs": json.dumps(e.probs, sort_keys=True) if e.probs else "",
               "onset_frame": e.onset_frame, "apex_frame": e.apex_frame, "offset_frame": e.offset_frame,
               "onset_t": e.onset_t, "apex_t": e.apex_t, "offset_t": e.offset_t,
               "duration_ms": round((e.offset_t - e.onset_t) * 1000.0, 3), "fps": e.fps,
               "peak_motion": e.peak_motion, "latency_wait_ms": lat.get("wait"), "decided_t": e.decided_t,
               "finalised_t": e.finalised_t, "latency_decision_ms": lat.get("decision"),
               "latency_compute_ms": lat.get("compute"), "latency_final_ms": lat.get("final"),
               "latency_infer_ms": lat.get("infer")}


def recording_row(rec: Recording, r: dict) -> dict:
    return {"recording": rec.rid, "subject": rec.subject, "session": rec.session, "path": str(rec.path),
            "status": r.get("status"), "error": r.get("error") or "", "fps": r.get("fps"), "frames": r.get("frames"),
            "duration_s": r.get("duration_s"), "face_share": r.get("face_share"), "events": r.get("events"),
            "micro": r.get("micro"), "macro": r.get("macro"), "unlabelled": r.get("unlabelled"),
            "not_expressions": json.dumps(r.get("rejected") or {}, sort_keys=True) if r.get("key") else "",
            "faults": json.dumps(r.get("faults") or {}, sort_keys=True) if r.get("key") else "",
            "lookahead_frames": r.get("lookahead_frames"), "key": r.get("key") or "", "wall_s": r.get("wall_s"),
            "achieved_fps": r.get("achieved_fps"), "worker": r.get("worker") or "",
            "worker_peak_rss_mb": r.get("worker_peak_rss_mb"), "finished_at": r.get("finished_at") or ""}


@dataclass
class Totals:
    """What the report counts, gathered while the tables stream by."""

    subjects: dict = field(default_factory=dict)     # subject -> Counter(recordings, seconds, micro, macro)
    sessions: dict = field(default_factory=dict)     # (subject, session) -> Counter
    classes: dict = field(default_factory=dict)      # label -> Counter(micro, macro)
    durations: dict = field(default_factory=lambda: {"micro": [], "macro": []})   # ms, capped sample
    events: int = 0
    no_face: list = field(default_factory=list)


def write_outputs(run: BatchRun, settings: RecordingSettings, *, exports: Sequence[str] = EXPORTS,
                  report: str = "both", command: str = "") -> dict:
    """The combined tables, the exports and the report of a run (streamed: one recording's
    events in memory at a time). Returns {name: path}."""
    from realtime import exports as ex

    out = run.out
    pq_ok = parquet_available()
    if not pq_ok:
        log.warning("pyarrow is not installed: writing CSV tables only (pip install -e \".[batch]\" for Parquet)")
    ev = _TableWriter(out / "events.csv", EVENT_COLUMNS, pq_ok)
    rt = _TableWriter(out / "recordings.csv", RECORDING_COLUMNS, pq_ok)
    exp_dir = out / "exports"
    megc = ex.MegcWriter(exp_dir / "megc2022_spotting.csv") if "megc" in exports else None
    intervals = ex.IntervalWriter(exp_dir / "intervals.csv") if "intervals" in exports else None
    elan_dir = exp_dir / "elan"
    if "elan" in exports and elan_dir.is_dir():
        for old in elan_dir.glob("*.eaf"):      # only this batch's recordings
            old.unlink()
    tot = Totals()
    try:
        for rec in run.recordings:
            r = run.rows[rec.rid]
            folder = run.folder(rec.rid)
            full = _read_result(folder) if r.get("key") and r["status"] in ("done", "failed") else None
            rt.add(recording_row(rec, full if full is not None and full.get("key") == r.get("key") else r))
            if r["status"] != "done":
                continue
            events = list(event_rows(rec, folder))
            for row in events:
                ev.add(row)
            s = tot.subjects.setdefault(rec.subject or "(none)", Counter())
            s["recordings"] += 1
            s["seconds"] += float(r.get("duration_s") or 0.0)
            if rec.session:
                ss = tot.sessions.setdefault((rec.subject or "(none)", rec.session), Counter())
                ss["recordings"] += 1
                ss["seconds"] += float(r.get("duration_s") or 0.0)
            if not r.get("frames_with_face"):
                tot.no_face.append(rec.rid)
            for row in events:
                tot.events += 1
                s[row["kind"]] += 1
                if rec.session:
                    tot.sessions[(rec.subject or "(none)", rec.session)][row["kind"]] += 1
                tot.classes.setdefault(row["label"] or ex.UNLABELLED, Counter())[row["kind"]] += 1
                d = tot.durations[row["kind"]]
                if len(d) < 100_000:
                    d.append(row["duration_ms"])
            if megc is not None or intervals is not None or "elan" in exports:
                from realtime.events import read_events

                evs = read_events(folder / "events.jsonl")
                if megc is not None:
                    megc.add(ex.megc_vid(rec.rid, rec.path), evs, base=ex.first_frame_number(rec.path))
                if intervals is not None:
                    intervals.add(rec.rid, evs, media=str(rec.path), subject=rec.subject, session=rec.session)
                if "elan" in exports:
                    ex.write_eaf(elan_dir / f"{dirname_for(rec.rid)}.eaf", evs, media=rec.path, subject=rec.subject)
    finally:
        for w in (ev, rt, megc, intervals):
            if w is not None:
                w.close()
    paths = {"events.csv": ev.csv_path, "recordings.csv": rt.csv_path}
    if pq_ok:
        paths.update({"events.parquet": ev.parquet_path, "recordings.parquet": rt.parquet_path})
    if megc is not None:
        paths["megc"] = megc.path
    if intervals is not None:
        paths["intervals"] = intervals.path
    if "elan" in exports:
        paths["elan"] = elan_dir
    summary = batch_summary(run, settings, command)
    (out / "batch.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    paths["batch.json"] = out / "batch.json"
    if report != "none":
        from realtime import batch_report

        paths.update(batch_report.write_report(run, tot, summary, fmt=report))
    return paths


def batch_summary(run: BatchRun, settings: RecordingSettings, command: str = "") -> dict:
    st = run.status_counts()
    minutes = run.wall_s / 60.0
    return {
        "command": command, "out": str(run.out), "finished_at": _dt.datetime.now().isoformat(timespec="seconds"),
        "settings": settings.to_dict(), "executor": run.executor,
        "recordings": {"total": len(run.recordings), "done": st.get("done", 0), "failed": st.get("failed", 0),
                       "pending": st.get("pending", 0), "analysed_this_run": run.analysed,
                       "skipped_unchanged": run.skipped},
        "this_run": {"wall_s": round(run.wall_s, 2), "frames": run.frames,
                     "recordings_per_min": round(run.analysed / minutes, 2) if minutes > 0 and run.analysed else None,
                     "frames_per_s": round(run.frames / run.wall_s, 1) if run.wall_s > 0 and run.frames else None},
        "memory_mb": {"parent_peak_rss": round(peak_rss_mb(), 1),
                      "worker_peak_rss": {k: round(v, 1) for k, v in sorted(run.worker_rss.items())},
                      "worker_peak_rss_max": round(max(run.worker_rss.values()), 1) if run.worker_rss else None},
        "failed": [{"recording": rec.rid, "error": run.rows[rec.rid].get("error")} for rec in run.recordings
                   if run.rows[rec.rid]["status"] == "failed"],
        "no_face": [rec.rid for rec in run.recordings if run.rows[rec.rid]["status"] == "done"
                    and not run.rows[rec.rid].get("frames_with_face")],
    }


# ----------------------------------------------------------------------------- comparing two runs

def compare_outputs(a: str | os.PathLike, b: str | os.PathLike) -> list[str]:
    """Differences between two batches' events.csv and recordings.csv, timing columns
    (TIMING_COLUMNS) aside; [] when they agree."""
    problems = []
    for name, key in (("events.csv", ("recording", "face_id", "onset_frame")), ("recordings.csv", ("recording",))):
        tables = []
        for d in (a, b):
            p = Path(d) / name
            if not p.is_file():
                raise BatchError(f"--compare: {p} does not exist; give two --out folders of finished batches")
            with open(p, newline="", encoding="utf-8") as fh:
                rows = [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in csv.DictReader(fh)]
            tables.append(sorted(rows, key=lambda r: tuple(r.get(k, "") for k in key)))
        ta, tb = tables
        if len(ta) != len(tb):
            problems.append(f"{name}: {len(ta)} rows in {a}, {len(tb)} in {b}")
            continue
        for ra, rb in zip(ta, tb):
            if ra != rb:
                diff = sorted(k for k in set(ra) | set(rb) if ra.get(k) != rb.get(k))
                problems.append(f"{name}: recording {ra.get('recording')}: {', '.join(diff)} differ "
                                f"({[ra.get(k) for k in diff]} vs {[rb.get(k) for k in diff]})")
                if len(problems) > 20:
                    return problems
    return problems


# =========================================================================================
# command line


def build_parser() -> argparse.ArgumentParser:
    from realtime.face import TRACKER_KINDS

    ap = argparse.ArgumentParser(
        prog="python -m realtime.batch",
        description="Spot and label every recording of a study through the live pipeline, on this machine's cores "
                    "or a Ray cluster, with combined tables, a report and ELAN / MEGC / interval exports. "
                    "Resumable: a second run skips what is done.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="*", metavar="INPUTS",
                    help="video files, folders (searched recursively), quoted globs, or CSV manifests "
                         "(columns: path, subject, session, fps, recording)")
    ap.add_argument("--out", metavar="DIR", help="output folder (created; a second run there resumes)")
    ap.add_argument("--fps", type=float, metavar="F",
                    help="true frame rate of every recording without one in its manifest row (high-speed files whose "
                         "header says 25/30; needed for folders of frames)")
    ap.add_argument("--subject-pattern", metavar="REGEX",
                    help="fill subject / session from each recording id (its path under the folder given) with the "
                         "named groups (?P<subject>...) and (?P<session>...)")
    run = ap.add_argument_group("where it runs")
    run.add_argument("--jobs", type=int, default=os.cpu_count() or 1, metavar="N",
                     help="worker processes (default: the machine's cores, %(default)s here); 1 = in this process")
    run.add_argument("--ray", action="store_true", help="spread recordings over a Ray cluster instead")
    run.add_argument("--ray-address", metavar="ADDRESS",
                     help="the cluster (auto, or host:port, or ray://host:10001); default: a local Ray runtime with "
                          "--jobs CPUs. Implies --ray")
    res = ap.add_argument_group("resume")
    res.add_argument("--retry-failed", action="store_true", help="analyse failed recordings again (default: skip them "
                                                                   "while they and the settings are unchanged)")
    res.add_argument("--force", action="store_true", help="redo every recording")
    model = ap.add_argument_group("analysis (as run_live.py)")
    model.add_argument("--engine", default="auto", metavar="PATH|auto|none",
                       help="weights or engine file (.safetensors, .onnx, .plan); auto = the demo weights (default); "
                            "none = spotting only")
    model.add_argument("--device", default="auto", help="auto | cpu | cuda[:i] (default auto)")
    model.add_argument("--tracker", choices=TRACKER_KINDS, default="fast", help="face tracker (default fast)")
    model.add_argument("--landmarks-hz", type=float, default=100.0, metavar="HZ",
                       help="68-point landmarks at most this often per second of video (default 100); 0 = every frame")
    model.add_argument("--causal", action="store_true", help="no look-ahead: analyse as a camera would")
    model.add_argument("--me-rule", choices=("megc", "casme"), default="megc", help="micro/macro rule (default megc)")
    model.add_argument("--calibration", type=float, metavar="S", help="the spotter's warm start in seconds")
    outs = ap.add_argument_group("outputs")
    outs.add_argument("--exports", default=",".join(EXPORTS), metavar="LIST",
                      help=f"comma-separated: {', '.join(EXPORTS)}, or none (default all)")
    outs.add_argument("--report", choices=("md", "html", "both", "none"), default="both",
                      help="report.md and/or report.html with plots (default both)")
    outs.add_argument("--headless", action="store_true", help=argparse.SUPPRESS)   # run_live.py habit: batches never show a window
    ap.add_argument("--compare", nargs=2, metavar=("OUT_A", "OUT_B"),
                    help="compare two finished batches' events.csv and recordings.csv apart from timing columns, "
                         "and stop")
    ap.add_argument("--quiet", action="store_true", help="no progress bar; only failures and the summary")
    ap.add_argument("--verbose", action="store_true", help="a line per finished recording")
    ap.add_argument("--log-level", default="ERROR", type=str.upper, choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                    help="log level of the pipeline in the workers (default error: problems reach the tables)")
    return ap


def _stop_on_sigterm() -> None:
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _fail(msg: str, code: int = EXIT_USAGE) -> int:
    print(f"error: {msg}", file=sys.stderr, flush=True)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    _quiet_native(getattr(logging, args.log_level))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    if args.compare:
        try:
            problems = compare_outputs(*args.compare)
        except BatchError as e:
            return _fail(str(e))
        if problems:
            print("the tables differ (timing columns aside):\n  " + "\n  ".join(problems))
            return EXIT_FAILED
        print(f"events.csv and recordings.csv agree apart from the timing columns ({', '.join(sorted(TIMING_COLUMNS))})")
        return EXIT_OK
    if not args.out:
        return _fail("--out DIR is required: the folder for the results (a second run there resumes)")
    if args.jobs < 1:
        return _fail(f"--jobs must be at least 1, got {args.jobs}")
    if args.fps is not None and not (math.isfinite(args.fps) and args.fps > 0):
        return _fail(f"--fps must be a positive frame rate, got {args.fps}")
    if not (args.landmarks_hz >= 0 and math.isfinite(args.landmarks_hz)):
        return _fail(f"--landmarks-hz must be 0 (every frame) or a positive rate, got {args.landmarks_hz}")
    exports = tuple(x.strip() for x in args.exports.split(",") if x.strip())
    if exports == ("none",):
        exports = ()
    bad = [x for x in exports if x not in EXPORTS]
    if bad:
        return _fail(f"--exports {args.exports}: unknown {bad}; choose from {', '.join(EXPORTS)} or none")
    use_ray = args.ray or bool(args.ray_address)
    if use_ray:
        ok, why = ray_available()
        if not ok:
            return _fail(f"--ray: {why}")
    out = Path(args.out)
    try:
        recordings = collect(args.inputs, fps=args.fps, subject_pattern=args.subject_pattern, skip=[out])
        settings = RecordingSettings.from_args(args)
        engine_fingerprint(settings.engine)
    except BatchError as e:
        return _fail(str(e))
    _stop_on_sigterm()
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    say(f"{len(recordings)} recording(s) -> {out}; engine {settings.engine}, tracker {settings.tracker}, "
        + ("Ray " + (args.ray_address or "local runtime") if use_ray else f"{args.jobs} process(es)"))
    level = getattr(logging, args.log_level)
    command = "python -m realtime.batch " + " ".join(sys.argv[1:] if argv is None else list(argv))
    if out.exists() and not out.is_dir():
        return _fail(f"--out {out}: is a file; give a folder (it is created if missing)")
    try:
        with output_lock(out):
            run = run_recordings(recordings, settings, out, jobs=args.jobs, ray=use_ray,
                                 ray_address=args.ray_address, force=args.force, retry_failed=args.retry_failed,
                                 progress=not args.quiet, verbose=args.verbose, log_level=level, lock=False)
            paths = write_outputs(run, settings, exports=exports, report=args.report, command=command)
    except (BatchError, EngineLoadError) as e:
        return _fail(str(e))
    except OSError as e:
        return _fail(f"--out {out}: {e}; choose a writable folder")
    except KeyboardInterrupt:
        print(f"interrupted: the finished recordings are kept (manifest: {out / 'manifest.csv'}); run the same "
              "command again to finish the rest", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    summary = json.loads(paths["batch.json"].read_text())
    print_summary(run, summary, paths)
    return EXIT_FAILED if summary["recordings"]["failed"] else EXIT_OK


def print_summary(run: BatchRun, summary: dict, paths: dict) -> None:
    r, t, m = summary["recordings"], summary["this_run"], summary["memory_mb"]
    print(f"recordings {r['total']}: {r['done']} done, {r['failed']} failed, {r['pending']} pending "
          f"({r['analysed_this_run']} analysed now, {r['skipped_unchanged']} unchanged and skipped)")
    if r["analysed_this_run"]:
        ex = run.executor
        how = ex.get("kind", "?") + (f" x{ex['workers']}" if ex.get("workers") else "") + (
            f" ({ex.get('cpus')} CPUs, {ex.get('nodes')} node(s), {ex.get('address')})" if ex.get("kind") == "ray" else "")
        dash = lambda v: "-" if v is None else v  # noqa: E731
        print(f"this run: {t['frames']} frames in {t['wall_s']:.1f} s on {how}: {dash(t['recordings_per_min'])} "
              f"recordings/min, {dash(t['frames_per_s'])} frames/s; peak memory: parent {m['parent_peak_rss']} MB, "
              f"workers up to {dash(m['worker_peak_rss_max'])} MB")
    else:
        print("nothing to analyse: every recording is finished and unchanged (--force redoes them"
              + (", --retry-failed retries the failed ones)" if r["failed"] else ")"))
    for f in summary["failed"]:
        print(f"failed: {f['recording']}: {f['error']}")
    if summary["no_face"]:
        print(f"warning: no face in any frame of {len(summary['no_face'])} done recording(s): "
              + ", ".join(summary["no_face"][:10]) + (" ..." if len(summary["no_face"]) > 10 else ""))
    print("wrote " + ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    raise SystemExit(main())
