"""Percentile summaries: the one definition every report (pipeline, benchmarks, load tests) uses."""
from __future__ import annotations

from typing import Iterable

import numpy as np

QUANTILES = (50, 95, 99)


def percentiles(values: Iterable[float], quantiles: Iterable[int] = QUANTILES) -> dict[str, float]:
    """{"n", "mean", "p50", "p95", "p99", "max"} of ``values`` (non-finite values dropped);
    ``{"n": 0}`` when nothing is left. Other quantiles: ``quantiles=(10, 50, 90)`` gives p10, p50, p90."""
    if isinstance(values, np.ndarray):
        v = values.astype(np.float64, copy=False).ravel()
    else:
        v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"n": 0}
    qs = tuple(int(q) for q in quantiles)
    out: dict[str, float] = {"n": int(v.size), "mean": float(v.mean())}
    for q, x in zip(qs, np.percentile(v, qs)):
        out[f"p{q}"] = float(x)
    out["max"] = float(v.max())
    return out
