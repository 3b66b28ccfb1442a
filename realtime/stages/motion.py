"""The motion signal: one number per frame saying how far the face has moved from neutral.

REALTIME.md, "motion signal". Peers (e.g. MEGC spotting baselines) measure optical flow
between frame t and frame t-k, k about half the mean expression length, inside brow, eye
and mouth regions, minus a nose-bridge region that cancels head motion. We keep the
regions and the nose reference, but compare the current frame with a REFERENCE frame
instead of a fixed t-k:

    reference = the frame ``ref_lag_ms`` ago (rolling), or, while an event is open
                (``hold=True``), the reference in use when it opened (frozen).

Why: with a fixed t-k window the signal rises during the onset, falls while the apex is
held, and rises a second time during the return (apex -> offset), and once more k frames
later when the window's far end crosses the event. Against a reference frozen at the
last neutral moment, the signal is the displacement from neutral itself: it leaves the
baseline at the onset, peaks at the apex and comes back at the offset, so the spotter
reads onset / apex / offset directly off one bump (realtime/stages/spotter.py). The rolling lag
(250 ms, longer than the part of an onset the spotter needs to see before it opens an
event, shorter than slow drift) keeps lighting and pose drift out of the baseline. After
an event the reference restarts at the current frame so the tail of the event is never
compared with itself (no echo bump).

Per frame (measured here, one core, Intel Xeon): DIS optical flow at 112x112 (ultrafast
preset, finest scale 1) with the predicted head shift taken out first, about 0.3-0.4 ms; the
rigid fit and region statistics about 0.3-0.5 ms; 1.0-1.4 ms per frame in all in
``python -m realtime.bench`` (README, "Motion stage").

Regions are fixed rectangles in the aligned crop (core/face.py MEAN_SHAPE_68 gives
where brows, eyes, nose and mouth sit): brows, eyes, nose (nasal wings: AU9/AU10 wrinkle),
mouth, and nose_ref (the rigid nose bridge). Each region's value is the mean flow
magnitude, in pixels of the 224 crop, after subtracting the face's rigid motion: an
affine flow field fitted robustly inside the face outline (RigidMotion: head translation,
rotation and scale, and alignment jitter; the nose bridge's translation alone left a
head that turned during an event looking like an expression). nose_ref reports the head
translation's magnitude. The spotting value is the largest
of brows, nose and mouth. The eyes are reported but left out of it: a blink lasts about
as long as a micro-expression but moves only the eyelids (REALTIME.md, "spotter").
"""
from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from core.face import CROP_SIZE, MEAN_SHAPE_68

# Regions as (x0, y0, x1, y1) in the 224x224 aligned crop, derived from the mean
# landmark shape so they follow the alignment template (one place for each fact).
_LM = MEAN_SHAPE_68


def _box(idx: slice, pad_x: float, pad_top: float, pad_bottom: float) -> tuple[float, float, float, float]:
    pts = _LM[idx]
    return (float(pts[:, 0].min() - pad_x), float(pts[:, 1].min() - pad_top),
            float(pts[:, 0].max() + pad_x), float(pts[:, 1].max() + pad_bottom))


_BROWS = _box(slice(17, 27), 6.0, 16.0, 0.0)          # brows and the forehead just above
_EYES = _box(slice(36, 48), 8.0, 8.0, 8.0)            # both eyes with their lids
REGIONS_224: dict[str, tuple[float, float, float, float]] = {
    # stop the brow box above the upper eyelids so blinks stay out of it
    "brows": (_BROWS[0], _BROWS[1], _BROWS[2], min(_BROWS[3] + 3.0, _EYES[1] - 2.0)),
    "eyes": _EYES,
    "nose": _box(slice(31, 36), 8.0, 8.0, 6.0),       # nostrils and nasal wings
    "mouth": _box(slice(48, 68), 10.0, 8.0, 8.0),     # lips, lip corners, chin top
    # the lower nose bridge: rigid, between the eyes' and the mouth's muscles
    "nose_ref": (float(_LM[27, 0] - 8.0), float(_LM[28, 1] - 2.0),
                 float(_LM[27, 0] + 8.0), float(_LM[30, 1] - 4.0)),
}
SPOT_REGIONS = ("brows", "nose", "mouth")
REPORT_REGIONS = ("brows", "eyes", "nose", "mouth")
DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


