"""The hard set's events: Tracks, each a ground-truth interval with per-frame curves.

Every event of a hard clip (or a dataset-style sequence) is a ``Track``. Tracks may
overlap (a nod while talking, a blink during a smile): the face-warp tracks add their
displacement fields, the head tracks compose 2-D warps of the head region and the light
tracks multiply a moving gain map over the frame (track_render). This module owns how each
kind is drawn: micro-expressions (log-uniform amplitudes), macro-expressions (smile,
frown, surprise, yawn; some held >= 1 s), blinks and winks, gaze shifts, talking
segments (syllables with jaw and lip shapes), nods and turns, lighting sweeps, and
``face_scale`` (an identity's sizes at REF_FACE_WIDTH and in 224-crop px).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from core.events import GroundTruth, expression_kind
from core.face import CROP_SIZE, alignment_transform
from train.synth.config import REF_FACE_WIDTH, HardConfig, SynthConfig
from train.synth.rig import au_string, face_rig, sample_sides
from train.synth.timing import _frames, raised_cosine_envelope, sample_event


@dataclass(frozen=True)
class FaceScale:
    """Sizes of one identity in px at REF_FACE_WIDTH, and the 224-crop px per such px."""

    crop_per_ref: float
    eye_width: float
    eye_opening: float


@lru_cache(maxsize=None)
def face_scale(identity: str) -> FaceScale:
    rig = face_rig(identity)
    lm, fw = rig.still.landmarks, rig.still.face_width
    m = alignment_transform(lm, CROP_SIZE)
    to_ref = REF_FACE_WIDTH / fw
    eye_w = float(np.mean([np.linalg.norm(lm[39] - lm[36]), np.linalg.norm(lm[45] - lm[42])]))
    return FaceScale(float(np.hypot(m[0, 0], m[1, 0])) * fw / REF_FACE_WIDTH, eye_w * to_ref,
                     rig.eye_opening * to_ref)


@dataclass
class Track:
    """One event of a hard clip or sequence: its ground-truth interval and its per-frame
    curves (arrays over onset_frame..offset_frame; spatial ones in px at REF_FACE_WIDTH).

    kinds and curves: micro / macro / blink / wink "amount" (along the field of ``aus``,
    ``sides``); gaze "amount" (signed, eye content shifted sideways); speech "open",
    "spread", "pucker", "raise", "brows"; head "dx", "dy", "sx", "sy", "shear"; light "env",
    "pos" (params: angle, width, strength, shape)."""

    kind: str
    label: str | None
    onset_frame: int
    apex_frame: int
    offset_frame: int
    au: str = ""
    amplitude: float = 0.0
    curves: dict = field(default_factory=dict, repr=False)
    aus: tuple = ()
    sides: tuple = (1.0, 1.0)
    params: dict = field(default_factory=dict)

    def truth(self, fps: float, source: str = "") -> GroundTruth:
        t = GroundTruth(onset_frame=self.onset_frame, apex_frame=self.apex_frame, offset_frame=self.offset_frame,
                        kind=self.kind, label=self.label, fps=float(fps),
                        onset_t=round(self.onset_frame / fps, 6), apex_t=round(self.apex_frame / fps, 6),
                        offset_t=round(self.offset_frame / fps, 6), au=self.au, source=source,
                        amplitude=round(float(self.amplitude), 4))
        if t.kind in ("micro", "macro"):
            kind = expression_kind(t.onset_t, t.apex_t, t.offset_t)
            if kind != t.kind:
                raise AssertionError(f"generator bug: a {t.kind} of {t.onset_t}-{t.offset_t} s is {kind} by rule")
        return t


SPEECH_FIELDS = {
    "open": (("AU26", 1.0), ("AU25", 0.3)),
    "spread": (("AU20", 1.0),),
    "pucker": (("AU18", 1.0),),
    "raise": (("AU10", 1.0),),
    "brows": (("AU1", 1.0), ("AU2", 0.8)),
}


MACRO_STYLES = ("smile", "frown", "surprise", "yawn")


def _log_uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    lo, hi = lo_hi
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _bump(n: int, start: float, peak: float, end: float) -> np.ndarray:
    """Raised-cosine bump over frames [0, n): 0 at start, 1 at peak, 0 at end (frames, floats)."""
    f = np.arange(n, dtype=np.float64)
    rise = np.clip((f - start) / max(peak - start, 1e-6), 0, 1)
    fall = np.clip((f - peak) / max(end - peak, 1e-6), 0, 1)
    out = np.where(f <= peak, 0.5 * (1 - np.cos(np.pi * rise)), 0.5 * (1 + np.cos(np.pi * fall)))
    return np.where((f < start) | (f > end), 0.0, out)


def _env_track(kind, label, onset, rise, hold, total, au, amplitude_truth, amount, aus=(), sides=(1.0, 1.0),
               **params) -> Track:
    """A track with a raised-cosine onset -> apex (held) -> offset envelope times ``amount``."""
    f = np.arange(onset, onset + total + 1)
    env = raised_cosine_envelope(f, onset, onset + rise, hold, onset + total)
    return Track(kind, label, onset, onset + rise, onset + total, au, amplitude_truth,
                 {"amount": env * amount}, tuple(aus), tuple(sides), params)


def micro_track(onset: int, fps: float, rng: np.random.Generator, hc: HardConfig, scale: FaceScale,
                label: str | None = None, amplitude: float | None = None,
                camera: SynthConfig | None = None) -> Track:
    """An ME (timing and AUs as in the standard clips) with a log-uniform amplitude."""
    amp = _log_uniform(rng, hc.micro_amplitude) if amplitude is None else float(amplitude)
    plan = sample_event("micro", label, onset, fps, rng, camera or hc.camera, amp)
    if amplitude is None:
        amp *= hc.micro_gain.get(plan.label, 1.0)
    return _env_track("micro", plan.label, onset, plan.apex_frame - onset, 0, plan.offset_frame - onset,
                      au_string(plan.aus), amp * scale.crop_per_ref, amp, plan.aus, plan.sides)


def macro_track(style: str, onset: int, fps: float, rng: np.random.Generator, hc: HardConfig, scale: FaceScale,
                long: bool = False) -> Track:
    """A macro-expression: broad smile (AU6+12), frown (AU4), surprise (AU1+2+5+26) or yawn
    (AU27, a wide mouth opening, always long). ``long``: held for hc.long_hold_s (>= 1 s)."""
    u = lambda r: float(rng.uniform(*r))  # noqa: E731
    if style == "smile":
        label, aus = "positive", [("AU12", 1.0), ("AU6", u((0.6, 0.9)))]
        if rng.random() < 0.5:
            aus.append(("AU25", 0.3))
    elif style == "frown":
        label, aus = "negative", [("AU4", 1.0)]
        if rng.random() < 0.4:
            aus.append(("AU9", u((0.4, 0.8))))
        if rng.random() < 0.5:
            aus.append(("AU15", u((0.4, 0.8))))
    elif style == "surprise":
        label, aus = "surprise", [("AU1", 1.0), ("AU2", 0.9), ("AU5", 0.6), ("AU26", u((0.6, 1.0)))]
    elif style == "yawn":
        label, aus, long = None, [("AU27", 1.0), ("AU25", 0.4), ("AU6", 0.2)], True
    else:
        raise ValueError(f"macro style must be one of {MACRO_STYLES}, got {style!r}")
    if style == "yawn":
        rise, hold, fall = u((0.8, 1.5)), u((0.5, 1.5)), u((0.6, 1.2))
        amp = u(hc.yawn_amplitude)
    else:
        rise, hold, fall = u((0.25, 0.6)), (u(hc.long_hold_s) if long else u((0.0, 0.5))), u((0.3, 0.9))
        amp = u(hc.macro_amplitude)
    r, h = max(1, _frames(rise, fps)), _frames(hold, fps)
    total = max(r + h + max(1, _frames(fall, fps)), math.floor(0.55 * fps) + 1)
    if long:
        h = max(h, math.ceil(1.0 * fps))
        total = max(total, r + h + 1)
    return _env_track("macro", label, onset, r, h, total, au_string(aus), amp * scale.crop_per_ref, amp, aus,
                      sample_sides(rng), style=style)


def eye_track(kind: str, onset: int, fps: float, rng: np.random.Generator, hc: HardConfig,
              scale: FaceScale) -> Track:
    """A blink (both eyes, AU45) or a wink (one eye, AU46: AU45 on one side with a little AU6)."""
    if kind == "blink":
        plan = sample_event("blink", None, onset, fps, rng, hc.camera)
        amount = plan.amplitude * scale.eye_opening
        return _env_track("blink", None, onset, plan.apex_frame - onset, 0, plan.offset_frame - onset, "AU45",
                          amount * scale.crop_per_ref, amount, plan.aus, plan.sides)
    u = lambda r: float(rng.uniform(*r))  # noqa: E731
    close, hold, open_ = (max(1, _frames(u(r), fps)) for r in ((0.06, 0.15), (0.05, 0.25), (0.1, 0.25)))
    sides = (1.0, 0.0) if rng.random() < 0.5 else (0.0, 1.0)
    amount = u(hc.wink_closure) * scale.eye_opening
    return _env_track("wink", None, onset, close, hold, close + hold + open_, "AU46", amount * scale.crop_per_ref,
                      amount, (("AU45", 1.0), ("AU6", 0.25)), sides)


def gaze_track(onset: int, fps: float, rng: np.random.Generator, hc: HardConfig, scale: FaceScale) -> Track:
    """Both eyes look to one side (a saccade of 30-60 ms), stay, and come back."""
    u = lambda r: float(rng.uniform(*r))  # noqa: E731
    sacc = max(1, _frames(u((0.03, 0.06)), fps))
    total = max(_frames(u(hc.gaze_seconds), fps), 2 * sacc + 1)
    hold = total - 2 * sacc
    direction = 1.0 if rng.random() < 0.5 else -1.0
    px = u(hc.gaze_shift) * scale.eye_width
    return _env_track("gaze", None, onset, sacc, hold, total, "AU62" if direction > 0 else "AU61",
                      px * scale.crop_per_ref, direction * px)


def speech_track(onset: int, n_frames: int, fps: float, rng: np.random.Generator, hc: HardConfig,
                 scale: FaceScale) -> Track | None:
    """A talking segment of at most ``n_frames``: syllables at 3-6 per second, each a jaw
    opening (AU25+26) of irregular size with a vowel's lip shape (spread AU20, pucker AU18
    or upper lip up AU10), word pauses, and now and then a brow raise on a stressed
    syllable. Ground truth: the segment's interval, apex at the widest opening."""
    u = lambda r: float(rng.uniform(*r))  # noqa: E731
    curves = {k: np.zeros(n_frames) for k in SPEECH_FIELDS}
    big = u(hc.speech_open)
    rate = u(hc.syllable_rate)
    s = u((0.0, 0.03)) * fps
    last = 0.0
    while True:
        d = fps / rate * u((0.75, 1.25))
        width = d * u((0.8, 1.0))
        if s + width > n_frames - 1:
            break
        peak = s + width * u((0.35, 0.6))
        b = _bump(n_frames, s, peak, s + width)
        amp = big * u((0.3, 1.0))
        curves["open"] = np.maximum(curves["open"], amp * b)
        r = rng.random()
        if r < 0.35:
            curves["spread"] = np.maximum(curves["spread"], amp * u((0.2, 0.5)) * b)
        elif r < 0.6:
            curves["pucker"] = np.maximum(curves["pucker"], amp * u((0.2, 0.5)) * b)
        elif r < 0.75:
            curves["raise"] = np.maximum(curves["raise"], amp * u((0.15, 0.35)) * b)
        if rng.random() < 0.12:
            stress = _bump(n_frames, s - 0.3 * width, peak, s + 2.0 * width)
            curves["brows"] = np.maximum(curves["brows"], u((0.6, 2.0)) * stress)
        last = s + width
        s += d
        if rng.random() < hc.word_pause_p:
            s += u(hc.word_pause_s) * fps
    end = int(math.ceil(last))
    if end < max(3, _frames(0.3, fps)):
        return None
    curves = {k: v[:end + 1] for k, v in curves.items()}
    apex = int(np.argmax(curves["open"]))
    peak_px = float(max(v.max() for v in curves.values()))
    aus = "AU25+AU26+AU10+AU18+AU20" + ("+AU1+AU2" if curves["brows"].max() > 0 else "")
    return Track("speech", None, onset, onset + apex, onset + end, aus, peak_px * scale.crop_per_ref, curves)


