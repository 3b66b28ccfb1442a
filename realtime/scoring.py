"""Spotting scores the MEGC way (REALTIME.md, "Test media"; MEGC 2019-2022 spotting task).

A detected interval [onset, offset] is a hit (true positive) when its intersection over
union with a true interval of the same kind is >= 0.5, frames counted inclusively:

    IoU = |D n G| / |D u G|,   |[a, b]| = b - a + 1

Each true interval is matched at most once and each detection at most once (greedily,
highest IoU first). Unmatched detections are false positives, unmatched true intervals
false negatives, and

    precision = TP / (TP + FP)   recall = TP / (TP + FN)   F1 = 2 TP / (2 TP + FP + FN)

Scores pool over videos by summing TP / FP / FN (never by averaging per-video F1).
Micro- and macro-expressions are matched separately; "all" adds the two. Blinks in the
ground truth are distractors: never targets. Beyond MEGC we report the apex error of
each hit (ms; detected apex - true apex) and, when detections carry labels, the label
accuracy over hits.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

TARGET_KINDS = ("micro", "macro")
SCORE_KINDS = ("micro", "macro", "all")
APEX_TOLERANCE_MS = 10.0


@dataclass(frozen=True)
class Interval:
    """One expression interval in frames (inclusive)."""

    onset: int
    offset: int
    apex: int | None = None
    kind: str | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        if self.offset < self.onset:
            raise ValueError(f"interval offset {self.offset} is before its onset {self.onset}")


def as_interval(obj: Any) -> Interval:
    """Interval from an Interval, a GroundTruth / Event / SpotUpdate (attributes
    onset_frame, apex_frame, offset_frame, kind, label) or a dict with those keys."""
    if isinstance(obj, Interval):
        return obj
    get = obj.get if isinstance(obj, dict) else (lambda k, d=None: getattr(obj, k, d))
    onset, offset = get("onset_frame"), get("offset_frame")
    if onset is None or offset is None:
        raise ValueError(f"need onset_frame and offset_frame to score an interval, got {obj!r}")
    apex = get("apex_frame")
    return Interval(int(onset), int(offset), None if apex is None else int(apex), get("kind"), get("label"))


def interval_iou(a: tuple[int, int], b: tuple[int, int]) -> float:
    """IoU of two inclusive frame intervals (onset, offset)."""
    inter = min(a[1], b[1]) - max(a[0], b[0]) + 1
    if inter <= 0:
        return 0.0
    union = (a[1] - a[0] + 1) + (b[1] - b[0] + 1) - inter
    return inter / union


@dataclass
class Matching:
    pairs: list[tuple[int, int, float]]   # (detected index, true index, IoU)
    false_positives: list[int]            # detected indices
    false_negatives: list[int]            # true indices


def match_intervals(detected: Sequence[Interval], truth: Sequence[Interval], iou_threshold: float = 0.5) -> Matching:
    """One-to-one matching at IoU >= iou_threshold, highest IoU first (ties: earlier first)."""
    cand = []
    for i, d in enumerate(detected):
        for j, g in enumerate(truth):
            iou = interval_iou((d.onset, d.offset), (g.onset, g.offset))
            if iou >= iou_threshold:
                cand.append((-iou, i, j))
    cand.sort()
    used_d, used_t, pairs = set(), set(), []
    for neg_iou, i, j in cand:
        if i in used_d or j in used_t:
            continue
        used_d.add(i)
        used_t.add(j)
        pairs.append((i, j, -neg_iou))
    pairs.sort(key=lambda p: p[1])
    return Matching(pairs, [i for i in range(len(detected)) if i not in used_d],
                    [j for j in range(len(truth)) if j not in used_t])


def precision_recall_f1(tp: int, fp: int, fn: int) -> tuple[float | None, float | None, float | None]:
    """None where the ratio is 0/0 (e.g. F1 of a clip with no events and no detections)."""
    p = tp / (tp + fp) if tp + fp else None
    r = tp / (tp + fn) if tp + fn else None
    f = 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else None
    return p, r, f


@dataclass
class SpotScore:
    """Counts and per-hit details for one video (or pooled over many)."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    apex_errors_ms: list[float] = field(default_factory=list)   # per hit with both apexes
    label_hits: list[bool] = field(default_factory=list)        # per hit with both labels
    ious: list[float] = field(default_factory=list)             # per hit

    @property
    def precision(self) -> float | None:
        return precision_recall_f1(self.tp, self.fp, self.fn)[0]

    @property
    def recall(self) -> float | None:
        return precision_recall_f1(self.tp, self.fp, self.fn)[1]

    @property
    def f1(self) -> float | None:
        return precision_recall_f1(self.tp, self.fp, self.fn)[2]

    def __add__(self, other: "SpotScore") -> "SpotScore":
        return SpotScore(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn,
                         self.apex_errors_ms + other.apex_errors_ms, self.label_hits + other.label_hits,
                         self.ious + other.ious)

    def summary(self, apex_tolerance_ms: float = APEX_TOLERANCE_MS) -> dict:
        """JSON-ready figures: counts, precision, recall, F1, apex error, label accuracy."""
        err = np.abs(np.asarray(self.apex_errors_ms, dtype=np.float64))
        return {
            "tp": self.tp, "fp": self.fp, "fn": self.fn,
            "precision": _round(self.precision), "recall": _round(self.recall), "f1": _round(self.f1),
            "apex_error_ms_median": _round(float(np.median(err))) if err.size else None,
            "apex_error_ms_mean": _round(float(err.mean())) if err.size else None,
            "apex_within_ms": apex_tolerance_ms,
            "apex_within_share": _round(float((err <= apex_tolerance_ms + 1e-9).mean())) if err.size else None,
            "label_accuracy": _round(float(np.mean(self.label_hits))) if self.label_hits else None,
            "labelled_hits": len(self.label_hits),
            "mean_iou": _round(float(np.mean(self.ious))) if self.ious else None,
        }


def _round(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(float(x), nd)


def score_intervals(detected: Iterable[Any], truth: Iterable[Any], fps: float, kind: str = "micro",
                    iou_threshold: float = 0.5) -> SpotScore:
    """Score one video's detections against its ground truth for ``kind`` (micro, macro or
    all = micro and macro matched separately, then added)."""
    if kind not in SCORE_KINDS:
        raise ValueError(f"kind must be one of {SCORE_KINDS}, got {kind!r}")
    if not fps or fps <= 0:
        raise ValueError(f"fps must be positive to turn frames into ms, got {fps!r}")
    det = [as_interval(d) for d in detected]
    tru = [as_interval(t) for t in truth]
    if kind == "all":
        return sum((score_intervals(det, tru, fps, k, iou_threshold) for k in TARGET_KINDS), SpotScore())
    det_k = [d for d in det if d.kind == kind]
    tru_k = [t for t in tru if t.kind == kind]
    m = match_intervals(det_k, tru_k, iou_threshold)
    score = SpotScore(tp=len(m.pairs), fp=len(m.false_positives), fn=len(m.false_negatives))
    for i, j, iou in m.pairs:
        d, t = det_k[i], tru_k[j]
        score.ious.append(iou)
        if d.apex is not None and t.apex is not None:
            score.apex_errors_ms.append((d.apex - t.apex) * 1000.0 / fps)
        if d.label is not None and t.label is not None:
            score.label_hits.append(d.label == t.label)
    return score


def pool(scores: Iterable[SpotScore]) -> SpotScore:
    """Sum TP / FP / FN and gather the per-hit details over videos."""
    return sum(scores, SpotScore())
