"""The measured pass of the live-path benchmark: what runs and how it is timed.

It owns the run's configuration (``BenchConfig``), the input (``Clip``: the file, its
true rate, its ground truth), the recogniser (``Engine``: engines.recognizer.load_engine,
with the benchmark's own latency-only fallback to a random-init network for ``--width``
and for missing demo weights), the tracker models shared by both passes, the warm-up
pass, the measured pass through ``realtime.stages.pipeline.Pipeline`` (``measure`` ->
``Measured``: per-frame columns, CPU time, memory, load), and what the events' records
say about decision latency (``event_rows``, ``decision_summary``) and spotting
(``spotting_scores``). Turning that into a report is realtime.bench.report's job.
"""
from __future__ import annotations

import cProfile
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import psutil
from tqdm import tqdm

from core.events import read_ground_truth
from core.face import Landmarks68, align_pair, alignment_transform, box_from_landmarks, face_models
from core.machine import describe, load_average
from core.stats import percentiles
from engines.recognizer import DEMO_WEIGHTS
from engines.recognizer import load_engine as pick_engine
from realtime.bench.reference import reference_loop
from realtime.bench.sample import DEFAULT_SAMPLE, ensure_sample
from realtime.evaluate.scoring import interval_iou, score_intervals
from realtime.stages.pipeline import STAGES, Pipeline, PipelineConfig
from realtime.stages.sources import open_source
from realtime.stages.motion import MOTION_HZ
from realtime.stages.multitrack import MAX_FACES, MultiFaceTracker
from realtime.stages.trackproc import TrackedRecording
from realtime.stages.tracker import FaceTracker, TrackerConfig
from train.synth import ground_truth_path

try:
    import resource   # peak RSS; Unix only (Windows: psutil's peak working set instead)
except ImportError:
    resource = None

log = logging.getLogger(__name__)

DISPLAY_FPS = 60.0                 # overlays per second when drawing at display rate
DEMO_FALLBACK_WIDTH = 0.25         # random-init width used when the demo weights are missing
COMPARE_ENGINES = ("torch", "onnx", "onnx-int8", "cuda")


# ---------------------------------------------------------------------------------------
# configuration


@dataclass
class BenchConfig:
    """One benchmark run (the command line's options)."""

    video: str | None = None           # None: the 200 fps sample (realtime.bench.sample)
    fps: float | None = None           # the source's true rate (default: header; 200 for the sample)
    engine: str = "auto"               # "auto" | checkpoint/engine path | "none"
    width: float | None = None         # random-init network at this width instead of --engine
    tracker: str = "fast"
    max_faces: int = MAX_FACES         # faces followed (the live path's default)
    faces_cost: bool = False           # also measure each additional face's cost (realtime.bench.faces)
    spin: bool = False                 # ONNX Runtime threads spin-wait (the live path's default: they do not)
    runtime: str = "best"              # the engine that runs a checkpoint (engines.recognizer.CHECKPOINT_ENGINES)
    motion_hz: float | None = MOTION_HZ  # PipelineConfig.motion_hz (None: every frame)
    track_process: bool = False        # decode + track in a second process (trackproc.TrackedRecording)
    device: str = "auto"
    warmup: int = 200                  # frames of the separate warm-up pass
    max_frames: int | None = None      # measure at most this many frames
    draw: str = "display"              # "display" (<= 60/s), "every" (each frame), "off"
    compare: bool = False
    compare_frames: int = 200
    compare_engines: tuple[str, ...] = COMPARE_ENGINES
    compare_repeats: int = 30
    out: str = "bench_report"
    plots: bool = True
    profile: bool = False
    progress: bool | None = None       # tqdm bar (None: only on a terminal)

    def __post_init__(self) -> None:
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"--fps must be a positive frame rate, got {self.fps}")
        if self.width is not None and not self.width > 0:
            raise ValueError(f"--width must be > 0 (1.0 = the paper's network), got {self.width}")
        if self.warmup < 0:
            raise ValueError(f"--warmup must be >= 0 frames, got {self.warmup}")
        if self.max_frames is not None and self.max_frames <= 0:
            raise ValueError(f"--max-frames must be positive, got {self.max_frames}")
        if self.draw not in ("display", "every", "off"):
            raise ValueError(f"draw must be display, every or off, got {self.draw!r}")
        if self.compare_frames < 2:
            raise ValueError(f"--compare-frames must be >= 2, got {self.compare_frames}")
        unknown = set(self.compare_engines) - set(COMPARE_ENGINES)
        if unknown:
            raise ValueError(f"unknown --compare-engines {sorted(unknown)}; choose from {','.join(COMPARE_ENGINES)}")


