"""One run against its ground truth, event by event (realtime.evaluate.scoring.compare_to_truth):
the lines that end run_live.py's summary."""
from __future__ import annotations

import json

import pytest

from core.events import Event, GroundTruth
from realtime.evaluate.scoring import compare_to_truth

FPS = 100.0


def truth(kind, onset, apex, offset, label=None):
    return GroundTruth(onset_frame=onset, apex_frame=apex, offset_frame=offset, kind=kind, label=label, fps=FPS,
                       onset_t=onset / FPS, apex_t=apex / FPS, offset_t=offset / FPS)


def event(kind, onset, apex, offset, label=None):
    return Event(source="clip.mp4", fps=FPS, onset_frame=onset, apex_frame=apex, offset_frame=offset,
                 onset_t=onset / FPS, apex_t=apex / FPS, offset_t=offset / FPS, kind=kind, label=label,
                 finalised_t=offset / FPS)


TRUTH = [truth("micro", 250, 273, 293, "surprise"), truth("blink", 400, 408, 415),
         truth("micro", 600, 620, 640, "positive"), truth("micro", 800, 815, 830, "negative")]


def test_hit_with_right_label_and_apex_error():
    c = compare_to_truth([event("micro", 255, 274, 292, "surprise")], TRUTH[:2], FPS)
    hit, blink = c.outcomes
    assert hit.status == "hit" and hit.label_right is True
    assert hit.iou == pytest.approx(38 / 44) and hit.apex_error_ms == pytest.approx(10.0)
    assert blink.status == "distractor-ignored"
    assert c.false_alarms == [] and (c.score.tp, c.score.fp, c.score.fn) == (1, 0, 0)
    text = c.format("clip.gt.jsonl")
    assert text.splitlines()[0].startswith("== ground truth: clip.gt.jsonl")
    assert "2.50-2.73-2.93 s: spotted (IoU 0.86, apex +10 ms), label surprise (right)" in text
    assert "false alarms: none" in text and "spotted 1 of 1 true expressions, 0 false alarms, F1 1.00" in text
    assert len(text.splitlines()) <= 6


def test_wrong_label_miss_and_false_alarms():
    dets = [event("micro", 250, 270, 290, "negative"),      # hit, wrong label
            event("micro", 500, 510, 520, "positive"),      # nothing there: false alarm
            event("macro", 598, 620, 645, "positive"),      # right place, wrong kind: miss + false alarm
            event("micro", 820, 825, 860, "negative")]      # overlaps 800-830 with IoU 11/61 < 0.5: miss + false alarm
    c = compare_to_truth(dets, TRUTH, FPS)
    s1, blink, s2, s3 = c.outcomes
    assert s1.status == "hit" and s1.label_right is False and s1.apex_error_ms == pytest.approx(-30.0)
    assert blink.status == "distractor-ignored"
    assert s2.status == "missed" and "spotted as macro" in s2.note
    assert s3.status == "missed" and "IoU 0.18" in s3.note
    assert [d.onset for d in c.false_alarms] == [500, 598, 820]
    assert (c.score.tp, c.score.fp, c.score.fn) == (1, 3, 2) and c.score.label_hits == [False]
    text = c.format()
    assert "label negative (wrong)" in text and text.count("MISSED") == 2
    assert "false alarms 3: micro positive at 5.10 s; macro positive at 6.20 s; micro negative at 8.25 s" in text
    assert "spotted 1 of 3 true expressions, 3 false alarms" in text and "labels right on 0 of 1" in text


def test_blink_reported_as_an_expression_is_a_false_alarm():
    c = compare_to_truth([event("micro", 402, 408, 416)], TRUTH[1:2], FPS)
    (blink,) = c.outcomes
    assert blink.status == "distractor-reported" and blink.detection.kind == "micro"
    assert len(c.false_alarms) == 1 and c.score.fp == 1 and c.score.fn == 0
    text = c.format()
    assert "reported as a micro expression" in text and "F1 0.00" in text


def test_unlabelled_hits_and_events_after_the_end_of_the_run():
    c = compare_to_truth([event("micro", 250, 273, 293)], TRUTH, FPS, until_frame=500)
    assert [o.status for o in c.outcomes] == ["hit", "distractor-ignored", "beyond-end", "beyond-end"]
    assert c.outcomes[0].label_right is None
    assert (c.score.tp, c.score.fp, c.score.fn) == (1, 0, 0)
    text = c.format()
    assert "no label (spotting only)" in text and text.count("after the last processed frame") == 2
    json.dumps(c.to_dict())   # JSON-ready for --summary-json


def test_nothing_true_and_nothing_found():
    c = compare_to_truth([], [], FPS)
    assert c.outcomes == [] and c.false_alarms == []
    assert "spotted 0 of 0 true expressions, 0 false alarms, F1 -" in c.format()
    with pytest.raises(ValueError):
        compare_to_truth([], [], 0)
