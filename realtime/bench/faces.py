"""What each additional face costs the live path (``python -m realtime.bench --faces-cost``).

One generated clip with three real faces side by side (``train.synth.multiface``, 1920x480
at the benchmark's frame rate, with their own micro-expressions, blinks and
macro-expressions) is written once, then played through fresh pipelines that follow 1, 2
and 3 of its faces (``PipelineConfig.max_faces``), spotting only, drawing off, so that the
figure is the per-frame path's own (tracking, alignment, motion and spotting of each face).
The frames are decoded ahead by the source's thread, as in every run; ``process`` time
excludes the decode. Reported: ``process`` mean and p50 per frame at each face count, and
the least-squares slope of the mean against the face count: ms per frame per added face.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from realtime.stages.pipeline import Pipeline, PipelineConfig
from realtime.stages.sources import open_source
from train.synth.multiface import MIN_SECONDS, pick_identities, write_multi_clip

FACES = (1, 2, 3)


def face_cost(fps: float = 200.0, frames: int = 600, warmup: int = 100, tracker: str = "fast",
              seed: int = 0, work: str | Path | None = None) -> dict:
    """Per-frame cost at 1, 2 and 3 followed faces on one 3-face clip (module docstring)."""
    seconds = max(MIN_SECONDS, (frames + warmup) / fps)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        clip = Path(tmp) / "three_faces.avi"
        write_multi_clip(clip, pick_identities(3), fps=fps, seconds=seconds, seed=seed)
        rows = {}
        for n in FACES:
            ms = []
            with open_source(video=clip, fps=fps) as src:
                pipe = Pipeline.for_source(src, PipelineConfig(engine="none", draw=False, max_faces=n, tracker=tracker))
                followed = []
                for i, frame in enumerate(src):
                    r = pipe.process(frame)
                    if i >= warmup:
                        ms.append(r.timings_ms and sum(v for k, v in r.timings_ms.items() if k != "decode"))
                        followed.append(len(r.faces))
                    if i + 1 >= warmup + frames:
                        break
                pipe.close(wait=False)
            a = np.asarray(ms, dtype=np.float64)
            rows[n] = {"faces_followed_mean": round(float(np.mean(followed)), 2), "frames": int(a.size),
                       "mean_ms": round(float(a.mean()), 3), "p50_ms": round(float(np.percentile(a, 50)), 3),
                       "p95_ms": round(float(np.percentile(a, 95)), 3)}
    x = np.array([rows[n]["faces_followed_mean"] for n in FACES])
    y = np.array([rows[n]["mean_ms"] for n in FACES])
    slope = float(np.polyfit(x, y, 1)[0]) if np.ptp(x) > 0 else float("nan")
    return {"clip": f"3 faces side by side, 1920x480 at {fps:g} fps (train.synth.multiface, seed {seed})",
            "stages": "per-frame path without decode and drawing (spotting only)",
            "by_faces": {str(n): rows[n] for n in FACES}, "per_added_face_ms": round(slope, 3)}


def markdown_rows(cost: dict) -> list[str]:
    """report.md's table of the face-count run."""
    lines = ["", "## Cost of each additional face", "",
             f"{cost['clip']}; {cost['stages']}; per added face **{cost['per_added_face_ms']:.2f} ms per frame** "
             "(slope of the mean).", "",
             "| faces followed | frames | mean (ms) | p50 (ms) | p95 (ms) |", "| --- | --- | --- | --- | --- |"]
    for n, row in cost["by_faces"].items():
        lines.append(f"| {row['faces_followed_mean']:g} (max_faces {n}) | {row['frames']} | {row['mean_ms']:.2f} | "
                     f"{row['p50_ms']:.2f} | {row['p95_ms']:.2f} |")
    return lines
