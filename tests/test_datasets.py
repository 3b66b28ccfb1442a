"""Dataset loaders on fixture trees that mimic each release (tests/fixtures_datasets.py)."""
from __future__ import annotations

from collections import Counter

import cv2
import numpy as np
import pandas as pd
import pytest

import fixtures_datasets as fx
from core.face import ensure_bgr
from train import datasets as D
from train.datasets import DatasetError, load_dataset


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    base = tmp_path_factory.mktemp("releases")
    return {
        "casme2": fx.make_casme2(base / "casme2"),
        "samm": fx.make_samm(base / "samm"),
        "smic": fx.make_smic(base / "smic"),
        "casme3": fx.make_casme3(base / "casme3"),
        "composite": fx.make_composite(base / "composite"),
        "folder": fx.make_folder(base / "folder"),
        "folder_positions": fx.make_folder(base / "folder_positions", numbered=False),
    }


def by_clip(samples):
    return {s.clip if s.dataset != "casme3" else s.sample: s for s in samples}


def problem_at(report, row, column=None):
    hits = [p for p in report.problems if p.row == row and (column is None or p.column == column)]
    assert hits, f"no problem reported at row {row} column {column}: {report.problems}"
    return hits[0]


# ----------------------------------------------------------------------------- CASME II

def test_casme2_counts_mapping_and_frames(trees):
    samples, report = load_dataset("casme2", trees["casme2"].root)
    assert len(samples) == 7 and report.rows == 10
    assert report.class_counts == Counter(happiness=2, disgust=1, repression=1, surprise=1, others=1)
    assert report.left_out == Counter(fear=1)
    assert report.dropped == Counter({"missing frame file": 1, "unknown label": 1, "unparsable cell": 1})
    assert {s.subject for s in samples} == {"casme2/sub01", "casme2/sub02", "casme2/sub05"}
    s = by_clip(samples)["EP02_01f"]
    assert (s.onset, s.apex, s.offset, s.kind, s.label) == (46, 52, 55, "micro", "happiness")
    assert s.frame_path(46).name == "img46.jpg" and s.frame_path(46).is_file()
    assert s.frames_dir.parts[-3:] == ("CASME2-RAW", "sub01", "EP02_01f")
    assert s.pair == (46, 52)
    assert by_clip(samples)["EP05_03"].label is None          # fear: left out, kept for pre-training
    text = str(report)
    assert "casme2/sub01" in text and "dropped 3" in text and "fear 1" in text


def test_casme2_awkward_rows_name_file_row_column(trees):
    fix = trees["casme2"]
    samples, report = load_dataset("casme2", fix.root)
    sheet = "CASME2-coding-20140508.xlsx"
    apex = problem_at(report, fix.rows["apex_slash"], "ApexFrame")
    assert apex.severity == "note" and apex.file == sheet and "middle frame 104" in apex.message
    s = by_clip(samples)["EP03_02"]
    assert s.apex == 104 and s.apex_imputed           # "/" -> middle of 100..109 (tie -> earlier)
    miss = problem_at(report, fix.rows["missing_frame"], "OnsetFrame")
    assert miss.severity == "error" and miss.reason == "missing frame file" and "EP07_01" in miss.message
    unk = problem_at(report, fix.rows["unknown_label"], "Estimated Emotion")
    assert unk.severity == "error" and "angry" in unk.message
    bad = problem_at(report, fix.rows["non_numeric"], "OnsetFrame")
    assert bad.reason == "unparsable cell" and "8O" in bad.message
    out = problem_at(report, fix.rows["apex_outside"], "ApexFrame")
    assert out.severity == "warning" and "EP10_01" in by_clip(samples)
    assert str(miss).startswith(f"{sheet}, row {fix.rows['missing_frame']}, column 'OnsetFrame'")


def test_casme2_strict_raises_on_first_problem(trees):
    with pytest.raises(DatasetError, match=r"row 8, column 'OnsetFrame'"):
        load_dataset("casme2", trees["casme2"].root, strict=True)


