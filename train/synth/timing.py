"""The standard clips' motion model in time: events, their envelopes and their schedule.

Owns ``EventPlan`` (one scheduled event in frames, and its ground truth), the raised-cosine
onset -> apex -> offset envelope, ``sample_event`` (timing, AUs and amplitude of one
micro-expression, macro-expression or blink, clamped so every ground truth obeys the ME
limits at any fps), ``EventSpec`` and ``schedule_events`` (non-overlapping events after a
neutral lead-in, by mode or as listed), and ``_frames`` (seconds to frames, the rounding
every generator uses).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from core.events import GroundTruth
from core.protocols import DEMO_3
from train.synth.config import (
    KINDS,
    LEAD_IN_S,
    MICRO_MAX_S,
    MICRO_RISE_S,
    MIN_GAP_S,
    SynthConfig,
)
from train.synth.rig import au_string, sample_aus, sample_sides


@dataclass(frozen=True)
class EventPlan:
    """One scheduled event, in frames of the clip. apex_frame is the first frame at full
    intensity (a macro-expression holds it for hold_frames). amplitude: apex displacement
    in px at REF_FACE_WIDTH (micro, macro) or fraction of the eye opening (blink)."""

    kind: str
    label: str | None
    onset_frame: int
    apex_frame: int
    hold_frames: int
    offset_frame: int
    amplitude: float
    aus: tuple[tuple[str, float], ...]
    sides: tuple[float, float] = (1.0, 1.0)

    def envelope(self, frame: int | np.ndarray) -> np.ndarray:
        return raised_cosine_envelope(frame, self.onset_frame, self.apex_frame, self.hold_frames, self.offset_frame)

    def truth(self, fps: float, source: str = "") -> GroundTruth:
        return GroundTruth(
            onset_frame=self.onset_frame, apex_frame=self.apex_frame, offset_frame=self.offset_frame,
            kind=self.kind, label=self.label, fps=float(fps),
            onset_t=round(self.onset_frame / fps, 6), apex_t=round(self.apex_frame / fps, 6),
            offset_t=round(self.offset_frame / fps, 6), au=au_string(self.aus), source=source,
        )


def raised_cosine_envelope(frame, onset: int, apex: int, hold: int, offset: int) -> np.ndarray:
    """0 at onset, smooth rise to 1 at apex, flat for ``hold`` frames, smooth fall to 0 at offset."""
    f = np.asarray(frame, dtype=np.float64)
    rise = np.clip((f - onset) / max(1, apex - onset), 0, 1)
    top = apex + hold
    fall = np.clip((f - top) / max(1, offset - top), 0, 1)
    env = np.where(f <= apex, 0.5 * (1 - np.cos(np.pi * rise)),
                   np.where(f <= top, 1.0, 0.5 * (1 + np.cos(np.pi * fall))))
    return np.where((f < onset) | (f > offset), 0.0, env)


@dataclass(frozen=True)
class EventSpec:
    """An event to place in a clip; unset fields are drawn by the generator."""

    kind: str = "micro"
    label: str | None = None
    onset_t: float | None = None
    amplitude: float | None = None


def _frames(seconds: float, fps: float) -> int:
    return int(round(seconds * fps))


def sample_event(kind: str, label: str | None, onset_frame: int, fps: float, rng: np.random.Generator,
                 cfg: SynthConfig, amplitude: float | None = None) -> EventPlan:
    """Draw the timing, AUs and amplitude of one event starting at ``onset_frame``.

    Durations are drawn in seconds and rounded to frames, then clamped so the ground truth
    obeys the ME limits exactly at any fps: micro onset->apex in [40, 250] ms and
    offset - onset < 500 ms; macro > 500 ms; blink 100-300 ms."""
    if kind not in KINDS:
        raise ValueError(f"event kind must be one of {KINDS}, got {kind!r}")
    u = lambda r: float(rng.uniform(*r))  # noqa: E731
    hold = 0
    if kind == "micro":
        rise = min(max(_frames(u(cfg.micro_rise_s), fps), math.ceil(MICRO_RISE_S[0] * fps - 1e-9)),
                   math.floor(MICRO_RISE_S[1] * fps + 1e-9))
        longest = math.ceil(MICRO_MAX_S * fps) - 1           # offset - onset < 500 ms
        fall_min = max(1, _frames(max(0.04, 0.6 * rise / fps), fps))   # offsets are no faster than onsets
        total = min(max(_frames(u(cfg.micro_total_s), fps), rise + fall_min), longest)
        amp = amplitude if amplitude is not None else u(cfg.micro_amplitude)
    elif kind == "macro":
        rise = max(1, _frames(u(cfg.macro_rise_s), fps))
        hold = _frames(u(cfg.macro_hold_s), fps)
        total = rise + hold + max(1, _frames(u(cfg.macro_fall_s), fps))
        total = max(total, math.floor(0.55 * fps) + 1)
        amp = amplitude if amplitude is not None else u(cfg.macro_amplitude)
    else:
        rise = max(1, _frames(u(cfg.blink_close_s), fps))
        total = min(max(rise + max(1, _frames(u(cfg.blink_open_s), fps)), math.ceil(0.1 * fps)),
                    math.floor(0.3 * fps))
        amp = amplitude if amplitude is not None else u(cfg.blink_closure)
    if kind == "blink":
        label, aus, sides = None, (("AU45", 1.0),), (1.0, 1.0)
    else:
        label = label if label is not None else DEMO_3[int(rng.integers(len(DEMO_3)))]
        aus, sides = sample_aus(label, rng), sample_sides(rng)
    return EventPlan(kind, label, onset_frame, onset_frame + rise, hold, onset_frame + total, float(amp), aus, sides)


MODES = ("mixed", "micro", "distractors", "none")


def schedule_events(n_frames: int, fps: float, rng: np.random.Generator, events: str | Sequence = "mixed",
                    cfg: SynthConfig | None = None) -> list[EventPlan]:
    """Non-overlapping events after a neutral LEAD_IN_S, with >= MIN_GAP_S neutral between.

    ``events``: a mode ("mixed" micro+macro+blink, "micro", "distractors" = macro+blink
    only, "none") or a list of EventSpec / dicts (kind, label, onset_t, amplitude)."""
    cfg = cfg or SynthConfig()
    lead, gap = math.ceil(LEAD_IN_S * fps), math.ceil(MIN_GAP_S * fps)
    tail = math.ceil(0.2 * fps)
    plans: list[EventPlan] = []
    if isinstance(events, str):
        if events not in MODES:
            raise ValueError(f"events must be one of {MODES} or a list of EventSpec, got {events!r}")
        weights = {"mixed": cfg.mix, "micro": (1, 0, 0), "distractors": (0, 0.5, 0.5), "none": None}[events]
        if weights is None:
            return []
        p = np.asarray(weights, float) / sum(weights)
        f = lead + int(rng.integers(0, max(1, fps // 2)))
        while True:
            kind = KINDS[int(rng.choice(3, p=p))]
            plan = sample_event(kind, None, f, fps, rng, cfg)
            if plan.offset_frame > n_frames - 1 - tail:
                return plans
            plans.append(plan)
            f = plan.offset_frame + gap + _frames(float(rng.uniform(*cfg.gap_extra_s)), fps)
    f = lead
    for i, spec in enumerate(events):
        spec = EventSpec(**spec) if isinstance(spec, dict) else spec
        start = f if spec.onset_t is None else _frames(spec.onset_t, fps)
        if start < f:
            raise ValueError(
                f"event {i} ({spec.kind}) starts at frame {start} ({start / fps:.3f} s) but must start at or after "
                f"frame {f} ({f / fps:.3f} s): keep {LEAD_IN_S} s neutral at the start and {MIN_GAP_S} s between events"
            )
        plan = sample_event(spec.kind, spec.label, start, fps, rng, cfg, spec.amplitude)
        if plan.offset_frame > n_frames - 1:
            raise ValueError(
                f"event {i} ({spec.kind}) ends at frame {plan.offset_frame}, after the clip's last frame "
                f"{n_frames - 1}: make the clip longer or start the event earlier"
            )
        plans.append(plan)
        f = plan.offset_frame + gap
    return plans