FLOW_SIZE = 112
"""Side of the grey crop the flow runs on (MotionConfig.flow_size's default)."""

MOTION_HZ: float | None = None
"""Motion samples per second of source time in the live path (PipelineConfig.motion_hz):
None, every frame. 100 measures a 200 fps stream on every 2nd frame, about 1 ms less CPU
per frame, at a price in spotting (README, "Latency benchmark": the borderline "busy" and
onset decisions of the spotter change, and apexes are found to 10 ms instead of 5)."""


@dataclass
class MotionConfig:
    flow_size: int = FLOW_SIZE      # side of the grey crop the flow runs on
    ref_lag_ms: float = 250.0       # age of the rolling reference frame (source time)
    preset: str = "ultrafast"       # DIS preset (see DIS_PRESETS)
    finest_scale: int | None = 1     # DIS finest pyramid level; None keeps the preset's (2 for
                                     # ultrafast: 0.08 ms at 112x112, level 1 cost 0.65 ms)
    blur_sigma: float = 0.8         # Gaussian blur before the flow (camera noise), 0 = off
    average_ms: float = 0.0         # average the last frames over this span before the flow (0 = off)
    rigid: str = "affine"           # head motion removed: "affine" (RigidMotion) or "translation" (nose bridge)
    spot_regions: tuple[str, ...] = SPOT_REGIONS


@dataclass
class MotionSample:
    """The motion of one frame against its reference.

    ``value``: the spotting signal (pixels of the 224 crop), max over ``spot_regions``.
    ``regions``: brows, eyes, nose, mouth (head translation removed) and nose_ref (the
    head translation's own magnitude), all in 224-crop pixels; and light (lighting_change:
    the largest relative brightness change of a block of the face, a fraction).
    ``head``: the removed translation (dx, dy). ``ref_age``: frames between the reference
    and this frame. ``held``: the reference was frozen. ``ready``: False on the first
    frame after a reset (nothing to compare with; value 0).
    """

    value: float
    regions: dict[str, float] = field(default_factory=dict)
    head: tuple[float, float] = (0.0, 0.0)
    ref_age: int = 0
    held: bool = False
    ready: bool = True
    timings_ms: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------- maths

def region_boxes(size: int) -> dict[str, tuple[int, int, int, int]]:
    """REGIONS_224 scaled to a ``size`` x ``size`` crop, as integer slices (x0, y0, x1, y1)."""
    s = size / CROP_SIZE
    out = {}
    for name, (x0, y0, x1, y1) in REGIONS_224.items():
        a, b = int(np.floor(x0 * s)), int(np.floor(y0 * s))
        c, d = int(np.ceil(x1 * s)), int(np.ceil(y1 * s))
        out[name] = (max(a, 0), max(b, 0), min(c, size), min(d, size))
    return out


def median(x: np.ndarray) -> float:
    """np.median of a 1-D array by one partial sort (np.median's own wrappers cost three times
    as much on the few thousand values of a motion sample)."""
    n = x.shape[0]
    k = n // 2
    if n % 2:
        return float(np.partition(x, k)[k])
    p = np.partition(x, (k - 1, k))
    return float((p[k - 1] + p[k]) * 0.5)


