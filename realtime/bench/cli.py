"""Latency benchmark of the live path on a recording: ``python -m realtime.bench --help``.

The benchmark runs a video file through ``realtime.pipeline.Pipeline`` -- the object
run_live.py and the Gradio demo drive, not a copy of it (STYLE.md, DeepLabCut-Live's
benchmark_videos) -- with nothing dropped, and saves its timings with a description of
the machine (REALTIME.md, "Latency: say which one"):

- stage latency: time inside each stage per frame (decode, detect, landmarks, align,
  motion, spot, infer, draw) as p50 / p95 / p99 / max, from the pipeline's own counters;
  "infer" is counted on the frames that collected a recognition result (the recogniser
  itself runs in the pipeline's worker thread, off the frame loop);
- throughput: frames / wall time of the whole loop (decode included) with nothing
  dropped, and the real-time factor = throughput / source fps (>= 1 keeps up);
- frame latency: decoded frame in hand (``Frame.captured_at``) -> its ``FrameResult``
  (overlay included when drawn); ``frame_latency_with_decode_ms`` adds the decode;
- decision latency, per spotted event: apex captured -> label ready. For a file the
  capture clock is simulated: frame i is "captured" at i / fps, as a camera at that rate
  would deliver it, so

      wait_ms    = (decided_frame - apex_frame) / fps * 1000   (algorithmic: frames the
                   spotter had to see after the apex before it could confirm it)
      compute_ms = measured wall time from the deciding frame being in hand to the label
                   being back from the recogniser (processing, queue and inference)
      total_ms   = wait_ms + compute_ms

  "provisional" is the first record of an event (label shown once the apex is
  confirmed); "final" is the record whose micro/macro kind is certain (offset reached, or
  500 ms after onset), with its wait measured the same way (decided frame of the final
  spotter update - apex) and its total taken when both the kind and the label are there;
- peak memory (RSS) and CPU time per frame (all threads), the machine (CPU, cores, GPU,
  library versions, load average), the engine and the network (width, parameters).

Drawing runs at display rate by default (at most 60 overlays per wall-clock second:
``PipelineConfig.draw_fps``, what a screen shows); ``--draw-every-frame`` draws each
frame as recording does; ``--no-draw`` skips it. The report says which.

Warm-up: a separate pass over the first ``--warmup`` frames with a throw-away Pipeline
(same models, same recogniser) and a few recogniser calls on a real aligned pair, so
that lazy allocations, model page-in and kernel choice are not in the figures. The
measured pass then runs the whole file from frame 0 with a fresh Pipeline (the spotter
warms its noise model up on the first half second, as it would live: the benchmark measures
the causal path a camera gets, with no look-ahead).

``--compare`` then runs, in the same process on the same decoded frames: the paper's
preprocessing (dlib HOG detection + 68 landmarks on every frame) against each tracker
(per-stage ms and the ratio), and the available engines (ONNX Runtime fp32 / int8,
eager torch fp32, CUDA if there is a GPU) at batch 1 on real aligned pairs, with their
speed against eager torch.

Without VIDEO the input is the 200 fps sample (``realtime.bench_sample``: the bundled
real face animated by the generator with synthetic micro-expressions; its ground truth
lies beside it, so the report also scores the spotter against it).

Outputs in ``--out DIR``: report.json (stable keys: realtime_factor, throughput_fps,
stages, decision_latency_ms, frame_latency_ms, peak_rss_mb, machine, engine, network,
...), report.md (tables for people), stages.png, latency.png, motion.png, and with
``--profile`` profile.txt (cProfile of the measured pass; it slows the run down, so its
figures are for "where does the time go", not for the headline numbers).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from realtime.pipeline import STAGES, Pipeline, PipelineConfig, percentiles

log = logging.getLogger("realtime.bench")

SCHEMA = "moext-bench/1"
DISPLAY_FPS = 60.0                 # overlays per second when drawing at display rate
DEMO_FALLBACK_WIDTH = 0.25         # random-init width used when the demo weights are missing
COMPARE_ENGINES = ("torch", "onnx", "onnx-int8", "cuda")
# Targets (issue "Latency benchmark"): reported, never asserted.
TARGETS = {
    "realtime_factor": {"target": 2.0, "stretch": 3.0, "better": "higher",
                        "what": "real-time factor of the whole per-frame path (200 fps, 640x480, 2 CPU cores)"},
    "provisional_decision_p95_ms": {"target": 100.0, "stretch": 60.0, "better": "lower",
                                    "what": "provisional decision latency p95 after the apex (CPU engine)"},
}

EXAMPLES = """\
examples:
  python -m realtime.bench                                   # the 200 fps sample, demo weights, report in bench_report/
  python -m realtime.bench --out docs/bench --compare        # + paper preprocessing and engines side by side
  python -m realtime.bench --width 1.0 --out docs/bench_full # full-width network (random weights: fine for timing)
  python -m realtime.bench highspeed.avi --fps 200 --engine runs/demo/best.safetensors --tracker dlib
  python -m realtime.bench clip.mp4 --engine none --max-frames 1000 --draw-every-frame
  python run_live.py --bench --video clip.avi --fps 200      # the same, from the live command

