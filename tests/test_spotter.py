"""The online spotter (realtime/stages/spotter.py) on hand-made motion signals.

Signals are a noisy calm level plus raised-cosine bumps (0 at onset, 1 at apex, 0 at
offset), the shape of the motion signal against a frozen neutral reference. Amplitudes
are in multiples of the calm level where the test is about sensitivity."""
from __future__ import annotations

import numpy as np
import pytest

from core.events import expression_kind
from realtime.stages.motion import MotionSample
from realtime.evaluate.scoring import interval_iou
from realtime.stages.spotter import (
    NoiseModel,
    OnlineSpotter,
    SpotterConfig,
    calm_levels,
    estimate_apex,
    find_onset,
    settled_offset,
)

BASE = 0.15      # calm level of the hand-made signals, px


def bump(n: int, onset: int, apex: int, offset: int) -> np.ndarray:
    i = np.arange(n, dtype=np.float64)
    rise = np.clip((i - onset) / max(1, apex - onset), 0, 1)
    fall = np.clip((i - apex) / max(1, offset - apex), 0, 1)
    env = np.where(i <= apex, 0.5 * (1 - np.cos(np.pi * rise)), 0.5 * (1 + np.cos(np.pi * fall)))
    return np.where((i < onset) | (i > offset), 0.0, env)


def signal(fps: float, seconds: float, events=(), noise: float = 0.02, base: float = BASE, seed: int = 0):
    """(values, truths): events are (onset_s, rise_ms, fall_ms, amplitude in px)."""
    n = int(round(seconds * fps))
    rng = np.random.default_rng(seed)
    v = base + np.abs(rng.normal(0, noise, n))
    truths = []
    for onset_s, rise_ms, fall_ms, amp in events:
        on = int(round(onset_s * fps))
        ap = on + int(round(rise_ms * fps / 1000))
        off = ap + int(round(fall_ms * fps / 1000))
        v = v + amp * bump(n, on, ap, off)
        truths.append((on, ap, off))
    return v, truths


def run(values, fps, spotter=None, **cfg):
    sp = spotter or OnlineSpotter(fps, SpotterConfig(**cfg))
    updates, holding = [], []
    for i, x in enumerate(values):
        updates += sp.update(i, i / fps, x if isinstance(x, MotionSample) else float(x))
        holding.append(sp.holding)
    return sp, updates, holding


def finals(updates):
    return [u for u in updates if u.stage == "final"]


def samples(brows, mouth, eyes=None, head=None):
    """MotionSamples from per-region arrays (eyes / head default to a calm 0.1 px)."""
    n = len(brows)
    eyes = np.full(n, 0.1) if eyes is None else eyes
    head = np.full(n, 0.1) if head is None else head
    return [MotionSample(float(max(brows[i], mouth[i])), {"brows": float(brows[i]), "nose": 0.1,
                                                          "mouth": float(mouth[i]), "eyes": float(eyes[i]),
                                                          "nose_ref": float(head[i])}) for i in range(n)]


# ----------------------------------------------------------------------------- pure functions

def test_calm_level_is_a_low_quantile_with_a_floor():
    rows = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 0.0], [100.0, 0.0]])
    calm = calm_levels(rows, 0.25, floor=0.01)
    assert calm[0] == pytest.approx(2.0)              # quantile 0.25 of 1, 2, 3, 4, 100
    assert calm[1] == pytest.approx(0.01)             # never below the floor
    with pytest.raises(ValueError):
        calm_levels(np.zeros((0, 2)), 0.2, 0.01)


def test_noise_model_window_and_warm_start():
    m = NoiseModel(10.0, ("a",), window_s=1.0, quantile=0.5, update_every_ms=100, floor=0.0)
    m.warm_start([[5.0]] * 10)
    assert m.warmed and m.calm[0] == pytest.approx(5.0)
    for _ in range(10):                                # the window (10 rows) fills with 1.0
        m.add([1.0])
    assert m.calm[0] == pytest.approx(1.0)


def test_find_onset_is_after_the_last_quiet_sample():
    assert find_onset([0.1, 0.1, 0.3, 0.1, 0.4, 0.8, 1.2], level=0.2) == 4
    assert find_onset([0.5, 0.8], level=0.2) == 0


def test_estimate_apex_finds_a_parabola_vertex_between_samples():
    x = np.arange(20, dtype=np.float64)
    v = 5.0 - 0.05 * (x - 9.4) ** 2                        # true vertex at 9.4
    assert estimate_apex(v, baseline=0.0, top=0.8) == pytest.approx(9.4, abs=0.051)
    assert estimate_apex([0.0, 1.0, 0.0], baseline=0.0) == 1.0


