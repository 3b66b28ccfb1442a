"""MEGC interval scoring (realtime/evaluate/scoring.py) against hand-computed figures."""
from __future__ import annotations

import pytest

from core.events import GroundTruth
from realtime.evaluate.scoring import (
    Interval,
    SpotScore,
    as_interval,
    interval_iou,
    match_intervals,
    pool,
    precision_recall_f1,
    score_intervals,
)


def test_iou_counts_frames_inclusively():
    assert interval_iou((0, 9), (0, 9)) == 1.0
    # [0,9] and [5,14]: 5 shared frames (5..9), 15 in the union (0..14)
    assert interval_iou((0, 9), (5, 14)) == pytest.approx(5 / 15)
    # touching at one frame: 1 / 20
    assert interval_iou((0, 9), (9, 18)) == pytest.approx(1 / 19)
    assert interval_iou((0, 9), (10, 19)) == 0.0
    # nested: [2,5] inside [0,9] -> 4 / 10
    assert interval_iou((2, 5), (0, 9)) == pytest.approx(0.4)


def test_hit_needs_iou_of_one_half():
    truth = [Interval(100, 199)]                           # 100 frames
    assert len(match_intervals([Interval(150, 249)], truth).pairs) == 0   # 50 / 150 = 0.33
    assert len(match_intervals([Interval(100, 149)], truth).pairs) == 1   # 50 / 100 = 0.5 exactly
    assert len(match_intervals([Interval(100, 148)], truth).pairs) == 0   # 49 / 100


def test_each_true_interval_is_matched_once():
    truth = [Interval(100, 199)]
    dets = [Interval(100, 199), Interval(105, 195), Interval(300, 320)]
    m = match_intervals(dets, truth)
    assert m.pairs == [(0, 0, 1.0)]                        # the best IoU wins
    assert m.false_positives == [1, 2] and m.false_negatives == []


def test_greedy_matching_prefers_the_best_overlap():
    truth = [Interval(0, 99), Interval(60, 159)]
    dets = [Interval(55, 155)]                             # IoU 45/160 with the first, 96/105 with the second
    m = match_intervals(dets, truth)
    assert [(i, j) for i, j, _ in m.pairs] == [(0, 1)]
    assert m.false_negatives == [0]


def test_f1_precision_recall_by_hand():
    assert precision_recall_f1(3, 1, 2) == pytest.approx((0.75, 0.6, 6 / 9))
    assert precision_recall_f1(0, 0, 0) == (None, None, None)   # nothing to find, nothing found
    assert precision_recall_f1(0, 2, 0) == (0.0, None, 0.0)     # a distractor clip with false alarms


def test_score_video_with_apex_error_and_labels():
    fps = 200.0
    truth = [
        GroundTruth(100, 120, 180, "micro", "positive", fps),
        GroundTruth(400, 420, 480, "micro", "negative", fps),
        GroundTruth(700, 760, 900, "macro", "surprise", fps),
        GroundTruth(1000, 1010, 1040, "blink", None, fps),
    ]
    dets = [
        {"onset_frame": 102, "apex_frame": 122, "offset_frame": 175, "kind": "micro", "label": "positive"},
        {"onset_frame": 405, "apex_frame": 417, "offset_frame": 470, "kind": "micro", "label": "positive"},
        {"onset_frame": 1000, "apex_frame": 1010, "offset_frame": 1040, "kind": "micro", "label": None},
        {"onset_frame": 705, "apex_frame": 765, "offset_frame": 880, "kind": "macro", "label": "surprise"},
    ]
    micro = score_intervals(dets, truth, fps, "micro")
    assert (micro.tp, micro.fp, micro.fn) == (2, 1, 0)     # the blink detection is a false positive
    assert micro.apex_errors_ms == pytest.approx([10.0, -15.0])   # +2 frames, -3 frames at 200 fps
    assert micro.label_hits == [True, False]
    s = micro.summary()
    assert s["f1"] == pytest.approx(0.8) and s["precision"] == pytest.approx(2 / 3, abs=1e-4) and s["recall"] == 1.0
    assert s["apex_error_ms_median"] == pytest.approx(12.5)
    assert s["apex_within_share"] == pytest.approx(0.5)
    assert s["label_accuracy"] == pytest.approx(0.5)

    macro = score_intervals(dets, truth, fps, "macro")
    assert (macro.tp, macro.fp, macro.fn) == (1, 0, 0)
    both = score_intervals(dets, truth, fps, "all")
    assert (both.tp, both.fp, both.fn) == (3, 1, 0)


def test_kinds_are_matched_separately():
    truth = [Interval(100, 199, 120, "micro")]
    dets = [Interval(100, 199, 120, "macro")]              # right place, wrong kind
    assert (lambda s: (s.tp, s.fp, s.fn))(score_intervals(dets, truth, 30, "micro")) == (0, 0, 1)
    assert (lambda s: (s.tp, s.fp, s.fn))(score_intervals(dets, truth, 30, "macro")) == (0, 1, 0)


def test_pooling_sums_counts_not_f1():
    a = SpotScore(tp=1, fp=0, fn=0, apex_errors_ms=[5.0])
    b = SpotScore(tp=0, fp=0, fn=3)
    p = pool([a, b])
    assert (p.tp, p.fp, p.fn) == (1, 0, 3)
    assert p.f1 == pytest.approx(2 / 5)                    # not the mean of 1.0 and 0.0
    assert p.apex_errors_ms == [5.0]


def test_bad_inputs_say_what_is_wrong():
    with pytest.raises(ValueError, match="kind"):
        score_intervals([], [], 30, "blink")
    with pytest.raises(ValueError, match="fps"):
        score_intervals([], [], 0, "micro")
    with pytest.raises(ValueError, match="before its onset"):
        Interval(10, 5)
    with pytest.raises(ValueError, match="onset_frame"):
        as_interval({"apex_frame": 3})
