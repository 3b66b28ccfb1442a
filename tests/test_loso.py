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


def casme3_cache(root: Path, subjects: int = 2) -> Path:
    """A toy cache whose rows are CAS(ME)^3's (2 micro + 1 macro per subject; pre-training only)."""
    write_toy_cache(root, {"synth": subjects}, per_subject=2, macro_per_subject=1)
    index = pd.read_csv(root / "index.csv", dtype=str)
    index["dataset"] = "casme3"
    index["subject"] = index["subject"].str.replace("synth/", "casme3/")
    index.to_csv(root / "index.csv", index=False)
    return root


# ---------------------------------------------------------------------------------------
# small pure helpers


def test_pretrain_data_resolution():
    assert loso.resolve_pretrain_data("paper", ["casme2", "casme3", "samm", "smic"]) == (
        ["casme2", "casme3"], "the paper's set: CASME II + CAS(ME)^3 part A")
    got, note = loso.resolve_pretrain_data("paper", ["casme2", "samm", "smic"])
    assert got == ["casme2"] and "casme3 is not among the caches" in note and "--pretrain-cache" in note
    got, note = loso.resolve_pretrain_data("paper", ["synth"])
    assert got == ["synth"] and "every dataset of the given caches" in note
    assert loso.resolve_pretrain_data("all", ["smic", "casme2"])[0] == ["casme2", "smic"]
    assert loso.resolve_pretrain_data("casme2,samm", ["casme2", "samm", "smic"])[0] == ["casme2", "samm"]
    with pytest.raises(ValueError, match="casme9 not among"):
        loso.resolve_pretrain_data("casme2,casme9", ["casme2"])
    assert loso.parse_kinds("macro,micro") == ("micro", "macro") and loso.parse_kinds("micro") == ("micro",)
    with pytest.raises(ValueError, match="--kinds"):
        loso.parse_kinds("mega")


def test_trunk_init_checkpoint_loads_the_users_resnet18(tmp_path):
    """--no-pretrain --trunk-weights: every fold starts from the ImageNet trunk (read safely)."""
    from train.checkpoint import checkpoint_info, load_checkpoint
    from train.moext import MoExtConfig, ResNet18Trunk

    torch.manual_seed(1)
    trunk = ResNet18Trunk(MoExtConfig(width=1.0))
    state = {k: v.clone() for k, v in trunk.state_dict().items()}
    state["fc.weight"] = torch.zeros(1000, 512)          # torchvision's head: ignored
    torch.save(state, tmp_path / "resnet18.pth")
    path = loso.trunk_init_checkpoint(tmp_path / "init.safetensors", 1.0, str(tmp_path / "resnet18.pth"))
    loaded, _, _ = load_checkpoint(path)
    torch.testing.assert_close(loaded["separator.trunk.layer4.1.conv2.weight"], state["layer4.1.conv2.weight"])
    assert checkpoint_info(path)["meta"]["trunk_weights"].endswith("resnet18.pth")
    with pytest.raises(ValueError, match="--width 1.0"):
        loso.trunk_init_checkpoint(tmp_path / "x.safetensors", 0.5, str(tmp_path / "resnet18.pth"))
    # a pickle carrying code is refused (weights_only), not executed
    torch.save({"model": trunk.state_dict(), "evil": loso.Path("x")}, tmp_path / "evil.pth")
    from train.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="refused"):
        loso.trunk_init_checkpoint(tmp_path / "e.safetensors", 1.0, str(tmp_path / "evil.pth"))