Targets (reported, not enforced): real-time factor >= 2.0 at 200 fps 640x480 on 2 cores
(stretch 3.0); provisional decision latency p95 <= 100 ms (stretch 60 ms).
"""


# ---------------------------------------------------------------------------------------
# configuration


@dataclass
class BenchConfig:
    """One benchmark run (the command line's options)."""

    video: str | None = None           # None: the 200 fps sample (realtime.bench_sample)
    fps: float | None = None           # the source's true rate (default: header; 200 for the sample)
    engine: str = "auto"               # "auto" | checkpoint/engine path | "none"
    width: float | None = None         # random-init network at this width instead of --engine
    tracker: str = "fast"
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
    truth: list | None = None          # realtime.events.GroundTruth
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
    """n, mean, p50, p95, p99, max of a sample (zeros when empty: keys are stable)."""
    s = percentiles([v for v in values if v is not None and math.isfinite(v)])
    if not s.get("n"):
        return {"n": 0, "mean": 0.0, "p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
    return s


def realtime_factor(throughput_fps: float, source_fps: float) -> float:
    """Frames processed per second over frames the source delivers per second."""
    return throughput_fps / source_fps if source_fps > 0 else 0.0


def file_decision_latency(apex_frame: int, decided_frame: int, fps: float, compute_ms: float) -> dict[str, float]:
    """Decision latency for a file (simulated capture clock, see the module docstring)."""
    wait = max(0, decided_frame - apex_frame) / fps * 1000.0
    return {"wait_ms": wait, "wait_frames": max(0, decided_frame - apex_frame), "compute_ms": compute_ms,
            "total_ms": wait + compute_ms}


def interval_iou(a: tuple[int, int], b: tuple[int, int]) -> float:
    """IoU of two inclusive frame intervals (as realtime.scoring counts them)."""
    from realtime.scoring import interval_iou as iou

    return iou(a, b)


def target_status(name: str, value: float | None) -> dict:
    t = TARGETS[name]
    if value is None:
        return {**t, "value": None, "met": None, "stretch_met": None}
    ok = (lambda lim: value >= lim) if t["better"] == "higher" else (lambda lim: value <= lim)
    return {**t, "value": value, "met": bool(ok(t["target"])), "stretch_met": bool(ok(t["stretch"]))}


def rss_mb() -> float:
    """Resident memory of this process now, MB."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except Exception:
        return float("nan")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MB (getrusage; psutil on Windows)."""
    try:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kb / 2**20 if sys.platform == "darwin" else kb / 1024   # bytes on macOS, KiB on Linux
    except ImportError:
        try:
            import psutil

            return psutil.Process().memory_info().peak_wset / 2**20
        except Exception:
            return float("nan")


def load_average() -> dict | None:
    if not hasattr(os, "getloadavg"):
        return None
    a, b, c = os.getloadavg()
    return {"1min": round(a, 2), "5min": round(b, 2), "15min": round(c, 2)}


# ---------------------------------------------------------------------------------------
# what runs: input, engine, tracker models


def resolve_clip(cfg: BenchConfig) -> Clip:
    """The video to run (the sample by default) and its ground truth if present."""
    from realtime.events import read_ground_truth
    from train.synth import ground_truth_path

    if cfg.video is None:
        from realtime.bench_sample import DEFAULT_SAMPLE, ensure_sample

        video, gt = ensure_sample(progress=cfg.progress)
        fps = cfg.fps or DEFAULT_SAMPLE.fps
        return Clip(video, fps, True, read_ground_truth(gt), gt)
    path = Path(cfg.video)
    gt = ground_truth_path(path)
    truth = read_ground_truth(gt) if gt.is_file() else None
    return Clip(path, cfg.fps, False, truth, gt if truth is not None else None)


def random_checkpoint(width: float, seed: int = 0) -> Path:
    """A random-init MoExt classifier checkpoint at ``width`` (cached in the user's cache
    dir). Latency depends on the architecture, not on the weights, so this times the
    network of that width faithfully; its labels mean nothing."""
    from engines.runners import user_cache_dir

    path = user_cache_dir("bench") / f"moext-random-w{width:g}-seed{seed}.safetensors"
    if path.is_file():
        return path
    import torch

    from train.checkpoint import save_checkpoint
    from train.moext import MoExtClassifier, MoExtConfig

    torch.manual_seed(seed)
    mcfg = MoExtConfig(width=width)
    model = MoExtClassifier(mcfg).eval()
    return save_checkpoint(path, model, mcfg, meta={"weights": "random init (latency benchmark only)", "seed": seed})


def load_engine(cfg: BenchConfig) -> Engine:
    """The recogniser for ``--engine`` / ``--width`` (see BenchConfig)."""
    from engines.recognizer import DEMO_WEIGHTS, Recognizer

    note = ""
    random_init = False
    if cfg.width is not None:
        ckpt, random_init = random_checkpoint(cfg.width), True
        spec = f"random init, width {cfg.width:g}"
    elif str(cfg.engine).lower() == "none":
        return Engine(None, "none", None, {"width": None, "params": 0, "weights": None, "random_init": False},
                      "spotting only (--engine none): events carry no label, there is no infer stage")
    elif cfg.engine == "auto" and not DEMO_WEIGHTS.is_file():
        ckpt, random_init = random_checkpoint(DEMO_FALLBACK_WIDTH), True
        spec = f"auto (demo weights missing: random init, width {DEMO_FALLBACK_WIDTH:g})"
        note = (f"the demo weights {DEMO_WEIGHTS} are missing: timing a random-init network of width "
                f"{DEMO_FALLBACK_WIDTH:g} instead (same architecture, so the same latency; labels are meaningless)")
        log.warning(note)
    else:
        ckpt = DEMO_WEIGHTS if cfg.engine == "auto" else Path(cfg.engine)
        spec = cfg.engine
    rec = Recognizer.load(ckpt, device=cfg.device)
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
    from realtime.face import face_models
    from realtime.tracker import TrackerConfig

    return face_models(kind, dlib_upsample=TrackerConfig().dlib_upsample)


def make_tracker(kind: str, models, redetect_every: int):
    """The tracker Pipeline would build for ``kind``, on already loaded models."""
    from realtime.tracker import FaceTracker

    det, lms = models
    return FaceTracker(kind, redetect_every=redetect_every, detector=det, landmarks=lms)


def _landmarks_every(fps: float) -> int:
    """Frames per landmark refresh at the live path's default ``landmarks_hz``."""
    hz = PipelineConfig().landmarks_hz
    return 1 if hz is None else max(1, round(fps / hz))


def pipeline_config(fps: float, cfg: BenchConfig, engine: Engine) -> PipelineConfig:
    """The live path's settings: defaults, plus what the benchmark was asked for."""
    return PipelineConfig(fps=fps, tracker=cfg.tracker, engine=engine.spec if engine.recognizer else "none",
                          device=cfg.device, draw=cfg.draw != "off",
                          draw_fps=None if cfg.draw == "every" else DISPLAY_FPS)


def aligned_rgb_pair(onset_bgr: np.ndarray, onset_lm: np.ndarray,
                     apex_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(onset, apex) 224x224 RGB crops, both warped with the ONSET's alignment (DATASETS.md)."""
    from engines.contract import bgr_to_rgb
    from realtime.face import alignment_transform, warp_face

    m = alignment_transform(onset_lm)
    return bgr_to_rgb(warp_face(onset_bgr, m)), bgr_to_rgb(warp_face(apex_bgr, m))


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


# ---------------------------------------------------------------------------------------
# the passes


def reference_loop(frames: list[np.ndarray], landmarks, box) -> dict:
    """A plain loop as a yardstick of the machine's speed right now (shared machines vary):
    dlib 68 landmarks in a fixed box + DIS ultrafast optical flow between consecutive
    112x112 aligned grey crops, per decoded frame (REALTIME.md's measured stage costs)."""
    import cv2

    from realtime.face import alignment_transform, to_gray

    if len(frames) < 3 or box is None:
        return {"fps": None, "frames": len(frames), "what": "no face in the warm-up frames"}
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
    prev = None
    t0 = time.perf_counter()
    for img in frames:
        gray = to_gray(img)
        lm = landmarks(gray, box)
        crop = cv2.warpAffine(gray, alignment_transform(lm, 112), (112, 112), flags=cv2.INTER_LINEAR)
        if prev is not None:
            dis.calc(prev, crop, None)
        prev = crop
    dt = time.perf_counter() - t0
    return {"fps": round(len(frames) / dt, 1), "ms_per_frame": round(dt / len(frames) * 1e3, 3),
            "frames": len(frames),
            "what": "dlib 68 landmarks (fixed box) + 112x112 alignment warp + DIS ultrafast flow per decoded frame"}


def warm_up(clip: Clip, cfg: BenchConfig, engine: Engine, models) -> dict:
    """Throw-away pass over the first ``cfg.warmup`` frames, then a few recogniser calls
    on a real aligned pair; also times the reference loop on those frames."""
    from realtime.sources import open_source

    if cfg.warmup <= 0:
        return {"frames": 0, "wall_s": 0.0, "reference_loop": {"fps": None, "frames": 0}}
    t0 = time.perf_counter()
    kept, faces = [], []
    with open_source(video=clip.path, fps=clip.fps) as src:
        pcfg = pipeline_config(src.fps, cfg, engine)
        pipe = Pipeline(pcfg, engine.recognizer, source_name=src.name,
                        tracker=make_tracker(cfg.tracker, models, pcfg.redetect_every))
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
        a, b = aligned_rgb_pair(faces[0][0], faces[0][1], faces[-1][0])
        for _ in range(3):
            engine.recognizer.predict(a, b)
    ref = {"fps": None, "frames": 0, "what": "no face found in the warm-up frames"}
    if faces:
        from realtime.face import Landmarks68, box_from_landmarks

        lms = models[1] if isinstance(models[1], Landmarks68) else Landmarks68()
        ref = reference_loop(kept, lms, box_from_landmarks(faces[0][1]))
    return {"frames": n, "wall_s": round(time.perf_counter() - t0, 2), "reference_loop": ref}


@dataclass
class Measured:
    """What the measured pass collected."""

    frames: int
    wall_s: float
    cpu_s: float                       # process CPU time (every thread) over the loop
    loop_cpu_s: float                  # CPU time of the frame-loop thread alone
    summary: Any                       # realtime.pipeline.RunSummary
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
    load_before: dict | None = None
    load_after: dict | None = None
    profile: Any = None                # cProfile.Profile when --profile


def measure(clip: Clip, cfg: BenchConfig, engine: Engine, models) -> Measured:
    """The measured pass: the whole file through a fresh Pipeline, nothing dropped."""
    from tqdm import tqdm

    from realtime.sources import open_source

    emitted = []
    t_col, v_col, th_col, f_col, d_col = [], [], [], [], []
    stage_cols: dict[str, list[float]] = {name: [] for name in STAGES}
    load_before = load_average()
    with open_source(video=clip.path, fps=clip.fps) as src:
        pcfg = pipeline_config(src.fps, cfg, engine)
        pipe = Pipeline(pcfg, engine.recognizer, source_name=src.name,
                        tracker=make_tracker(cfg.tracker, models, pcfg.redetect_every))
        spot_log = SpotLog(pipe.spotter)
        pipe.spotter = spot_log
        total = getattr(src, "header_frames", None)
        if cfg.max_frames:
            total = min(total, cfg.max_frames) if total else cfg.max_frames
        bar = tqdm(total=total, desc="benchmark", unit="frame", file=sys.stderr, dynamic_ncols=True, leave=False,
                   disable=None if cfg.progress is None else not cfg.progress)   # None: only on a terminal
        prof = None
        if cfg.profile:
            import cProfile

            prof = cProfile.Profile(time.thread_time)   # CPU time of this thread: waits for a busy CPU drop out
        rss0 = rss_peak = rss_mb()
        n = 0
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
                    rss_start_mb=rss0, rss_peak_sampled_mb=rss_peak, peak_rss_mb=peak_rss_mb(),
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
    from realtime.scoring import score_intervals

    finals = [e for e in emitted if e.finalised_t is not None]
    return {k: score_intervals(finals, truth, fps, k).summary() for k in ("micro", "macro", "all")} | {
        "truth": {k: sum(t.kind == k for t in truth) for k in ("micro", "macro", "blink")}}


# ---------------------------------------------------------------------------------------
# machine


def describe_machine() -> dict:
    """engines.bench.machine() (CPU, cores, GPU, torch/onnxruntime/TensorRT) plus the
    libraries of the frame loop, memory and the load average."""
    from importlib import metadata

    import cv2

    from engines.bench import machine

    d = machine()
    d.pop("loadavg_1min", None)
    versions = {}
    for dist in ("numpy", "opencv-contrib-python", "opencv-python", "dlib", "dlib-bin", "mediapipe",
                 "ai-edge-litert", "onnx", "onnxruntime", "onnxruntime-gpu", "torch", "safetensors"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    d["libraries"] = versions
    d["opencv"] = cv2.__version__
    d["opencv_threads"] = cv2.getNumThreads()
    if hasattr(os, "sched_getaffinity"):
        d["cpus_usable"] = len(os.sched_getaffinity(0))
    try:
        import psutil

        d["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except Exception:
        pass
    return d


# ---------------------------------------------------------------------------------------
# --compare


def decode_frames(clip: Clip, n: int) -> tuple[list[np.ndarray], float]:
    """The first ``n`` frames, decoded once (the same frames for every contender)."""
    from realtime.sources import open_source

    frames = []
    with open_source(video=clip.path, fps=clip.fps) as src:
        fps = src.fps
        for frame in src:
            frames.append(frame.image)
            if len(frames) >= n:
                break
    return frames, fps


def _timed_stats(ms: list[float]) -> dict:
    s = stat_summary(ms)
    return {k: round(s[k], 4) for k in ("mean", "p50", "p95", "max")} | {"n": s["n"]}


def compare_preprocessing(frames: list[np.ndarray], kinds: Sequence[str]) -> dict:
    """The paper's preprocessing (dlib HOG + 68 landmarks on every frame) against each
    tracker, per stage, on the same frames; landmark agreement with the paper's too."""
    from realtime.face import DlibDetector, Landmarks68, landmark_error
    from realtime.tracker import FaceTracker, TrackerConfig

    det, lm68 = DlibDetector(upsample=TrackerConfig().dlib_upsample), Landmarks68()
    det.detect(frames[0])  # warm
    paper = {"detect": [], "landmarks": [], "total": []}
    paper_lm: list[np.ndarray | None] = []
    for img in frames:
        t0 = time.perf_counter()
        boxes = det.detect(img)
        t1 = time.perf_counter()
        lm = lm68(img, boxes[0]) if boxes else None
        t2 = time.perf_counter()
        paper["detect"].append((t1 - t0) * 1e3)
        paper["landmarks"].append((t2 - t1) * 1e3)
        paper["total"].append((t2 - t0) * 1e3)
        paper_lm.append(lm)
    out = {"frames": len(frames),
           "paper": {"what": f"dlib HOG detector (upsample {det.upsample}) + dlib 68 landmarks on every frame",
                     "found": sum(lm is not None for lm in paper_lm),
                     **{k: _timed_stats(v) for k, v in paper.items()}},
           "trackers": {}}
    for kind in kinds:
        try:
            tr = FaceTracker(kind)
            tr.update(frames[0])
            tr.reset()
        except Exception as e:  # a tracker that cannot run here (missing model) is reported, not fatal
            out["trackers"][kind] = {"error": f"{type(e).__name__}: {e}"}
            continue
        ours = {"detect": [], "landmarks": [], "total": []}
        errs = []
        found = 0
        for img, ref in zip(frames, paper_lm):
            r = tr.update(img)
            d, lmk = r.timings_ms.get("detect", 0.0), r.timings_ms.get("landmarks", 0.0)
            ours["detect"].append(d)
            ours["landmarks"].append(lmk)
            ours["total"].append(d + lmk)
            if r.found:
                found += 1
                if ref is not None:
                    errs.append(landmark_error(r.landmarks, ref))
        tr.close()
        entry = {k: _timed_stats(v) for k, v in ours.items()}
        entry["found"] = found
        entry["landmark_error_vs_paper"] = round(float(np.median(errs)), 4) if errs else None
        entry["speedup_total_mean"] = round(out["paper"]["total"]["mean"] / max(entry["total"]["mean"], 1e-9), 2)
        entry["speedup_detect_mean"] = round(out["paper"]["detect"]["mean"] / max(entry["detect"]["mean"], 1e-9), 2)
        out["trackers"][kind] = entry
    return out


def compare_pairs(frames: list[np.ndarray], truth: list | None, n_pairs: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Real aligned (onset, apex) pairs from the decoded frames: the ground truth's own
    onset/apex where they fall inside, else frame i and i + 6 (30 ms at 200 fps)."""
    from realtime.face import DlibDetector, Landmarks68

    det, lm68 = DlibDetector(), Landmarks68()
    idx = []
    for g in truth or []:
        if g.apex_frame < len(frames) and g.kind in ("micro", "macro"):
            idx.append((g.onset_frame, g.apex_frame))
    gap = min(6, len(frames) - 1)
    for i in np.linspace(0, len(frames) - 1 - gap, n_pairs).round().astype(int):
        if len(idx) >= n_pairs:
            break
        idx.append((int(i), int(i) + gap))
    onsets, apexes = [], []
    for i, j in idx[:n_pairs]:
        boxes = det.detect(frames[i])
        if not boxes:
            continue
        a, b = aligned_rgb_pair(frames[i], lm68(frames[i], boxes[0]), frames[j])
        onsets.append(a)
        apexes.append(b)
    if not onsets:
        raise ValueError("no face found in the compared frames: cannot cut aligned pairs for the engines")
    return np.stack(onsets), np.stack(apexes)


def time_batch1(rec, onset: np.ndarray, apex: np.ndarray, repeats: int) -> dict:
    """Per-pair latency at batch 1 of ``rec.predict`` (the call the worker makes)."""
    k = len(onset)
    for i in range(3):
        rec.predict(onset[i % k], apex[i % k])
    ms = []
    for i in range(repeats):
        t0 = time.perf_counter()
        rec.predict(onset[i % k], apex[i % k])
        ms.append((time.perf_counter() - t0) * 1e3)
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3),
            "min_ms": round(float(np.min(ms)), 3), "repeats": repeats}


def compare_engines(engine: Engine, onset: np.ndarray, apex: np.ndarray, engines: Sequence[str],
                    repeats: int) -> dict:
    """The engines this machine can run, at batch 1 on real aligned pairs, against eager
    torch fp32 (engines.bench builds them; ratio = eager p50 / engine p50)."""
    rows = []
    if engine.recognizer is not None:
        rec = engine.recognizer
        rows.append({"engine": f"pipeline's engine ({rec.name} {rec.precision} on {rec.device})",
                     "precision": rec.precision, "device": rec.device, **time_batch1(rec, onset, apex, repeats)})
    if engine.checkpoint is None:
        note = ("no checkpoint behind --engine (an .onnx/.plan file or none): eager torch and the other engines "
                "need the .safetensors weights")
        return {"rows": rows, "note": note, "pairs": int(len(onset))}
    from engines.bench import build_recognizers
    from engines.export import load_checkpoint_graph

    graph, info = load_checkpoint_graph(engine.checkpoint)
    reference = None
    with tempfile.TemporaryDirectory() as tmp:
        for label, rec, note in build_recognizers(graph, info, list(engines), Path(tmp), threads=None, plan=None,
                                                  calib_pairs=(onset, apex), spin=True, compile=False):
            if rec is None:
                rows.append({"engine": label, "note": note})
                continue
            try:
                t = time_batch1(rec, onset, apex, repeats)
                p = rec.predict(onset, apex)
                if reference is None and label.startswith("eager torch fp32 (cpu)"):
                    reference = p
                row = {"engine": label, "precision": rec.precision, "device": rec.device, **t}
                if reference is not None:
                    row["max_abs_dp_vs_eager"] = float(np.abs(p - reference).max())
                rows.append(row)
            except Exception as e:  # one broken engine must not hide the others
                rows.append({"engine": label, "note": f"failed: {type(e).__name__}: {e}"})
            finally:
                rec.close()
    eager = next((r for r in rows if r["engine"].startswith("eager torch fp32 (cpu)") and "p50_ms" in r), None)
    for r in rows:
        if eager is not None and "p50_ms" in r:
            r["speedup_vs_eager"] = round(eager["p50_ms"] / max(r["p50_ms"], 1e-9), 2)
    return {"rows": rows, "pairs": int(len(onset)), "network": {"width": info.width, "params": info.params}}


def run_compare(clip: Clip, cfg: BenchConfig, engine: Engine, say) -> dict:
    from realtime.face import TRACKER_KINDS

    frames, _ = decode_frames(clip, cfg.compare_frames)
    say(f"compare: {len(frames)} decoded frames, paper preprocessing vs trackers ...")
    kinds = [cfg.tracker] + [k for k in TRACKER_KINDS if k != cfg.tracker]
    pre = compare_preprocessing(frames, kinds)
    for kind, e in pre["trackers"].items():
        if "error" in e:
            say(f"  tracker {kind}: {e['error']}")
        else:
            say(f"  paper (HOG + 68 points every frame) {pre['paper']['total']['mean']:.2f} ms/frame vs tracker "
                f"{kind} {e['total']['mean']:.2f} ms/frame: x{e['speedup_total_mean']:.1f} "
                f"(detect x{e['speedup_detect_mean']:.1f})")
    out = {"preprocessing": pre}
    try:
        onset, apex = compare_pairs(frames, clip.truth)
        say(f"compare: engines at batch 1 on {len(onset)} aligned pairs ...")
        eng = compare_engines(engine, onset, apex, cfg.compare_engines, cfg.compare_repeats)
        for r in eng["rows"]:
            if "p50_ms" in r:
                ratio = f", x{r['speedup_vs_eager']:.2f} vs eager torch" if "speedup_vs_eager" in r else ""
                say(f"  {r['engine']}: p50 {r['p50_ms']:.2f} ms/pair{ratio}")
            else:
                say(f"  {r['engine']}: {r['note']}")
        out["engines"] = eng
    except Exception as e:  # the preprocessing half still stands
        out["engines"] = {"rows": [], "note": f"failed: {type(e).__name__}: {e}"}
        say(f"  engines: {out['engines']['note']}")
    del frames
    return out


# ---------------------------------------------------------------------------------------
# the report


def build_report(clip: Clip, cfg: BenchConfig, engine: Engine, warm: dict, m: Measured, machine: dict,
                 argv: Sequence[str] | None) -> dict:
    s = m.summary
    fps = s.source_fps
    throughput = m.frames / m.wall_s if m.wall_s > 0 else 0.0
    stages = {}
    for name in STAGES:
        st = dict(s.stages.get(name) or stat_summary([]))
        for k in ("p50", "p95", "p99"):   # the pipeline keeps samples in float32: no percentile above the max
            st[k] = min(st[k], st["max"])
        st["per_frame_ms"] = st["mean"] * st["n"] / m.frames if m.frames else 0.0   # amortised over all frames
        ran = m.stage_ms.get(name, np.zeros(0))
        ran = ran[np.isfinite(ran)]
        # the quick end of the distribution: close to the cost on an idle machine when neighbours are busy
        st["p10"] = float(np.percentile(ran, 10)) if ran.size else 0.0
        st["min"] = float(ran.min()) if ran.size else 0.0
        stages[name] = st
    process = dict(s.stages.get("process") or stat_summary([]))
    per_frame_total = sum(v["per_frame_ms"] for v in stages.values())
    rows = event_rows(m.emitted, m.updates, fps, clip.truth)
    decision = decision_summary(rows)
    decision["events"] = rows
    decision["definition"] = (
        "apex captured -> label ready. Files: the capture clock is simulated (frame i captured at i/fps): "
        "wait_ms = (decided_frame - apex_frame) / fps * 1000 (frames the spotter waited), compute_ms = measured "
        "wall time from the deciding frame in hand to the label back (processing, queue, inference); "
        "total = wait + compute. provisional: first record of the event (label shown at the apex); final: "
        "micro/macro certain and label back")
    engine_info = {"spec": engine.spec, "note": engine.note or None}
    if engine.recognizer is not None:
        info = engine.recognizer.info()
        engine_info.update({k: v for k, v in info.items() if k not in ("classes",)})
    command = "python -m realtime.bench" + ("" if not argv else " " + " ".join(shlex.quote(a) for a in argv))
    frame_lat = stat_summary(m.frame_ms.tolist())
    with_decode = stat_summary((m.frame_ms + m.decode_ms).tolist())
    report = {
        "schema": SCHEMA,
        "command": command,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "source": {"video": str(clip.path) if not clip.sample else f"<cache>/{clip.path.name}",
                   "sample": clip.sample, "fps": fps, "size": m.source.get("size"),
                   "frames_read": m.source.get("frames_read"), "header_fps": m.source.get("header_fps"),
                   "header_frames": m.source.get("header_frames"),
                   "ground_truth": None if clip.truth_path is None else clip.truth_path.name,
                   "end_reason": m.source.get("end_reason")},
        "settings": {"tracker": cfg.tracker, "engine": engine.spec, "device": cfg.device,
                     "warmup_frames": warm["frames"], "max_frames": cfg.max_frames,
                     "draw": s.draw, "drawn_frames": stages["draw"]["n"],
                     "redetect_every": PipelineConfig().redetect_every,
                     "landmarks_every": _landmarks_every(fps)},
        "frames": m.frames,
        "dropped": s.dropped,
        "wall_s": m.wall_s,
        "throughput_fps": throughput,
        "realtime_factor": realtime_factor(throughput, fps),
        "cpu_ms_per_frame": m.cpu_s / m.frames * 1e3 if m.frames else 0.0,
        "cpu_cores_busy": m.cpu_s / m.wall_s if m.wall_s > 0 else 0.0,
        "loop_thread_cpu_ms_per_frame": m.loop_cpu_s / m.frames * 1e3 if m.frames else 0.0,
        "cpu_bound_fps_estimate": m.frames / m.loop_cpu_s if m.loop_cpu_s > 0 else None,
        "stages": stages,
        "stages_per_frame_total_ms": per_frame_total,
        "process_ms": process,
        "frame_latency_ms": frame_lat,
        "frame_latency_with_decode_ms": with_decode,
        "decision_latency_ms": decision,
        "spotting": spotting_scores(m.emitted, clip.truth, fps),
        "peak_rss_mb": m.peak_rss_mb,
        "rss_mb": {"start": m.rss_start_mb, "peak_sampled": m.rss_peak_sampled_mb},
        "machine": {**machine, "loadavg_before": m.load_before, "loadavg_after": m.load_after,
                    "reference_loop": warm.get("reference_loop")},
        "engine": engine_info,
        "network": engine.network,
        "faults": s.faults,
        "targets": {"realtime_factor": target_status("realtime_factor", realtime_factor(throughput, fps)),
                    "provisional_decision_p95_ms": target_status(
                        "provisional_decision_p95_ms",
                        decision["provisional"]["p95"] if decision["provisional"]["n"] else None)},
        "warmup": warm,
        "pipeline_summary": s.to_dict(),
        "compare": None,
        "profile": None,
        "plots": [],
    }
    return report


def _f(x, nd=2, unit="") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.{nd}f}{unit}"


def _met(t: dict) -> str:
    if t["value"] is None:
        return "no events"
    return ("met" if t["met"] else "NOT met") + (", stretch met" if t["stretch_met"] else "")


def markdown(r: dict) -> str:
    """report.md: the same figures as report.json, as tables a person reads."""
    mach, net, eng, st = r["machine"], r["network"], r["engine"], r["settings"]
    every = st.get("landmarks_every")
    lm_rate = "" if every is None else (" (68 landmarks on every frame)" if every == 1
                                        else f" (68 landmarks on 1 frame in {every}, held on the others)")
    load = mach.get("loadavg_before") or {}
    load_after = mach.get("loadavg_after") or {}
    dec = r["decision_latency_ms"]
    prov, fin = dec["provisional"], dec["final"]
    t_rt, t_dec = r["targets"]["realtime_factor"], r["targets"]["provisional_decision_p95_ms"]
    src = r["source"]
    size = "x".join(map(str, src["size"])) if src.get("size") else "?"
    lines = [
        "# Latency benchmark of the live path",
        "",
        f"`{r['command']}` ({r['created']})",
        "",
        f"Input: {src['video']} ({size} at {src['fps']:g} fps, {r['frames']} frames"
        f"{', the generated 200 fps sample with ground truth' if src['sample'] else ''}); "
        f"tracker `{st['tracker']}`{lm_rate}; engine {eng.get('engine') or 'none'} {eng.get('precision') or ''} on "
        f"{eng.get('device') or '-'}; network width {net.get('width')}, "
        f"{_f((net.get('params') or 0) / 1e6, 2)} M parameters"
        f"{' (random init: timing only)' if net.get('random_init') else ''}; "
        f"drawing {st['draw']} ({st['drawn_frames']} of {r['frames']} frames drawn); "
        f"warm-up {st['warmup_frames']} frames (separate pass, not measured); {r['dropped']} frames dropped.",
        "",
        f"Machine: {mach.get('cpu')}, {mach.get('cores_physical')} cores ({mach.get('cores_logical')} logical), "
        f"GPU {mach.get('gpu') or 'none'}; load average {load.get('1min', '?')} / {load.get('5min', '?')} / "
        f"{load.get('15min', '?')} (1/5/15 min) before, {load_after.get('1min', '?')} after"
        + (f"; reference loop {mach['reference_loop']['fps']} frames/s"
           if (mach.get("reference_loop") or {}).get("fps") else "") + ".",
        "",
        "| figure | value | target |",
        "| --- | --- | --- |",
        f"| throughput (decode + whole per-frame path) | {_f(r['throughput_fps'], 1)} frames/s | |",
        f"| real-time factor (throughput / {src['fps']:g} fps) | {_f(r['realtime_factor'], 2)} | "
        f">= {t_rt['target']:g} (stretch {t_rt['stretch']:g}): {_met(t_rt)} |",
        f"| provisional decision latency p50 / p95 / max | {_f(prov['p50'], 1)} / {_f(prov['p95'], 1)} / "
        f"{_f(prov['max'], 1)} ms ({prov['n']} events) | p95 <= {t_dec['target']:g} ms "
        f"(stretch {t_dec['stretch']:g}): {_met(t_dec)} |",
        f"| of which waited (algorithmic) / compute, p50 | {_f(prov['wait_p50'], 1)} / "
        f"{_f(prov['compute_p50'], 1)} ms | |",
        f"| final (micro/macro certain) decision latency p50 / p95 / max | {_f(fin['p50'], 1)} / {_f(fin['p95'], 1)} / "
        f"{_f(fin['max'], 1)} ms | |",
        f"| frame latency p50 / p95 / p99 / max (frame in hand -> result) | {_f(r['frame_latency_ms']['p50'])} / "
        f"{_f(r['frame_latency_ms']['p95'])} / {_f(r['frame_latency_ms']['p99'])} / "
        f"{_f(r['frame_latency_ms']['max'])} ms | |",
        f"| frame latency with decode p50 / p95 | {_f(r['frame_latency_with_decode_ms']['p50'])} / "
        f"{_f(r['frame_latency_with_decode_ms']['p95'])} ms | |",
        f"| CPU time per frame: process (all threads) / frame-loop thread | {_f(r['cpu_ms_per_frame'])} / "
        f"{_f(r['loop_thread_cpu_ms_per_frame'])} ms ({_f(r['cpu_cores_busy'], 2)} cores busy on average) | |",
        f"| frames/s if the frame loop had a core to itself (1000 / loop-thread CPU ms) | "
        f"{_f(r['cpu_bound_fps_estimate'], 0)} frames/s | |",
        f"| peak memory (RSS) | {_f(r['peak_rss_mb'], 0)} MB | |",
        "",
        "## Stages (ms)",
        "",
        "Time inside each stage on the frames where it ran (p10 / p50 / p95 / p99 / max; on a busy machine p10 "
        "is the closest to an idle machine's cost), and amortised over every frame (what counts against the "
        "per-frame budget of 1000 / fps / real-time factor).",
        "",
        "| stage | frames | p10 | p50 | p95 | p99 | max | per frame (amortised) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, s in r["stages"].items():
        lines.append(f"| {name} | {s['n']} | {_f(s.get('p10'))} | {_f(s['p50'])} | {_f(s['p95'])} | {_f(s['p99'])} | "
                     f"{_f(s['max'])} | {_f(s['per_frame_ms'], 3)} |")
    p = r["process_ms"]
    lines.append(f"| whole process() call | {p['n']} | | {_f(p['p50'])} | {_f(p['p95'])} | {_f(p['p99'])} | "
                 f"{_f(p['max'])} | {_f(p['mean'], 3)} |")
    budget = 1000.0 / src["fps"]
    lines += ["", f"Budget per frame at {src['fps']:g} fps: {budget:.2f} ms for real time, {budget / 2:.2f} ms for a "
                  f"real-time factor of 2; the stages add up to {r['stages_per_frame_total_ms']:.2f} ms per frame.", ""]
    lines += ["## Events", "",
              "Decision latency per event: provisional = label shown once the apex is confirmed, final = kind "
              "certain and label back. wait = frames the spotter had to see after the apex (source clock), "
              "compute = measured processing + queue + inference.", "",
              "| onset-apex-offset | kind | label (conf.) | provisional: wait + compute = total (ms) | "
              "final: wait + compute = total (ms) | ground truth (IoU, apex error) |",
              "| --- | --- | --- | --- | --- | --- |"]
    for e in dec["events"]:
        pv, fv = e["provisional"], e.get("final")
        ftxt = (f"{_f(fv['wait_ms'], 0)} + {_f(fv['compute_ms'], 0)} = {_f(fv['total_ms'], 0)}" if fv else "-")
        tr = e.get("truth")
        ttxt = (f"{tr['kind']} {tr['label'] or ''} {tr['onset_frame']}-{tr['apex_frame']}-{tr['offset_frame']} "
                f"({tr['iou']:.2f}, {tr['apex_error_ms']:+.0f} ms)" if tr else "-")
        conf = f" ({e['confidence']:.2f})" if e.get("confidence") is not None else ""
        offset = e["offset_frame"] if e["offset_frame"] is not None else "?"
        lines.append(f"| {e['onset_frame']}-{e['apex_frame']}-{offset} | {e['kind']} | {e['label'] or '-'}{conf} | "
                     f"{_f(pv['wait_ms'], 0)} ({pv['wait_frames']} frames) + {_f(pv['compute_ms'], 0)} = "
                     f"{_f(pv['total_ms'], 0)} | {ftxt} | {ttxt} |")
    if not dec["events"]:
        lines.append("| (no event spotted) | | | | | |")
    sp = r.get("spotting")
    if sp:
        lines += ["", f"Spotting against the ground truth ({sp['truth']['micro']} micro, {sp['truth']['macro']} macro, "
                      f"{sp['truth']['blink']} blinks as distractors; MEGC rule, IoU >= 0.5):", "",
                  "| kind | TP | FP | FN | F1 | apex error median (ms) |", "| --- | --- | --- | --- | --- | --- |"]
        for k in ("micro", "macro", "all"):
            v = sp[k]
            lines.append(f"| {k} | {v['tp']} | {v['fp']} | {v['fn']} | {_f(v['f1'], 2)} | "
                         f"{_f(v['apex_error_ms_median'], 1)} |")
    cmp_ = r.get("compare")
    if cmp_:
        pre = cmp_["preprocessing"]
        pp = pre["paper"]
        lines += ["", "## Compare: the paper's preprocessing vs our trackers", "",
                  f"Same {pre['frames']} decoded frames, same process. Paper: {pp['what']} (found the face on "
                  f"{pp['found']} frames). Mean / p95 ms per frame; speed-up = paper mean / tracker mean.", "",
                  "| preprocessing | detect | landmarks | total | speed-up (total / detect) | found | "
                  "landmark error vs paper (NME) |", "| --- | --- | --- | --- | --- | --- | --- |",
                  f"| paper: HOG + 68 points every frame | {_f(pp['detect']['mean'])} / {_f(pp['detect']['p95'])} | "
                  f"{_f(pp['landmarks']['mean'])} / {_f(pp['landmarks']['p95'])} | {_f(pp['total']['mean'])} / "
                  f"{_f(pp['total']['p95'])} | 1 | {pp['found']} | - |"]
        for kind, e in pre["trackers"].items():
            if "error" in e:
                lines.append(f"| tracker {kind} | | | | | | {e['error']} |")
                continue
            lines.append(f"| tracker {kind} | {_f(e['detect']['mean'])} / {_f(e['detect']['p95'])} | "
                         f"{_f(e['landmarks']['mean'])} / {_f(e['landmarks']['p95'])} | {_f(e['total']['mean'])} / "
                         f"{_f(e['total']['p95'])} | x{_f(e['speedup_total_mean'], 1)} / "
                         f"x{_f(e['speedup_detect_mean'], 1)} "
                         f"| {e['found']} | {_f(e['landmark_error_vs_paper'], 3)} |")
        eng_c = cmp_.get("engines") or {}
        lines += ["", "## Compare: engines at batch 1", "",
                  f"Real aligned pairs ({eng_c.get('pairs', 0)}) from the same frames; latency of "
                  "`Recognizer.predict` (input checks and layout included); speed-up = eager torch p50 / engine p50.",
                  ""]
        if eng_c.get("note"):
            lines += [eng_c["note"], ""]
        lines += ["| engine | precision | device | p50 (ms/pair) | p95 | min | speed-up vs eager | "
                  "max abs dp vs eager |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for row in eng_c.get("rows", []):
            if "p50_ms" in row:
                speed = "x" + _f(row["speedup_vs_eager"], 2) if row.get("speedup_vs_eager") else "-"
                dp = row.get("max_abs_dp_vs_eager")
                lines.append(f"| {row['engine']} | {row['precision']} | {row['device']} | {_f(row['p50_ms'])} | "
                             f"{_f(row['p95_ms'])} | {_f(row['min_ms'])} | {speed} | "
                             f"{'-' if dp is None else '%.1e' % dp} |")
            else:
                lines.append(f"| {row['engine']} | | | | | | | {row.get('note', '')} |")
    lines += ["", "## Machine, engine, network", "", "```json",
              json.dumps({"machine": mach, "engine": eng, "network": net}, indent=2, default=str), "```"]
    if r.get("profile"):
        lines += ["", "## Profile (cProfile of the measured pass; slows the run)", "",
                  f"Top functions by own time: see `{r['profile']}`."]
    if r.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in r["plots"]]
    lines += ["", "## Definitions", "",
              "- stage latency: time inside each stage of `Pipeline.process` on the frames where it ran "
              "(decode = the source's read/decode; infer = the recogniser's compute time, counted on the frame "
              "that collected the result: the recogniser runs in a worker thread, off the frame loop).",
              "- throughput: frames / wall time of the measured loop (decode included), nothing dropped; "
              "real-time factor = throughput / source fps.",
              "- frame latency: decoded frame in hand -> its result (overlay included when drawn).",
              f"- decision latency: {dec['definition']}.",
              "- CPU time per frame: process CPU time (every thread) over the measured loop / frames, and the "
              "frame-loop thread's own CPU time / frames; on a busy machine they are steadier than wall time. "
              "1000 / loop-thread ms estimates the throughput with a core to itself (it leaves out the worker "
              "thread and OpenCV's helper threads, and neighbours still slow caches down).",
              "- reference loop: " + str((mach.get("reference_loop") or {}).get("what", "-")) + "; compare its "
              "frames/s between machines (or runs) to see how busy the machine was.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# plots (matplotlib, Agg)


KIND_COLOURS = {"micro": "tab:orange", "macro": "tab:blue", "blink": "tab:grey"}


def plot_stages(r: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(r["stages"])
    st = r["stages"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 1]})
    y = np.arange(len(names))
    floor = 1e-3   # log axis: stages that did not run sit at the floor
    a.barh(y - 0.2, [max(st[n]["p50"], floor) for n in names], 0.4, left=floor, label="p50", color="tab:blue")
    a.barh(y + 0.2, [max(st[n]["p95"], floor) for n in names], 0.4, left=floor, label="p95", color="tab:orange")
    a.scatter([max(st[n]["p99"], floor) for n in names], y + 0.2, marker="|", s=120, color="k", label="p99",
              zorder=3)
    a.set_xscale("log")
    a.set_yticks(y, [f"{n} ({st[n]['n']})" for n in names])
    a.invert_yaxis()
    a.set_xlabel("ms on the frames where the stage ran (number of frames), log scale")
    a.set_title("per-stage latency")
    a.legend(loc="lower right")
    bottom = 0.0
    colours = plt.get_cmap("tab10")
    for i, n in enumerate(names):
        v = st[n]["per_frame_ms"]
        b.bar(0, v, 0.6, bottom=bottom, color=colours(i), label=n)
        bottom += v
    fps = r["source"]["fps"]
    b.axhline(1000 / fps, color="r", ls="--", lw=1, label=f"real time ({1000 / fps:.1f} ms)")
    b.axhline(500 / fps, color="g", ls="--", lw=1, label=f"factor 2 ({500 / fps:.1f} ms)")
    b.set_xticks([])
    b.set_ylabel("ms per frame (amortised)")
    b.set_title("budget")
    b.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(f"{r['throughput_fps']:.0f} frames/s, real-time factor {r['realtime_factor']:.2f} at {fps:g} fps "
                 f"(load {((r['machine'].get('loadavg_before') or {}).get('1min', '?'))})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_latency(r: dict, m: Measured, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    v = m.frame_ms + m.decode_ms
    if v.size:
        hi = float(np.percentile(v, 99.5)) * 1.2 + 1e-3
        a.hist(np.clip(v, 0, hi), bins=80, color="tab:blue", alpha=0.8)
        for q, ls in ((50, "-"), (95, "--"), (99, ":")):
            x = float(np.percentile(v, q))
            a.axvline(x, color="k", ls=ls, lw=1, label=f"p{q} {x:.1f} ms")
        a.set_yscale("log")
        a.legend()
    a.set_xlabel("frame latency incl. decode (ms)")
    a.set_ylabel("frames")
    a.set_title("frame latency")
    ev = r["decision_latency_ms"]["events"]
    if ev:
        x = np.arange(len(ev))
        wait = [e["provisional"]["wait_ms"] or 0 for e in ev]
        comp = [e["provisional"]["compute_ms"] or 0 for e in ev]
        b.bar(x - 0.2, wait, 0.4, color="tab:grey", label="provisional: waited (frames)")
        b.bar(x - 0.2, comp, 0.4, bottom=wait, color="tab:orange", label="provisional: compute")
        fw = [(e["final"] or {}).get("wait_ms") or 0 for e in ev]
        fc = [(e["final"] or {}).get("compute_ms") or 0 for e in ev]
        b.bar(x + 0.2, fw, 0.4, color="silver", label="final: waited")
        b.bar(x + 0.2, fc, 0.4, bottom=fw, color="tab:red", label="final: compute")
        t = r["targets"]["provisional_decision_p95_ms"]
        b.axhline(t["target"], color="g", ls="--", lw=1, label=f"target p95 {t['target']:g} ms")
        b.set_xticks(x, [f"{e['kind'][0]}{e['apex_frame']}" for e in ev], rotation=45, fontsize=7)
        b.legend(fontsize=7)
    else:
        b.text(0.5, 0.5, "no event spotted", ha="center", va="center", transform=b.transAxes)
    b.set_ylabel("ms after the apex")
    b.set_title("decision latency per event")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_motion(r: dict, m: Measured, truth: list | None, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, a = plt.subplots(figsize=(12, 3.8))
    a.plot(m.t, m.value, lw=0.7, color="k", label="motion score (x calm level)")
    a.set_yscale("log")
    a.plot(m.t, m.threshold, lw=0.8, ls="--", color="tab:red", label="threshold")
    fps = r["source"]["fps"]
    top = np.nanmax(m.value) if np.isfinite(m.value).any() else 1.0
    seen = set()
    for e in r["decision_latency_ms"]["events"]:
        off = e["offset_frame"] if e["offset_frame"] is not None else e["apex_frame"]
        lab = f"spotted {e['kind']}"
        a.axvspan(e["onset_frame"] / fps, off / fps, color=KIND_COLOURS.get(e["kind"], "y"), alpha=0.25,
                  label=None if lab in seen else lab)
        seen.add(lab)
        a.axvline(e["apex_frame"] / fps, color=KIND_COLOURS.get(e["kind"], "y"), lw=1)
        if e["provisional"]["total_ms"] is not None:
            td = e["apex_frame"] / fps + e["provisional"]["total_ms"] / 1000
            a.plot([td], [top * 1.02], marker="v", color="tab:green", ms=6,
                   label=None if "label" in seen else "label ready (provisional)")
            seen.add("label")
        if e["label"]:
            a.text(e["apex_frame"] / fps, top * 1.08, e["label"], fontsize=7, ha="center")
    end_t = float(m.t[-1]) if m.t.size else 0.0
    for g in truth or []:
        if g.onset_t > end_t:
            continue
        lab = f"truth {g.kind}"
        a.plot([g.onset_t, g.offset_t], [-0.05 * top] * 2, lw=5, color=KIND_COLOURS.get(g.kind, "y"),
               solid_capstyle="butt", label=None if lab in seen else lab)
        seen.add(lab)
        if g.label:
            a.text(g.apex_t, -0.14 * top, g.label, fontsize=7, ha="center")
    a.set_xlabel("source time (s)")
    a.set_ylabel("motion (px of the 224 crop)")
    a.set_ylim(-0.2 * top, top * 1.18)
    a.set_xlim(0, max(end_t, 1e-3))
    a.set_title("motion signal, spotted events (shaded) and ground truth (bars)")
    a.legend(fontsize=7, ncol=4, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_profile(prof, path: Path, top: int = 45) -> Path:
    import io
    import pstats

    buf = io.StringIO()
    st = pstats.Stats(prof, stream=buf)
    buf.write("# cProfile of the measured pass, sorted by own time (tottime)\n")
    st.sort_stats("tottime").print_stats(top)
    buf.write("\n# ... and by cumulative time\n")
    st.sort_stats("cumulative").print_stats(top)
    path.write_text(buf.getvalue())
    return path


# ---------------------------------------------------------------------------------------
# command line


def run(cfg: BenchConfig, argv: Sequence[str] | None = None, say=print) -> dict:
    """Run the benchmark and write the report folder; returns the report dict."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    clip = resolve_clip(cfg)
    engine = load_engine(cfg)
    try:
        say(f"input: {clip.path} ({'generated sample, ' if clip.sample else ''}"
            f"{'ground truth ' + clip.truth_path.name if clip.truth_path else 'no ground truth'}); "
            f"engine: {engine.spec}; tracker: {cfg.tracker}")
        models = tracker_models(cfg.tracker)
        machine = describe_machine()
        say(f"warm-up: {cfg.warmup} frames ...")
        warm = warm_up(clip, cfg, engine, models)
        say("measuring ...")
        m = measure(clip, cfg, engine, models)
        report = build_report(clip, cfg, engine, warm, m, machine, argv)
        if cfg.compare:
            report["compare"] = run_compare(clip, cfg, engine, say)
        if m.profile is not None:
            report["profile"] = write_profile(m.profile, out / "profile.txt").name
        if cfg.plots:
            plots = [plot_stages(report, out / "stages.png"), plot_latency(report, m, out / "latency.png"),
                     plot_motion(report, m, clip.truth, out / "motion.png")]
            report["plots"] = [p.name for p in plots]
        (out / "report.json").write_text(json.dumps(report, indent=2, default=_json_default))
        (out / "report.md").write_text(markdown(report))
    finally:
        if engine.recognizer is not None:
            engine.recognizer.close()
    say(headline(report))
    say(f"wrote {out / 'report.json'}, {out / 'report.md'}"
        + (f" and {len(report['plots'])} plots" if report["plots"] else ""))
    return report


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    return str(o)


def headline(r: dict) -> str:
    p = r["decision_latency_ms"]["provisional"]
    f = r["decision_latency_ms"]["final"]
    load = (r["machine"].get("loadavg_before") or {}).get("1min", "?")
    lines = [f"== benchmark: {r['frames']} frames at {r['source']['fps']:g} fps, load average {load}",
             f"throughput {r['throughput_fps']:.1f} frames/s, real-time factor {r['realtime_factor']:.2f} "
             f"(target >= 2.0: {_met(r['targets']['realtime_factor'])})",
             f"CPU per frame {r['cpu_ms_per_frame']:.2f} ms (all threads), {r['loop_thread_cpu_ms_per_frame']:.2f} ms "
             f"(frame-loop thread: ~{r['cpu_bound_fps_estimate'] or 0:.0f} frames/s on an idle core); "
             f"{r['cpu_cores_busy']:.2f} cores busy on average",
             f"frame latency p50 {r['frame_latency_ms']['p50']:.2f} ms, p95 {r['frame_latency_ms']['p95']:.2f} ms, "
             f"p99 {r['frame_latency_ms']['p99']:.2f} ms",
             f"decision latency over {p['n']} events: provisional p50 {p['p50']:.0f} ms, p95 {p['p95']:.0f} ms "
             f"(target <= 100: {_met(r['targets']['provisional_decision_p95_ms'])}); final p50 {f['p50']:.0f} ms, "
             f"p95 {f['p95']:.0f} ms",
             f"peak RSS {r['peak_rss_mb']:.0f} MB",
             f"{'stage':10s} {'n':>6s} {'p50':>8s} {'p95':>8s} {'p99':>8s} {'max':>8s} {'/frame':>8s}  (ms)"]
    for name, s in r["stages"].items():
        lines.append(f"{name:10s} {s['n']:6d} {s['p50']:8.2f} {s['p95']:8.2f} {s['p99']:8.2f} {s['max']:8.2f} "
                     f"{s['per_frame_ms']:8.3f}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from realtime.face import TRACKER_KINDS

    ap = argparse.ArgumentParser(
        prog="python -m realtime.bench",
        description="Latency benchmark: runs a recording through the live pipeline (the one run_live.py uses) "
                    "with nothing dropped and reports per-stage latency, throughput and real-time factor, frame "
                    "latency, decision latency per event, memory and the machine.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video", nargs="?", metavar="VIDEO",
                    help="video file (default: the 200 fps sample with ground truth, generated once into the "
                         "user's cache dir)")
    ap.add_argument("--fps", type=float, metavar="F",
                    help="true frame rate (high-speed files often carry a wrong header); default: the header, "
                         "200 for the sample")
    ap.add_argument("--engine", default="auto", metavar="PATH|auto|none",
                    help="weights or engine file (.safetensors, .onnx, .plan); auto = the demo weights on the best "
                         "engine here (default); none = spotting only")
    ap.add_argument("--width", type=float, metavar="W",
                    help="time a random-init network of this width instead (1.0 = the paper's full width; "
                         "latency does not depend on the weights)")
    ap.add_argument("--tracker", choices=TRACKER_KINDS, default="fast", help="face tracker (default fast)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda[:i] (default auto)")
    ap.add_argument("--out", default="bench_report", metavar="DIR", help="report folder (default bench_report)")
    ap.add_argument("--warmup", type=int, default=200, metavar="N",
                    help="frames of the separate warm-up pass (default 200; 0 = none)")
    ap.add_argument("--max-frames", type=int, metavar="N", help="measure at most N frames")
    draw = ap.add_mutually_exclusive_group()
    draw.add_argument("--draw-every-frame", action="store_true",
                      help="draw the overlay on every frame (as recording does) instead of at display rate "
                           f"(<= {DISPLAY_FPS:g} per second, the default)")
    draw.add_argument("--no-draw", action="store_true", help="no overlay at all")
    ap.add_argument("--compare", action="store_true",
                    help="also run the paper's preprocessing (dlib HOG + 68 points every frame) against the "
                         "trackers, and the engines against eager torch, on the same frames")
    ap.add_argument("--compare-frames", type=int, default=200, metavar="N",
                    help="decoded frames for --compare (default 200)")
    ap.add_argument("--compare-engines", default=",".join(COMPARE_ENGINES), metavar="LIST",
                    help=f"engines for --compare, from {','.join(COMPARE_ENGINES)} (default all; unavailable ones "
                         "are reported as skipped)")
    ap.add_argument("--compare-repeats", type=int, default=30, metavar="N",
                    help="batch-1 calls per engine (default 30)")
    ap.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    ap.add_argument("--profile", action="store_true",
                    help="cProfile the measured pass into DIR/profile.txt (slows it down: for finding where the "
                         "time goes, not for the headline numbers)")
    ap.add_argument("--quiet", action="store_true", help="print only the headline")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = build_parser()
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    if a.video is not None and not Path(a.video).is_file():
        print(f"error: video {a.video} does not exist: check the path (or give no VIDEO for the 200 fps sample)",
              file=sys.stderr)
        return 2
    try:
        cfg = BenchConfig(video=a.video, fps=a.fps, engine=a.engine, width=a.width, tracker=a.tracker,
                          device=a.device, warmup=a.warmup, max_frames=a.max_frames,
                          draw="every" if a.draw_every_frame else "off" if a.no_draw else "display",
                          compare=a.compare, compare_frames=a.compare_frames,
                          compare_engines=tuple(e.strip() for e in a.compare_engines.split(",") if e.strip()),
                          compare_repeats=a.compare_repeats, out=a.out, plots=not a.no_plots, profile=a.profile,
                          progress=False if a.quiet else None)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.width is not None and a.engine not in ("auto",):
        print(f"error: give --engine {a.engine} or --width {a.width:g}, not both (--width times a random-init "
              "network of that width)", file=sys.stderr)
        return 2
    say = (lambda *x: None) if a.quiet else (lambda *x: print(*x, flush=True))
    from realtime.sources import SourceError

    try:
        report = run(cfg, argv, say)
    except (SourceError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.quiet:
        print(headline(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
