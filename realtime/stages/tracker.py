"""Face tracking for the live path: find the face once, then follow it (REALTIME.md, "face
tracker" and "aligner" rows).

Per-frame detection cannot keep 200 fps (dlib HOG ~14 ms per 640x480 frame); per-frame
landmarks can (~0.7 ms). So ``FaceTracker`` detects on the first frame, then derives each
next box from the previous frame's landmarks (their bounding box mapped to the HOG
convention, ``face.box_from_landmarks``) and runs only the landmark model. It detects
again every ``redetect_every`` frames, and at once when a per-frame check says the face
was lost:

- the landmark box left the frame (less than ``min_inside`` of it inside);
- the box jumped (centre moved more than ``max_jump`` face widths, or its size changed by
  more than ``max_scale_change``) between the box given and the box the landmarks imply;
- the shape is not face-like (``face.shape_residual`` above ``max_shape_residual``);
- the face's appearance changed abruptly: normalised cross-correlation between this and
  the previous frame's 32x32 grey aligned face patch below ``min_patch_ncc`` (a cut, an
  occluding hand; real faces stay above ~0.97 between frames, a cut gives ~0);
- the mesh's own face-presence score is below ``min_presence`` (kind "mediapipe").

A newly acquired face (not a re-detection of the followed subject) is also confirmed by
the 468-point mesh's face-presence score when ai-edge-litert is installed
(``verify_new_faces``; ~2 ms, only on acquisition): BlazeFace scores lettering in
no_face.mp4 up to 0.74, while the mesh gives those boxes <= 0.15 and every real face on
the bundled media 1.0. dlib's shape residual cannot tell them apart.

Subject and face_id (kept simple on purpose):

- On the first acquisition the largest face becomes the subject; face ids count from 0.
- Re-detections keep the subject whose box overlaps the tracked one (IoU >= ``match_iou``)
  or whose centre lies within ``same_place`` face widths of it; other faces only count in
  ``n_faces``. If no detection matches, the subject is lost (``found`` False).
- After a loss, a face whose centre is within ``same_place`` face widths of where the
  subject was last seen is taken as the same subject and keeps its face_id. Any other
  face is taken only after the subject has been missing for ``switch_after`` frames (the
  largest one), with a new face_id.

``SmoothedTransform`` smooths the 2x3 alignment transform over time (landmark jitter is
motion to the spotter) and holds it fixed through an event (the onset's alignment, as in
training; DATASETS.md, "Alignment").

Example:
    python -m realtime.stages.tracker --video core/assets/single_face.mp4 --kind fast
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from core.face import (
    CROP_SIZE, TEMPLATE_5, TRACKER_KINDS, FaceBox, FaceMesh, FaceModelError, alignment_transform, box_from_landmarks,
    ensure_bgr, face_models, roll_degrees, shape_residual, to_gray, transform_points,
)


@dataclass
class TrackerConfig:
    """Thresholds of FaceTracker (see the module docstring for what each one guards)."""

    redetect_every: int = 30          # frames between detections while tracking
    max_jump: float = 0.35            # centre shift between frames, in face widths
    max_scale_change: float = 1.25    # box side ratio between frames
    max_shape_residual: float = 12.0  # face.shape_residual, 224-crop px; real faces <= ~6
    min_patch_ncc: float = 0.6        # consecutive aligned face patches
    min_inside: float = 0.6           # share of the face box inside the frame
    min_presence: float = 0.5         # mesh face presence (kind "mediapipe")
    match_iou: float = 0.3            # re-detection matches the subject at this IoU ...
    same_place: float = 0.5           # ... or with its centre within this many face widths
    switch_after: int = 30            # frames the subject must be missing before another face is taken
    verify_new_faces: bool = True     # confirm newly acquired faces with the mesh's presence score
    dlib_upsample: int = 0            # HOG detector upsampling (kind "dlib"): 1 finds faces >= 40 px, 4x slower


@dataclass
class TrackResult:
    """One frame's tracking outcome.

    box: the face box implied by this frame's landmarks (HOG convention), image pixels.
    landmarks: (68, 2) float32 dlib-numbered points, image pixels.
    face_id: the subject's id (stable while the same subject is followed).
    n_faces: faces seen at the latest detection (other faces are not followed).
    redetected: a detector ran on this frame and (re)located the subject.
    timings_ms: "detect" (detector and, on acquisition, the mesh check; 0 when none ran)
    and "landmarks" (landmark model plus the per-frame checks).
    reason: why the face was not found, or why a detection ran, in words.
    held: the landmark model did not run on this frame (``update(refresh=False)``); box and
    landmarks are the previous frame's.
    """

    found: bool
    box: FaceBox | None
    landmarks: np.ndarray | None
    face_id: int | None
    n_faces: int
    redetected: bool
    timings_ms: dict[str, float] = field(default_factory=lambda: {"detect": 0.0, "landmarks": 0.0})
    reason: str = ""
    held: bool = False    # update(refresh=False): the previous frame's landmarks, not re-run


PERIODIC = "periodic re-detection"
LANDMARKS_HZ = 50.0   # the live path's default landmark refresh rate, per second of source time
                      # (realtime.stages.pipeline: every 4th frame at 200 fps, every frame <= 50 fps)


# ---- small pure helpers --------------------------------------------------------------------

def inside_fraction(box: FaceBox, width: int, height: int) -> float:
    """Share of a box's area that lies inside a width x height frame."""
    clipped = FaceBox(max(box.left, 0.0), max(box.top, 0.0), min(box.right, float(width)), min(box.bottom, float(height)))
    return clipped.area / box.area if box.area > 0 and clipped.width > 0 and clipped.height > 0 else 0.0


