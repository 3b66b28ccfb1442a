"""The CAS(ME)^2 and SAMM long-video annotation layouts read by realtime.evaluate.cases."""
from __future__ import annotations

import csv

import pytest

from realtime.evaluate.cases import AnnotationError, load_casme2_annotations, load_samm_annotations


def write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    return path


def test_casme2_release_order_without_header(tmp_path):
    # participant, expression_clip, onset, apex, offset, AUs, emotion, type (the release's order)
    sheet = write_csv(tmp_path / "CAS(ME)^2code_final.csv", [
        [1, "anger1_1", 557, 572, 608, "4+7", "negative", "micro-expression"],
        [1, "anger1_2", 1000, 1020, 0, "4", "negative", "micro-expression"],   # offset not coded: the apex
        [2, "disgust1_1", 300, 320, 290, "9", "disgust", "macro-expression"],   # offset before onset
        [2, "happy1_1", 100, 120, 150, "12", "positive", "blink"],              # not an expression type
        [None, None, None, None, None, None, None, None],                          # empty row: ignored
        [3, None, 10, 20, 30, "", "others", "micro-expression"],                 # no clip name
    ])
    ann = load_casme2_annotations(sheet)
    got = [(a.key, a.onset, a.apex, a.offset, a.kind, a.label, a.row) for a in ann.intervals]
    assert got == [("1_anger1", 557, 572, 608, "micro", "negative", 1),
                   ("1_anger1", 1000, 1020, 1020, "micro", "negative", 2)]
    assert ann.skipped == {"unusable onset/offset": 1, "type 'blink'": 1, "no video name or onset": 1}


def test_samm_layout_with_header_after_notes(tmp_path):
    sheet = write_csv(tmp_path / "SAMM_LongVideos_V1_Release.csv", [
        ["SAMM long videos, notes above the table"],
        [],
        ["Subject", "Filename", "Onset", "Apex", "Offset", "Duration", "Type", "Action Units", "Notes"],
        [6, "006_1_2", 566, 580, 609, 44, "Micro - 1/2", "4", ""],
        [6, "006_1_5", 1200, -1, -1, 0, "Macro", "12", ""],       # no apex, no offset: unusable
        [7, "007_3_1", 40, 55, 0, 0, "Macro", "12", ""],          # offset not coded: the apex
        [7, "007_3_2", 90, 95, 120, 31, "Other", "", ""],
    ])
    ann = load_samm_annotations(sheet)
    got = [(a.key, a.onset, a.apex, a.offset, a.kind, a.row) for a in ann.intervals]
    assert got == [("006_1", 566, 580, 609, "micro", 4), ("007_3", 40, 55, 55, "macro", 6)]
    assert ann.skipped == {"unusable onset/offset": 1, "type 'Other'": 1}


def test_bad_cells_and_files_are_named(tmp_path):
    sheet = write_csv(tmp_path / "cas.csv", [[1, "anger1_1", "five", 572, 608, "", "negative", "micro"]])
    with pytest.raises(AnnotationError, match=r"cas.csv row 1: frame number 'five'"):
        load_casme2_annotations(sheet)
    with pytest.raises(AnnotationError, match="not found"):
        load_samm_annotations(tmp_path / "missing.xlsx")
    no_header = write_csv(tmp_path / "samm.csv", [["a", "b"], [1, 2]])
    with pytest.raises(AnnotationError, match="no header row"):
        load_samm_annotations(no_header)
