"""A batch run (``realtime.batch.runner``): plan, run, keep the manifest.

``run_recordings`` plans (a recording whose published result was made under the same key
is skipped; failed ones only with ``retry_failed``, everything with ``force``), runs the
rest in this process, in worker processes (realtime.batch.pool) or as Ray tasks
(realtime.batch.ray_runner), with a progress bar over frames, and keeps ``manifest.csv``
(done / failed / pending per recording) up to date. The result is a ``BatchRun``: the
recordings and a compact row of each one's result. It owns the output folder's lock (one
batch at a time per folder) and cleaning what killed runs left in ``.partial/``.
"""
from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import logging
import math
import os
import re
import shutil
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import psutil
from tqdm import tqdm

from realtime.batch.discovery import BatchError, Recording
from realtime.batch.job import Job, dirname_for, engine_fingerprint, input_fingerprint, read_result, recording_key
from realtime.batch.pool import run_processes, run_serial
from realtime.batch.ray_runner import run_ray
from realtime.stages.recording import RecordingSettings
from realtime.stages.sources import IMAGE_EXTENSIONS

try:
    import fcntl         # POSIX only: the output folder's lock (Windows: no lock)
except ImportError:
    fcntl = None

MANIFEST_COLUMNS = ("recording", "path", "subject", "session", "fps", "status", "error", "frames", "events",
                    "micro", "macro", "key", "output", "updated")


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


def _clean_partial(partial: Path) -> None:
    """Remove what killed runs left in .partial/ (but not a live process's work)."""
    if not partial.is_dir():
        return
    for p in partial.iterdir():
        m = re.search(r"\.(\d+)\.[0-9a-f]{6,8}$", p.name)
        if m and int(m.group(1)) != os.getpid() and psutil.pid_exists(int(m.group(1))):
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
        if fcntl is None:          # Windows: no lock
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
            old = read_result(folder)
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
        cap = cv2.VideoCapture(str(path))
        try:
            n = cap.get(cv2.CAP_PROP_FRAME_COUNT) if cap.isOpened() else 0
        finally:
            cap.release()
        return int(n) if math.isfinite(n) and 0 < n < 1e9 else None
    except Exception:
        return None