def test_casme2_cropped_variant_and_composite_map(trees):
    samples, _ = D.load_casme2(trees["casme2"].root, variant="cropped")
    assert by_clip(samples)["EP02_01f"].frame_path(46).name == "reg_img46.jpg"
    samples, report = D.load_casme2(trees["casme2"].root, "composite")
    labels = {c: s.label for c, s in by_clip(samples).items()}
    assert labels == {"EP02_01f": "positive", "EP03_02": "negative", "EP04_01": "negative", "EP01_01": "surprise",
                      "EP05_03": None, "EP06_01": None, "EP10_01": "positive"}


def test_csv_copy_of_a_sheet_reads_the_same(trees, tmp_path):
    fix = trees["casme2"]
    df = pd.read_excel(fix.sheet, header=None, dtype=object)
    csv_path = tmp_path / "coding.csv"
    df.to_csv(csv_path, header=False, index=False)
    a, ra = D.load_casme2(fix.root)
    b, rb = D.load_casme2(fix.root, sheet=csv_path)
    assert [(s.subject, s.sample, s.onset, s.apex, s.offset, s.label) for s in a] == \
           [(s.subject, s.sample, s.onset, s.apex, s.offset, s.label) for s in b]
    assert [(p.row, p.column, p.reason) for p in ra.problems] == [(p.row, p.column, p.reason) for p in rb.problems]


# ----------------------------------------------------------------------------- SAMM

def test_samm_notes_block_counts_and_awkward_rows(trees):
    fix = trees["samm"]
    samples, report = load_dataset("samm", fix.root)
    assert any(f"header row {fix.rows['header']}" in n for n in report.notes)
    assert len(samples) == 7
    assert report.class_counts == Counter(anger=1, contempt=1, happiness=1, surprise=1, other=1)
    assert sorted(report.left_out) == ["Disgust", "Fear"]
    assert {s.subject for s in samples} == {"samm/006", "samm/007", "samm/011"}
    s = by_clip(samples)["006_1_2"]
    assert s.frame_path(5562).name == "006_05562.jpg"
    assert problem_at(report, fix.rows["apex_minus1"], "Apex Frame").severity == "note"
    assert by_clip(samples)["011_2_1"].apex == 604
    miss = problem_at(report, fix.rows["missing_frame"], "Apex Frame")
    assert miss.severity == "error" and "704" in miss.message
    assert problem_at(report, fix.rows["non_numeric"], "Offset Frame").reason == "unparsable cell"
    assert report.dropped == Counter({"missing frame file": 1, "unparsable cell": 1})


def test_samm_greyscale_frames_get_three_equal_channels(trees):
    samples, _ = load_dataset("samm", trees["samm"].root)
    s = samples[0]
    path = s.frame_path(s.onset)
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert raw.ndim == 2                                   # stored greyscale, as SAMM ships
    img = s.read_frame(s.onset)
    assert img.shape == raw.shape + (3,) and img.dtype == np.uint8
    assert np.array_equal(img[..., 0], raw) and np.array_equal(img[..., 1], raw) and np.array_equal(img[..., 2], raw)
    assert np.array_equal(img, ensure_bgr(raw))            # the same call the live path makes


# ----------------------------------------------------------------------------- SMIC-HS

def test_smic_class_from_folder_middle_apex_reg_frames(trees):
    samples, report = load_dataset("smic", trees["smic"].root)
    assert len(samples) == 7
    assert report.class_counts == Counter(negative=3, positive=2, surprise=2)
    assert {s.subject for s in samples} == {"smic/s1", "smic/s2", "smic/s3"}
    s = by_clip(samples)["s1_ne_01"]
    assert (s.onset, s.apex, s.offset) == (302424, 302427, 302431) and s.apex_imputed
    assert s.frame_path(302424).name == "image302424.bmp"
    assert "HS" in s.frames_dir.parts                        # never the VIS tree
    assert by_clip(samples)["s2_ne_02"].frame_path(302424).name == "reg_image302424.bmp"
    reasons = {p.file.split("/")[-1]: p.reason for p in report.errors}
    assert reasons == {"s3_ha_01": "unknown label", "s3_ne_03": "empty clip folder"}
    assert any("non_micro" in n for n in report.notes)


# ----------------------------------------------------------------------------- CAS(ME)^3

