"""A batch's combined outputs (``realtime.batch.tables``), and comparing two batches.

``write_outputs`` streams every done recording's events (one recording in memory at a
time) into events.csv / events.parquet, one row per recording into recordings.csv /
recordings.parquet, the exports (realtime.batch.exports: ELAN, MEGC 2022 spotting,
intervals), batch.json (settings, throughput, peak memory) and the report
(realtime.batch.report) from totals gathered on the way. ``compare_outputs`` says whether
two batches' tables agree apart from the timing columns. Parquet needs pyarrow (an
optional dependency, the "batch" extra): without it the tables are CSV only.
"""
from __future__ import annotations

import csv
import datetime as _dt
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from core.events import read_events
from realtime.batch.discovery import BatchError, Recording
from realtime.batch.exports import UNLABELLED, IntervalWriter, MegcWriter, first_frame_number, megc_vid, write_eaf
from realtime.batch.job import dirname_for, peak_rss_mb, read_result
from realtime.batch.report import write_report
from realtime.batch.runner import BatchRun
from realtime.stages.recording import RecordingSettings

log = logging.getLogger("realtime.batch.tables")

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


_PARQUET_TYPES = {"face_id": "int64", "onset_frame": "int64", "apex_frame": "int64", "offset_frame": "int64",
                  "frames": "int64", "events": "int64", "micro": "int64", "macro": "int64", "unlabelled": "int64",
                  "lookahead_frames": "int64"}
_FLOAT = {"confidence", "onset_t", "apex_t", "offset_t", "duration_ms", "fps", "peak_motion", "latency_wait_ms",
          "decided_t", "finalised_t", "latency_decision_ms", "latency_compute_ms", "latency_final_ms",
          "latency_infer_ms", "duration_s", "face_share", "wall_s", "achieved_fps", "worker_peak_rss_mb"}


def _schema(columns: Sequence[str]):
    import pyarrow as pa  # optional (the batch extra): only when Parquet tables are written

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
            import pyarrow.parquet as pq  # optional (the batch extra): only when Parquet tables are written

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
        import pyarrow as pa  # optional (the batch extra): only when Parquet tables are written

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
        import pyarrow  # noqa: F401  -- optional (the batch extra): is it here?
        import pyarrow.parquet  # noqa: F401
    except Exception:
        return False
    return True


def event_rows(rec: Recording, folder: Path) -> Iterable[dict]:
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
    out = run.out
    pq_ok = parquet_available()
    if not pq_ok:
        log.warning("pyarrow is not installed: writing CSV tables only (pip install -e \".[batch]\" for Parquet)")
    ev = _TableWriter(out / "events.csv", EVENT_COLUMNS, pq_ok)
    rt = _TableWriter(out / "recordings.csv", RECORDING_COLUMNS, pq_ok)
    exp_dir = out / "exports"
    megc = MegcWriter(exp_dir / "megc2022_spotting.csv") if "megc" in exports else None
    intervals = IntervalWriter(exp_dir / "intervals.csv") if "intervals" in exports else None
    elan_dir = exp_dir / "elan"
    if "elan" in exports and elan_dir.is_dir():
        for old in elan_dir.glob("*.eaf"):      # only this batch's recordings
            old.unlink()
    tot = Totals()
    try:
        for rec in run.recordings:
            r = run.rows[rec.rid]
            folder = run.folder(rec.rid)
            full = read_result(folder) if r.get("key") and r["status"] in ("done", "failed") else None
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
                tot.classes.setdefault(row["label"] or UNLABELLED, Counter())[row["kind"]] += 1
                d = tot.durations[row["kind"]]
                if len(d) < 100_000:
                    d.append(row["duration_ms"])
            if megc is not None or intervals is not None or "elan" in exports:
                evs = read_events(folder / "events.jsonl")
                if megc is not None:
                    megc.add(megc_vid(rec.rid, rec.path), evs, base=first_frame_number(rec.path))
                if intervals is not None:
                    intervals.add(rec.rid, evs, media=str(rec.path), subject=rec.subject, session=rec.session)
                if "elan" in exports:
                    write_eaf(elan_dir / f"{dirname_for(rec.rid)}.eaf", evs, media=rec.path, subject=rec.subject)
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
        paths.update(write_report(run, tot, summary, fmt=report))
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
