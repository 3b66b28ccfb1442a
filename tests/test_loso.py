"""LOSO runs end to end on generated composite-like caches: report, resume, fold splitting, controls."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from test_training import write_toy_cache  # the fixture-cache writer (tests/ is on sys.path)
from train import loso

SMALL = ["--width", "0.125", "--epochs", "1", "--repeats", "2", "--batch-size", "8", "--threads", "1",
         "--device", "cpu", "--quiet"]


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory):
    return write_toy_cache(tmp_path_factory.mktemp("toy_demo"), {"synth": 4}, per_subject=3, macro_per_subject=1)


def read_pred(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "predictions.csv").sort_values(["subject", "sample"]).reset_index(drop=True)


# ---------------------------------------------------------------------------------------
# small pure helpers


def test_fold_helpers():
    assert loso.fold_name("casme2/sub01") == "casme2__sub01"
    assert loso.fold_name("my data/a b") == "my_data__a_b"
    subjects = [f"s{i}" for i in range(7)]
    parts = [loso.my_subjects(subjects, i, 3) for i in (1, 2, 3)]
    assert sorted(sum(parts, [])) == subjects and all(parts)
    assert loso.parse_folds("2/4", 7) == (2, 4) and loso.parse_folds(None, 7) == (1, 1)
    for bad in ("0/2", "3/2", "1-2", "x"):
        with pytest.raises(ValueError, match="--folds"):
            loso.parse_folds(bad, 7)
    assert loso.fold_seed(0, "a") == loso.fold_seed(0, "a") != loso.fold_seed(0, "b")
    assert loso.fold_seed(0, "a") != loso.fold_seed(1, "a")


def test_shuffle_labels_permutes_within_training_set():
    rows = pd.DataFrame({"label": np.repeat([0, 1, 2], 20), "subject": "x"})
    out = loso.shuffle_labels(rows, seed=3)
    assert sorted(out["label"]) == sorted(rows["label"])  # same class counts
    assert (out["label"].to_numpy() != rows["label"].to_numpy()).mean() > 0.4
    assert out["label"].tolist() == loso.shuffle_labels(rows, seed=3)["label"].tolist()


# ---------------------------------------------------------------------------------------
# end to end


@pytest.mark.slow
def test_end_to_end_composite_loso(tmp_path):
    """CDE-like run: 3 subjects in each of casme2 / samm / smic, pre-trained once in the run."""
    cache = write_toy_cache(tmp_path / "cache", {"casme2": 3, "samm": 3, "smic": 3}, per_subject=3,
                            macro_per_subject=1, extra_rows=[("casme2", "fear")])
    run = tmp_path / "run"
    loso.main(["--cache", str(cache), "--protocol", "composite", "--pretrain-epochs", "1",
               "--pretrain-max-pairs", "6", "--out", str(run), *SMALL])
    report = json.loads((run / "report.json").read_text())
    assert (run / "confusion.png").stat().st_size > 5000
    assert (run / "pretrain" / "pretrained.safetensors").is_file()
    folds = sorted(p.name for p in (run / "folds").iterdir())
    assert len(folds) == 9 and all((run / "folds" / f / "classifier.safetensors").is_file() for f in folds)
    assert report["pretraining"]["mode"] == "once" and "test subjects included" in report["pretraining"]["description"]
    assert report["selection_rule"] == "fixed schedule" and "never used" in report["selection"]
    assert report["dropped"] == {"casme2/fear": 1}
    m = report["metrics"]
    assert m["overall"]["n"] == 27 and set(m["per_dataset"]) == {"casme2", "samm", "smic"}
    assert all(s["n"] == 9 for s in m["per_dataset"].values())
    assert len(report["per_subject"]) == 9 and {r["subject"] for r in report["per_subject"]} == {
        f"{d}/s{i:02d}" for d in ("casme2", "samm", "smic") for i in (1, 2, 3)}
    # the pooled metrics are those of the pooled predictions file
    from sklearn.metrics import f1_score

    pred = read_pred(run)
    assert m["overall"]["uf1"] == pytest.approx(
        f1_score(pred["y_true"], pred["y_pred"], labels=[0, 1, 2], average="macro", zero_division=0))
    # a fold never trains on its test subject
    for f in folds:
        r = json.loads((run / "folds" / f / "result.json").read_text())
        assert {p["subject"] for p in r["predictions"]} == {r["subject"]}
        assert r["n_train"] == 27 - 3
    from train.checkpoint import load_classifier

    clf = load_classifier(run / "folds" / folds[0] / "classifier.safetensors")
    assert clf.cfg.class_names == ("negative", "positive", "surprise")


@pytest.mark.slow
def test_split_folds_merge_equals_single_run_and_resume(demo_cache, tmp_path, capsys):
    common = ["--cache", str(demo_cache), "--protocol", "demo", "--no-pretrain", *SMALL]
    single, split = tmp_path / "single", tmp_path / "split"
    loso.main([*common, "--out", str(single)])
    first = {p: p.stat().st_mtime_ns for p in (single / "folds").glob("*/result.json")}
    assert len(first) == 4

    loso.main([*common, "--folds", "1/2", "--out", str(split)])
    with pytest.raises(SystemExit, match="2 of 4 folds are not finished"):
        loso.main(["--merge", "--out", str(split)])
    loso.main([*common, "--folds", "2/2", "--out", str(split)])
    loso.main(["--merge", "--out", str(split)])
    a, b = read_pred(single), read_pred(split)
    assert a["sample"].tolist() == b["sample"].tolist()
    assert a["y_pred"].tolist() == b["y_pred"].tolist()
    probs = [c for c in a.columns if c.startswith("prob_")]
    np.testing.assert_allclose(a[probs].to_numpy(), b[probs].to_numpy(), atol=1e-5)
    ra, rb = (json.loads((d / "report.json").read_text()) for d in (single, split))
    assert ra["metrics"]["overall"] == rb["metrics"]["overall"]

    # resume: every fold is done, nothing is retrained
    capsys.readouterr()
    loso.main([*common, "--out", str(single)])
    assert "0 run, 4 skipped" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in (single / "folds").glob("*/result.json")} == first
    # a half-finished run resumes the missing folds only
    victim = sorted(first)[0]
    victim.unlink()
    loso.main([*common, "--out", str(single)])
    assert "1 run, 3 skipped" in capsys.readouterr().out
    assert read_pred(single)["y_pred"].tolist() == a["y_pred"].tolist()
    # folds made with other settings are never mixed in
    with pytest.raises(SystemExit, match="other settings"):
        loso.main([*common[:-len(SMALL)], *SMALL[:2], "--epochs", "2", *SMALL[4:], "--out", str(single)])


@pytest.mark.slow
def test_strict_pretrain_validation_and_shuffled_control(demo_cache, tmp_path):
    run = tmp_path / "strict"
    loso.main(["--cache", str(demo_cache), "--protocol", "demo", "--strict-pretrain", "--pretrain-epochs", "1",
               "--pretrain-max-pairs", "4", "--val-subjects", "1", "--shuffle-labels", "--no-fold-checkpoints",
               "--out", str(run), *SMALL])
    report = json.loads((run / "report.json").read_text())
    assert report["pretraining"]["mode"] == "strict" and report["shuffle_labels"] is True
    assert "CONTROL" in report["shuffle_labels_note"]
    assert report["selection_rule"] == "validation on training subjects"
    for fold in report["folds"]:
        assert fold["subject"] not in fold["val_subjects"] and len(fold["val_subjects"]) == 1
    for d in (run / "folds").iterdir():
        pre = json.loads((d / "pretrain" / "pretrain.json").read_text())
        r = json.loads((d / "result.json").read_text())
        # strict: the test subject is absent from this fold's pre-training data
        assert r["subject"] not in pre["subjects"] and pre["excluded_subjects"] == [r["subject"]]
        assert not (d / "classifier.safetensors").exists()


def test_once_mode_with_folds_needs_pretraining_first(demo_cache, tmp_path):
    with pytest.raises(SystemExit, match="--pretrain-only"):
        loso.main(["--cache", str(demo_cache), "--protocol", "demo", "--folds", "1/2", "--out", str(tmp_path / "r"),
                   *SMALL])


def test_bad_arguments(demo_cache, tmp_path):
    with pytest.raises(SystemExit, match="choose one of"):
        loso.main(["--cache", str(demo_cache), "--no-pretrain", "--strict-pretrain", "--out", str(tmp_path / "r")])
    with pytest.raises(SystemExit, match="no run.json"):
        loso.main(["--merge", "--out", str(tmp_path / "nothing")])
    with pytest.raises(SystemExit, match="unknown protocol"):
        loso.main(["--cache", str(demo_cache), "--protocol", "casme9", "--out", str(tmp_path / "r2")])