def test_casme3_micro_macro_and_pseudo_apex(trees):
    fix = trees["casme3"]
    samples, report = load_dataset("casme3", fix.root)
    micro = [s for s in samples if s.kind == "micro"]
    macro = [s for s in samples if s.kind == "macro"]
    assert len(micro) == 6 and len(macro) == 4
    assert report.class_counts == Counter(positive=1, negative=3, surprise=1)
    assert report.left_out == Counter(others=1)
    names = {(s.subject, s.sample, s.kind): s for s in samples}
    assert ("casme3/spNO.1", "a_2", "micro") in names and ("casme3/spNO.1", "a_12", "micro") in names
    m = names[("casme3/spNO.1", "a_0", "macro")]
    # the paper's pseudo-apex: the 5th frame counting the onset as the 1st (onset + 4)
    assert m.pair == (0, 4) and m.frames_dir.name == "color" and m.frame_path(4).name == "4.jpg"
    assert m.training_pair(5) == (0, 5) and m.training_pair(2) == (0, 2)
    assert names[("casme3/spNO.3", "c_15", "macro")].pair == (15, 18)        # capped at the offset
    grumpy = names[("casme3/spNO.3", "c_2", "macro")]
    assert grumpy.label is None and grumpy.raw_label == "grumpy"
    assert problem_at(report, fix.rows["macro_unknown"], "emotion").severity == "warning"
    assert problem_at(report, fix.rows["missing_frame"], "Onset").severity == "error"
    # A clip shared by several events is indexed once.
    assert names[("casme3/spNO.1", "a_2", "micro")].frames is names[("casme3/spNO.1", "a_12", "micro")].frames


# ----------------------------------------------------------------------------- composite

def test_composite_three_classes_and_subject_prefixes(trees):
    samples, report = load_dataset("composite", trees["composite"].root)
    per = {ds: Counter(s.label for s in samples if s.dataset == ds and s.label) for ds in ("casme2", "samm", "smic")}
    assert per == {"casme2": Counter(negative=2, positive=2, surprise=1),
                   "samm": Counter(negative=4, positive=1, surprise=1),
                   "smic": Counter(negative=3, positive=2, surprise=2)}
    assert report.class_counts == Counter(negative=9, positive=5, surprise=4)
    assert all(s.subject.startswith(s.dataset + "/") for s in samples)
    assert len({s.subject for s in samples}) == 9
    assert sorted(report.parts) == ["casme2", "samm", "smic"]
    assert sum(report.dropped.values()) == 7
    assert all("not checked" in line for line in report.count_check)   # partial releases
    samm = {s.clip: s.label for s in samples if s.dataset == "samm"}
    assert samm["007_6_1"] == "negative" and samm["011_2_1"] == "negative" and samm["007_5_2"] is None


def test_composite_count_check_warns_with_differences(trees):
    root = trees["composite"].root
    roots = {"casme2": root / "CASME2", "samm": root / "SAMM", "smic": root / "SMIC"}
    with pytest.warns(UserWarning, match="published"):
        samples, report = D.load_composite(roots, check_counts=True)
    diffs = D.composite_count_differences(samples)
    assert "samples 5 (published 145, -140)" in diffs["casme2"]
    assert any(line.startswith("smic:") and "negative 3 (published 70, -67)" in line for line in report.count_check)


# ----------------------------------------------------------------------------- folder + CSV

def test_folder_numbers_blank_apex_and_macro(trees):
    fix = trees["folder"]
    samples, report = load_dataset("folder", fix.root)
    assert len(samples) == 4 and report.classes == ("negative", "positive", "surprise")
    s = {(x.subject, x.clip): x for x in samples}
    a1 = s[("custom/alice", "clip1")]
    assert (a1.onset, a1.apex, a1.offset) == (1, 4, 8) and a1.frame_path(1).name == "frame_0001.jpg"
    a2 = s[("custom/alice", "clip2")]
    assert a2.apex == 4 and a2.apex_imputed
    assert problem_at(report, fix.rows["blank_apex"], "apex").severity == "note"
    mac = s[("custom/bob", "clip2")]
    assert mac.kind == "macro" and mac.pair == (1, 5)          # onset 1 + 4: the 5th frame from the onset
    assert any("numbers in the file names" in n for n in report.notes)


