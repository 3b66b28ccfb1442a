"""The online spotter (realtime/spotter.py) on hand-made motion signals.

Signals are a noisy baseline plus raised-cosine bumps (0 at onset, 1 at apex, 0 at
offset), the shape of the motion signal against a frozen neutral reference."""
from __future__ import annotations

import numpy as np
import pytest

from realtime.motion import MotionSample
from realtime.scoring import interval_iou
from realtime.spotter import (
    OnlineSpotter,
    SpotterConfig,
    classify_kind,
    estimate_apex,
    find_onset,
    robust_baseline,
    threshold_for,
)


def bump(n: int, onset: int, apex: int, offset: int) -> np.ndarray:
    i = np.arange(n, dtype=np.float64)
    rise = np.clip((i - onset) / max(1, apex - onset), 0, 1)
    fall = np.clip((i - apex) / max(1, offset - apex), 0, 1)
    env = np.where(i <= apex, 0.5 * (1 - np.cos(np.pi * rise)), 0.5 * (1 + np.cos(np.pi * fall)))
    return np.where((i < onset) | (i > offset), 0.0, env)


def signal(fps: float, seconds: float, events=(), noise: float = 0.02, base: float = 0.15, seed: int = 0):
    """(values, truths): events are (onset_s, rise_ms, fall_ms, amplitude)."""
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


def run(values, fps, **cfg):
    sp = OnlineSpotter(fps, SpotterConfig(**cfg))
    updates, holding = [], []
    for i, x in enumerate(values):
        updates += sp.update(i, i / fps, float(x))
        holding.append(sp.holding)
    return sp, updates, holding


def finals(updates):
    return [u for u in updates if u.stage == "final"]


# ----------------------------------------------------------------------------- pure functions

def test_robust_baseline_ignores_spikes():
    med, sigma = robust_baseline([1.0, 1.0, 2.0, 3.0, 100.0])
    assert med == 2.0
    assert sigma == pytest.approx(1.4826 * 1.0)           # |dev| = 1,1,0,1,98 -> MAD 1
    assert threshold_for(2.0, 0.1, 8.0, 0.25) == pytest.approx(2.8)
    assert threshold_for(2.0, 0.01, 8.0, 0.25) == pytest.approx(2.25)   # the minimum rise wins


def test_find_onset_is_after_the_last_quiet_sample():
    assert find_onset([0.1, 0.1, 0.3, 0.1, 0.4, 0.8, 1.2], level=0.2) == 4
    assert find_onset([0.5, 0.8], level=0.2) == 0


def test_estimate_apex_finds_a_parabola_vertex_between_samples():
    x = np.arange(20, dtype=np.float64)
    v = 5.0 - 0.05 * (x - 9.4) ** 2                        # true vertex at 9.4
    assert estimate_apex(v, baseline=0.0, top=0.8) == pytest.approx(9.4, abs=0.051)
    assert estimate_apex([0.0, 1.0, 0.0], baseline=0.0) == 1.0


def test_classify_kind_in_milliseconds():
    assert classify_kind(0.0, 0.10, 0.40) == "micro"
    assert classify_kind(0.0, 0.10, 0.50) == "micro"       # 500 ms is still micro
    assert classify_kind(0.0, 0.10, 0.52) == "macro"
    assert classify_kind(0.0, 0.30, 0.45) == "macro"       # onset -> apex over 260 ms


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
    assert apex.decided_frame > apex.apex_frame and apex.offset_frame is None
    assert final.decided_frame >= final.offset_frame
    assert final.kind_frame is not None and final.offset_t == pytest.approx(final.offset_frame / fps)
    assert apex.wait_frames == apex.decided_frame - apex.apex_frame
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
    # micro/macro was certain 500 ms after the onset, before the offset decision
    assert final.kind_frame < final.decided_frame


