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
accuracy over hits. ``compare_to_truth`` tells the same matching event by event for one
run (each true event hit or missed, the false alarms): the end of run_live.py's summary.

Several faces (a ground truth with ``face_box``: the generator's multi-face clips): each
detection is first given to the true face its box overlaps most (realtime.evaluate.faces),
then every true face is scored on its own detections exactly as above (``score_by_face``;
``compare_to_truth`` does the same). Detections on no true face (no box, or far from every
face) are false positives of no face ("unassigned"). Pooled over faces = the faces' counts
summed plus the unassigned false positives. Without ``face_box`` nothing changes.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Sequence

import numpy as np

from realtime.evaluate.faces import TrueFace, assign_faces, group_faces, has_face_boxes

TARGET_KINDS = ("micro", "macro")
SCORE_KINDS = ("micro", "macro", "all")
APEX_TOLERANCE_MS = 10.0


@dataclass(frozen=True)
class Interval:
    """One expression interval in frames (inclusive); ``face_box``: [x, y, width, height]
    of its face at the apex, where known (several faces: realtime.evaluate.faces)."""

    onset: int
    offset: int
    apex: int | None = None
    kind: str | None = None
    label: str | None = None
    face_box: tuple[int, int, int, int] | None = None

    def __post_init__(self) -> None:
        if self.offset < self.onset:
            raise ValueError(f"interval offset {self.offset} is before its onset {self.onset}")


def as_interval(obj: Any) -> Interval:
    """Interval from an Interval, a GroundTruth / Event / SpotUpdate (attributes
    onset_frame, apex_frame, offset_frame, kind, label, optionally face_box) or a dict with
    those keys."""
    if isinstance(obj, Interval):
        return obj
    get = obj.get if isinstance(obj, dict) else (lambda k, d=None: getattr(obj, k, d))
    onset, offset = get("onset_frame"), get("offset_frame")
    if onset is None or offset is None:
        raise ValueError(f"need onset_frame and offset_frame to score an interval, got {obj!r}")
    apex = get("apex_frame")
    box = get("face_box")
    return Interval(int(onset), int(offset), None if apex is None else int(apex), get("kind"), get("label"),
                    None if box is None else tuple(int(v) for v in box))


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


# ----------------------------------------------------------------------------------------
# Several faces: each true face scored on the detections on its face

def _targets(intervals: Iterable[Interval], kind: str = "all") -> int:
    """How many of ``intervals`` count for ``kind`` (all = micro and macro)."""
    kinds = TARGET_KINDS if kind == "all" else (kind,)
    return sum(d.kind in kinds for d in intervals)


@dataclass
class FaceScore:
    """One true face: the indices of the detections on it and its SpotScore per kind."""

    face: TrueFace
    detections: list[int]
    scores: dict[str, SpotScore]


@dataclass
class FaceScoring:
    """A run scored per true face (``score_by_face``); ``unassigned``: the detections on no
    true face, false positives of the pooled score."""

    faces: list[FaceScore]
    unassigned: list[int]
    detected: list[Interval]

    def unassigned_fp(self, kind: str) -> int:
        return _targets((self.detected[i] for i in self.unassigned), kind)

    def pooled(self, kind: str) -> SpotScore:
        """Pooled over faces: the faces' scores summed, plus the unassigned false positives."""
        return pool(f.scores[kind] for f in self.faces) + SpotScore(fp=self.unassigned_fp(kind))


def split_by_face(detected: Sequence[Interval], truth: Sequence[Interval]
                  ) -> tuple[list[TrueFace], list[list[int]], list[int]]:
    """(true faces, the detection indices on each, the detection indices on none):
    realtime.evaluate.faces' grouping and assignment."""
    faces = group_faces(truth)
    owner = assign_faces(detected, truth, faces)
    return (faces, [[i for i, o in enumerate(owner) if o == f.index] for f in faces],
            [i for i, o in enumerate(owner) if o is None])


def score_by_face(detected: Iterable[Any], truth: Iterable[Any], fps: float,
                  iou_threshold: float = 0.5) -> FaceScoring:
    """Score a run whose ground truth has ``face_box``: each true face on the detections
    on it (score_intervals, every kind), the rest unassigned (see the module docstring)."""
    det = [as_interval(d) for d in detected]
    tru = [as_interval(t) for t in truth]
    faces, on_face, unassigned = split_by_face(det, tru)
    scored = []
    for f, idx in zip(faces, on_face):
        d, t = [det[i] for i in idx], [tru[j] for j in f.members]
        scored.append(FaceScore(f, idx, {k: score_intervals(d, t, fps, k, iou_threshold) for k in SCORE_KINDS}))
    return FaceScoring(scored, unassigned, det)


# ----------------------------------------------------------------------------------------
# One run against its ground truth, event by event (the end of run_live.py's summary)

@dataclass
class TruthOutcome:
    """What became of one true event in a run."""

    truth: Interval
    status: str                        # "hit", "missed", "distractor-ignored", "distractor-reported", "beyond-end"
    detection: Interval | None = None  # the matched detection (hit) or the one that reported a distractor
    iou: float | None = None           # IoU with that detection; for a miss, the best overlap of any detection
    apex_error_ms: float | None = None  # detected apex - true apex (hits with both apexes)
    note: str = ""                     # why a miss is a miss, in words
    face: int | None = None            # several faces: the true face (TrueFace.index) it is on

    @property
    def label_right(self) -> bool | None:
        """Whether a hit carries the true label (None: not a hit, or either label unknown)."""
        if self.status != "hit" or self.detection is None or self.detection.label is None or self.truth.label is None:
            return None
        return self.detection.label == self.truth.label


@dataclass
class TruthComparison:
    """A run's detections against its ground truth (``compare_to_truth``)."""

    fps: float
    iou_threshold: float
    outcomes: list[TruthOutcome]       # one per true event, in time order (blinks included)
    false_alarms: list[Interval]       # detections that match no true micro/macro event
    score: SpotScore                   # micro and macro together (score_intervals, kind "all")
    faces: list[tuple[TrueFace, SpotScore]] | None = None   # several faces: each one's score
    unassigned: list[Interval] = field(default_factory=list)  # several faces: detections on none

    def to_dict(self) -> dict:
        def iv(i: Interval | None) -> dict | None:
            return None if i is None else {"onset_frame": i.onset, "apex_frame": i.apex, "offset_frame": i.offset,
                                           "kind": i.kind, "label": i.label}
        out = {"fps": self.fps, "iou_threshold": self.iou_threshold,
               "truths": [{"truth": iv(o.truth), "status": o.status, "detection": iv(o.detection),
                           "iou": _round(o.iou), "apex_error_ms": _round(o.apex_error_ms, 1),
                           "label_right": o.label_right, "note": o.note} for o in self.outcomes],
               "false_alarms": [iv(d) for d in self.false_alarms],
               "score": self.score.summary()}
        if self.faces is not None:          # several faces only: single-face reports stay as they were
            for row, o in zip(out["truths"], self.outcomes):
                row["face"] = o.face
            out["faces"] = [{"face": f.index, "box": None if f.box is None else list(f.box), "score": sc.summary()}
                            for f, sc in self.faces]
            out["unassigned"] = [iv(d) for d in self.unassigned]
        return out

    def _t(self, frame: int | None) -> str:
        return "?" if frame is None else f"{frame / self.fps:.2f}"

    def format(self, title: str = "", max_false_alarms: int = 5) -> str:
        """A few lines: one per true event, the false alarms, the totals."""
        lines = [f"== ground truth{': ' + title if title else ''} (hit = same kind and IoU >= {self.iou_threshold:g})"]
        for o in self.outcomes:
            t = o.truth
            head = f"{t.kind or '?':5s} {t.label or '-':9s} {self._t(t.onset)}-{self._t(t.apex)}-{self._t(t.offset)} s:"
            if o.face is not None:
                head = f"face {o.face} {head}"
            if o.status == "hit":
                d = o.detection
                lab = ("no label (spotting only)" if d.label is None else
                       f"label {d.label} ({'right' if o.label_right else 'wrong'})" if t.label is not None else
                       f"label {d.label}")
                apex = f", apex {o.apex_error_ms:+.0f} ms" if o.apex_error_ms is not None else ""
                lines.append(f"{head} spotted (IoU {o.iou:.2f}{apex}), {lab}")
            elif o.status == "missed":
                lines.append(f"{head} MISSED ({o.note})")
            elif o.status == "distractor-ignored":
                lines.append(f"{head} not reported (right: a blink is not an expression)")
            elif o.status == "distractor-reported":
                lines.append(f"{head} reported as a {o.detection.kind} expression (a false alarm)")
            else:
                lines.append(f"{head} after the last processed frame (not scored)")
        if self.false_alarms:
            shown = [f"{d.kind} {d.label or '(unlabelled)'} at {self._t(d.apex if d.apex is not None else d.onset)} s"
                     for d in self.false_alarms[:max_false_alarms]]
            more = len(self.false_alarms) - len(shown)
            lines.append(f"false alarms {len(self.false_alarms)}: " + "; ".join(shown)
                         + (f"; and {more} more" if more > 0 else ""))
        else:
            lines.append("false alarms: none")
        for f, sc in self.faces or []:
            f1 = "-" if sc.f1 is None else f"{sc.f1:.2f}"
            lines.append(f"face {f.index} at {list(f.box) if f.box else 'no box'}: spotted {sc.tp} of {sc.tp + sc.fn}, "
                         f"{sc.fp} false alarm{'' if sc.fp == 1 else 's'}, F1 {f1}")
        if self.faces is not None:
            lines.append(f"on no true face (unassigned, false alarms): {len(self.unassigned)}")
        s = self.score
        f1 = "-" if s.f1 is None else f"{s.f1:.2f}"
        labels = (f"; labels right on {sum(s.label_hits)} of {len(s.label_hits)} labelled hits"
                  if s.label_hits else "")
        lines.append(f"spotted {s.tp} of {s.tp + s.fn} true expressions, {s.fp} false alarm"
                     f"{'' if s.fp == 1 else 's'}, F1 {f1}{labels}")
        return "\n".join(lines)


def compare_to_truth(detected: Iterable[Any], truth: Iterable[Any], fps: float, iou_threshold: float = 0.5,
                     until_frame: int | None = None) -> TruthComparison:
    """Event-by-event comparison of one run's detections with the clip's ground truth.

    Matching is score_intervals' (same kind, IoU >= ``iou_threshold``, one-to-one): every
    true micro/macro event is a hit or a miss, every unmatched detection a false alarm;
    blinks are distractors, reported or not. ``until_frame``: true events that end at or
    after it (a run stopped early, e.g. --max-frames) are listed but not scored.

    A ground truth with ``face_box`` (several faces) is compared face by face: each true
    face with the detections on it (split_by_face), the outcomes merged in time order with
    ``TruthOutcome.face`` set; detections on no true face are false alarms (``unassigned``)."""
    if not fps or fps <= 0:
        raise ValueError(f"fps must be positive to turn frames into times, got {fps!r}")
    det = [as_interval(d) for d in detected]
    tru = [as_interval(t) for t in truth]
    if not has_face_boxes(tru):
        return _compare(det, tru, fps, iou_threshold, until_frame)
    faces, on_face, unassigned = split_by_face(det, tru)
    outcomes: list[TruthOutcome] = []
    lost = [det[i] for i in unassigned]
    false_alarms, score, per_face = list(lost), SpotScore(fp=_targets(lost)), []
    for f, idx in zip(faces, on_face):
        c = _compare([det[i] for i in idx], [tru[j] for j in f.members], fps, iou_threshold, until_frame)
        outcomes += [replace(o, face=f.index) for o in c.outcomes]
        false_alarms += c.false_alarms
        score = score + c.score
        per_face.append((f, c.score))
    outcomes.sort(key=lambda o: (o.truth.onset, o.truth.offset, o.face))
    false_alarms.sort(key=lambda d: (d.onset, d.offset))
    return TruthComparison(float(fps), iou_threshold, outcomes, false_alarms, score, per_face, lost)


def _compare(det: list[Interval], truth: list[Interval], fps: float, iou_threshold: float,
             until_frame: int | None) -> TruthComparison:
    """compare_to_truth for one face (or a ground truth without faces)."""
    tru = sorted(truth, key=lambda t: (t.onset, t.offset))
    scored = {j for j, t in enumerate(tru) if until_frame is None or t.offset < until_frame}
    outcome: dict[int, TruthOutcome] = {}
    used: set[int] = set()
    for kind in TARGET_KINDS:
        di = [i for i, d in enumerate(det) if d.kind == kind]
        ti = [j for j, t in enumerate(tru) if t.kind == kind and j in scored]
        m = match_intervals([det[i] for i in di], [tru[j] for j in ti], iou_threshold)
        for a, b, iou in m.pairs:
            d, t = det[di[a]], tru[ti[b]]
            used.add(di[a])
            err = (d.apex - t.apex) * 1000.0 / fps if d.apex is not None and t.apex is not None else None
            outcome[ti[b]] = TruthOutcome(t, "hit", d, iou, err)
    for j, t in enumerate(tru):
        if j in outcome:
            continue
        overlaps = sorted(((interval_iou((d.onset, d.offset), (t.onset, t.offset)), i) for i, d in enumerate(det)),
                          reverse=True)
        best_iou, best = overlaps[0] if overlaps else (0.0, None)
        if j not in scored:
            outcome[j] = TruthOutcome(t, "beyond-end")
        elif t.kind not in TARGET_KINDS:
            outcome[j] = (TruthOutcome(t, "distractor-reported", det[best], best_iou) if best_iou > 0 else
                          TruthOutcome(t, "distractor-ignored"))
        else:
            if best_iou >= iou_threshold and det[best].kind != t.kind:
                note = f"spotted as {det[best].kind}, IoU {best_iou:.2f}"
            elif best_iou > 0:
                note = f"the nearest spotted event overlaps it with IoU {best_iou:.2f} only"
            else:
                note = "nothing spotted there"
            outcome[j] = TruthOutcome(t, "missed", None, best_iou if best_iou > 0 else None, note=note)
    false_alarms = [d for i, d in enumerate(det) if i not in used]
    score = score_intervals(det, [tru[j] for j in sorted(scored)], fps, "all", iou_threshold)
    return TruthComparison(float(fps), iou_threshold, [outcome[j] for j in range(len(tru))], false_alarms, score)