def test_folder_positions_and_protocols(trees, tmp_path):
    samples, report = D.load_folder(trees["folder_positions"].root)
    a1 = [s for s in samples if s.clip == "clip1" and s.subject == "custom/alice"][0]
    assert (a1.onset, a1.apex, a1.offset) == (0, 3, 7) and a1.frame_path(0).name == "framea.jpg"
    assert any("0-based positions" in n for n in report.notes)
    samples, report = D.load_folder(trees["folder"].root, "demo", name="lab")
    assert {s.subject for s in samples} == {"lab/alice", "lab/bob"} and {s.dataset for s in samples} == {"lab"}
    _, report = D.load_folder(trees["folder"].root, "samm")
    # samm's classes lack negative/positive: micro rows are dropped, the macro row kept unlabelled
    assert report.dropped["unknown label"] == 2 and all(p.column == "label" for p in report.errors)
    assert [p.row for p in report.warnings] == [5]


# ----------------------------------------------------------------------------- pieces

@pytest.mark.parametrize("cell, expected", [
    (46, 46), (46.0, 46), ("46", 46), (" 46 ", 46), ("46.0", 46), ("/", None), ("", None), (None, None),
    (float("nan"), None), (-1, None), ("-1", None), ("n/a", None),
])
def test_parse_frame_number(cell, expected):
    assert D.parse_frame_number(cell) == expected


@pytest.mark.parametrize("cell", ["8O", "46.5", "-3", "abc"])
def test_parse_frame_number_rejects(cell):
    with pytest.raises(ValueError):
        D.parse_frame_number(cell)


def test_middle_and_pseudo_apex():
    assert D.middle_frame(range(100, 110), 100, 109) == 104
    assert D.middle_frame([10, 12, 20], 10, 20) == 12
    assert D.PSEUDO_APEX_STEP == 4                                      # frames 3,4,5,6,7: 7 is the 5th
    assert D.pseudo_apex_frame(list(range(30)), 3, 20) == 7
    assert D.pseudo_apex_frame(list(range(30)), 15, 18) == 18
    assert D.pseudo_apex_frame([0, 2, 4, 6, 8, 10, 12], 2, 12) == 10     # 5th frame on disk, not number + 4
    assert D.pseudo_apex_frame(list(range(30)), 3, 20, step=5) == 8
    with pytest.raises(ValueError, match="step"):
        D.pseudo_apex_frame(list(range(30)), 3, 20, step=0)
    assert D.trailing_number("006_05562.jpg") == 5562 and D.trailing_number("reg_img46.jpg") == 46


def test_missing_column_names_file_and_header_row(tmp_path):
    p = fx.write_xlsx(tmp_path / "sheet.xlsx", [["notes"], [], ["Subject", "Filename", "Onset Frame", "Offset Frame",
                                                                "Estimated Emotion"], [6, "006_1_2", 1, 9, "Anger"]])
    with pytest.raises(DatasetError, match=r"sheet.xlsx: header row 3 lacks required column.*apexframe"):
        D.read_sheet(p, ["subject", "filename", "onset", "apex", "offset", "emotion"],
                     ["subject", "filename", "onset", "apex", "offset", "emotion"])
    with pytest.raises(DatasetError, match="xlrd"):
        (tmp_path / "old.xls").write_bytes(b"\xd0\xcf\x11\xe0not really")
        D.read_sheet(tmp_path / "old.xls", ["subject"], ["subject"])


def test_load_dataset_rejects_bad_names(trees):
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset("casme9", trees["casme2"].root)
    with pytest.raises(DatasetError, match="not defined for smic"):
        load_dataset("smic", trees["smic"].root, protocol="casme2")
    with pytest.raises(DatasetError, match="no SAMM frame folder"):
        load_dataset("samm", trees["smic"].root)


def test_cli_prints_report(trees, capsys):
    assert D.main(["--dataset", "samm", "--root", str(trees["samm"].root)]) == 0
    out = capsys.readouterr().out
    assert "samm/006" in out and "row 21, column 'Apex Frame'" in out


def test_synthetic_macro_pseudo_apex_matches_the_loaders():
    """train.synth renders its macro pairs at the same pseudo-apex as the loaders: onset + 4 frames at 30 fps."""
    from train.synth.config import SynthConfig

    cfg = SynthConfig()
    assert cfg.macro_pseudo_apex_frames == D.PSEUDO_APEX_STEP == 4
    assert cfg.macro_pseudo_apex_s == pytest.approx(4 / 30)
