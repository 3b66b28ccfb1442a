"""Issue 16: the spotter announces a PREDICTED apex once the rise levels off, before the
apex is confirmed, and the confirmed apex refines it."""
from __future__ import annotations

import math

import numpy as np

from realtime.stages.spotter import OnlineSpotter

FPS = 200.0


def _bump_updates(predict: bool, rise_s: float = 0.1, fall_s: float = 0.2):
    sp = OnlineSpotter(FPS, predict_apex=predict)
    rng = np.random.default_rng(3)
    out = []
    start = 2.0
    for i in range(int(4 * FPS)):
        t = i / FPS
        u = (t - start) / rise_s if start <= t < start + rise_s else (
            1 - (t - start - rise_s) / fall_s if start + rise_s <= t < start + rise_s + fall_s else None)
        bump = 0.0 if u is None else 1.5 * (0.5 - 0.5 * math.cos(math.pi * u)) if t < start + rise_s else 1.5 * u
        out += sp.update(i, t, 0.05 + 0.005 * rng.random() + bump)
    return out + sp.finish()


def test_predicted_apex_comes_earlier_and_is_refined():
    base = _bump_updates(False)
    pred = _bump_updates(True)
    b_apex = next(u for u in base if u.stage == "apex")
    p_first = next(u for u in pred if u.stage == "apex")
    assert p_first.predicted and not b_apex.predicted
    assert p_first.decided_frame < b_apex.decided_frame                 # decided sooner
    assert abs(p_first.apex_frame - b_apex.apex_frame) <= round(0.02 * FPS)   # within 20 ms of the confirmed apex
    finals = [u for u in pred if u.stage == "final"]
    assert len(finals) == 1 and finals[0].apex_frame == [u for u in base if u.stage == "final"][0].apex_frame
    later = [u for u in pred if u.stage == "apex" and not u.predicted]
    assert all(u.apex_frame != p_first.apex_frame for u in later)      # a refinement only when it moved
