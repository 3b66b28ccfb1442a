"""Every face in the frame: follow up to ``max_faces`` faces, each with a stable id.

``MultiFaceTracker`` is ``realtime.stages.tracker.FaceTracker`` for several people (an
interview, a panel): the same models, the same per-frame checks
(``tracker.follow_landmarks``) and the same cost model, but one detection serves all faces.

- Detection runs on the first frame, every ``redetect_every`` frames after, and at once
  when any followed face fails its per-frame checks; between detections each face is
  followed by its own landmarks (~0.7 ms per face and refreshed frame).
- A detection is matched to the followed faces, most-overlapping first
  (``tracker.same_subject``: IoU >= ``match_iou`` or centre within ``same_place`` face
  widths); a matched face keeps its id; a followed face no detection matches is lost.
- An unmatched detection becomes a followed face while fewer than ``max_faces`` are
  followed (largest first; confirmed by the mesh's presence score on acquisition, as the
  single tracker does). It takes the id of a lost face whose last box it continues
  (same rule), so a face that leaves and returns to its place, or is hidden for a moment
  by another, keeps its id; any other face gets a new id. Ids are never reused for a
  different person: lost faces are remembered for ``remember_s`` seconds of frames at the
  detection cadence (``forget_after`` detections), then forgotten.
- Two followed faces whose boxes come to overlap by IoU >= ``duplicate_iou`` (both
  following one face after a crossing) are merged: the older id stays.

Faces that cross: the landmarks follow each face frame by frame, so ids hold while both
stay visible; when one face hides the other, the hidden one fails its checks, is lost,
and takes its id back when it reappears near where it was last seen. Identity is by place,
not by appearance: two people who swap seats while both are hidden swap ids.

``update_all(frame, refresh)`` returns one ``TrackResult`` per followed face (its
``face_id``), ordered by id; when no face is followed, one result with ``found`` False
that says why. A result's ``timings_ms`` hold that face's landmark time; the frame's
detection time is on the first result.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from core.face import TRACKER_KINDS, FaceBox, FaceMesh, FaceModelError, box_from_landmarks, ensure_bgr, roll_degrees, \
    to_gray
from realtime.stages.tracker import TrackerConfig, TrackResult, follow_landmarks, same_subject, tracker_models

MAX_FACES = 4


@dataclass
class _Face:
    face_id: int
    box: FaceBox
    lm: np.ndarray
    patch: np.ndarray


@dataclass
class _Gone:
    face_id: int
    box: FaceBox
    detections: int = 0    # detections since it was lost


class MultiFaceTracker:
    """Follow up to ``max_faces`` faces (see the module docstring).

    kind / redetect_every / config / detector / landmarks: as ``FaceTracker``.
    max_faces: faces followed at most (default 4).
    duplicate_iou: two followed boxes overlapping this much are one face.
    forget_after: detections after which a lost face's id is no longer given back.
    """

    def __init__(self, kind: str = "fast", max_faces: int = MAX_FACES, redetect_every: int | None = None,
                 config: TrackerConfig | None = None, *, detector=None, landmarks=None,
                 duplicate_iou: float = 0.5, forget_after: int = 20) -> None:
        if kind not in TRACKER_KINDS:
            raise ValueError(f"unknown tracker kind {kind!r}: choose one of {', '.join(TRACKER_KINDS)}")
        if max_faces < 1:
            raise ValueError(f"max_faces must be >= 1, got {max_faces}")
        self.kind = kind
        self.max_faces = int(max_faces)
        self.config = dataclasses.replace(config or TrackerConfig())
        if redetect_every is not None:
            self.config.redetect_every = int(redetect_every)
        if self.config.redetect_every < 1:
            raise ValueError(f"redetect_every must be >= 1 frame, got {self.config.redetect_every}")
        self.duplicate_iou = duplicate_iou
        self.forget_after = forget_after
        self._owns_detector = detector is None
        self.detector, self.landmarks = tracker_models(kind, self.config, detector, landmarks)
        self.verifier = None
        if self.config.verify_new_faces and not isinstance(landmarks, FaceMesh):
            try:
                self.verifier = FaceMesh()
            except FaceModelError:
                self.verifier = None   # ai-edge-litert missing: new faces are taken on the detector's word
        self.reset()

    def reset(self) -> None:
        """Forget every face and the id history."""
        self._faces: list[_Face] = []
        self._gone: list[_Gone] = []
        self._next_id = 0
        self._since_detect = 0
        self._n_faces = 0
        self._tile_turn = 0

    def close(self) -> None:
        if self._owns_detector and hasattr(self.detector, "close"):
            self.detector.close()

    @property
    def face_ids(self) -> list[int]:
        return [f.face_id for f in self._faces]

    # -- per frame --------------------------------------------------------------------------
    def update_all(self, frame_bgr: np.ndarray, refresh: bool = True) -> list[TrackResult]:
        """Follow every face in one frame; see the module docstring for what comes back."""
        cfg = self.config
        if not refresh and self._faces and self._since_detect + 1 < cfg.redetect_every:
            self._since_detect += 1
            return [TrackResult(True, f.box, f.lm.astype(np.float32), f.face_id, self._n_faces, False,
                                {"detect": 0.0, "landmarks": 0.0}, "landmarks held from the previous frame", held=True)
                    for f in self._faces]
        frame = ensure_bgr(frame_bgr)
        gray = to_gray(frame)
        detect_ms = {"detect": 0.0}
        self._since_detect += 1
        due = not self._faces or self._since_detect >= cfg.redetect_every
        per_face: dict[int, dict] = {}
        reasons: dict[int, str] = {}
        fresh: dict[int, _Face] = {}      # faces whose landmarks passed their checks on this frame
        if not due:
            followed = []
            for f in self._faces:
                t = {"detect": 0.0, "landmarks": 0.0}
                lm, patch, problem = follow_landmarks(self.landmarks, cfg, frame, gray, box_from_landmarks(f.lm), t,
                                                      f.lm, f.patch)
                per_face[f.face_id] = t
                if problem:
                    due = True
                    reasons[f.face_id] = problem
                else:
                    followed.append(_Face(f.face_id, box_from_landmarks(lm), lm, patch))
            if not due:
                self._faces = followed
            fresh = {f.face_id: f for f in followed}
        redetected: set[int] = set()
        why = ""
        if due:
            why = "; ".join(f"#{k}: {v}" for k, v in reasons.items()) or (
                "periodic re-detection" if self._faces else "looking for faces")
            redetected = self._detect_and_match(frame, gray, detect_ms, per_face, fresh,
                                                partial=not reasons and bool(self._faces))
        self._remove_duplicates()
        if not self._faces:
            return [TrackResult(False, None, None, None, self._n_faces, due,
                                {"detect": detect_ms["detect"], "landmarks": sum(t["landmarks"] for t in per_face.values())},
                                "no face found" if not self._n_faces else why)]
        out = []
        for n, f in enumerate(sorted(self._faces, key=lambda f: f.face_id)):
            t = per_face.get(f.face_id, {"detect": 0.0, "landmarks": 0.0})
            timings = {"detect": detect_ms["detect"] if n == 0 else 0.0, "landmarks": t.get("landmarks", 0.0)}
            out.append(TrackResult(True, f.box, f.lm.astype(np.float32), f.face_id, self._n_faces,
                                   f.face_id in redetected, timings, why if f.face_id in redetected else ""))
        # landmark time of faces lost on this frame is still time spent
        lost_ms = sum(t.get("landmarks", 0.0) for k, t in per_face.items() if k not in self.face_ids)
        out[0].timings_ms["landmarks"] += lost_ms
        return out

    # -- steps ------------------------------------------------------------------------------
    def _detect(self, frame, detect_ms: dict, partial: bool) -> list[FaceBox]:
        """Detect faces; ``partial`` (a periodic re-check): a tiling detector runs the full
        frame and only the next of its tiles in rotation, as ``FaceTracker`` does."""
        t0 = time.perf_counter()
        n_tiles = self.detector.tile_count(*frame.shape[:2]) if partial and hasattr(self.detector, "tile_count") else 0
        if n_tiles:
            boxes = list(self.detector.detect(frame, tiles=[self._tile_turn % n_tiles]))
            self._tile_turn += 1
        else:
            boxes = list(self.detector.detect(frame))
        detect_ms["detect"] += (time.perf_counter() - t0) * 1000
        return boxes

    def _detect_and_match(self, frame, gray, detect_ms: dict, per_face: dict, fresh: dict[int, _Face],
                          partial: bool) -> set[int]:
        """One detection: keep the followed faces it confirms, lose the others, take new ones.
        A confirmed face whose landmarks were fitted on this frame already (``fresh``) keeps
        them; the others are re-fitted on the detector's box."""
        cfg = self.config
        boxes = self._detect(frame, detect_ms, partial)
        if partial and any(same_subject(boxes, f.box, cfg.match_iou, cfg.same_place) is None for f in self._faces):
            boxes = self._detect(frame, detect_ms, False)    # a face not seen by the partial pass
        self._since_detect = 0
        self._n_faces = len(boxes)
        for g in self._gone:
            g.detections += 1
        self._gone = [g for g in self._gone if g.detections <= self.forget_after]
        kept: list[_Face] = []
        confirmed: set[int] = set()
        free = list(boxes)
        # followed faces, each matched to the detection that continues it (best overlap first)
        order = sorted(self._faces, key=lambda f: -max((b.iou(f.box) for b in free), default=0.0))
        for f in order:
            match = same_subject(free, f.box, cfg.match_iou, cfg.same_place)
            if match is None:
                self._gone.append(_Gone(f.face_id, f.box))
                continue
            free.remove(match)
            t = per_face.setdefault(f.face_id, {"detect": 0.0, "landmarks": 0.0})
            if f.face_id in fresh:
                kept.append(fresh[f.face_id])
                confirmed.add(f.face_id)
                continue
            # re-fitted on the detector's box, as FaceTracker does: it anchors the landmark box,
            # which would otherwise drift from fit to fit over a turning head
            lm, patch, problem = follow_landmarks(self.landmarks, cfg, frame, gray, match, t, f.lm, None)
            if problem:
                self._gone.append(_Gone(f.face_id, f.box))
                continue
            kept.append(_Face(f.face_id, box_from_landmarks(lm), lm, patch))
            confirmed.add(f.face_id)
        # new faces, largest first (detectors return the largest first)
        for box in free:
            if len(kept) >= self.max_faces:
                break
            if any(box.iou(k.box) >= cfg.match_iou for k in kept):
                continue   # another box of a face already followed
            t = {"detect": 0.0, "landmarks": 0.0}
            lm, patch, problem = follow_landmarks(self.landmarks, cfg, frame, gray, box, t, None, None)
            if problem:
                continue
            if self.verifier is not None:
                t1 = time.perf_counter()
                _, presence = self.verifier.mesh(frame, box_from_landmarks(lm), roll_degrees(lm))
                detect_ms["detect"] += (time.perf_counter() - t1) * 1000
                if presence < cfg.min_presence:
                    continue
            face_id = self._id_for(box_from_landmarks(lm), {k.face_id for k in kept})
            per_face[face_id] = t
            kept.append(_Face(face_id, box_from_landmarks(lm), lm, patch))
            confirmed.add(face_id)
        self._faces = kept
        return confirmed

    def _id_for(self, box: FaceBox, taken: set[int]) -> int:
        """The id of the lost face this box continues (one not ``taken``), or a new id."""
        cfg = self.config
        lost = [g for g in self._gone if g.face_id not in taken]
        if lost:
            boxes = [g.box for g in lost]
            match = same_subject(boxes, box, cfg.match_iou, cfg.same_place)
            if match is not None:
                g = lost[boxes.index(match)]
                self._gone.remove(g)
                return g.face_id
        face_id = self._next_id
        self._next_id += 1
        return face_id

    def _remove_duplicates(self) -> None:
        """Two followed faces on one face (after a crossing): keep the older id."""
        faces = sorted(self._faces, key=lambda f: f.face_id)
        kept: list[_Face] = []
        for f in faces:
            if all(f.box.iou(k.box) < self.duplicate_iou for k in kept):
                kept.append(f)
        self._faces = kept
