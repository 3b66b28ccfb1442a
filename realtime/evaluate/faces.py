"""Whose face an event is on, when the ground truth holds several faces (``realtime.evaluate.faces``).

A ground truth with ``face_box`` (core.events.GroundTruth, [x, y, width, height] of the
interval's face at its apex, frame pixels: the generator's multi-face clips) says which
person each true interval belongs to; the live path's events carry the box of the face
they were spotted on (core.events.Event.face_box, the same convention). The tracker's
``face_id`` numbers are its own, so faces are matched by place, not by number:

- ``group_faces``: the true faces are the groups of true intervals whose boxes overlap
  (IoU >= ``SAME_FACE_IOU``, linked transitively: a face's box drifts a little over a clip,
  two people's boxes do not overlap), numbered left to right; true intervals without a box
  form one more group, with no box, that no event can be matched to.
- ``assign_faces``: each detection goes to the true face whose box overlaps its box most
  (the face's box at the true interval nearest in time to the detection's apex); when it
  overlaps none, to the face whose box centre is nearest, if within ``MAX_CENTRE_DISTANCE``
  of that face's widths; otherwise, or without a box of its own, to no face (None:
  scoring counts it as a false positive, "unassigned").

Pure geometry on anything with ``face_box``, ``onset`` and ``apex`` attributes
(realtime.evaluate.scoring.Interval); the scoring itself is realtime.evaluate.scoring's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

SAME_FACE_IOU = 0.3
"""Two true intervals whose face boxes overlap this much are the same face."""
MAX_CENTRE_DISTANCE = 1.5
"""A detection overlapping no true face goes to the nearest one if its box centre is
within this many of that face's box widths (further: no face)."""


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two [x, y, width, height] boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def centre_distance(a: Sequence[float], b: Sequence[float]) -> float:
    """Distance between the centres of two [x, y, width, height] boxes, pixels."""
    return math.hypot(a[0] + a[2] / 2 - b[0] - b[2] / 2, a[1] + a[3] / 2 - b[1] - b[3] / 2)


@dataclass(frozen=True)
class TrueFace:
    """One person of a multi-face ground truth: ``index`` (left to right), ``box`` (the
    median of its intervals' boxes; None for the group of intervals without a box) and
    ``members`` (indices of its true intervals)."""

    index: int
    box: tuple[int, int, int, int] | None
    members: tuple[int, ...]


def has_face_boxes(truth: Sequence[Any]) -> bool:
    """Whether a ground truth says whose face each interval is on (any ``face_box``)."""
    return any(getattr(t, "face_box", None) is not None for t in truth)


def group_faces(truth: Sequence[Any], same_iou: float = SAME_FACE_IOU) -> list[TrueFace]:
    """The true faces of a ground truth (see the module docstring), left to right."""
    boxed = [j for j, t in enumerate(truth) if t.face_box is not None]
    parent = {j: j for j in boxed}

    def root(j: int) -> int:
        while parent[j] != j:
            parent[j] = parent[parent[j]]
            j = parent[j]
        return j

    for a_i, a in enumerate(boxed):
        for b in boxed[a_i + 1:]:
            if box_iou(truth[a].face_box, truth[b].face_box) >= same_iou:
                parent[root(a)] = root(b)
    groups: dict[int, list[int]] = {}
    for j in boxed:
        groups.setdefault(root(j), []).append(j)
    faces = []
    for members in groups.values():
        box = np.median(np.asarray([truth[j].face_box for j in members], dtype=np.float64), axis=0)
        faces.append((tuple(int(round(v)) for v in box), tuple(members)))
    faces.sort(key=lambda f: (f[0][0] + f[0][2] / 2, f[0][1] + f[0][3] / 2))
    out = [TrueFace(i, box, members) for i, (box, members) in enumerate(faces)]
    unboxed = tuple(j for j, t in enumerate(truth) if t.face_box is None)
    if unboxed:
        out.append(TrueFace(len(out), None, unboxed))
    return out


def _when(x: Any) -> int:
    return x.apex if x.apex is not None else x.onset


def assign_faces(detected: Sequence[Any], truth: Sequence[Any], faces: Sequence[TrueFace],
                 max_distance: float = MAX_CENTRE_DISTANCE) -> list[int | None]:
    """For each detection, the index of its true face (``faces[i].index``), or None."""
    out: list[int | None] = []
    for d in detected:
        if d.face_box is None:
            out.append(None)
            continue
        best: list[tuple[float, float, int]] = []     # (-IoU, distance in face widths, face)
        for f in faces:
            if f.box is None:
                continue
            near = min(f.members, key=lambda j: (abs(_when(truth[j]) - _when(d)), j))
            ref = truth[near].face_box
            best.append((-box_iou(d.face_box, ref), centre_distance(d.face_box, ref) / max(ref[2], 1), f.index))
        if not best:
            out.append(None)
            continue
        neg_iou, dist, face = min(best)
        if neg_iou < 0:
            out.append(face)
        else:
            neg_iou, dist, face = min(best, key=lambda b: (b[1], b[2]))
            out.append(face if dist <= max_distance else None)
    return out
