"""How sensitive the spotter is (``realtime.evaluate.sensitivity``): recall by amplitude.

Each true micro-expression's amplitude is measured from the motion signal the live path
wrote (signal.csv: the spotting regions, realtime.stages.motion.SPOT_REGIONS) as its peak
in multiples of its clip's calm level (``measure_ratios``); ``sensitivity`` pools the
recall per amplitude band (``BANDS``) over videos, and ``plot_sensitivity`` draws it, one
line per mode: the sensitivity curve of ``python -m realtime.evaluate --plot``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib
import numpy as np

from realtime.evaluate.scoring import Interval
from realtime.stages.motion import SPOT_REGIONS

matplotlib.use("Agg")            # the plot is a file; never a window
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

BANDS = (0.0, 5.0, 10.0, 20.0, 50.0, math.inf)
"""Amplitude bands of the sensitivity table: a true ME's peak motion in multiples of its
clip's calm level (measure_ratios)."""


def measure_ratios(regions: dict[str, list[float]], truth: Sequence[Interval], fps: float,
                   margin_s: float = 0.3) -> list[float | None]:
    """Each true micro-expression's amplitude in multiples of its clip's calm level: the
    largest, over the expression regions, of (peak motion inside the interval) / (median
    motion on calm frames: none within ``margin_s`` of any true event). None when a region
    has no calm frame or the interval no face."""
    if not regions or not truth:
        return [None for _ in truth]
    a = np.asarray([regions[n] for n in SPOT_REGIONS], dtype=np.float64)     # (R, frames)
    n = a.shape[1]
    busy = np.zeros(n, bool)
    pad = int(round(margin_s * fps))
    for t in truth:
        busy[max(0, t.onset - pad):min(n, t.offset + pad + 1)] = True
    calm = a[:, ~busy]
    out: list[float | None] = []
    for t in truth:
        if t.kind != "micro":
            out.append(None)
            continue
        seg = a[:, max(0, t.onset):min(n, t.offset + 1)]
        ok = np.isfinite(seg).any(1) & (np.isfinite(calm).sum(1) > 0 if calm.size else False)
        if not np.any(ok):
            out.append(None)
            continue
        level = np.nanmedian(calm[ok], axis=1)
        out.append(float(np.max(np.nanmax(seg[ok], axis=1) / np.maximum(level, 1e-6))))
    return out


def band_of(ratio: float) -> str:
    for lo, hi in zip(BANDS[:-1], BANDS[1:]):
        if lo <= ratio < hi:
            return f"{lo:g}-{hi:g}x" if math.isfinite(hi) else f">={lo:g}x"
    return "?"


def sensitivity(videos: list[dict]) -> dict[str, dict]:
    """Recall of true micro-expressions by amplitude band, pooled over videos."""
    table: dict[str, dict] = {}
    for v in videos:
        for ratio, hit in v.get("micro_truth_ratios", []):
            if ratio is None:
                continue
            row = table.setdefault(band_of(ratio), {"n": 0, "hits": 0})
            row["n"] += 1
            row["hits"] += int(hit)
    order = [band_of(lo) for lo in BANDS[:-1]]
    return {b: dict(table[b], recall=round(table[b]["hits"] / table[b]["n"], 4)) for b in order if b in table}


def plot_sensitivity(reports: dict[str, dict], path: str | Path) -> Path:
    """Recall of true micro-expressions by amplitude band, one line per mode: the
    sensitivity curve."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for mode, rep in reports.items():
        table = rep["sensitivity"]
        bands = list(table)
        ax.plot(range(len(bands)), [table[b]["recall"] for b in bands], marker="o", label=mode)
        for i, b in enumerate(bands):
            ax.annotate(f"n={table[b]['n']}", (i, table[b]["recall"]), textcoords="offset points", xytext=(0, 6),
                        fontsize=7, ha="center")
        ax.set_xticks(range(len(bands)), bands)
    ax.set_ylim(0, 1.1)
    ax.set_xlabel("micro-expression peak / calm level of its clip")
    ax.set_ylabel("recall (IoU >= 0.5)")
    ax.grid(True, lw=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
