"""The overlay drawn on each displayed/recorded frame (REALTIME.md, "sinks").

It shows what a person watching needs: the face box and which face is tracked (several
faces: each one's box, id, motion bar and latest label), the
spotter's score of the last few seconds (motion in multiples of the calm level) against its threshold (with the spotted
intervals shaded), the latest event's label, confidence and decision latency, the
achieved frame rate, and plain messages for "no face" / "2 faces: tracking #1" /
"calibrating". cv2 drawing only (about 1 ms at 640x480).

    view = OverlayView(found=True, box=box, face_id=1, n_faces=1, ...)
    annotated = draw_overlay(frame_bgr, view)     # a new image; the input is untouched

The README's screenshot of it comes from a real run: ``python -m realtime.frontends.snapshot``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from core.events import Event

FONT = cv2.FONT_HERSHEY_SIMPLEX
WHITE = (255, 255, 255)
GREY = (170, 170, 170)
AMBER = (0, 190, 255)
RED = (80, 80, 255)
GREEN = (90, 210, 90)
CYAN = (230, 200, 40)
CLASS_COLOURS = {"negative": (70, 70, 235), "positive": (90, 210, 90), "surprise": (0, 200, 255),
                 "happiness": (90, 210, 90), "disgust": (70, 70, 235), "repression": (200, 120, 200),
                 "anger": (40, 40, 200), "contempt": (160, 100, 220), "sadness": (200, 120, 60),
                 "fear": (160, 60, 160), "others": (200, 200, 200)}


@dataclass
class FaceMark:
    """One of several followed faces (``OverlayView.faces``): box, id, motion and latest label."""

    face_id: int | None
    box: object
    landmarks: np.ndarray | None = None
    in_event: bool = False
    score: float | None = None                # the face's spotter score (multiples of its calm level)
    threshold: float | None = None
    last_event: Event | None = None
    last_event_final: bool = True


@dataclass
class OverlayView:
    """Everything the overlay draws for one frame (built by the pipeline)."""

    found: bool = False
    box: object | None = None                 # core.face.FaceBox
    face_id: int | None = None
    n_faces: int = 0
    message: str | None = None                # e.g. "no face", "face too small"
    landmarks: np.ndarray | None = None       # (68, 2) image pixels; only the 5 alignment points are drawn
    signal_t: np.ndarray = field(default_factory=lambda: np.zeros(0))       # (K,) seconds
    signal_value: np.ndarray = field(default_factory=lambda: np.zeros(0))   # (K,) spotter score, nan = no face
    threshold: float | None = None
    window_s: float = 4.0
    intervals: list[tuple[float, float, str]] = field(default_factory=list)  # (onset_t, offset_t, kind)
    in_event: bool = False
    calibrating: bool = False
    last_event: Event | None = None
    last_event_final: bool = True
    now_t: float = 0.0
    fps: float | None = None                  # achieved processing rate
    source_fps: float | None = None
    engine: str | None = None
    faces: list[FaceMark] = field(default_factory=list)   # every followed face, when more than one


def _text(img, s, org, scale, colour=WHITE, thick=1, bg=True):
    """Text with a dark outline so it reads on any background."""
    if bg:
        cv2.putText(img, s, org, FONT, scale, (0, 0, 0), thick + 2, cv2.LINE_8)
    cv2.putText(img, s, org, FONT, scale, colour, thick, cv2.LINE_AA)


def _panel(img, x0, y0, x1, y1, alpha=0.55):
    """Darken a rectangle in place (semi-transparent panel)."""
    h, w = img.shape[:2]
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 > x0 and y1 > y0:
        roi = img[y0:y1, x0:x1]
        roi[:] = cv2.convertScaleAbs(roi, alpha=1.0 - alpha)


def class_colour(label: str | None) -> tuple[int, int, int]:
    return CLASS_COLOURS.get(label or "", WHITE)


def draw_overlay(image: np.ndarray, view: OverlayView) -> np.ndarray:
    """Return a copy of ``image`` (BGR uint8) with the overlay drawn on it."""
    img = image.copy()
    h, w = img.shape[:2]
    s = max(0.45, min(w, h) / 480.0)  # scale for fonts and lines
    lw = max(1, int(round(1.5 * s)))

    # face box, tracked id and alignment points (several faces: each with its motion and label)
    if view.faces:
        for mark in view.faces:
            _draw_face(img, mark, s, lw)
    elif view.found and view.box is not None:
        b = view.box
        colour = AMBER if view.in_event else GREEN
        cv2.rectangle(img, (int(b.left), int(b.top)), (int(b.right), int(b.bottom)), colour, lw + 1, cv2.LINE_AA)
        tag = f"face #{view.face_id}" if view.face_id is not None else "face"
        _text(img, tag, (int(b.left), max(int(14 * s), int(b.top) - int(6 * s))), 0.6 * s, colour, lw)
        if view.landmarks is not None and len(view.landmarks) == 68:
            for i in (7, 8, 24, 39, 42):
                x, y = view.landmarks[i]
                cv2.circle(img, (int(x), int(y)), max(1, lw), CYAN, -1, cv2.LINE_AA)

    # status line (top left)
    y = int(24 * s)
    lines: list[tuple[str, tuple]] = []
    if view.fps is not None:
        rate = f"{view.fps:.0f} fps"
        if view.source_fps:
            rate += f" (source {view.source_fps:.0f})"
        lines.append((rate, WHITE))
    if not view.found:
        lines.append((view.message or "no face", RED))
    elif view.message:
        lines.append((view.message, AMBER))
    if view.found and view.calibrating:
        lines.append(("learning this face's calm level", AMBER))
    if view.in_event:
        lines.append(("motion event...", AMBER))
    if lines:  # on a dark panel: red or amber text must read on any background
        scale = 0.6 * s
        width = max(cv2.getTextSize(t, FONT, scale, lw)[0][0] for t, _ in lines)
        _panel(img, int(4 * s), int(4 * s), int(16 * s) + width, int(10 * s) + int(24 * s) * len(lines), 0.6)
        for text, colour in lines:
            _text(img, text, (int(10 * s), y), scale, colour, lw, bg=False)
            y += int(24 * s)

    # latest event (top right)
    ev = view.last_event
    if ev is not None:
        label = ev.label or "(no label)"
        conf = ev.probs.get(ev.label, 0.0) if ev.label else 0.0
        kind = ev.kind if view.last_event_final else "provisional"
        lat = ev.latency_ms.get("decision")
        head = label.upper()
        sub = f"{kind}  p={conf:.2f}" if ev.label else kind
        sub2 = (f"#{ev.face_id} " if view.faces and ev.face_id is not None else "") + f"at {ev.apex_t:.2f} s" \
            + (f"  latency {lat:.0f} ms" if lat is not None else "")
        scale1, scale2 = 0.85 * s, 0.5 * s
        widths = [cv2.getTextSize(t, FONT, sc, lw + 1)[0][0] for t, sc in ((head, scale1), (sub, scale2), (sub2, scale2))]
        pw = max(widths) + int(20 * s)
        x0 = w - pw - int(8 * s)
        _panel(img, x0, int(6 * s), w - int(8 * s), int(84 * s))
        _text(img, head, (x0 + int(10 * s), int(36 * s)), scale1, class_colour(ev.label), lw + 1, bg=False)
        _text(img, sub, (x0 + int(10 * s), int(58 * s)), scale2, WHITE, lw, bg=False)
        _text(img, sub2, (x0 + int(10 * s), int(77 * s)), scale2, GREY, lw, bg=False)

    _draw_curve(img, view, s, lw)
    return img


def _draw_face(img: np.ndarray, mark: FaceMark, s: float, lw: int) -> None:
    """One of several faces: its box and id, a bar of its motion against its threshold on
    the box's right edge (full at twice the threshold), and its latest label under the box."""
    b = mark.box
    colour = AMBER if mark.in_event else GREEN
    x0, y0, x1, y1 = int(b.left), int(b.top), int(b.right), int(b.bottom)
    cv2.rectangle(img, (x0, y0), (x1, y1), colour, lw + 1, cv2.LINE_AA)
    _text(img, f"#{mark.face_id}", (x0, max(int(14 * s), y0 - int(6 * s))), 0.6 * s, colour, lw)
    if mark.landmarks is not None and len(mark.landmarks) == 68:
        for i in (7, 8, 24, 39, 42):
            x, y = mark.landmarks[i]
            cv2.circle(img, (int(x), int(y)), max(1, lw), CYAN, -1, cv2.LINE_AA)
    if mark.score is not None and mark.threshold and np.isfinite(mark.score):
        fill = float(np.clip(mark.score / (2.0 * mark.threshold), 0.0, 1.0))
        bw = max(3, int(6 * s))
        bx = x1 + int(4 * s)
        _panel(img, bx, y0, bx + bw, y1, 0.6)
        top = int(y1 - fill * (y1 - y0))
        cv2.rectangle(img, (bx, top), (bx + bw, y1), AMBER if fill >= 0.5 else WHITE, -1)
        yt = int(y1 - 0.5 * (y1 - y0))                 # the threshold's mark
        cv2.line(img, (bx - 1, yt), (bx + bw + 1, yt), RED, 1)
    ev = mark.last_event
    if ev is not None:
        label = (ev.label or "(no label)").upper()
        conf = ev.probs.get(ev.label, 0.0) if ev.label else 0.0
        text = f"{label} {conf:.2f}" + ("" if mark.last_event_final else " (provisional)")
        scale = 0.55 * s
        tw, th = cv2.getTextSize(text, FONT, scale, lw)[0]
        ty = min(img.shape[0] - int(4 * s), y1 + th + int(8 * s))
        _panel(img, x0, ty - th - int(5 * s), x0 + tw + int(8 * s), ty + int(5 * s), 0.6)
        _text(img, text, (x0 + int(4 * s), ty), scale, class_colour(ev.label), lw, bg=False)


