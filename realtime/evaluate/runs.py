"""Running and scoring an evaluation (``realtime.evaluate.runs``).

The videos go through the batch runner (realtime.batch.runner.run_recordings: the
per-recording function, outputs and resume of ``python -m realtime.batch``), each one's
events and per-frame signal are read back from what it wrote (``VideoRun``), and
``evaluate_cases`` scores them the MEGC way (realtime.evaluate.scoring) per video and
pooled, with the recall by amplitude band (realtime.evaluate.sensitivity). The
generator's micro/macro ground truth is judged under the spotter's rule
(``relabel_truth``). Also the settings of an evaluation run (``recording_settings``,
``--mode``, ``--spotter NAME=VALUE``, ``--max-faces``) and the per-video score line.

A video whose ground truth has ``face_box`` (the generator's multi-face clips) is scored
per true face (realtime.evaluate.scoring.score_by_face): its "scores" are pooled over its
faces (plus the false positives on no face), "faces" holds each face's, "unassigned" the
detections on no face and "scores_ignoring_faces" the old face-blind matching; the report's
"faces" section pools the faces of every such video. Its per-frame signal has one row per
followed face (``face_id``), read per face for the sensitivity table.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from core.events import expression_kind, read_events
from realtime.batch.discovery import Recording
from realtime.batch.runner import run_recordings
from realtime.evaluate.cases import VideoCase
from realtime.evaluate.faces import group_faces, has_face_boxes
from realtime.evaluate.scoring import (
    SCORE_KINDS,
    FaceScoring,
    Interval,
    SpotScore,
    match_intervals,
    pool,
    score_by_face,
    score_intervals,
)
from realtime.evaluate.sensitivity import measure_ratios, sensitivity
from realtime.stages.motion import MOTION_HZ, SPOT_REGIONS
from realtime.stages.multitrack import MAX_FACES
from realtime.stages.recording import RecordingSettings
from realtime.stages.sources import SourceError
from realtime.stages.spotter import SpotterConfig

@dataclass
class VideoRun:
    """What the live path found in one video."""

    detections: list[Interval]
    events: list[dict]
    frames: int
    face_share: float
    fps: float
    wall_s: float
    end_reason: str | None = None
    regions: dict[str, list[float]] = field(default_factory=dict)   # per frame (nan: no face)
    faults: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    regions_by_face: dict[int, dict[str, list[float]]] = field(default_factory=dict)   # face_id -> per frame


MODES = ("recording", "causal")


def recording_settings(tracker: str = "fast", spotter: dict | None = None, motion: dict | None = None,
                       mode: str = "recording", engine: str = "none", max_faces: int = MAX_FACES,
                       motion_hz: float | None = MOTION_HZ):
    """The realtime.stages.recording settings of an evaluation run (``mode`` "recording": read
    ahead, as run_live.py and the batch read files; "causal": as a camera sees it).
    ``max_faces``: faces the pipeline follows (PipelineConfig.max_faces; default the live
    path's own). ``motion_hz``: PipelineConfig.motion_hz (None: every frame)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if max_faces < 1:
        raise ValueError(f"max_faces must be at least 1, got {max_faces}")
    return RecordingSettings(engine=engine, tracker=tracker, spotter=dict(spotter or {}), motion=dict(motion or {}),
                             causal=mode == "causal", max_faces=int(max_faces), motion_hz=motion_hz)


def _engine_id(recognizer, engine: str | None) -> str | None:
    """The key part naming a recogniser passed in already loaded (None: the batch
    fingerprints ``engine`` itself)."""
    if recognizer is None or engine not in (None, "preloaded"):
        return None
    try:
        info = recognizer.info()
    except Exception:
        info = {"name": getattr(recognizer, "name", type(recognizer).__name__)}
    return "preloaded:" + hashlib.sha256(json.dumps(info, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_videos(videos: Sequence[tuple[str, Path, float | None]], settings, work: str | Path | None = None, *,
               recognizer=None, jobs: int = 1, progress: bool = True) -> list[VideoRun]:
    """Run videos (name, file or image folder, true fps or None) through the batch runner
    (realtime.batch.runner: the per-recording function, outputs and resume of ``python -m
    realtime.batch``) and read each one's events and per-frame signal back. ``work``: the
    batch's output folder (kept: a second evaluation there reuses unchanged runs); None: a
    temporary one. A video that could not be analysed at all raises SourceError; one that
    decoded only part-way is scored on what was read (``VideoRun.end_reason`` says so)."""
    if jobs > 1 and recognizer is not None and settings.engine in ("none", "preloaded"):
        raise ValueError("several processes load the recogniser themselves: give its spec (settings.engine)")
    tmp = None
    if work is None:
        work = tmp = tempfile.mkdtemp(prefix="moext-eval-")
    try:
        recs = [Recording(rid=name, path=Path(path).resolve(), fps=fps) for name, path, fps in videos]
        run = run_recordings(recs, settings, work, jobs=jobs, recognizer=recognizer if jobs <= 1 else None,
                             engine_id=_engine_id(recognizer, settings.engine), progress=progress)
        out = []
        for rec in recs:
            res = run.rows[rec.rid]
            if res["status"] != "done" and not (res.get("partial_outputs") and res.get("frames")):
                raise SourceError(f"{rec.rid}: {res.get('error')}")
            folder = run.folder(rec.rid)
            out.append(_video_run(folder, json.loads((folder / "result.json").read_text(encoding="utf-8"))))
        return out
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _video_run(folder: Path, res: dict) -> VideoRun:
    """A VideoRun from a batch recording's folder: events.jsonl, signal.csv, result.json
    (the spotting regions' columns of the signal: realtime.stages.motion.SPOT_REGIONS)."""
    events = read_events(folder / "events.jsonl") if (folder / "events.jsonl").is_file() else []
    frames = int(res.get("frames") or 0)
    regions, by_face = _read_signal(folder / "signal.csv", frames)
    dets = [Interval(e.onset_frame, e.offset_frame, e.apex_frame, e.kind, e.label,
                     None if e.face_box is None else tuple(e.face_box)) for e in events]
    return VideoRun(dets, [e.to_dict() for e in events], frames, float(res.get("face_share") or 0.0),
                    float(res.get("fps") or 0.0), float(res.get("wall_s") or 0.0), res.get("end_reason"), regions,
                    dict(res.get("faults") or {}), dict(res.get("rejected") or {}), by_face)


def _read_signal(path: Path, frames: int) -> tuple[dict[str, list[float]], dict[int, dict[str, list[float]]]]:
    """The spotting regions of a signal.csv: (per frame, per face_id and frame). One row per
    frame (one face): read in order, as always. Several rows per frame (several faces
    followed): the first row of each frame (realtime.stages.results.FrameResult's first face)
    is the per-frame series. Frames without a value are nan."""
    rows = []
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                vals = {n: float(v) if (v := row.get(n)) not in (None, "") else math.nan for n in SPOT_REGIONS}
                frame, fid = row.get("frame"), row.get("face_id")
                rows.append((int(frame) if frame not in (None, "") else None,
                             int(fid) if fid not in (None, "") else None, vals))
    indices = [f for f, _, _ in rows if f is not None]
    several = len(indices) != len(set(indices))
    n = max([frames] + [f + 1 for f in indices])
    regions: dict[str, list[float]] = {r: [] for r in SPOT_REGIONS}
    if several:
        regions = {r: [math.nan] * n for r in SPOT_REGIONS}
        first = set()
        for f, _, vals in rows:
            if f is not None and f not in first:
                first.add(f)
                for r in SPOT_REGIONS:
                    regions[r][f] = vals[r]
    else:
        for _, _, vals in rows:
            for r in SPOT_REGIONS:
                regions[r].append(vals[r])
        for r in SPOT_REGIONS:
            if len(regions[r]) < frames:
                regions[r] += [math.nan] * (frames - len(regions[r]))
    by_face: dict[int, dict[str, list[float]]] = {}
    for f, fid, vals in rows:
        if f is None or fid is None:
            continue
        series = by_face.setdefault(fid, {r: [math.nan] * n for r in SPOT_REGIONS})
        for r in SPOT_REGIONS:
            series[r][f] = vals[r]
    return regions, by_face


def spot_video(path: Path, fps: float | None, recognizer=None, tracker: str = "fast",
               spotter: dict | None = None, motion: dict | None = None, progress: bool = True,
               mode: str = "recording") -> VideoRun:
    """Run one video (file or image folder) through the batch runner's per-recording
    function (realtime.batch.job.run_job: the Pipeline of run_live.py, nothing dropped) and
    return its final events as intervals. ``mode`` "recording": the noise model is warmed
    up on a look-ahead, as run_live.py does for files; "causal": as a camera sees it
    (what the latency benchmark measures). SourceError when it cannot be read."""
    settings = recording_settings(tracker, spotter, motion, mode, "preloaded" if recognizer is not None else "none")
    path = Path(path)
    return run_videos([(path.name, path, fps)], settings, recognizer=recognizer, progress=progress)[0]


def relabel_truth(truth: list[Interval], fps: float, rule: str) -> list[Interval]:
    """The generator's micro/macro ground truth under ``rule`` (core.events.expression_kind),
    so that scores compare like with like; other kinds (blink, speech...) are unchanged."""
    out = []
    for t in truth:
        if t.kind in ("micro", "macro"):
            apex = t.apex if t.apex is not None else t.onset
            kind = expression_kind(t.onset / fps, apex / fps, t.offset / fps, rule)
            t = dataclasses.replace(t, kind=kind)
        out.append(t)
    return out


def evaluate_cases(cases: list[VideoCase], *, fps: float | None = None, recognizer=None, tracker: str = "fast",
                   iou: float = 0.5, spotter: dict | None = None, motion: dict | None = None,
                   progress: bool = True, log=print, mode: str = "recording", engine: str | None = None,
                   jobs: int = 1, work: str | Path | None = None, max_faces: int = MAX_FACES,
                   motion_hz: float | None = MOTION_HZ) -> dict:
    """Run and score every case; returns the JSON-ready report (per video and pooled, and
    the recall of true micro-expressions by amplitude band). The generator's ground truth
    is judged micro or macro under the spotter's rule (``spotter["rule"]``, default megc).

    The videos go through the batch runner (run_videos: realtime.batch.runner, as ``python -m
    realtime.batch`` runs a study): ``jobs`` worker processes (1: in this process, with
    ``recognizer``), ``work`` its output folder (each video's event log, signal and
    result; a later evaluation there reuses unchanged runs). ``engine``: the recogniser's
    spec (needed with ``jobs`` > 1, where each worker loads it). ``max_faces``: faces the
    pipeline follows. A ground truth with ``face_box`` is scored per face (module docstring)."""
    rule = (spotter or {}).get("rule", SpotterConfig.rule)
    pooled: dict[str, list[SpotScore]] = {k: [] for k in SCORE_KINDS}
    by_face: dict[str, list[SpotScore]] = {k: [] for k in SCORE_KINDS}
    n_faces, unassigned = 0, {"micro": 0, "macro": 0}
    videos = []
    spec = engine if engine is not None else ("preloaded" if recognizer is not None else "none")
    settings = recording_settings(tracker, spotter, motion, mode, spec, max_faces, motion_hz)
    runs = run_videos([(case.name, case.path, fps or case.fps) for case in cases], settings, work,
                      recognizer=recognizer, jobs=jobs, progress=progress)
    for case, run in zip(cases, runs):
        truth = relabel_truth(case.truth, run.fps, rule) if case.layout == "synth" else case.truth
        true_faces = len({f.index for f in group_faces(truth) if f.box is not None}) if has_face_boxes(truth) else 0
        if log and true_faces > max_faces:
            log(f"note: {case.name} holds {true_faces} faces but the pipeline follows {max_faces} (--max-faces)")
        kinds = sorted({t.kind for t in truth if t.kind})
        entry = {"video": case.name, "layout": case.layout, "fps": run.fps, "frames": run.frames,
                 "face_share": round(run.face_share, 4), "wall_s": round(run.wall_s, 2),
                 "realtime_factor": round(run.frames / run.wall_s / run.fps, 3) if run.wall_s > 0 else None,
                 "end_reason": run.end_reason, "faults": run.faults, "rejected": run.rejected,
                 "truth": {k: sum(t.kind == k for t in truth) for k in ["micro", "macro"] + kinds},
                 "detected": {k: sum(d.kind == k for d in run.detections) for k in ("micro", "macro")},
                 "scores": {}, "events": run.events}
        if has_face_boxes(truth):
            fs = score_by_face(run.detections, truth, run.fps, iou)
            entry["scores_ignoring_faces"] = {k: score_intervals(run.detections, truth, run.fps, k, iou).summary()
                                              for k in SCORE_KINDS}
            entry["faces"] = face_entries(fs, truth, run.events)
            entry["unassigned"] = {"micro": fs.unassigned_fp("micro"), "macro": fs.unassigned_fp("macro"),
                                   "events": [_brief(run.events[i]) for i in fs.unassigned]}
            entry["micro_truth_ratios"] = _face_ratios(fs, truth, run, iou)
            n_faces += sum(f.face.box is not None for f in fs.faces)
            for k in SCORE_KINDS:
                s = fs.pooled(k)
                pooled[k].append(s)
                by_face[k].append(s)
                entry["scores"][k] = s.summary()
            for k in unassigned:
                unassigned[k] += entry["unassigned"][k]
        else:
            for k in SCORE_KINDS:
                s = score_intervals(run.detections, truth, run.fps, k, iou)
                pooled[k].append(s)
                entry["scores"][k] = s.summary()
            micro_truth = [t for t in truth if t.kind == "micro"]
            hit = set(j for _, j, _ in match_intervals([d for d in run.detections if d.kind == "micro"],
                                                       micro_truth, iou).pairs)
            ratios = measure_ratios(run.regions, micro_truth, run.fps)
            entry["micro_truth_ratios"] = [(None if r is None else round(r, 2), j in hit)
                                           for j, r in enumerate(ratios)]
        videos.append(entry)
        if log:
            log(score_line(case.name, entry["scores"]))
            for f in entry.get("faces", []):
                log(score_line(f"  face {f['face']} {f['box']} ids {f['face_ids']}", f["scores"]))
            if entry.get("unassigned", {}).get("events"):
                log(f"  on no true face (false positives): {len(entry['unassigned']['events'])} event(s)")
    report = {"iou_threshold": iou, "mode": mode, "rule": rule, "videos": videos,
              "pooled": {k: pool(v).summary() for k, v in pooled.items()},
              "sensitivity": sensitivity(videos)}
    multi = [v for v in videos if "faces" in v]
    if multi:     # only then: reports of one-face sets stay as they were
        report["faces"] = {"videos": len(multi), "faces": n_faces, "unassigned": unassigned,
                           "pooled": {k: pool(v).summary() for k, v in by_face.items()}}
    return report


def face_entries(fs: FaceScoring, truth: list[Interval], events: list[dict]) -> list[dict]:
    """Each true face of a per-face scoring, JSON-ready: its box, true and detected counts,
    the tracker's ids of the events on it (``events``: the run's, in detection order) and
    its scores."""
    out = []
    for f in fs.faces:
        members = [truth[j] for j in f.face.members]
        kinds = sorted({t.kind for t in members if t.kind})
        dets = [fs.detected[i] for i in f.detections]
        ids = sorted({events[i].get("face_id") for i in f.detections} - {None})
        out.append({"face": f.face.index, "box": None if f.face.box is None else list(f.face.box),
                    "truth": {k: sum(t.kind == k for t in members) for k in ["micro", "macro"] + kinds},
                    "detected": {k: sum(d.kind == k for d in dets) for k in ("micro", "macro")},
                    "face_ids": ids, "scores": {k: s.summary() for k, s in f.scores.items()}})
    return out


def _brief(event: dict) -> dict:
    return {k: event.get(k) for k in ("onset_frame", "apex_frame", "offset_frame", "kind", "label", "face_id",
                                      "face_box")}


def _face_ratios(fs: FaceScoring, truth: list[Interval], run: VideoRun, iou: float) -> list:
    """micro_truth_ratios of a per-face scoring: each true face's micro-expressions, their
    amplitude measured on the signal of the tracked face most of its events came from (None
    when no event was on it) and whether they were hit."""
    out = []
    for f in fs.faces:
        micro_truth = [truth[j] for j in f.face.members if truth[j].kind == "micro"]
        dets = [fs.detected[i] for i in f.detections if fs.detected[i].kind == "micro"]
        hit = set(j for _, j, _ in match_intervals(dets, micro_truth, iou).pairs)
        ids = Counter(run.events[i].get("face_id") for i in f.detections if run.events[i].get("face_id") is not None)
        regions = run.regions_by_face.get(ids.most_common(1)[0][0]) if ids else None
        ratios = measure_ratios(regions, micro_truth, run.fps) if regions else [None] * len(micro_truth)
        out += [(None if r is None else round(r, 2), j in hit) for j, r in enumerate(ratios)]
    return out


def parse_overrides(items: Sequence[str]) -> dict:
    """["open_ratio=5", "rule=casme"] -> {"open_ratio": 5.0, "rule": "casme"}, checked
    against SpotterConfig's fields (numbers stay numbers, the rest strings)."""
    fields = {f.name: f for f in dataclasses.fields(SpotterConfig)}
    out: dict = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in fields:
            raise ValueError(f"--spotter {item!r}: give NAME=VALUE with NAME one of {sorted(fields)}")
        default = getattr(SpotterConfig, name)
        try:
            out[name] = type(default)(value) if isinstance(default, (int, float)) else value
        except ValueError:
            raise ValueError(f"--spotter {item!r}: {name} takes a number") from None
    return out


def fmt_score(x, pct=False) -> str:
    """A score for the console: 3 decimals, "-" when undefined."""
    if x is None:
        return "-"
    return f"{x:.3f}"


def score_line(name: str, scores: dict, kinds: Sequence[str] = ("micro", "macro", "all")) -> str:
    """One video's scores (``evaluate_cases``' per-video "scores") as a console line."""
    parts = []
    for k in kinds:
        s = scores[k]
        parts.append(f"{k}: F1 {fmt_score(s['f1'])} P {fmt_score(s['precision'])} R {fmt_score(s['recall'])} "
                     f"(TP {s['tp']} FP {s['fp']} FN {s['fn']})")
    s = scores["micro"]
    apex = (f"apex |err| median {s['apex_error_ms_median']:.1f} ms, within 10 ms {s['apex_within_share']:.0%}"
            if s["apex_error_ms_median"] is not None else "apex -")
    label = f", label acc {s['label_accuracy']:.3f}" if s["label_accuracy"] is not None else ""
    return f"{name:32s} " + " | ".join(parts) + f" | micro {apex}{label}"