def centre_distance(a: FaceBox, b: FaceBox) -> float:
    """Distance between box centres, in widths of ``b``."""
    (ax, ay), (bx, by) = a.center, b.center
    return math.hypot(ax - bx, ay - by) / max(b.width, 1e-9)


def face_patch(gray: np.ndarray, landmarks68: np.ndarray, size: int = 32) -> np.ndarray:
    """Zero-mean, unit-norm (size, size) float32 aligned face patch; dot product of two is
    their normalised cross-correlation."""
    p = cv2.warpAffine(gray, alignment_transform(landmarks68, size), (size, size), flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    p -= p.mean()
    return p / (float(np.linalg.norm(p)) + 1e-6)


def same_subject(boxes: list[FaceBox], ref: FaceBox, match_iou: float, same_place: float) -> FaceBox | None:
    """The box in ``boxes`` that continues ``ref`` (best IoU, else nearest centre), or None."""
    if not boxes:
        return None
    best = max(boxes, key=lambda b: b.iou(ref))
    if best.iou(ref) >= match_iou:
        return best
    near = min(boxes, key=lambda b: centre_distance(b, ref))
    return near if centre_distance(near, ref) <= same_place else None


def count_distinct(boxes: list[FaceBox], same_iou: float = 0.3) -> int:
    """How many different faces a list of boxes from several detections holds (boxes
    overlapping by IoU >= ``same_iou`` are one face)."""
    kept: list[FaceBox] = []
    for b in boxes:
        if all(b.iou(k) < same_iou for k in kept):
            kept.append(b)
    return len(kept)


def tracker_models(kind: str, config: TrackerConfig, detector=None, landmarks=None):
    """(detector, landmark model) for a tracker of ``kind``: the ones given, the missing one
    loaded (``face.face_models``)."""
    if detector is None or landmarks is None:
        det, lms = face_models(kind, dlib_upsample=config.dlib_upsample)
        if detector is not None and hasattr(det, "close"):
            det.close()
        detector, landmarks = detector or det, landmarks or lms
    return detector, landmarks


def follow_landmarks(model, cfg: TrackerConfig, frame, gray, box: FaceBox, timings: dict,
                     prev_lm: np.ndarray | None, prev_patch: np.ndarray | None):
    """Landmarks of the face in ``box`` and the per-frame checks of the module docstring:
    (landmarks, face patch, problem), problem "" when every check passes. ``prev_lm``: the
    face's previous landmarks (the mesh's roll hint); ``prev_patch``: its previous aligned
    patch, compared when given. Adds the time taken to ``timings["landmarks"]``."""
    t0 = time.perf_counter()
    if isinstance(model, FaceMesh):
        roll = roll_degrees(prev_lm) if prev_lm is not None else 0.0
        lm = model(frame, box, roll)
        presence = model.last_presence
    else:
        lm = model(gray, box)
        presence = 1.0
    new_box = box_from_landmarks(lm)
    h, w = gray.shape[:2]
    patch = face_patch(gray, lm)
    problem = ""
    if presence < cfg.min_presence:
        problem = f"face presence {presence:.2f} < {cfg.min_presence}"
    elif inside_fraction(new_box, w, h) < cfg.min_inside:
        problem = "the face left the frame"
    elif centre_distance(new_box, box) > cfg.max_jump:
        problem = "landmarks jumped"
    elif not 1 / cfg.max_scale_change <= new_box.width / max(box.width, 1e-9) <= cfg.max_scale_change:
        problem = "face size jumped"
    elif shape_residual(lm) > cfg.max_shape_residual:
        problem = "landmarks are not face-shaped"
    elif prev_patch is not None:
        ncc = float((patch * prev_patch).sum())
        if ncc < cfg.min_patch_ncc:
            problem = f"appearance changed abruptly (patch correlation {ncc:.2f})"
    timings["landmarks"] = timings.get("landmarks", 0.0) + (time.perf_counter() - t0) * 1000
    return lm, patch, problem


# ---- the tracker -----------------------------------------------------------------------------

class FaceTracker:
    """Detect once, follow by landmarks, re-detect every N frames or on loss.

    kind: "fast" (BlazeFace + dlib 68 points; the default), "dlib" (HOG + 68 points, the
    paper's) or "mediapipe" (BlazeFace + the 468-point mesh read as 68 points); see
    ``face.face_models``.
    redetect_every: frames between detections while tracking (default 30, from
    ``TrackerConfig``): BlazeFace with tiles (~4 ms at 640x360) then adds ~0.15 ms per
    frame on average; at 30 fps the scene is re-checked once a second, at 200 fps every
    0.15 s.
    detector / landmarks: loaded models to share (as ``face.face_models(kind)`` returns).
    """

    def __init__(self, kind: str = "fast", redetect_every: int | None = None, config: TrackerConfig | None = None,
                 *, detector=None, landmarks=None) -> None:
        if kind not in TRACKER_KINDS:
            raise ValueError(f"unknown tracker kind {kind!r}: choose one of {', '.join(TRACKER_KINDS)}")
        self.kind = kind
        self.config = dataclasses.replace(config or TrackerConfig())
        if redetect_every is not None:
            self.config.redetect_every = int(redetect_every)
        if self.config.redetect_every < 1:
            raise ValueError(f"redetect_every must be >= 1 frame, got {self.config.redetect_every}")
        self._owns_detector = detector is None
        self.detector, self.landmarks = tracker_models(kind, self.config, detector, landmarks)
        self.verifier = self._make_verifier() if self.config.verify_new_faces else None
        self._next_id = 0
        self.reset()

    def reset(self) -> None:
        """Forget the subject and its id history: the next frame starts from scratch."""
        self._box: FaceBox | None = None
        self._lm: np.ndarray | None = None
        self._patch: np.ndarray | None = None
        self._since_detect = 0
        self._face_id: int | None = None
        self._last_seen: FaceBox | None = None
        self._missing = 0
        self._n_faces = 0
        self._next_id = 0
        self._tile_turn = 0
        self._cycle: list[list[FaceBox]] = []     # boxes of the last partial detections

    def _make_verifier(self) -> FaceMesh | None:
        if isinstance(self.landmarks, FaceMesh):
            return None  # the mesh checks presence on every frame already
        try:
            return FaceMesh()
        except FaceModelError:
            return None  # ai-edge-litert missing: new faces are taken on the detector's word

    def close(self) -> None:
        """Release the detector, unless it was passed in (then its owner closes it)."""
        if self._owns_detector and hasattr(self.detector, "close"):
            self.detector.close()

    # -- per frame --

    def update(self, frame_bgr: np.ndarray, refresh: bool = True) -> TrackResult:
        """Track the subject in one frame (OpenCV BGR uint8, or greyscale).

        refresh=False (while tracking, between re-detections) skips the landmark model and
        its checks on this frame and returns the previous frame's landmarks: a high-speed
        stream can refresh them every other frame (a face moves a fraction of a pixel in
        5 ms; the alignment is smoothed over ~0.5 s anyway). Loss is then noticed at the
        next refreshed frame.
        """
        timings = {"detect": 0.0, "landmarks": 0.0}
        if not refresh and self._box is not None and self._since_detect + 1 < self.config.redetect_every:
            self._since_detect += 1
            return TrackResult(True, self._box, self._lm.astype(np.float32), self._face_id, self._n_faces,
                               False, timings, "landmarks held from the previous frame", held=True)
        frame = ensure_bgr(frame_bgr)
        gray = to_gray(frame)
        if self._box is None:
            return self._acquire(frame, gray, timings)
        self._since_detect += 1
        if self._since_detect >= self.config.redetect_every:
            return self._redetect(frame, gray, timings, PERIODIC)
        box = box_from_landmarks(self._lm)
        lm, patch, problem = self._landmarks_at(frame, gray, box, timings, compare_patch=True)
        if problem:
            return self._redetect(frame, gray, timings, problem)
        return self._commit(box_from_landmarks(lm), lm, patch, timings, redetected=False)

    def update_all(self, frame_bgr: np.ndarray, refresh: bool = True) -> list[TrackResult]:
        """``update`` in the shape of the multi-face tracker's (``realtime.stages.multitrack``):
        a list with this frame's one result."""
        return [self.update(frame_bgr, refresh)]

    # -- steps --

    def _detect(self, frame: np.ndarray, timings: dict, partial: bool = False) -> list[FaceBox]:
        """Detect faces. ``partial`` (a periodic re-check of the followed face): a tiling
        detector runs the full frame and only the next of its tiles in rotation, so the tiles'
        cost (three more inferences at 640x480) is spread over re-detections instead of making
        one frame's latency spike; the full set runs on acquisition and whenever the
        partial pass misses the subject (``_redetect``)."""
        t0 = time.perf_counter()
        n_tiles = self.detector.tile_count(*frame.shape[:2]) if partial and hasattr(self.detector, "tile_count") else 0
        if n_tiles:
            boxes = self.detector.detect(frame, tiles=[self._tile_turn % n_tiles])
            self._tile_turn += 1
            # faces seen over the last full cycle of tiles (each tile's small faces included)
            self._cycle.append(boxes)
            del self._cycle[:-n_tiles]
            self._n_faces = count_distinct([b for bs in self._cycle for b in bs])
        else:
            boxes = self.detector.detect(frame)
            self._n_faces = len(boxes)
            self._cycle = [boxes]
        timings["detect"] += (time.perf_counter() - t0) * 1000
        self._since_detect = 0
        return boxes

    def _landmarks_at(self, frame, gray, box: FaceBox, timings: dict, compare_patch: bool):
        """(landmarks, face patch, problem): problem is "" when every check passes."""
        return follow_landmarks(self.landmarks, self.config, frame, gray, box, timings, self._lm,
                                self._patch if compare_patch else None)

    def _commit(self, box, lm, patch, timings, redetected: bool, reason: str = "") -> TrackResult:
        self._box, self._lm, self._patch = box, lm, patch
        self._missing = 0
        return TrackResult(True, box, lm.astype(np.float32), self._face_id, self._n_faces, redetected, timings, reason)

    def _lose(self, timings, reason: str, redetected: bool = False) -> TrackResult:
        if self._box is not None:
            self._last_seen = self._box
        self._box, self._lm, self._patch = None, None, None
        self._missing += 1
        return TrackResult(False, None, None, None, self._n_faces, redetected, timings, reason)

    def _acquire(self, frame, gray, timings) -> TrackResult:
        """Not tracking: detect, and choose the subject (see the module docstring)."""
        boxes = self._detect(frame, timings)
        if not boxes:
            return self._lose(timings, "no face found")
        cfg = self.config
        chosen = None
        if self._last_seen is not None:
            chosen = same_subject(boxes, self._last_seen, cfg.match_iou, cfg.same_place)
            if chosen is None and self._missing < cfg.switch_after:
                return self._lose(timings, f"subject missing; {len(boxes)} other face(s) in view")
        new_subject = chosen is None
        box = chosen or boxes[0]  # detectors return the largest first
        lm, patch, problem = self._landmarks_at(frame, gray, box, timings, compare_patch=False)
        if problem:
            return self._lose(timings, f"face found but {problem}")
        if self.verifier is not None:
            t0 = time.perf_counter()
            _, presence = self.verifier.mesh(frame, box_from_landmarks(lm), roll_degrees(lm))
            timings["detect"] += (time.perf_counter() - t0) * 1000
            if presence < cfg.min_presence:
                return self._lose(timings, f"detection not confirmed as a face (mesh presence {presence:.2f})")
        if new_subject or self._face_id is None:
            self._face_id = self._next_id
            self._next_id += 1
        self._last_seen = None
        return self._commit(box_from_landmarks(lm), lm, patch, timings, redetected=True,
                            reason="new subject" if new_subject else "subject re-acquired")

    def _redetect(self, frame, gray, timings, why: str) -> TrackResult:
        """Tracking: detect again and keep the subject if it is still there (a periodic
        re-check first with a partial pass, see ``_detect``)."""
        periodic = why == PERIODIC
        boxes = self._detect(frame, timings, partial=periodic)
        match = same_subject(boxes, self._box, self.config.match_iou, self.config.same_place)
        if match is None and periodic and hasattr(self.detector, "tile_count"):
            boxes = self._detect(frame, timings)
            match = same_subject(boxes, self._box, self.config.match_iou, self.config.same_place)
        if match is None:
            return self._lose(timings, f"{why}; subject not found by the detector")
        lm, patch, problem = self._landmarks_at(frame, gray, match, timings, compare_patch=False)
        if problem:
            return self._lose(timings, f"{why}; then {problem}", redetected=True)
        return self._commit(box_from_landmarks(lm), lm, patch, timings, redetected=True, reason=why)


# ---- temporal smoothing of the alignment ----------------------------------------------------

class SmoothedTransform:
    """Exponential moving average of the 2x3 image -> crop alignment transform.

    Landmark jitter moves the crop, and crop motion is what the spotter measures, so the
    transform is smoothed over time; ``freeze()`` holds it fixed through an event, so the
    onset and apex crops share one alignment (the onset's, as in training). A new
    transform that moves the template points by more than ``reset_px`` crop pixels (a
    re-detection, a new subject, a fast head turn) replaces the average instead of
    blending into it.

    alpha: weight of the newest transform (``for_fps`` sets it from a time constant).
    time_constant_s: with frame times given to ``update(t=...)``, the weight follows the
    time since the previous frame, alpha = 1 - exp(-dt / time_constant_s), so a camera
    that drops frames or a stream whose rate varies does not stretch the smoothing
   ; ``for_fps`` sets it.
    """

    def __init__(self, alpha: float = 0.3, reset_px: float = 8.0, size: int = CROP_SIZE,
                 time_constant_s: float | None = None) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if time_constant_s is not None and not time_constant_s > 0:
            raise ValueError(f"time_constant_s must be positive or None, got {time_constant_s}")
        self.alpha = alpha
        self.time_constant_s = time_constant_s
        self._t: float | None = None
        self.reset_px = reset_px
        self.size = size
        self._points = TEMPLATE_5.astype(np.float64) * (size / CROP_SIZE)
        self._m: np.ndarray | None = None
        self.frozen = False
        self.resets = 0

    @classmethod
    def for_fps(cls, fps: float, time_constant_s: float = 0.1, **kwargs) -> "SmoothedTransform":
        """Smoothing with the same time constant at any frame rate."""
        return cls(alpha=1.0 - math.exp(-1.0 / max(fps * time_constant_s, 1e-9)),
                   time_constant_s=time_constant_s if time_constant_s > 0 else None, **kwargs)

    @property
    def value(self) -> np.ndarray | None:
        return None if self._m is None else self._m.copy()

    def jump(self, transform: np.ndarray) -> float:
        """Mean shift, in crop pixels, of the template points between the current
        transform and ``transform`` (0 when there is none yet)."""
        if self._m is None:
            return 0.0
        image_pts = transform_points(self._points, cv2.invertAffineTransform(self._m))
        return float(np.linalg.norm(transform_points(image_pts, transform) - self._points, axis=1).mean())

    def update(self, transform: np.ndarray, reset: bool = False, t: float | None = None) -> np.ndarray:
        """Feed this frame's transform (``t``: its source time, seconds); returns the one to
        warp this frame with."""
        m = np.asarray(transform, dtype=np.float64)
        if m.shape != (2, 3):
            raise ValueError(f"expected a 2x3 affine transform, got shape {m.shape}")
        alpha = self.alpha
        if t is not None:
            if self._t is not None and self.time_constant_s is not None and t > self._t:
                alpha = 1.0 - math.exp(-(t - self._t) / self.time_constant_s)
            self._t = float(t)
        if self._m is None or (not self.frozen and (reset or self.jump(m) > self.reset_px)):
            if self._m is not None:
                self.resets += 1
            self._m = m.copy()
        elif not self.frozen:
            self._m = (1.0 - alpha) * self._m + alpha * m
        return self._m.copy()

    def freeze(self) -> None:
        """Hold the current transform until ``unfreeze()`` (for the length of an event)."""
        self.frozen = True

    def unfreeze(self) -> None:
        self.frozen = False

    def reset(self) -> None:
        """Forget the average (and unfreeze): the next transform is taken as is."""
        self._m = None
        self._t = None
        self.frozen = False


# ---- command line: follow the face through a video and print per-frame cost ---------------

def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Track the face through a video and print what the tracker costs per frame.",
        epilog="examples:\n  python -m realtime.stages.tracker --video core/assets/single_face.mp4\n"
               "  python -m realtime.stages.tracker --video clip.mp4 --kind dlib --redetect-every 10 --width 640",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", required=True, help="video file to read")
    ap.add_argument("--kind", choices=TRACKER_KINDS, default="fast")
    ap.add_argument("--redetect-every", type=int, default=30, help="frames between detections (default 30)")
    ap.add_argument("--width", type=int, default=0, help="resize frames to this width first (0: as read)")
    ap.add_argument("--repeat", type=int, default=1, help="play the video this many times (for steadier timing)")
    args = ap.parse_args(argv)

    cap = cv2.VideoCapture(args.video)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if args.width:
            frame = cv2.resize(frame, (args.width, round(frame.shape[0] * args.width / frame.shape[1])),
                               interpolation=cv2.INTER_AREA)
        frames.append(frame)
    cap.release()
    if not frames:
        raise SystemExit(f"{args.video}: no frames could be read; check the path and that OpenCV can decode it")
    tracker = FaceTracker(args.kind, redetect_every=args.redetect_every)
    tracker.update(frames[0])  # warm-up (first inference allocates)
    tracker.reset()
    total, detect, landmarks, found, ids = [], [], [], 0, set()
    for _ in range(args.repeat):
        for frame in frames:
            t0 = time.perf_counter()
            r = tracker.update(frame)
            total.append((time.perf_counter() - t0) * 1000)
            if r.timings_ms["detect"] > 0:
                detect.append(r.timings_ms["detect"])
            landmarks.append(r.timings_ms["landmarks"])
            found += r.found
            ids.add(r.face_id)
    t = np.array(total)
    print(f"{args.kind}: {len(t)} frames {frames[0].shape[1]}x{frames[0].shape[0]}, face in {found / len(t):.0%}, "
          f"face ids {sorted(i for i in ids if i is not None)}, {len(detect)} detections")
    print(f"  per frame: mean {t.mean():.2f} ms, p50 {np.percentile(t, 50):.2f}, p95 {np.percentile(t, 95):.2f}, "
          f"max {t.max():.2f}; landmarks+checks p50 {np.median(landmarks):.2f} ms; "
          f"detection p50 {np.median(detect) if detect else 0:.2f} ms")
    tracker.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
