"""engines.predict: classify pre-cut samples (image pairs, sample folders, CSV of pairs).

Real frames of the bundled face video are written to PNG and classified through the CLI;
the probabilities must equal Recognizer.predict on the same aligned crops.
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from engines.predict import PredictInputError, collect_samples, main
from engines.quantize import video_pairs
from engines.recognizer import Recognizer
from test_engines import make_checkpoint  # the same informative random-weight checkpoint

ROOT = Path(__file__).resolve().parents[1]
ONSET_FRAME, APEX_FRAME = 10, 16
CLASSES = ("negative", "positive", "surprise")
COLUMNS = ["sample", "onset", "apex", "label", *[f"p_{c}" for c in CLASSES], "error"]


# engine caches in the session's folder, never the user's (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("cache_dir")


def read_frames(path, indices):
    cap = cv2.VideoCapture(str(path))
    frames, i = {}, 0
    while len(frames) < len(indices):
        ok, frame = cap.read()
        if not ok:
            break
        if i in indices:
            frames[i] = frame
        i += 1
    cap.release()
    return [frames[i] for i in indices]


@pytest.fixture(scope="module")
def data(tmp_path_factory, asset):
    """samples/<name>/{onset,apex}.png from real frames, plus a no-face sample and the checkpoint."""
    root = tmp_path_factory.mktemp("predict")
    onset, apex = read_frames(asset("single_face.mp4"), [ONSET_FRAME, APEX_FRAME])
    (noface,) = read_frames(asset("no_face.mp4"), [0])
    face = root / "samples" / "s01"
    face.mkdir(parents=True)
    cv2.imwrite(str(face / "onset.png"), onset)
    cv2.imwrite(str(face / "apex.png"), apex)
    empty = root / "samples" / "s02_noface"
    empty.mkdir()
    cv2.imwrite(str(empty / "onset.png"), noface)
    cv2.imwrite(str(empty / "apex.jpg"), noface)
    ckpt = make_checkpoint(root / "moext.safetensors", video_pairs(n_pairs=6))
    return {"root": root, "face": face, "noface": empty, "ckpt": ckpt}


@pytest.fixture(scope="module")
def expected(data, asset):
    """Probabilities of Recognizer.predict on the crops aligned the way training does."""
    from core.face import FaceAligner

    onset, apex = (cv2.imread(str(data["face"] / n)) for n in ("onset.png", "apex.png"))
    (c_on, c_ap), _ = FaceAligner().align_sample([onset, apex])
    with Recognizer.load(data["ckpt"], engine="torch") as rec:
        probs = rec.predict(c_on[..., ::-1].copy(), c_ap[..., ::-1].copy())[0]
    return probs, (c_on, c_ap)


def read_csv(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def probs_of(row):
    return np.array([float(row[f"p_{c}"]) for c in CLASSES])


def test_cli_on_real_face_images_writes_probability_csv(data, expected, tmp_path, cache_dir):
    out = tmp_path / "pred.csv"
    env = {**os.environ, "MOEXT_CACHE_DIR": str(cache_dir), "PYTHONPATH": str(ROOT)}
    res = subprocess.run(
        [sys.executable, "-m", "engines.predict", str(data["face"] / "onset.png"), str(data["face"] / "apex.png"),
         "--weights", str(data["ckpt"]), "--device", "cpu", "--out", str(out), "--quiet"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert "1 samples classified, 0 failed (onnxruntime fp32 on cpu)" in res.stderr
    columns, rows = read_csv(out)
    assert columns == COLUMNS and len(rows) == 1
    p = probs_of(rows[0])
    assert p.sum() == pytest.approx(1.0, abs=1e-5)
    assert rows[0]["label"] == CLASSES[int(p.argmax())] and rows[0]["error"] == ""
    assert np.abs(p - expected[0]).max() <= 1e-4  # ONNX Runtime vs eager on the same aligned crops


def test_folder_of_samples_reports_no_face_in_its_row(data, expected, tmp_path):
    out = tmp_path / "pred.csv"
    assert main([str(data["root"] / "samples"), "--weights", str(data["ckpt"]), "--engine", "torch",
                 "--out", str(out), "--quiet"]) == 0
    _, rows = read_csv(out)
    by_name = {r["sample"]: r for r in rows}
    assert set(by_name) == {"s01", "s02_noface"}
    assert np.abs(probs_of(by_name["s01"]) - expected[0]).max() <= 1e-5
    assert "NoFaceError" in by_name["s02_noface"]["error"] and by_name["s02_noface"]["label"] == ""
    assert by_name["s02_noface"]["p_negative"] == ""


def test_csv_of_pairs_with_relative_paths(data, expected, tmp_path):
    pairs = data["root"] / "pairs.csv"
    with open(pairs, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sample", "onset", "apex"])
        w.writerow(["first", "samples/s01/onset.png", "samples/s01/apex.png"])
        w.writerow(["again", str(data["face"] / "onset.png"), str(data["face"] / "apex.png")])
    out = tmp_path / "pred.csv"
    assert main([str(pairs), "--weights", str(data["ckpt"]), "--engine", "torch", "--out", str(out), "--quiet"]) == 0
    _, rows = read_csv(out)
    assert [r["sample"] for r in rows] == ["first", "again"]
    for r in rows:
        assert np.abs(probs_of(r) - expected[0]).max() <= 1e-5


def test_aligned_crops_skip_alignment_and_match(data, expected, tmp_path):
    crops = tmp_path / "crops"
    crops.mkdir()
    cv2.imwrite(str(crops / "onset.png"), expected[1][0])  # BGR on disk, like the crop cache
    cv2.imwrite(str(crops / "apex.png"), expected[1][1])
    out = tmp_path / "pred.csv"
    assert main([str(crops), "--aligned", "--weights", str(data["ckpt"]), "--engine", "torch",
                 "--out", str(out), "--quiet"]) == 0
    _, rows = read_csv(out)
    assert len(rows) == 1 and np.abs(probs_of(rows[0]) - expected[0]).max() <= 1e-5


def test_aligned_flag_on_full_frames_is_a_row_error(data, tmp_path):
    out = tmp_path / "pred.csv"
    assert main([str(data["face"]), "--aligned", "--weights", str(data["ckpt"]), "--engine", "torch",
                 "--out", str(out), "--quiet"]) == 1  # nothing classified
    _, rows = read_csv(out)
    assert "drop --aligned" in rows[0]["error"]


def test_bad_inputs_are_explained(data, tmp_path):
    with pytest.raises(PredictInputError, match="no such image"):
        collect_samples([tmp_path / "a.png", tmp_path / "b.png"])
    bad = tmp_path / "bad.csv"
    bad.write_text("first,second\nx,y\n")
    with pytest.raises(PredictInputError, match="needs columns onset and apex"):
        collect_samples([bad])
    (tmp_path / "empty").mkdir()
    with pytest.raises(PredictInputError, match="no sample folders"):
        collect_samples([tmp_path / "empty"])
    with pytest.raises(SystemExit):
        main([str(bad), "--weights", str(data["ckpt"])])


def test_help_has_examples():
    res = subprocess.run([sys.executable, "-m", "engines.predict", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0 and "examples:" in res.stdout and "--aligned" in res.stdout