def test_settled_offset_is_where_the_tail_stops_falling():
    v = [9.0, 6.0, 4.0, 3.1, 3.0, 3.05, 2.95, 3.02]
    assert settled_offset(v, fall_start=1, low=6, tol=0.2) == 3


def test_micro_or_macro_rules_in_milliseconds():
    assert expression_kind(0.0, 0.10, 0.40) == "micro"
    assert expression_kind(0.0, 0.10, 0.50) == "micro"               # 500 ms is still micro
    assert expression_kind(0.0, 0.10, 0.52) == "macro"
    assert expression_kind(0.0, 0.35, 0.48) == "micro"               # megc: only the total counts
    assert expression_kind(0.0, 0.10, 0.528, fps=30) == "micro"      # one frame of tolerance at 30 fps
    assert expression_kind(0.0, 0.10, 0.70, rule="casme") == "micro"  # short onset phase
    assert expression_kind(0.0, 0.30, 0.70, rule="casme") == "macro"
    assert expression_kind(0.0, 0.10, 1.00, rule="casme") == "macro"  # 1 s: macro under every rule
    with pytest.raises(ValueError, match="rule"):
        expression_kind(0.0, 0.1, 0.2, rule="nope")


# ----------------------------------------------------------------------------- online behaviour

@pytest.mark.parametrize("fps", [200.0, 30.0])
def test_single_micro_bump(fps):
    values, [(on, ap, off)] = signal(fps, 4.0, [(2.0, 80, 220, 1.0)])
    sp, updates, holding = run(values, fps)
    assert [u.stage for u in updates] == ["apex", "final"]
    apex, final = updates
    assert final.kind == "micro"
    assert apex.onset_frame == final.onset_frame and apex.apex_frame == final.apex_frame
    assert abs(final.apex_frame - ap) <= max(1, round(0.01 * fps))        # within 10 ms (or 1 frame)
    assert interval_iou((final.onset_frame, final.offset_frame), (on, off)) >= 0.7
    assert apex.decided_frame >= apex.apex_frame and apex.offset_frame is None   # >=: a predicted apex
    assert final.decided_frame >= final.offset_frame
    assert final.kind_frame is not None and final.offset_t == pytest.approx(final.offset_frame / fps)
    assert apex.wait_frames == apex.decided_frame - apex.apex_frame
    assert final.peak_score > sp.config.open_ratio and final.calm
    # the reference is held from the threshold crossing to the offset, not before or after
    assert holding[on - 1] is False and holding[ap] is True and holding[-1] is False
    assert not sp.holding and sp.open_event is None


@pytest.mark.parametrize("fps", [200.0, 30.0])
def test_long_bump_is_macro(fps):
    values, [(on, ap, off)] = signal(fps, 5.0, [(2.0, 200, 600, 1.5)])    # 800 ms
    _, updates, _ = run(values, fps)
    [final] = finals(updates)
    assert final.kind == "macro"
    assert interval_iou((final.onset_frame, final.offset_frame), (on, off)) >= 0.6
    # micro/macro was certain once the event outlasted 500 ms, before the offset decision
    assert final.kind_frame < final.decided_frame


@pytest.mark.parametrize("fps", [200.0, 30.0])
def test_rules_hold_at_any_frame_rate(fps):
    events = [(1.5, 150, 250, 1.0),     # 400 ms: micro
              (3.5, 200, 550, 1.0),     # 750 ms: macro
              (6.0, 350, 130, 1.0),     # 480 ms, rise 350 ms: micro (megc), micro (casme: total <= 500)
              (8.5, 120, 680, 1.0)]     # 800 ms, rise 120 ms: macro (megc), micro (casme)
    values, _ = signal(fps, 11.0, events)
    _, updates, _ = run(values, fps)
    assert [u.kind for u in finals(updates)] == ["micro", "macro", "micro", "macro"]
    _, updates, _ = run(values, fps, rule="casme")
    assert [u.kind for u in finals(updates)] == ["micro", "micro", "micro", "micro"]   # rises <= 250 ms


def test_noise_only_gives_nothing():
    values, _ = signal(200.0, 30.0, noise=0.03, seed=3)
    sp, updates, _ = run(values, 200.0)
    assert updates == []
    assert sp.calibrated and not sp.calibrating


def test_single_frame_spikes_are_not_events():
    values, _ = signal(200.0, 5.0, seed=4)
    values[[400, 700, 701, 900]] += 2.0
    sp, updates, _ = run(values, 200.0)
    assert updates == []