def test_no_motion_extractor_ablation_and_device_prediction(demo_cache, tmp_path):
    run = tmp_path / "no_me"
    loso.main(["--cache", str(demo_cache), "--protocol", "demo", "--no-pretrain", "--no-motion-extractor",
               "--out", str(run), *SMALL])
    report = json.loads((run / "report.json").read_text())
    assert report["motion_extractor"] is False and report["finetune"]["motion_extractor"] is False
    from train.checkpoint import load_classifier

    clf = load_classifier(next((run / "folds").glob("*/classifier.safetensors")))
    assert clf.motion is None and not clf.cfg.motion_extractor
    r = json.loads(next((run / "folds").glob("*/result.json")).read_text())
    assert r["predicted_on"] == "cpu"


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
    casme3 = casme3_cache(tmp_path / "casme3")
    run = tmp_path / "run"
    loso.main(["--cache", str(cache), "--pretrain-cache", str(casme3), "--protocol", "composite",
               "--pretrain-epochs", "1", "--pretrain-max-pairs", "6", "--out", str(run), *SMALL])
    report = json.loads((run / "report.json").read_text())
    assert (run / "confusion.png").stat().st_size > 5000
    assert (run / "pretrain" / "pretrained.safetensors").is_file()
    folds = sorted(p.name for p in (run / "folds").iterdir())
    assert len(folds) == 9 and all((run / "folds" / f / "classifier.safetensors").is_file() for f in folds)
    assert report["pretraining"]["mode"] == "once" and "test subjects included" in report["pretraining"]["description"]
    # pre-training as published: CASME II + CAS(ME)^3, micro + macro; SAMM and SMIC-HS are not in it
    data = report["pretraining"]["data"]
    assert data["datasets"] == ["casme2", "casme3"] and data["kinds"] == ["micro", "macro"]
    assert data["note"] == "the paper's set: CASME II + CAS(ME)^3 part A"
    # (a seeded subset of 6 of the 19 pairs: casme2 3 subjects x (3 micro + 1 macro) + fear, casme3 2 x (2 + 1))
    assert data["seen"]["n_pairs"] == sum(data["seen"]["pairs"].values()) == 6
    assert {k.split("/")[0] for k in data["seen"]["pairs"]} <= {"casme2", "casme3"}
    assert all(s.split("/")[0] in ("casme2", "casme3") for s in data["seen"]["subjects"])
    pre = json.loads((run / "pretrain" / "pretrain.json").read_text())
    assert sorted(pre["subjects"]) == data["seen"]["subjects"] and pre["pairs"] == 6
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


@pytest.mark.slow
def test_shuffled_label_control_is_at_chance(tmp_path):
    """The control: with the training labels of every fold permuted, pooled scores sit at chance.

    Data: 6 subjects x 30 micro pairs, 10 per class in EVERY subject (3 classes), the class in
    the motion only. With shuffled labels the model cannot learn class from motion, so its
    predictions on the held-out subject are (near) independent of the truth. For a predictor
    independent of the truth the EXPECTED UAR is exactly 1/C whatever it predicts (class c's
    recall is the probability q_c of predicting c; the q_c sum to 1), with standard deviation
    sqrt(sum_c q_c (1 - q_c) / n_c) / C <= sqrt(C / (4 n_c)) / C = 0.037 for n_c = 60: the band
    1/3 +- 0.11 is 3 sigma. UF1 has expectation <= 1/C for such a predictor (F1_c is a harmonic
    mean of p_c and q_c, at most their average; = 1/C when q = p, metrics.chance_uf1) and as low
    as 1/6 when it collapses to one class, so it is asserted in [0.12, 1/3 + 0.11]. ACC of an
    independent predictor on balanced classes is 1/3 in expectation, std <= 0.035 for n = 180."""
    cache = write_toy_cache(tmp_path / "cache", {"synth": 6}, per_subject=30, seed=4)
    run = tmp_path / "shuffled"
    loso.main(["--cache", str(cache), "--protocol", "demo", "--no-pretrain", "--shuffle-labels",
               "--no-fold-checkpoints", "--out", str(run), "--width", "0.0625", "--epochs", "1", "--repeats", "1",
               "--batch-size", "20", "--threads", "1", "--device", "cpu", "--workers", "0", "--quiet"])
    report = json.loads((run / "report.json").read_text())
    o = report["metrics"]["overall"]
    assert o["n"] == 180 and report["shuffle_labels"] is True
    counts = [o["per_class"][c]["support"] for c in ("negative", "positive", "surprise")]
    assert counts == [60, 60, 60]
    from train import metrics

    chance = metrics.chance_uar(3)
    assert metrics.chance_uf1(counts) == pytest.approx(chance)
    band = 3 * np.sqrt(3 / (4 * 60)) / 3          # 3 sigma of UAR under independence, n_c = 60
    assert abs(o["uar"] - chance) <= band, o
    assert 0.12 <= o["uf1"] <= chance + band, o
    assert abs(o["acc"] - 1 / 3) <= 3 * np.sqrt((1 / 3) * (2 / 3) / 180) + 1e-9, o