def head_track(onset: int, fps: float, rng: np.random.Generator, hc: HardConfig, scale: FaceScale,
               move: str | None = None) -> Track:
    """A nod (pitch: the head moves down and back, once or down-up, foreshortened
    vertically) or a turn (yaw: sideways and back, narrowed and slightly sheared), as 2-D
    warps of the head region."""
    u = lambda r: float(rng.uniform(*r))  # noqa: E731
    move = move or ("nod" if rng.random() < 0.5 else "turn")
    total = max(_frames(u(hc.head_seconds), fps), 4)
    x = np.linspace(0.0, 1.0, total + 1)
    amp = u(hc.head_amplitude)
    sign = 1.0 if rng.random() < 0.5 else -1.0
    zero = np.zeros_like(x)
    if move == "nod":
        s = np.sin(np.pi * x) ** 2 if rng.random() < 0.6 else np.sin(2 * np.pi * x) * np.sin(np.pi * x) / 0.77
        curves = {"dx": zero, "dy": amp * s, "sx": 1 - 0.002 * np.abs(s), "sy": 1 - 0.004 * amp * s,
                  "shear": zero}
        au = "AU54" if s.min() > -0.1 else "AU54+AU53"
    elif move == "turn":
        rise = u((0.15, 0.35))
        s = np.minimum(1.0, np.minimum(x / rise, (1 - x) / rise))
        s = 0.5 * (1 - np.cos(np.pi * s))
        curves = {"dx": sign * amp * s, "dy": zero, "sx": 1 - 0.006 * amp * s, "sy": 1 - 0.002 * s,
                  "shear": sign * 0.003 * amp * s}
        au = "AU52" if sign > 0 else "AU51"
    else:
        raise ValueError(f"head move must be 'nod' or 'turn', got {move!r}")
    apex = int(np.argmax(np.abs(s)))
    return Track("head", None, onset, onset + apex, onset + total, au, amp * scale.crop_per_ref, curves,
                 params={"move": move})


def light_track(onset: int, fps: float, rng: np.random.Generator, hc: HardConfig) -> Track:
    """A lighting sweep: a bright (or dark) band, or the edge of a light, moving across the
    face at any angle over 0.5-2 s, changing its brightness by 10-30 %."""
    u = lambda r: float(rng.uniform(*r))  # noqa: E731
    total = max(_frames(u(hc.light_seconds), fps), 4)
    x = np.linspace(0.0, 1.0, total + 1)
    span = 1.4                                               # face widths either side of the centre
    pos = -span + 2 * span * (0.5 * (1 - np.cos(np.pi * x)))
    env = 0.5 * (1 - np.cos(np.pi * np.clip(np.minimum(x, 1 - x) / 0.15, 0, 1)))
    shape = "band" if rng.random() < 0.6 else "edge"
    strength = u(hc.light_change) * (1.0 if rng.random() < 0.7 else -1.0)
    apex = int(np.argmin(np.abs(pos)))
    return Track("light", None, onset, onset + apex, onset + total, "", abs(strength), {"env": env, "pos": pos},
                 params={"angle": u((0, 2 * np.pi)), "width": u((0.2, 0.5)), "strength": strength, "shape": shape})