def head_translation(flow: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Median flow vector (dx, dy) inside ``box``: the rigid nose bridge's translation.

    flow: (H, W, 2). The median ignores the few pixels where the flow is wrong."""
    x0, y0, x1, y1 = box
    v = flow[y0:y1, x0:x1].reshape(-1, 2)
    return np.array([median(np.ascontiguousarray(v[:, 0])), median(np.ascontiguousarray(v[:, 1]))], v.dtype)


def region_motion(flow: np.ndarray, box: tuple[int, int, int, int], head: np.ndarray) -> float:
    """Mean magnitude of (flow - head) inside ``box``: local motion with the head's removed."""
    x0, y0, x1, y1 = box
    v = flow[y0:y1, x0:x1] - np.asarray(head, dtype=flow.dtype)   # (h, w, 2)
    return float(np.sqrt((v * v).sum(-1)).mean())


class RigidMotion:
    """The face's rigid motion in a flow field: an affine map fitted inside the face outline.

    Head translation alone (the nose bridge's median flow) leaves rotation and scale
    changes in the residual: a head that turns or nods by a degree during an event moves
    the brows and mouth by more than a micro-expression does. An affine flow field
    (6 parameters) is fitted to the flow on a grid of points inside the face outline
    (jaw line and brows of the mean shape) by iteratively reweighted least squares with
    Tukey's biweight, so the few pixels that an expression moves get no weight; what is
    left after subtracting it is the non-rigid, expression motion.

    Cost: float32, the normal equations solved as 3x3 systems (X^T X of the first, unweighted
    pass computed once), the points gathered by flat index, and the residual formed once
    over the bounding box of the regions asked for (``region_residuals``), never over the
    whole crop. Every second pixel is kept: every fourth halved the fit's cost but lost a
    micro-expression on two hard 200 fps clips.
    """

    def __init__(self, size: int, step: int = 2, iterations: int = 3) -> None:
        s = size / CROP_SIZE
        outline = (_LM[list(range(0, 17)) + list(range(26, 16, -1))] * s).astype(np.int32)
        mask = np.zeros((size, size), np.uint8)
        cv2.fillPoly(mask, [outline], 1)
        ys, xs = np.nonzero(mask)
        keep = (ys % step == 0) & (xs % step == 0)
        self.xi, self.yi = xs[keep], ys[keep]
        self.flat = self.yi * size + self.xi                            # index into flow.reshape(-1, 2)
        self.X = np.stack([self.xi, self.yi, np.ones_like(self.xi)], 1).astype(np.float32)   # (N, 3)
        self.XT = np.ascontiguousarray(self.X.T)                        # (3, N)
        self.ridge = np.float32(1e-6) * np.eye(3, dtype=np.float32)
        self.XtX = self.XT @ self.X + self.ridge                        # the unweighted first pass
        self.size = size
        self.iterations = iterations

    def fit(self, flow: np.ndarray) -> np.ndarray:
        """The (3, 2) affine A with flow(x, y) ~ [x, y, 1] @ A on the face's rigid part."""
        if flow.shape[:2] != (self.size, self.size):
            raise ValueError(f"flow of shape {flow.shape} for a {self.size}x{self.size} rigid model")
        v = np.ascontiguousarray(flow, np.float32).reshape(-1, 2)[self.flat]   # (N, 2)
        X, XT = self.X, self.XT
        A = np.zeros((3, 2), np.float32)
        M, XTw = self.XtX, XT
        for _ in range(self.iterations):
            try:
                A = np.linalg.solve(M, XTw @ v)
            except np.linalg.LinAlgError:
                break
            d = X @ A - v
            r = np.sqrt(np.einsum("ij,ij->i", d, d))
            c = 2.5 * max(1.4826 * median(r), 0.05)
            u = np.minimum(r / np.float32(c), 1.0)
            w = (1.0 - u * u) ** 2                                    # Tukey: 0 beyond c
            XTw = XT * w
            M = XTw @ X + self.ridge
        return A

    def residual(self, flow: np.ndarray) -> np.ndarray:
        """``flow`` minus the fitted rigid flow field, over the whole crop."""
        return _minus_affine(flow, self.fit(flow), 0, 0)

    def region_residuals(self, flow: np.ndarray, boxes: dict[str, tuple[int, int, int, int]],
                         names: tuple[str, ...]) -> dict[str, float]:
        """Mean magnitude of the residual (flow minus the fitted rigid field) inside each
        named box: the residual is formed once, over the boxes' bounding box only."""
        A = self.fit(flow)
        x0 = min(boxes[n][0] for n in names)
        y0 = min(boxes[n][1] for n in names)
        x1 = max(boxes[n][2] for n in names)
        y1 = max(boxes[n][3] for n in names)
        d = _minus_affine(flow[y0:y1, x0:x1], A, x0, y0)
        mag = cv2.magnitude(d[..., 0], d[..., 1])                     # (h, w) float32
        out = {}
        for name in names:
            a, b, c, e = boxes[name]
            out[name] = float(mag[b - y0:e - y0, a - x0:c - x0].mean(dtype=np.float64))
        return out


def _minus_affine(flow: np.ndarray, A: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """``flow`` (a window whose top-left pixel is (x0, y0)) minus the affine field
    [x, y, 1] @ A, by broadcasting a row and a column (no per-pixel matrix product)."""
    h, w = flow.shape[:2]
    x = np.arange(x0, x0 + w, dtype=np.float32)
    y = np.arange(y0, y0 + h, dtype=np.float32)[:, None]
    A = A.astype(np.float32, copy=False)
    d = np.empty((h, w, 2), np.float32)
    for k in range(2):
        d[..., k] = flow[..., k] - (A[0, k] * x + A[2, k]) - A[1, k] * y
    return d


def region_motions(flow: np.ndarray, boxes: dict[str, tuple[int, int, int, int]],
                   scale: float = 1.0, rigid: RigidMotion | None = None) -> tuple[dict[str, float], np.ndarray]:
    """All regions' local motion plus nose_ref (the head translation's magnitude).

    With ``rigid``, the face's affine (rigid) motion is subtracted before the regions are
    measured; without it, only the nose bridge's translation. ``scale`` converts flow
    pixels to the unit reported (224-crop pixels)."""
    head = head_translation(flow, boxes["nose_ref"])
    if rigid is not None:
        res = rigid.region_residuals(flow, boxes, REPORT_REGIONS)
        out = {name: scale * res[name] for name in REPORT_REGIONS}
    else:
        out = {name: scale * region_motion(flow, boxes[name], head) for name in REPORT_REGIONS}
    out["nose_ref"] = scale * float(np.hypot(*head))
    return out, head * scale


def lighting_change(ref: np.ndarray, cur: np.ndarray, grid: int = 4) -> float:
    """How much the light on the face changed between two grey crops: the largest relative
    change of a block's mean brightness, over a ``grid`` x ``grid`` tiling of the crop's
    central 70 % (the face). A light sweeping across a face, or a flicker, moves it by
    0.1-0.3; a facial expression, whose few moving pixels average out in a block, barely
    moves it. Dense optical flow reads a moving brightness edge as motion: the spotter uses
    this to tell the two apart."""
    s = ref.shape[0]
    a, b = int(0.15 * s), int(0.85 * s)
    r = cv2.resize(ref[a:b, a:b], (grid, grid), interpolation=cv2.INTER_AREA).astype(np.float32)
    c = cv2.resize(cur[a:b, a:b], (grid, grid), interpolation=cv2.INTER_AREA).astype(np.float32)
    return float(np.max(np.abs(c - r) / np.maximum(r, 8.0)))


def spotting_value(regions: dict[str, float], names: tuple[str, ...] = SPOT_REGIONS) -> float:
    """The spotting signal: the most active expression region (eyes excluded)."""
    return max(regions[n] for n in names)


def shift_image(gray: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Translate an image by (dx, dy) pixels (bilinear, borders replicated)."""
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(gray, m, (gray.shape[1], gray.shape[0]), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def compensated_flow(dis, ref: np.ndarray, cur: np.ndarray, head: np.ndarray) -> np.ndarray:
    """Optical flow ref -> cur with a predicted head translation taken out first.

    Both images are moved half-way towards each other (so both get the same
    interpolation blur) and the flow between them is added back to ``head``. Flow on a
    face that moved as a whole is not uniform (textureless skin, borders), so
    subtracting a translation AFTER the flow leaves a residue that grows with the shift;
    removing it BEFORE leaves only the small error of the prediction."""
    hx, hy = float(head[0]), float(head[1])
    if hx == 0.0 and hy == 0.0:
        return dis.calc(ref, cur, None)
    flow = dis.calc(shift_image(ref, hx / 2, hy / 2), shift_image(cur, -hx / 2, -hy / 2), None)
    flow += np.asarray(head, dtype=np.float32)
    return flow


def to_flow_gray(crop_bgr: np.ndarray, size: int, blur_sigma: float) -> np.ndarray:
    """Aligned crop (H, W, 3) BGR or (H, W) grey -> (size, size) contiguous uint8 grey."""
    g = crop_bgr if crop_bgr.ndim == 2 else cv2.cvtColor(crop_bgr, cv2.COLOR_BGR2GRAY)
    if g.shape[0] != size or g.shape[1] != size:
        g = cv2.resize(g, (size, size), interpolation=cv2.INTER_AREA)
    if blur_sigma > 0:
        g = cv2.GaussianBlur(g, (0, 0), blur_sigma)
    return np.ascontiguousarray(g)


def flow_crop(region: np.ndarray, offset: tuple[int, int], transform: np.ndarray, size: int) -> np.ndarray:
    """The motion stage's input from the frame: ``region`` (a BGR or grey part of the frame
    whose top-left pixel is ``offset`` = (x0, y0) in the frame) warped with the alignment
    ``transform`` (frame -> 224 crop), made grey and resized (INTER_AREA) to (size, size).

    Issue 16 tried cheaper orders and kept none: warping grey straight to 112 aliases
    (micro F1 on two hard 200 fps clips 0.82 against 1.00), and converting to grey BEFORE
    the 224 warp (0.37 against 0.51 ms; within 1 grey level) turned a speech burst of a real
    30 fps clip into a micro event. This is the operation order the spotter was tuned on."""
    m = np.asarray(transform, np.float64).copy()
    m[:, 2] = m[:, :2] @ np.asarray(offset, np.float64) + m[:, 2]            # region -> 224 crop
    c = cv2.warpAffine(region, m, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if c.ndim == 3:
        c = cv2.cvtColor(c, cv2.COLOR_BGR2GRAY)
    if size != CROP_SIZE:
        c = cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA)
    return c


# ----------------------------------------------------------------------------- state

class MotionSignal:
    """Per-frame motion of an aligned face against a rolling (or frozen) reference.

        motion = MotionSignal(fps=200)
        sample = motion.update(crop_224_bgr)                 # MotionSample
        sample = motion.update(crop, hold=spotter.holding)   # freeze the reference in events

    ``hold`` should be True while the spotter has an event open (realtime.stages.spotter.
    LiveSpotter wires this up). Keyword overrides go to MotionConfig:
    ``MotionSignal(30, ref_lag_ms=300)``.
    """

    def __init__(self, fps: float, config: MotionConfig | None = None, **overrides) -> None:
        if not fps or fps <= 0:
            raise ValueError(f"fps must be positive, got {fps!r}; pass the source's true frame rate")
        self.fps = float(fps)
        self.config = replace(config or MotionConfig(), **overrides)
        cfg = self.config
        if cfg.preset not in DIS_PRESETS:
            raise ValueError(f"preset must be one of {sorted(DIS_PRESETS)}, got {cfg.preset!r}")
        bad = [n for n in cfg.spot_regions if n not in REPORT_REGIONS]
        if bad:
            raise ValueError(f"spot_regions {bad} unknown; choose from {REPORT_REGIONS}")
        if cfg.flow_size < 32:
            raise ValueError(f"flow_size {cfg.flow_size} is too small for the regions; use >= 64")
        self.lag = max(1, int(round(cfg.ref_lag_ms * self.fps / 1000.0)))   # frames at the nominal rate
        self.lag_s = self.lag / self.fps    # the lag in source time: whole frames at the nominal rate
        self.n_average = max(1, int(round(cfg.average_ms * self.fps / 1000.0)))
        if cfg.rigid not in ("affine", "translation"):
            raise ValueError(f"rigid must be 'affine' or 'translation', got {cfg.rigid!r}")
        self.boxes = region_boxes(cfg.flow_size)
        self._rigid = RigidMotion(cfg.flow_size) if cfg.rigid == "affine" else None
        self.scale = CROP_SIZE / cfg.flow_size
        self._dis = cv2.DISOpticalFlow_create(DIS_PRESETS[cfg.preset])
        if cfg.finest_scale is not None:
            self._dis.setFinestScale(int(cfg.finest_scale))
        self.reset()

    def reset(self) -> None:
        """Forget every frame (new face, face lost, new stream)."""
        # (count, t, grey), oldest first; pruned by source time, capped as a safeguard
        self._buf: deque[tuple[int, float, np.ndarray]] = deque(maxlen=8 * (self.lag + 1))
        self._count = 0                 # frames seen since reset
        self._since_t = -math.inf       # no reference older than this source time
        self._held: tuple[int, float, np.ndarray] | None = None
        self._head = np.zeros(2, np.float32)      # last head translation (flow px): the next prediction
        self._raw: deque[np.ndarray] = deque(maxlen=self.n_average)

    def update(self, crop_bgr: np.ndarray, hold: bool = False, t: float | None = None) -> MotionSample:
        """Add one aligned crop (224x224 BGR, or any square grey/BGR crop; ``flow_crop`` makes
        the grey one it needs straight from the frame); return its motion.

        ``t``: the frame's source time in seconds. The reference is the frame ``ref_lag_ms``
        of SOURCE TIME ago, so a camera that drops frames or a stream whose rate varies does
        not stretch the lag; without ``t`` frames are taken to be 1/fps apart."""
        t0 = time.perf_counter()
        if crop_bgr is None or crop_bgr.ndim not in (2, 3) or crop_bgr.shape[0] != crop_bgr.shape[1]:
            shape = None if crop_bgr is None else crop_bgr.shape
            raise ValueError(f"expected a square aligned face crop (e.g. 224x224x3), got shape {shape}")
        cfg = self.config
        gray = to_flow_gray(crop_bgr, cfg.flow_size, cfg.blur_sigma)
        if self.n_average > 1:
            self._raw.append(gray)
            gray = np.mean(self._raw, axis=0).round().astype(np.uint8) if len(self._raw) > 1 else gray
        count = self._count
        self._count += 1
        if t is None:
            t = count / self.fps
        t = float(t)

        if not hold and self._held is not None:          # event closed: restart here
            self._held = None
            self._since_t = t
            self._head[:] = 0.0
        ref = self._reference(t, hold)
        self._buf.append((count, t, gray))
        t1 = time.perf_counter()
        if ref is None:
            return MotionSample(0.0, {n: 0.0 for n in REPORT_REGIONS + ("nose_ref",)}, ready=False,
                                timings_ms={"prep": (t1 - t0) * 1e3, "flow": 0.0, "total": (t1 - t0) * 1e3})
        ref_count, _, ref_gray = ref
        flow = compensated_flow(self._dis, ref_gray, gray, self._head)   # (S, S, 2) float32
        t2 = time.perf_counter()
        regions, head = region_motions(flow, self.boxes, self.scale, self._rigid)
        regions["light"] = lighting_change(ref_gray, gray)
        self._head = (head / self.scale).astype(np.float32)
        value = spotting_value(regions, cfg.spot_regions)
        t3 = time.perf_counter()
        return MotionSample(
            value=value, regions=regions, head=(float(head[0]), float(head[1])),
            ref_age=count - ref_count, held=self._held is not None,
            timings_ms={"prep": (t1 - t0) * 1e3, "flow": (t2 - t1) * 1e3,
                        "regions": (t3 - t2) * 1e3, "total": (t3 - t0) * 1e3},
        )

    def _reference(self, t: float, hold: bool) -> tuple[int, float, np.ndarray] | None:
        if hold and self._held is not None:
            return self._held
        want = max(t - self.lag_s, self._since_t) - _TIME_TOL
        buf = self._buf
        while len(buf) > 1 and buf[0][1] < t - self.lag_s - _TIME_TOL:
            buf.popleft()                       # older than any later frame will want
        ref = None
        for item in buf:                        # oldest first: the oldest one young enough
            if item[1] >= want:
                ref = item
                break
        if ref is None and buf:
            ref = buf[-1]
        if ref is None:          # nothing to compare with yet (when holding: from the next frame on)
            return None
        if hold:
            self._held = ref
        return ref


_TIME_TOL = 1e-6
"""Seconds: frame times computed as index / fps differ from exact multiples by rounding."""
