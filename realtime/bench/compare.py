"""``--compare``: contenders side by side on the same decoded frames, in the same process.

It owns the comparison of the paper's preprocessing (dlib HOG detection + 68 landmarks
on every frame) with each face tracker (per-stage ms, speed-up, landmark agreement), and
of the engines this machine can run (engines.bench builds them: ONNX Runtime fp32 /
int8, eager torch fp32, CUDA with a GPU) at batch 1 on real aligned pairs, with their
speed and output against eager torch. The measured pass and the report are elsewhere
(realtime.bench.measure, realtime.bench.report).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from core.face import TRACKER_KINDS, DlibDetector, Landmarks68, align_pair, alignment_transform, landmark_error
from core.stats import percentiles
from engines.bench import build_recognizers
from engines.export import load_checkpoint_graph
from realtime.bench.measure import BenchConfig, Clip, Engine, stat_summary
from realtime.stages.sources import open_source
from realtime.stages.tracker import FaceTracker, TrackerConfig


# ---------------------------------------------------------------------------------------
# the paper's preprocessing against the trackers


def decode_frames(clip: Clip, n: int) -> tuple[list[np.ndarray], float]:
    """The first ``n`` frames, decoded once (the same frames for every contender)."""
    frames = []
    with open_source(video=clip.path, fps=clip.fps) as src:
        fps = src.fps
        for frame in src:
            frames.append(frame.image)
            if len(frames) >= n:
                break
    return frames, fps


def _timed_stats(ms: list[float]) -> dict:
    """mean, p50, p95, max (rounded to 0.1 us) and n of a list of ms (stat_summary)."""
    s = stat_summary(ms)
    return {k: round(s[k], 4) for k in ("mean", "p50", "p95", "max")} | {"n": s["n"]}


def compare_preprocessing(frames: list[np.ndarray], kinds: Sequence[str]) -> dict:
    """The paper's preprocessing (dlib HOG + 68 landmarks on every frame) against each
    tracker, per stage, on the same frames; landmark agreement with the paper's too."""
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


# ---------------------------------------------------------------------------------------
# the engines at batch 1


def compare_pairs(frames: list[np.ndarray], truth: list | None, n_pairs: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Real aligned (onset, apex) pairs from the decoded frames: the ground truth's own
    onset/apex where they fall inside, else frame i and i + 6 (30 ms at 200 fps)."""
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
        a, b = align_pair(frames[i], frames[j], alignment_transform(lm68(frames[i], boxes[0])))
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
    s = percentiles(ms, (50, 95))
    return {"p50_ms": round(s["p50"], 3), "p95_ms": round(s["p95"], 3),
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


# ---------------------------------------------------------------------------------------
# both


def run_compare(clip: Clip, cfg: BenchConfig, engine: Engine, say) -> dict:
    """Both comparisons on the first ``cfg.compare_frames`` frames, said as they finish."""
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
