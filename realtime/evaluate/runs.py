"""Running and scoring an evaluation (``realtime.evaluate.runs``).

The videos go through the batch runner (realtime.batch.runner.run_recordings: the
per-recording function, outputs and resume of ``python -m realtime.batch``), each one's
events and per-frame signal are read back from what it wrote (``VideoRun``), and
``evaluate_cases`` scores them the MEGC way (realtime.evaluate.scoring) per video and
pooled, with the recall by amplitude band (realtime.evaluate.sensitivity). The
generator's micro/macro ground truth is judged under the spotter's rule
(``relabel_truth``). Also the settings of an evaluation run (``recording_settings``,
``--mode``, ``--spotter NAME=VALUE``) and the per-video score line.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from core.events import expression_kind, read_events
from realtime.batch.discovery import Recording
from realtime.batch.runner import run_recordings
from realtime.evaluate.cases import VideoCase
from realtime.evaluate.scoring import SCORE_KINDS, Interval, SpotScore, match_intervals, pool, score_intervals
from realtime.evaluate.sensitivity import measure_ratios, sensitivity
from realtime.stages.motion import SPOT_REGIONS
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


MODES = ("recording", "causal")


def recording_settings(tracker: str = "fast", spotter: dict | None = None, motion: dict | None = None,
                       mode: str = "recording", engine: str = "none"):
    """The realtime.stages.recording settings of an evaluation run (``mode`` "recording": read
    ahead, as run_live.py and the batch read files; "causal": as a camera sees it)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return RecordingSettings(engine=engine, tracker=tracker, spotter=dict(spotter or {}), motion=dict(motion or {}),
                             causal=mode == "causal")


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
    regions: dict[str, list[float]] = {n: [] for n in SPOT_REGIONS}
    signal = folder / "signal.csv"
    if signal.is_file():
        with open(signal, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                for n in SPOT_REGIONS:
                    v = row.get(n)
                    regions[n].append(float(v) if v not in (None, "") else math.nan)
    for n in SPOT_REGIONS:
        if len(regions[n]) < frames:
            regions[n] += [math.nan] * (frames - len(regions[n]))
    dets = [Interval(e.onset_frame, e.offset_frame, e.apex_frame, e.kind, e.label) for e in events]
    return VideoRun(dets, [e.to_dict() for e in events], frames, float(res.get("face_share") or 0.0),
                    float(res.get("fps") or 0.0), float(res.get("wall_s") or 0.0), res.get("end_reason"), regions,
                    dict(res.get("faults") or {}), dict(res.get("rejected") or {}))


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
            t = Interval(t.onset, t.offset, t.apex, kind, t.label)
        out.append(t)
    return out


def evaluate_cases(cases: list[VideoCase], *, fps: float | None = None, recognizer=None, tracker: str = "fast",
                   iou: float = 0.5, spotter: dict | None = None, motion: dict | None = None,
                   progress: bool = True, log=print, mode: str = "recording", engine: str | None = None,
                   jobs: int = 1, work: str | Path | None = None) -> dict:
    """Run and score every case; returns the JSON-ready report (per video and pooled, and
    the recall of true micro-expressions by amplitude band). The generator's ground truth
    is judged micro or macro under the spotter's rule (``spotter["rule"]``, default megc).

    The videos go through the batch runner (run_videos: realtime.batch.runner, as ``python -m
    realtime.batch`` runs a study): ``jobs`` worker processes (1: in this process, with
    ``recognizer``), ``work`` its output folder (each video's event log, signal and
    result; a later evaluation there reuses unchanged runs). ``engine``: the recogniser's
    spec (needed with ``jobs`` > 1, where each worker loads it)."""
    rule = (spotter or {}).get("rule", SpotterConfig.rule)
    pooled: dict[str, list[SpotScore]] = {k: [] for k in SCORE_KINDS}
    videos = []
    spec = engine if engine is not None else ("preloaded" if recognizer is not None else "none")
    settings = recording_settings(tracker, spotter, motion, mode, spec)
    runs = run_videos([(case.name, case.path, fps or case.fps) for case in cases], settings, work,
                      recognizer=recognizer, jobs=jobs, progress=progress)
    for case, run in zip(cases, runs):
        truth = relabel_truth(case.truth, run.fps, rule) if case.layout == "synth" else case.truth
        kinds = sorted({t.kind for t in truth if t.kind})
        entry = {"video": case.name, "layout": case.layout, "fps": run.fps, "frames": run.frames,
                 "face_share": round(run.face_share, 4), "wall_s": round(run.wall_s, 2),
                 "realtime_factor": round(run.frames / run.wall_s / run.fps, 3) if run.wall_s > 0 else None,
                 "end_reason": run.end_reason, "faults": run.faults, "rejected": run.rejected,
                 "truth": {k: sum(t.kind == k for t in truth) for k in ["micro", "macro"] + kinds},
                 "detected": {k: sum(d.kind == k for d in run.detections) for k in ("micro", "macro")},
                 "scores": {}, "events": run.events}
        for k in SCORE_KINDS:
            s = score_intervals(run.detections, truth, run.fps, k, iou)
            pooled[k].append(s)
            entry["scores"][k] = s.summary()
        micro_truth = [t for t in truth if t.kind == "micro"]
        hit = set(j for _, j, _ in match_intervals([d for d in run.detections if d.kind == "micro"],
                                                   micro_truth, iou).pairs)
        ratios = measure_ratios(run.regions, micro_truth, run.fps)
        entry["micro_truth_ratios"] = [(None if r is None else round(r, 2), j in hit) for j, r in enumerate(ratios)]
        videos.append(entry)
        if log:
            log(score_line(case.name, entry["scores"]))
    return {"iou_threshold": iou, "mode": mode, "rule": rule, "videos": videos,
            "pooled": {k: pool(v).summary() for k, v in pooled.items()},
            "sensitivity": sensitivity(videos)}


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
