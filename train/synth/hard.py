"""The hard set: what real footage does (talking, head and eye movements, light, tiny MEs).

Owns ``schedule_hard`` (the events of one hard clip, or of a talking-only or lighting-only
distractor clip: an expression track from frame 0 with MEs in the pauses after speech,
distractors placed over it and kept HardConfig.me_clear_s clear of every ME),
``make_hard_clip`` (those tracks rendered by track_render through HardConfig.camera, a
webcam) and ``write_hard_clip`` (the same through output.write_rendered).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Iterator

import numpy as np

from core.events import GroundTruth
from train.synth.camera import _check_size
from train.synth.config import HARD_SECONDS, HARD_TYPES, HardConfig
from train.synth.output import write_rendered
from train.synth.rig import face_rig
from train.synth.timing import _frames
from train.synth.track_render import _render_tracks
from train.synth.tracks import (
    MACRO_STYLES,
    Track,
    eye_track,
    face_scale,
    gaze_track,
    head_track,
    light_track,
    macro_track,
    micro_track,
    speech_track,
)


def _place(rng: np.random.Generator, duration: int, lo: int, hi: int, avoid: list[tuple[int, int]],
           tries: int = 200) -> int | None:
    """A random onset in [lo, hi - duration] whose interval misses every (a, b) in avoid."""
    if hi - duration <= lo:
        return None
    for _ in range(tries):
        o = int(rng.integers(lo, hi - duration + 1))
        if all(o + duration < a or o > b for a, b in avoid):
            return o
    return None


def schedule_hard(identity: str, n_frames: int, fps: float, rng: np.random.Generator, clip_type: str = "hard",
                  config: HardConfig | None = None, light: bool | None = None) -> tuple[list[Track], str]:
    """The events of one hard clip: (tracks sorted by onset, how the clip starts).

    clip_type "hard": an expression track from frame 0 (talking, a macro-expression, or
    neutral with the head turning at frame 0), then talking segments with an ME in the
    pause after most of them, macro-expressions (at least one held >= 1 s), MEs between;
    over it nods / turns, gaze shifts, winks, blinks and (``light``; None = at random) a
    lighting sweep, all kept ``HardConfig.me_clear_s`` clear of the MEs. "talking": speech from frame 0 with pauses,
    and blinks. "lighting": lighting sweeps only. Neither holds an expression."""
    if clip_type not in HARD_TYPES:
        raise ValueError(f"hard clip type must be one of {HARD_TYPES}, got {clip_type!r}")
    hc = config or HardConfig()
    sc = face_scale(identity)
    u = lambda r: float(rng.uniform(*r))  # noqa: E731
    F = lambda s: _frames(s, fps)  # noqa: E731
    tail = max(1, F(0.2))
    end = n_frames - 1 - tail
    seconds = n_frames / fps
    tracks: list[Track] = []

    def place_all(make, count, avoid, same_kind_gap=0.0):
        for _ in range(count):
            tr = make(0)
            o = _place(rng, tr.offset_frame, 0, end, avoid)
            if o is None:
                continue
            tr = replace(tr, onset_frame=o, apex_frame=tr.apex_frame + o, offset_frame=tr.offset_frame + o)
            tracks.append(tr)
            avoid.append((tr.onset_frame - F(same_kind_gap), tr.offset_frame + F(same_kind_gap)))

    if clip_type == "lighting":
        lights: list[tuple[int, int]] = []
        if rng.random() < 0.5:
            tr = light_track(0, fps, rng, hc)
            if tr.offset_frame <= end:
                tracks.append(tr)
                lights.append((0, tr.offset_frame))
        place_all(lambda o: light_track(o, fps, rng, hc), max(2, round(seconds / 6)) - len(lights), lights, 0.3)
        return sorted(tracks, key=lambda t: (t.onset_frame, t.kind)), "light" if lights else "neutral"

    if clip_type == "talking":
        f = 0
        while end - f > F(0.6):
            tr = speech_track(f, min(F(u(hc.speech_seconds)), end - f), fps, rng, hc, sc)
            if tr is None:
                break
            tracks.append(tr)
            f = tr.offset_frame + 1 + F(u(hc.talk_pause_s))
        eyes: list[tuple[int, int]] = []
        place_all(lambda o: eye_track("blink", o, fps, rng, hc, sc),
                  max(2, round(u(hc.blink_per_min) * seconds / 60)), eyes, 0.3)
        return sorted(tracks, key=lambda t: (t.onset_frame, t.kind)), "speech"

    # --- the expression track (speech, macro, micro), in time order, from frame 0
    start = ("speech", "macro", "head")[int(rng.choice(3, p=np.asarray(hc.start_p) / sum(hc.start_p)))]
    expr: list[Track] = []
    styles = list(rng.permutation(MACRO_STYLES))

    def build(item: str, o: int) -> Track | None:
        if item == "speech":
            return speech_track(o, max(0, min(F(u(hc.speech_seconds)), end - o)), fps, rng, hc, sc)
        if item == "me":
            return micro_track(o, fps, rng, hc, sc)
        style = styles.pop(0) if styles else MACRO_STYLES[int(rng.integers(3))]
        return macro_track(style, o, fps, rng, hc, sc, long=(item == "macro_long"))

    pending = [str(x) for x in rng.permutation(["speech", "speech", "speech", "macro_long", "macro", "me", "me"])]
    prev, prev_me_in_pause = None, False
    f = 0
    if start in ("speech", "macro"):
        tr = build("speech" if start == "speech" else "macro_long" if rng.random() < 0.5 else "macro", 0)
        if tr is not None and tr.offset_frame <= end:
            expr.append(tr)
            f, prev = tr.offset_frame + 1, tr.kind
            if start == "macro" and "macro_long" in pending and tr.offset_frame - tr.onset_frame >= fps:
                pending.remove("macro_long")
    while True:
        if prev == "speech" and rng.random() < hc.me_in_pause_p:
            item = "me"
        elif pending:
            item = pending.pop(0)
        else:
            item = ("speech", "me", "macro")[int(rng.choice(3, p=[0.4, 0.4, 0.2]))]
        in_pause = (prev == "speech" and item == "me") or (prev_me_in_pause and item == "speech")
        o = f + F(u(hc.me_pause_s if in_pause else hc.gap_s)) if prev is not None else f + F(u((0.3, 1.0)))
        tr = build(item, o)
        if tr is None or tr.offset_frame > end:
            break
        expr.append(tr)
        prev_me_in_pause = prev == "speech" and item == "me"
        f, prev = tr.offset_frame + 1, tr.kind
    tracks += expr

    # --- distractors over it, clear of every ME
    busy = [(t.onset_frame - F(hc.me_clear_s), t.offset_frame + F(hc.me_clear_s)) for t in expr if t.kind == "micro"]
    heads = list(busy)
    if start == "head":
        tr = head_track(0, fps, rng, hc, sc, "turn")
        if tr.offset_frame <= end and all(tr.offset_frame < a for a, _ in busy):
            tracks.append(tr)
            heads.append((0, tr.offset_frame + F(0.3)))
    per20 = seconds / 20.0
    place_all(lambda o: head_track(o, fps, rng, hc, sc), max(1, round(u((1, 3)) * per20)), heads, 0.3)
    place_all(lambda o: gaze_track(o, fps, rng, hc, sc), max(1, round(u((1, 3)) * per20)), list(busy), 0.3)
    eyes = list(busy)
    place_all(lambda o: eye_track("wink", o, fps, rng, hc, sc), 1 + int(rng.random() < 0.35), eyes, 0.3)
    place_all(lambda o: eye_track("blink", o, fps, rng, hc, sc),
              max(2, round(u(hc.blink_per_min) * seconds / 60)), eyes, 0.3)
    if light is None:
        light = bool(rng.random() < hc.light_p)
    if light:
        place_all(lambda o: light_track(o, fps, rng, hc), 1 + int(rng.random() < 0.3), list(busy), 0.3)
    return sorted(tracks, key=lambda t: (t.onset_frame, t.kind)), start


def make_hard_clip(identity: str = "sample_video", fps: float = 200.0, seconds: float = HARD_SECONDS,
                   clip_type: str = "hard", size: tuple[int, int] = (640, 480), seed: int = 0,
                   config: HardConfig | None = None, light: bool | None = None,
                   source: str = "") -> tuple[Iterator[np.ndarray], list[GroundTruth], dict]:
    """A hard clip: (lazy frames, ground truth, info: clip_type, start, light).

    Real footage's nuisance on a real face seen through a webcam (HardConfig.camera):
    see schedule_hard for the events. Deterministic for the same arguments."""
    if fps <= 0 or seconds <= 0:
        raise ValueError(f"fps and seconds must be positive, got fps={fps}, seconds={seconds}")
    hc = config or HardConfig()
    size = _check_size(size)
    n = _frames(seconds, fps)
    face_rig(identity)
    tracks, start = schedule_hard(identity, n, fps, np.random.default_rng([seed, 11]), clip_type, hc, light)
    truths = [t.truth(fps, source) for t in tracks]
    frames = _render_tracks(identity, tracks, n, fps, size, [seed, 12], hc.camera, hc.noise_blur,
                            hc.breathing_px, hc.jitter_px)
    info = {"clip_type": clip_type, "start": start, "light": any(t.kind == "light" for t in tracks)}
    return frames, truths, info


def write_hard_clip(path: str | Path, identity: str = "sample_video", fps: float = 200.0,
                    seconds: float = HARD_SECONDS, clip_type: str = "hard", size: tuple[int, int] = (640, 480),
                    seed: int = 0, config: HardConfig | None = None,
                    light: bool | None = None) -> tuple[Path, Path, list[GroundTruth], dict]:
    """Write a hard clip (.avi / .mp4) and its ground truth beside it."""
    video, gt, truths, (info,) = write_rendered(
        path, fps, size,
        lambda source: make_hard_clip(identity, fps, seconds, clip_type, size, seed, config, light, source),
        threaded=True)
    return video, gt, truths, info