@dataclass
class Clip:
    """The input: a video file, its true rate, and its ground truth when there is one."""

    path: Path
    fps: float | None
    sample: bool
    truth: list | None = None          # core.events.GroundTruth
    truth_path: Path | None = None


@dataclass
class Engine:
    """The recogniser the infer stage runs, and what to say about it."""

    recognizer: Any                    # engines.recognizer.Recognizer or None
    spec: str                          # what was asked for
    checkpoint: Path | None            # the .safetensors behind it (for --compare's eager torch)
    network: dict
    note: str = ""


# ---------------------------------------------------------------------------------------
# small pure helpers


def stat_summary(values: Sequence[float]) -> dict[str, float]:
    """core.stats.percentiles (n, mean, p50, p95, p99, max; non-finite values dropped),
    with zeros when empty so that the report's keys are stable."""
    s = percentiles(values)
    if not s.get("n"):
        return {"n": 0, "mean": 0.0, "p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
    return s


def file_decision_latency(apex_frame: int, decided_frame: int, fps: float, compute_ms: float) -> dict[str, float]:
    """Decision latency for a file (simulated capture clock, see the module docstring)."""
    wait = max(0, decided_frame - apex_frame) / fps * 1000.0
    return {"wait_ms": wait, "wait_frames": max(0, decided_frame - apex_frame), "compute_ms": compute_ms,
            "total_ms": wait + compute_ms}


def rss_mb() -> float:
    """Resident memory of this process now, MB."""
    try:
        return psutil.Process().memory_info().rss / 2**20
    except Exception:
        return float("nan")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MB (getrusage; psutil on Windows)."""
    if resource is not None:
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kb / 2**20 if sys.platform == "darwin" else kb / 1024   # bytes on macOS, KiB on Linux
    try:
        return psutil.Process().memory_info().peak_wset / 2**20
    except Exception:
        return float("nan")


# ---------------------------------------------------------------------------------------
# what runs: input, engine, tracker models, machine


def resolve_clip(cfg: BenchConfig) -> Clip:
    """The video to run (the sample by default) and its ground truth if present."""
    if cfg.video is None:
        video, gt = ensure_sample(progress=cfg.progress)
        fps = cfg.fps or DEFAULT_SAMPLE.fps
        return Clip(video, fps, True, read_ground_truth(gt), gt)
    path = Path(cfg.video)
    gt = ground_truth_path(path)
    truth = read_ground_truth(gt) if gt.is_file() else None
    return Clip(path, cfg.fps, False, truth, gt if truth is not None else None)


def load_engine(cfg: BenchConfig) -> Engine:
    """The recogniser for ``--engine`` / ``--width`` (see BenchConfig).

    engines.recognizer.load_engine picks the engine for the spec. The benchmark's own
    policy, latency only: ``--width`` and "auto" without the demo weights time a
    random-init network (engines.bench.random_checkpoint) instead, since latency depends
    on the architecture and not on the weights."""
    note = ""
    random_init = False
    if cfg.width is not None:
        from engines.bench import random_checkpoint   # torch: only for a random-init network

        ckpt, random_init = random_checkpoint(cfg.width), True
        spec = f"random init, width {cfg.width:g}"
        rec, _ = pick_engine(str(ckpt), device=cfg.device, spin=cfg.spin, engine=cfg.runtime)
    else:
        spec = cfg.engine
        rec, why = pick_engine(cfg.engine, device=cfg.device, spin=cfg.spin, engine=cfg.runtime)
        if rec is None and str(cfg.engine).lower() != "auto":
            return Engine(None, "none", None, {"width": None, "params": 0, "weights": None, "random_init": False},
                          f"{why}, there is no infer stage")
        if rec is None:   # "auto" and the demo weights are missing
            from engines.bench import random_checkpoint

            ckpt, random_init = random_checkpoint(DEMO_FALLBACK_WIDTH), True
            spec = f"auto (demo weights missing: random init, width {DEMO_FALLBACK_WIDTH:g})"
            note = (f"the demo weights {DEMO_WEIGHTS} are missing: timing a random-init network of width "
                    f"{DEMO_FALLBACK_WIDTH:g} instead (same architecture, so the same latency; labels are meaningless)")
            log.warning(note)
            rec, _ = pick_engine(str(ckpt), device=cfg.device, spin=cfg.spin, engine=cfg.runtime)
        else:
            ckpt = DEMO_WEIGHTS if cfg.engine == "auto" else Path(cfg.engine)
    info = rec.info()
    network = {"width": info.get("width"), "params": info.get("params"),
               "params_m": round(info["params"] / 1e6, 2) if info.get("params") else None,
               "weights": "random init (latency only)" if random_init else info.get("weights"),
               "random_init": random_init, "checkpoint_hash": info.get("checkpoint_hash"),
               "classes": info.get("classes")}
    checkpoint = Path(ckpt) if Path(ckpt).suffix == ".safetensors" else None
    return Engine(rec, spec, checkpoint, network, note)


def tracker_models(kind: str):
    """(detector, landmarks) loaded once and shared by the warm-up and measured pipelines."""
    return face_models(kind, dlib_upsample=TrackerConfig().dlib_upsample)


def make_tracker(kind: str, models, redetect_every: int, max_faces: int = 1):
    """The tracker Pipeline would build for ``kind`` and ``max_faces``, on already loaded models."""
    det, lms = models
    if max_faces > 1:
        return MultiFaceTracker(kind, max_faces=max_faces, redetect_every=redetect_every, detector=det, landmarks=lms)
    return FaceTracker(kind, redetect_every=redetect_every, detector=det, landmarks=lms)


def landmarks_every(fps: float) -> int:
    """Frames per landmark refresh at the live path's default ``landmarks_hz``."""
    hz = PipelineConfig().landmarks_hz
    return 1 if hz is None else max(1, round(fps / hz))


def pipeline_config(fps: float, cfg: BenchConfig, engine: Engine) -> PipelineConfig:
    """The live path's settings: defaults, plus what the benchmark was asked for."""
    return PipelineConfig(fps=fps, tracker=cfg.tracker, max_faces=cfg.max_faces,
                          engine=engine.spec if engine.recognizer else "none",
                          device=cfg.device, draw=cfg.draw != "off",
                          draw_fps=None if cfg.draw == "every" else DISPLAY_FPS, motion_hz=cfg.motion_hz)


class SpotLog:
    """The pipeline's own spotter, observed: every SpotUpdate it returns is kept (the
    final update's decided frame splits the final latency into wait and compute). All
    other attributes are the spotter's."""

    def __init__(self, spotter) -> None:
        self._spotter = spotter
        self.updates: list = []

    def update(self, *args, **kwargs):
        out = self._spotter.update(*args, **kwargs)
        self.updates.extend(out)
        return out

    def finish(self, *args, **kwargs):
        out = self._spotter.finish(*args, **kwargs)
        self.updates.extend(out)
        return out

    def __getattr__(self, name):
        return getattr(self._spotter, name)


def describe_machine() -> dict:
    """core.machine.describe() (CPU, cores, memory, GPU, library versions), the engine
    runtimes' versions (as engines.bench.machine() gives them, without loading torch: the
    live path does not) and the frame loop's OpenCV settings. The load average is left out
    here: the report takes it before and after the measured pass."""
    d = describe()
    d["onnxruntime"] = d["libraries"].get("onnxruntime") or d["libraries"].get("onnxruntime-gpu")
    d["tensorrt"] = d["libraries"].get("tensorrt")
    d.pop("loadavg", None)
    d["opencv"] = cv2.__version__
    d["opencv_threads"] = cv2.getNumThreads()
    if hasattr(os, "sched_getaffinity"):
        d["cpus_usable"] = len(os.sched_getaffinity(0))
    return d


# ---------------------------------------------------------------------------------------
# the passes


def warm_up(clip: Clip, cfg: BenchConfig, engine: Engine, models) -> dict:
    """Throw-away pass over the first ``cfg.warmup`` frames, then a few recogniser calls
    on a real aligned pair; also times the reference loop (realtime.bench.reference) on
    those frames."""
    if cfg.warmup <= 0:
        return {"frames": 0, "wall_s": 0.0, "reference_loop": {"fps": None, "frames": 0}}
    t0 = time.perf_counter()
    kept, faces = [], []
    with open_source(video=clip.path, fps=clip.fps) as src:
        pcfg = pipeline_config(src.fps, cfg, engine)
        pipe = Pipeline(pcfg, engine.recognizer, source_name=src.name,
                        tracker=make_tracker(cfg.tracker, models, pcfg.redetect_every, pcfg.max_faces))
        n = 0
        for frame in src:
            r = pipe.process(frame)
            if len(kept) < 100:
                kept.append(frame.image)
            if r.found and r.landmarks is not None and len(faces) < 2 and (not faces or n - faces[0][2] >= 5):
                faces.append((frame.image, r.landmarks, n))
            n += 1
            if n >= cfg.warmup:
                break
        pipe.close(wait=True)
    if engine.recognizer is not None and faces:
        a, b = align_pair(faces[0][0], faces[-1][0], alignment_transform(faces[0][1]))
        for _ in range(3):
            engine.recognizer.predict(a, b)
    ref = {"fps": None, "frames": 0, "what": "no face found in the warm-up frames"}
    if faces:
        lms = models[1] if isinstance(models[1], Landmarks68) else Landmarks68()
        ref = reference_loop(kept, lms, box_from_landmarks(faces[0][1]))
    return {"frames": n, "wall_s": round(time.perf_counter() - t0, 2), "reference_loop": ref}


@dataclass
class Measured:
    """What the measured pass collected."""

    frames: int
    wall_s: float
    cpu_s: float                       # CPU time over the loop: every thread, and the tracking process
    loop_cpu_s: float                  # CPU time of the frame-loop thread alone
    summary: Any                       # realtime.stages.results.RunSummary
    source: dict
    t: np.ndarray                      # (N,) source seconds
    value: np.ndarray                  # (N,) the spotter's score, motion / calm level (nan: no face)
    threshold: np.ndarray              # (N,)
    frame_ms: np.ndarray               # (N,) captured -> result (pipeline's frame latency)
    decode_ms: np.ndarray              # (N,)
    stage_ms: dict = field(default_factory=dict)        # stage -> (N,) ms, nan where it did not run
    emitted: list = field(default_factory=list)        # every Event record, in order
    updates: list = field(default_factory=list)        # every SpotUpdate
    rss_start_mb: float = 0.0
    rss_peak_sampled_mb: float = 0.0
    peak_rss_mb: float = 0.0
    tracking_process: dict | None = None   # its CPU s and peak RSS MB (decode + track in a second process)
    load_before: dict | None = None
    load_after: dict | None = None
    profile: Any = None                # cProfile.Profile when --profile


def measure(clip: Clip, cfg: BenchConfig, engine: Engine, models) -> Measured:
    """The measured pass: the whole file through a fresh Pipeline, nothing dropped."""
    emitted = []
    t_col, v_col, th_col, f_col, d_col = [], [], [], [], []
    stage_cols: dict[str, list[float]] = {name: [] for name in STAGES}
    load_before = load_average()
    with open_source(video=clip.path, fps=clip.fps) as src:
        pcfg = pipeline_config(src.fps, cfg, engine)
        pipe = Pipeline(pcfg, engine.recognizer, source_name=src.name,
                        tracker=make_tracker(cfg.tracker, models, pcfg.redetect_every, pcfg.max_faces))
        if cfg.track_process:
            src = TrackedRecording(src, pcfg)
        spot_log = SpotLog(pipe.spotter)
        pipe.spotter = spot_log
        total = getattr(src, "header_frames", None)
        if cfg.max_frames:
            total = min(total, cfg.max_frames) if total else cfg.max_frames
        bar = tqdm(total=total, desc="benchmark", unit="frame", file=sys.stderr, dynamic_ncols=True, leave=False,
                   disable=None if cfg.progress is None else not cfg.progress)   # None: only on a terminal
        prof = None
        if cfg.profile:
            prof = cProfile.Profile(time.thread_time)   # CPU time of this thread: waits for a busy CPU drop out
        rss0 = rss_peak = rss_mb()
        n = 0
        if isinstance(src, TrackedRecording):
            src.wait_ready()         # its start-up (imports, models) is not the frame rate
        c0, l0, t0 = time.process_time(), time.thread_time(), time.perf_counter()
        if prof is not None:
            prof.enable()
        for frame in src:
            r = pipe.process(frame)
            t_col.append(r.t)
            v_col.append(np.nan if r.score is None else r.score)
            th_col.append(np.nan if r.threshold is None else r.threshold)
            f_col.append(r.latency_ms)
            d_col.append(frame.decode_ms)
            for name, col in stage_cols.items():
                col.append(r.timings_ms.get(name, math.nan))
            if r.new_events:
                emitted.extend(r.new_events)
            n += 1
            bar.update(1)
            if n % 256 == 0:
                rss_peak = max(rss_peak, rss_mb())
            if cfg.max_frames and n >= cfg.max_frames:
                break
        t1, l1, c1 = time.perf_counter(), time.thread_time(), time.process_time()
        tracking = None
        if isinstance(src, TrackedRecording):
            src.close()              # ended (no-op) or left early: its CPU time is known once it has
            c1 += src.process_cpu_s
            tracking = {"cpu_s": round(src.process_cpu_s, 3), "peak_rss_mb": src.process_peak_rss_mb}
        if prof is not None:
            prof.disable()
        bar.close()
        rss_peak = max(rss_peak, rss_mb())
        emitted.extend(pipe.close(wait=True))
        summary = pipe.summary(src)
        source = src.describe()
        source["header_frames"] = getattr(src, "header_frames", None)
        source["header_fps"] = getattr(src, "header_fps", None)
    return Measured(frames=n, wall_s=t1 - t0, cpu_s=c1 - c0, loop_cpu_s=l1 - l0, summary=summary, source=source,
                    t=np.asarray(t_col), value=np.asarray(v_col, dtype=np.float64),
                    threshold=np.asarray(th_col, dtype=np.float64), frame_ms=np.asarray(f_col),
                    decode_ms=np.asarray(d_col),
                    stage_ms={k: np.asarray(v, dtype=np.float64) for k, v in stage_cols.items()},
                    emitted=emitted, updates=list(spot_log.updates),
                    rss_start_mb=rss0, rss_peak_sampled_mb=rss_peak, peak_rss_mb=peak_rss_mb(), tracking_process=tracking,
                    load_before=load_before, load_after=load_average(), profile=prof)


# ---------------------------------------------------------------------------------------
# events and their latency


def event_rows(emitted: list, updates: list, fps: float, truth: list | None) -> list[dict]:
    """One row per event: provisional and final latency (wait + compute), label, and the
    ground-truth interval it overlaps most (if any)."""
    by_onset: dict[int, dict] = {}
    for e in emitted:
        d = by_onset.setdefault(e.onset_frame, {"first": e, "final": None})
        if e.finalised_t is not None:
            d["final"] = e
    final_updates = {u.onset_frame: u for u in updates if u.stage == "final"}
    rows = []
    for onset in sorted(by_onset):
        first, final = by_onset[onset]["first"], by_onset[onset]["final"]
        ev = final or first
        lat = first.latency_ms
        prov = {"total_ms": lat.get("decision"), "wait_ms": lat.get("wait"),
                "wait_frames": round(lat.get("wait", 0.0) * fps / 1000.0), "compute_ms": lat.get("compute"),
                "infer_ms": lat.get("infer"), "apex_frame": first.apex_frame}
        row = {"onset_frame": ev.onset_frame, "apex_frame": ev.apex_frame,
               "offset_frame": ev.offset_frame if final is not None else None,
               "kind": ev.kind, "label": ev.label,
               "confidence": round(max(ev.probs.values()), 4) if ev.probs else None,
               "peak_motion": ev.peak_motion, "provisional": prov, "final": None}
        if final is not None:
            flat = final.latency_ms
            u = final_updates.get(onset)
            total = max(flat.get("final", 0.0), flat.get("decision", 0.0))  # kind certain AND label back
            if u is not None:
                f = file_decision_latency(final.apex_frame, u.decided_frame, fps, 0.0)
                row["final"] = {"total_ms": total, "wait_ms": f["wait_ms"], "wait_frames": f["wait_frames"],
                                "compute_ms": max(0.0, total - f["wait_ms"])}
            else:
                row["final"] = {"total_ms": total, "wait_ms": None, "wait_frames": None, "compute_ms": None}
        if truth:
            span = (ev.onset_frame, ev.offset_frame)
            best = max(truth, key=lambda g: interval_iou(span, (g.onset_frame, g.offset_frame)))
            iou = interval_iou(span, (best.onset_frame, best.offset_frame))
            if iou > 0:
                row["truth"] = {"kind": best.kind, "label": best.label, "onset_frame": best.onset_frame,
                                "apex_frame": best.apex_frame, "offset_frame": best.offset_frame,
                                "iou": round(iou, 3),
                                "apex_error_ms": round((ev.apex_frame - best.apex_frame) / fps * 1000.0, 2)}
                if prov["total_ms"] is not None:
                    # from the TRUE apex: what a user waits after the face peaked
                    row["provisional"]["from_true_apex_ms"] = round(
                        prov["total_ms"] + (first.apex_frame - best.apex_frame) / fps * 1000.0, 2)
            else:
                row["truth"] = None
        rows.append(row)
    return rows


def decision_summary(rows: list[dict]) -> dict:
    """Percentiles of the provisional and final decision latency over events."""
    out = {}
    for stage in ("provisional", "final"):
        recs = [r[stage] for r in rows if r.get(stage)]
        s = stat_summary([r["total_ms"] for r in recs])
        for part in ("wait_ms", "compute_ms"):
            vals = [r[part] for r in recs if r.get(part) is not None]
            ps = stat_summary(vals)
            key = part[:-3]
            s[f"{key}_p50"], s[f"{key}_p95"], s[f"{key}_max"] = ps["p50"], ps["p95"], ps["max"]
        out[stage] = s
    return out


def spotting_scores(emitted: list, truth: list | None, fps: float) -> dict | None:
    """MEGC-style spotting scores of the final events against the ground truth."""
    if truth is None:
        return None
    finals = [e for e in emitted if e.finalised_t is not None]
    return {k: score_intervals(finals, truth, fps, k).summary() for k in ("micro", "macro", "all")} | {
        "truth": {k: sum(t.kind == k for t in truth) for k in ("micro", "macro", "blink")}}