def test_an_expressive_start_does_not_blind_the_spotter():
    """The first 2 s move all the time (10-20x the calm level); then the face is calm. A
    micro-expression at 5x the calm level at t = 5 s is found (causal: camera)."""
    fps = 200.0
    values, [(on, ap, off)] = signal(fps, 7.0, [(5.0, 80, 200, 4.0 * BASE)], seed=12)
    rng = np.random.default_rng(13)
    start = int(2.0 * fps)
    values[:start] += BASE * rng.uniform(10, 20, start)       # grimacing / talking from frame 0
    sp, updates, _ = run(values, fps)
    micro = [u for u in finals(updates) if u.kind == "micro"]
    assert [u.onset_frame >= 4.5 * fps for u in micro] == [True]
    assert interval_iou((micro[0].onset_frame, micro[0].offset_frame), (on, off)) >= 0.5
    assert sp.calm["mouth"] < 2 * BASE                       # the calm level came down to the face's


def test_the_threshold_follows_a_noisy_person():
    fps = 200.0
    # the same 0.35 px ME: 2.3x a calm person's level, far below a noisy person's noise
    calm, _ = signal(fps, 6.0, [(3.0, 60, 150, 0.6)], noise=0.02, seed=5)
    noisy, _ = signal(fps, 6.0, [(3.0, 60, 150, 0.6)], noise=0.6, base=0.6, seed=5)
    sp_calm, up_calm, _ = run(calm, fps)
    sp_noisy, up_noisy, _ = run(noisy, fps)
    assert sp_noisy.calm["mouth"] > 4 * sp_calm.calm["mouth"]
    assert [u.kind for u in finals(up_calm)] == ["micro"]  # small ME on a calm face: found
    assert finals(up_noisy) == []                          # same ME drowned in this person's noise
    loud, _ = signal(fps, 20.0, [(12.0, 60, 150, 8.0)], noise=0.6, base=0.6, seed=6)
    _, up_loud, _ = run(loud, fps)
    assert [u.kind for u in finals(up_loud)] == ["micro"]  # a strong ME is still found


def test_one_region_is_judged_against_its_own_calm_level():
    """A real AU12 moves only the mouth corners: 0.25 px over a 0.04 px calm mouth is an
    event even when the brows' noise is ten times larger."""
    fps = 200.0
    n = int(5 * fps)
    rng = np.random.default_rng(14)
    mouth = 0.04 + np.abs(rng.normal(0, 0.005, n)) + 0.25 * bump(n, 600, 620, 660)
    brows = 0.4 + np.abs(rng.normal(0, 0.05, n))
    _, updates, _ = run(samples(brows, mouth), fps)
    [final] = finals(updates)
    assert final.kind == "micro" and abs(final.apex_frame - 620) <= 2


def test_a_recording_warmed_up_ahead_is_analysed_from_its_first_frame():
    """A dataset-style sequence: the ME starts 40 ms in. Causally the spotter is still
    learning the calm level then; with the look-ahead it finds the ME."""
    fps = 200.0
    values, [(on, ap, off)] = signal(fps, 0.6, [(0.04, 70, 200, 1.0)], seed=15)
    sp, updates, _ = run(values, fps)
    assert finals(updates) == [] and sp.finish() == []
    sp = OnlineSpotter(fps)
    sp.warm_start([float(v) for v in values])                # the whole sequence, read ahead
    _, updates, _ = run(values, fps, spotter=sp)
    [final] = finals(updates + sp.finish())
    assert final.kind == "micro" and abs(final.apex_frame - ap) <= 2
    assert abs(final.onset_frame - on) <= 4


def test_the_offset_is_found_where_the_face_settles_not_at_the_onset_position():
    """A 30 fps ME (rise 100 ms, 495 ms in all) whose face settles 30% above where it
    started (real faces drift): micro, with the offset near the annotated one."""
    fps = 30.0
    n = int(4 * fps)
    rng = np.random.default_rng(16)
    on, ap, off = 60, 63, 75                                  # 2.0 s, +100 ms, +495 ms
    i = np.arange(n)
    env = bump(n, on, ap, off)
    env = np.where(i >= ap, 0.3 + 0.7 * env, env)             # settles at 30% of the rise ...
    env[off:] = 0.3                                           # ... and stays there
    values = BASE + np.abs(rng.normal(0, 0.01, n)) + 1.0 * env
    _, updates, _ = run(values, fps)
    [final] = finals(updates)
    assert final.kind == "micro"
    assert abs(final.offset_frame - off) <= 2 and abs(final.apex_frame - ap) <= 1


def test_blinks_are_rejected_by_the_eye_region_but_a_smile_with_eyes_is_macro():
    fps = 200.0
    n = int(6 * fps)
    rng = np.random.default_rng(9)
    blink = bump(n, 400, 420, 460)
    smile = bump(n, 800, 900, 1100)                                 # 1.5 s AU6+12: the eyes squint
    brows = 0.15 + np.abs(rng.normal(0, 0.02, n)) + 0.6 * blink     # some leak into brows
    mouth = 0.15 + np.abs(rng.normal(0, 0.02, n)) + 3.0 * smile
    eyes = 0.10 + np.abs(rng.normal(0, 0.02, n)) + 3.0 * blink + 3.0 * smile
    sp, updates, _ = run(samples(brows, mouth, eyes), fps)
    assert [u.kind for u in finals(updates)] == ["macro"]
    assert [u.stage for u in updates if u.onset_frame < 500] == []  # the blink was never announced
    assert sp.rejected["blink"] == 1