@pytest.mark.parametrize("fps", [200.0, 30.0])
def test_ms_limits_hold_at_any_frame_rate(fps):
    values, truths = signal(fps, 9.0, [(1.5, 150, 250, 1.0),     # 400 ms, rise 150: micro
                                       (3.5, 200, 550, 1.0),     # 750 ms: macro
                                       (6.0, 350, 130, 1.0)])    # 480 ms but rise 350 ms: macro
    _, updates, _ = run(values, fps)
    assert [u.kind for u in finals(updates)] == ["micro", "macro", "macro"]


def test_noise_only_gives_nothing():
    values, _ = signal(200.0, 30.0, noise=0.03, seed=3)
    sp, updates, _ = run(values, 200.0)
    assert updates == []
    assert sp.calibrated and not sp.calibrating


def test_single_frame_spikes_are_not_events():
    values, _ = signal(200.0, 5.0, seed=4)
    values[[400, 700, 701, 900]] += 2.0
    _, updates, _ = run(values, 200.0)
    assert updates == []


def test_calibration_adapts_to_a_noisy_person():
    fps = 200.0
    calm, _ = signal(fps, 6.0, [(3.0, 60, 150, 0.35)], noise=0.02, seed=5)
    noisy, _ = signal(fps, 6.0, [(3.0, 60, 150, 0.35)], noise=0.25, seed=5)
    sp_calm, up_calm, _ = run(calm, fps)
    sp_noisy, up_noisy, _ = run(noisy, fps)
    assert sp_noisy.threshold - sp_noisy.baseline > 4 * (sp_calm.threshold - sp_calm.baseline)
    assert [u.kind for u in finals(up_calm)] == ["micro"]  # small ME on a calm face: found
    assert finals(up_noisy) == []                          # same ME drowned in this person's noise
    # a noisy person's noise alone raises no false alarm, a strong ME is still found
    loud, _ = signal(fps, 20.0, [(12.0, 60, 150, 3.0)], noise=0.25, seed=6)
    _, up_loud, _ = run(loud, fps)
    assert [u.kind for u in finals(up_loud)] == ["micro"]


def test_baseline_follows_slow_drift_outside_events():
    fps = 100.0
    values, _ = signal(fps, 40.0, noise=0.02, seed=7)
    values = values + np.linspace(0.0, 0.3, values.size)  # the noise floor creeps up by 0.3
    sp, updates, _ = run(values, fps)
    assert updates == []
    assert sp.baseline == pytest.approx(values[-500:].mean(), abs=0.05)


def test_no_events_during_calibration_and_recalibrate():
    fps = 200.0
    values, _ = signal(fps, 6.0, [(0.5, 60, 150, 1.0), (4.0, 60, 150, 1.0)], seed=8)
    sp = OnlineSpotter(fps, calibration_s=1.0)
    out = []
    for i, x in enumerate(values):
        if i == int(2.0 * fps):
            sp.recalibrate()
            assert sp.calibrating
        out += sp.update(i, i / fps, float(x))
    [final] = finals(out)                                  # only the event after both calibrations
    assert final.onset_frame > 3.5 * fps


def test_blinks_are_rejected_by_the_eye_region():
    fps = 200.0
    n = int(4 * fps)
    rng = np.random.default_rng(9)
    blink = bump(n, 400, 420, 460)
    value = 0.15 + np.abs(rng.normal(0, 0.02, n)) + 0.6 * blink     # some leak into brows
    eyes = 0.10 + np.abs(rng.normal(0, 0.02, n)) + 3.0 * blink       # the eyelids move a lot
    sp = OnlineSpotter(fps)
    out = []
    for i in range(n):
        s = MotionSample(float(value[i]), {"brows": float(value[i]), "eyes": float(eyes[i]), "mouth": 0.1})
        out += sp.update(i, i / fps, s)
    assert out == []


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


def test_interrupt_drops_the_open_event_and_keeps_calibration():
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
    with pytest.raises(TypeError):
        OnlineSpotter(30, no_such_setting=1)
    sp = OnlineSpotter(30)
    with pytest.raises(ValueError, match="finite"):
        sp.update(0, 0.0, float("nan"))