def _draw_curve(img: np.ndarray, view: OverlayView, s: float, lw: int) -> None:
    """Motion signal of the last ``window_s`` seconds in a strip along the bottom."""
    h, w = img.shape[:2]
    ph = int(min(h * 0.22, 110 * s))
    x0, x1 = int(8 * s), w - int(8 * s)
    y1 = h - int(8 * s)
    y0 = y1 - ph
    _panel(img, x0, y0, x1, y1)
    t_now = view.now_t
    t_start = t_now - view.window_s

    def xs(t):
        return x0 + (np.asarray(t) - t_start) / view.window_s * (x1 - x0)

    # spotted intervals first (behind the curve)
    for on, off, kind in view.intervals:
        if off < t_start or on > t_now:
            continue
        a, b = int(xs(max(on, t_start))), int(xs(min(off, t_now)))
        colour = (0, 120, 160) if kind == "micro" else (90, 90, 90)
        roi = img[y0:y1, a:max(a + 1, b)]
        roi[:] = cv2.addWeighted(roi, 0.5, np.full_like(roi, colour), 0.5, 0.0)

    tv, vv = np.asarray(view.signal_t, float), np.asarray(view.signal_value, float)
    keep = tv >= t_start
    tv, vv = tv[keep], vv[keep]
    finite = vv[np.isfinite(vv)]
    top = max(float(finite.max()) if finite.size else 0.0, (view.threshold or 0.0) * 1.6, 1e-6)
    if view.threshold:                 # a broad smile scores 50x calm: keep the threshold readable
        top = min(top, 4.0 * view.threshold)
        vv = np.minimum(vv, top)
    def ys(v):
        return y1 - int(4 * s) - np.asarray(v) / top * (ph - int(18 * s))

    if view.threshold is not None and np.isfinite(view.threshold):
        yt = int(ys(view.threshold))
        for xa in range(x0, x1, int(12 * s)):  # dashed line
            cv2.line(img, (xa, yt), (min(x1, xa + int(6 * s)), yt), RED, lw, cv2.LINE_AA)
        _text(img, "threshold", (x0 + int(6 * s), yt - int(5 * s)), 0.4 * s, RED, 1, bg=False)
    if tv.size >= 2:
        # one point per 3-pixel column (its maximum keeps short peaks visible): a few
        # hundred points, thin antialiased line (thick AA polylines cost ~10 ms)
        cols = (xs(tv) // 3 * 3).astype(np.int32)
        uniq, first = np.unique(cols, return_index=True)
        with np.errstate(invalid="ignore"):
            peak = np.fmax.reduceat(vv, first)
        pts = np.stack([uniq, ys(np.nan_to_num(peak, nan=0.0))], 1).astype(np.int32)
        ok = np.isfinite(peak)
        # break the line where the face was missing
        edges = np.flatnonzero(np.diff(np.concatenate([[0], ok.astype(np.int8), [0]])))
        runs = [pts[a:b] for a, b in zip(edges[::2], edges[1::2]) if b - a >= 2]
        if runs:
            cv2.polylines(img, runs, False, WHITE, 1, cv2.LINE_AA)
    _text(img, f"motion (last {view.window_s:.0f} s)" + (f", face #{view.face_id}" if view.faces else ""), (x0 + int(6 * s), y0 + int(14 * s)), 0.42 * s, GREY, 1,
          bg=False)