def test_speech_is_not_a_micro_expression():
    """Talking: bursts of mouth motion 3-5 times a second for seconds on end."""
    fps = 100.0
    n = int(12 * fps)
    rng = np.random.default_rng(17)
    mouth = 0.15 + np.abs(rng.normal(0, 0.02, n))
    f = int(2 * fps)
    while f < n - 50:                                               # syllables from 2 s on
        dur = int(rng.uniform(0.12, 0.3) * fps)
        mouth += rng.uniform(0.6, 2.0) * bump(n, f, f + dur // 3, f + dur)
        f += dur + int(rng.uniform(0.0, 0.08) * fps)
    sp, updates, _ = run(samples(np.full(n, 0.15), mouth), fps)
    assert [u for u in finals(updates) if u.kind == "micro"] == []
    assert sp.rejected["busy"] > 3


def test_head_motion_is_not_a_micro_expression():
    fps = 100.0
    n = int(5 * fps)
    rng = np.random.default_rng(18)
    nod = bump(n, 300, 320, 340)
    head = 0.1 + np.abs(rng.normal(0, 0.01, n)) + 4.0 * nod         # a quick nod
    brows = 0.15 + np.abs(rng.normal(0, 0.02, n)) + 0.8 * nod       # its non-rigid residue
    sp, updates, _ = run(samples(brows, np.full(n, 0.15), head=head), fps)
    assert finals(updates) == [] and sp.rejected["head"] == 1


def test_no_events_during_calibration_and_recalibrate():
    fps = 200.0
    values, _ = signal(fps, 6.0, [(0.2, 60, 150, 1.0), (4.0, 60, 150, 1.0)], seed=8)
    sp = OnlineSpotter(fps, calibration_s=0.5)
    out = []
    for i, x in enumerate(values):
        if i == int(2.0 * fps):
            sp.recalibrate()
            assert sp.calibrating
        out += sp.update(i, i / fps, float(x))
    [final] = finals(out)                                  # only the event after both warm-ups
    assert final.onset_frame > 3.5 * fps


def test_finish_closes_an_event_at_the_end_of_the_stream():
    fps = 200.0
    values, _ = signal(fps, 2.3, [(2.0, 60, 400, 1.0)], seed=10)   # cut before its offset
    sp, updates, _ = run(values, fps)
    tail = sp.finish()
    stages = [u.stage for u in updates + tail]
    assert stages == ["apex", "final"] and tail[-1].stage == "final"
    assert tail[-1].offset_frame == len(values) - 1
    assert sp.finish() == []


def test_finish_drops_an_event_still_rising_at_the_end_of_the_stream():
    """Cut off before its apex: neither apex nor kind is known, and nothing was announced."""
    fps = 200.0
    values, _ = signal(fps, 2.1, [(2.0, 200, 300, 1.0)], seed=11)   # still rising at the last frame
    sp, updates, holding = run(values, fps)
    assert holding[-1] and updates == []              # an event was open, its apex unconfirmed
    assert sp.finish() == [] and not sp.holding


def test_interrupt_drops_the_open_event_and_keeps_the_noise_model():
    fps = 200.0
    values, _ = signal(fps, 3.0, [(2.0, 100, 200, 1.0)], seed=11)
    sp = OnlineSpotter(fps)
    for i, x in enumerate(values[: int(2.06 * fps)]):
        sp.update(i, i / fps, float(x))
    assert sp.holding and sp.open_event is not None
    assert sp.open_event.onset_frame <= sp.open_event.peak_frame
    sp.interrupt()
    assert not sp.holding and sp.calibrated


def test_bad_settings_and_values_are_refused():
    with pytest.raises(ValueError, match="fps"):
        OnlineSpotter(0)
    with pytest.raises(ValueError, match="offset_level"):
        OnlineSpotter(30, offset_level=0.9, apex_drop=0.5)
    with pytest.raises(ValueError, match="onset_ratio"):
        OnlineSpotter(30, onset_ratio=5.0, open_ratio=4.0)
    with pytest.raises(ValueError, match="rule"):
        OnlineSpotter(30, rule="samm")
    with pytest.raises(TypeError):
        OnlineSpotter(30, no_such_setting=1)
    sp = OnlineSpotter(30)
    with pytest.raises(ValueError, match="finite"):
        sp.update(0, 0.0, float("nan"))
