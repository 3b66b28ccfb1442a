"""Training data pipeline, pre-training and fine-tuning on small generated crop caches.

The fixture caches are drawn here (cv2 primitives, milliseconds per pair) in the crop-cache
format of CONTRACTS.md: each subject has its own face colours and geometry (identity),
and the class is only in the onset -> apex motion (brows down = negative, mouth corners up
= positive, brows up = surprise).
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from core.contract import NORM_MEAN, NORM_STD

ROOT = Path(__file__).resolve().parents[1]

# dataset -> raw label used for each composite class (the releases' own spellings)
RAW = {
    "casme2": {"negative": "disgust", "positive": "happiness", "surprise": "surprise"},
    "samm": {"negative": "anger", "positive": "happiness", "surprise": "surprise"},
    "smic": {"negative": "negative", "positive": "positive", "surprise": "surprise"},
    "synth": {"negative": "negative", "positive": "positive", "surprise": "surprise"},
}
CLASSES = ("negative", "positive", "surprise")


def draw_face(rng: np.random.Generator, identity: dict, label: str | None, amount: float) -> np.ndarray:
    """A 224x224 BGR face-like drawing; ``label`` moves brows or mouth by ``amount`` px."""
    img = np.full((224, 224, 3), identity["bg"], np.uint8)
    cx, cy = 112 + identity["dx"], 112 + identity["dy"]
    cv2.ellipse(img, (cx, cy), (70, 92), 0, 0, 360, identity["skin"], -1)
    brow = -amount if label == "surprise" else amount if label == "negative" else 0.0
    mouth = amount if label == "positive" else 0.0
    for side in (-1, 1):
        ex = cx + side * 30
        cv2.circle(img, (ex, cy - 20), 8, identity["eye"], -1)
        y = int(round(cy - 42 + brow))
        cv2.line(img, (ex - 16, y), (ex + 16, y + (side * 2 if label == "negative" else 0)), identity["eye"], 4)
        cv2.line(img, (cx, cy + 45), (cx + side * 26, int(round(cy + 45 - mouth))), identity["lip"], 4)
    noise = rng.normal(0, 3, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def write_toy_cache(root: Path, subjects_per_dataset: dict[str, int], per_subject: int = 3, macro_per_subject: int = 0,
                    extra_rows: list[tuple[str, str]] = (), seed: int = 0, amount: float = 6.0) -> Path:
    """Write a crop cache; returns its folder. extra_rows: (dataset, raw_label) samples added to subject 1."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for dataset, n_sub in subjects_per_dataset.items():
        for s in range(n_sub):
            subject = f"{dataset}/s{s + 1:02d}"
            ident = {"bg": tuple(int(v) for v in rng.integers(20, 236, 3)),
                     "skin": tuple(int(v) for v in rng.integers(90, 236, 3)),
                     "eye": tuple(int(v) for v in rng.integers(0, 80, 3)),
                     "lip": tuple(int(v) for v in rng.integers(0, 160, 3)),
                     "dx": int(rng.integers(-6, 7)), "dy": int(rng.integers(-6, 7))}
            items = [("micro", CLASSES[k % 3]) for k in range(per_subject)]
            items += [("macro", CLASSES[k % 3]) for k in range(macro_per_subject)]
            if s == 0:
                items += [("micro", raw) for d, raw in extra_rows if d == dataset]
            for k, (kind, cls) in enumerate(items):
                raw = RAW[dataset].get(cls, cls)
                sample = f"{subject.replace('/', '_')}_{kind}_{k:03d}"
                onset = draw_face(rng, ident, None, 0.0)
                apex = draw_face(rng, ident, cls if cls in CLASSES else None, amount)
                paths = []
                for name, img in (("onset", onset), ("apex", apex)):
                    rel = Path("crops") / dataset / f"{sample}_{name}.png"
                    (root / rel).parent.mkdir(parents=True, exist_ok=True)
                    cv2.imwrite(str(root / rel), img)
                    paths.append(rel.as_posix())
                rows.append({"dataset": dataset, "subject": subject, "sample": sample, "kind": kind,
                             "raw_label": raw, "onset_frame": 0, "apex_frame": 5 if kind == "macro" else 20,
                             "onset_path": paths[0], "apex_path": paths[1]})
    with open(root / "index.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (root / "meta.json").write_text(json.dumps({"dataset": "toy", "key": f"toy-{seed}"}))
    return root


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def composite_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy_composite")
    return write_toy_cache(root, {"casme2": 2, "samm": 2, "smic": 2}, per_subject=3, macro_per_subject=1,
                           extra_rows=[("casme2", "fear"), ("samm", "other")])


# ---------------------------------------------------------------------------------------
# labels and datasets


def test_labels_mapped_and_drops_counted(composite_cache):
    from train.data import attach_labels, load_index

    df = load_index(composite_cache)
    li = attach_labels(df, "composite")
    assert li.classes == CLASSES
    assert li.dropped == {"casme2/fear": 1, "samm/other": 1}
    assert li.n_dropped == 2 and len(li.rows) == len(df) - 2
    assert "2 samples dropped" in li.summary() and "casme2/fear: 1" in li.summary()
    by = li.rows.groupby("raw_label")["class"].first().to_dict()
    assert by["disgust"] == "negative" and by["anger"] == "negative" and by["happiness"] == "positive"
    assert set(li.rows["label"]) == {0, 1, 2}


def test_unknown_label_names_file_and_row(tmp_path):
    from core.protocols import UnknownLabelError
    from train.data import attach_labels, load_index

    root = write_toy_cache(tmp_path / "c", {"casme2": 1}, per_subject=1, extra_rows=[("casme2", "joyful")])
    with pytest.raises(UnknownLabelError, match=r"index.csv row 3 .*raw_label.*joyful"):
        attach_labels(load_index(root), "casme2")


def test_pair_dataset_shapes_normalisation_and_augment(composite_cache):
    from train.cache import load_pair
    from train.data import PairDataset, load_index

    ds = PairDataset(composite_cache, "composite", subjects=["smic/s01", "smic/s02"], augment="finetune", repeats=3)
    n = len(ds.rows)
    assert n == 6 and len(ds) == 18 and set(ds.rows["kind"]) == {"micro"}
    onset, apex, y = ds[0]
    assert onset.shape == apex.shape == (3, 224, 224) and onset.dtype == torch.float32 and isinstance(y, int)
    # copy 0 is the cached pair, RGB / 255, normalised with the config's mean/std
    raw_o, raw_a = load_pair(composite_cache, ds.rows.iloc[0])
    mean, std = torch.tensor(NORM_MEAN).view(3, 1, 1), torch.tensor(NORM_STD).view(3, 1, 1)
    back = ((apex * std + mean) * 255).round().permute(1, 2, 0).numpy()
    np.testing.assert_allclose(back, raw_a, atol=0.51)
    # augmented copies differ from the original but keep the label; deterministic per (seed, epoch, item)
    o2, a2, y2 = ds[n]
    assert y2 == y and not torch.equal(o2, onset)
    assert torch.equal(ds[n][0], o2)
    ds.set_epoch(1)
    assert not torch.equal(ds[n][0], o2)
    assert len(PairDataset(composite_cache, "composite")) == len(load_index(composite_cache).query("kind == 'micro'")) - 2


def test_pretrain_dataset_expansion_sets(composite_cache):
    from train.cache import load_pair
    from train.data import PretrainDataset

    ds = PretrainDataset(composite_cache, exclude_subjects=["samm/s01"])
    assert set(ds.rows["kind"]) == {"micro", "macro"} and "samm/s01" not in set(ds.rows["subject"])
    ov, av, target = ds[0]
    assert ov.shape == av.shape == target.shape == (3, 3, 224, 224)
    assert 0.0 <= float(target.min()) and float(target.max()) <= 1.0
    _, raw_a = load_pair(composite_cache, ds.rows.iloc[0])
    np.testing.assert_allclose(target[0].permute(1, 2, 0).numpy() * 255, raw_a, atol=1e-3)  # view 0 = the frame
    assert not torch.equal(target[1], target[0])


def test_raw_items_and_batched_preparation_match_the_item_form(composite_cache):
    """Loaders ship uint8 crops; prepare_batch converts, augments and normalises a whole batch
    (on the training device) exactly as the per-item form does, from (seed, epoch, index)."""
    from train.data import PairDataset, PretrainDataset

    ft = PairDataset(composite_cache, "composite", augment="finetune", repeats=3, seed=5)
    raw = PairDataset(composite_cache, "composite", augment="finetune", repeats=3, seed=5, raw=True)
    n = len(ft.rows)
    idx = [0, n + 1, 2 * n + 2]
    items = [raw[i] for i in idx]
    assert items[1][0] == n + 1 and items[1][1].dtype == torch.uint8 and tuple(items[1][1].shape) == (3, 224, 224)
    o_u8 = torch.stack([it[1] for it in items])
    a_u8 = torch.stack([it[2] for it in items])
    raw.set_epoch(7)  # ignored: prepare_batch takes the epoch
    ft.set_epoch(2)
    xo, xa = raw.prepare_batch(o_u8, a_u8, torch.tensor(idx), 2, "cpu")
    for b, i in enumerate(idx):
        wo, wa, _ = ft[i]
        torch.testing.assert_close(xo[b], wo, rtol=0, atol=1e-5)
        torch.testing.assert_close(xa[b], wa, rtol=0, atol=1e-5)
    pre = PretrainDataset(composite_cache, seed=3)
    pre_raw = PretrainDataset(composite_cache, seed=3, raw=True)
    i, o, a = pre_raw[4]
    ov, av, t = pre_raw.prepare_batch(o[None], a[None], [i], 0, "cpu")
    wo, wa, wt = pre[4]
    torch.testing.assert_close(ov[0], wo, rtol=0, atol=1e-6)
    torch.testing.assert_close(t[0], wt, rtol=0, atol=1e-6)
    # each augmented view applies one operation: grey views are grey, the others are not all grey
    grey = [bool((t[0, j, 0] == t[0, j, 1]).all() and (t[0, j, 1] == t[0, j, 2]).all()) for j in (1, 2)]
    assert grey.count(True) <= 2


# ---------------------------------------------------------------------------------------
# pre-training and fine-tuning


@pytest.fixture(scope="module")
def tiny_pretrained(composite_cache, tmp_path_factory):
    from train.pretrain import PretrainConfig, pretrain, pretrain_rows

    out = tmp_path_factory.mktemp("pre")
    torch.set_num_threads(1)
    rows = pretrain_rows([composite_cache], max_pairs=4, seed=0)
    cfg = PretrainConfig(epochs=2, batch_size=4, seed=0, device="cpu", threads=1)
    path = pretrain(rows, out, width=0.125, cfg=cfg, quiet=True)
    return out, path, rows, cfg


def test_tiny_pretrain_writes_loadable_checkpoint_and_finite_loss(tiny_pretrained):
    from train.checkpoint import load_checkpoint
    from train.pretrain import is_finished

    out, path, _, _ = tiny_pretrained
    state, cfg, meta = load_checkpoint(path, kind="pretrainer")
    assert cfg.width == 0.125 and meta["epoch"] == 2 and meta["phase"] == "pretrain"
    assert any(k.startswith("reconstructor.") for k in state)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    for r in log:
        assert all(np.isfinite(r[k]) for k in ("loss", "l_re", "l_st", "l_ss"))
        assert r["loss"] == pytest.approx(r["l_re"] + 0.5 * r["l_st"] + 1.0 * r["l_ss"], rel=1e-5)
    assert is_finished(out)


def test_pretrain_resume_continues_the_same_run(tiny_pretrained, tmp_path):
    """Training 1 epoch, then resuming for the 2nd, gives the uninterrupted run's weights."""
    from dataclasses import replace

    from train.checkpoint import load_checkpoint
    from train.pretrain import pretrain

    out, path, rows, cfg = tiny_pretrained
    pretrain(rows, tmp_path, width=0.125, cfg=replace(cfg, epochs=1), quiet=True)
    pretrain(rows, tmp_path, width=0.125, cfg=cfg, resume=True, quiet=True)
    a, _, _ = load_checkpoint(path)
    b, _, meta = load_checkpoint(tmp_path / "pretrained.safetensors")
    assert meta["epoch"] == 2
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 2
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


def test_finetune_from_pretrained_and_reload(tiny_pretrained, composite_cache, tmp_path):
    from train.checkpoint import load_classifier
    from train.data import attach_labels, load_index, select_rows
    from train.finetune import FinetuneConfig, finetune, predict, save_classifier

    _, path, _, _ = tiny_pretrained
    li = attach_labels(load_index(composite_cache), "composite")
    rows = select_rows(li.rows, kinds=("micro",))
    cfg = FinetuneConfig(epochs=1, batch_size=8, repeats=2, device="cpu", threads=1)
    model, summary = finetune(rows, li.classes, cfg, pretrained=path, out_dir=tmp_path, quiet=True)
    # the new head is the only classifier key the pre-training checkpoint lacks
    assert summary["missing"] == ["fc.bias", "fc.weight"] and summary["unexpected"] == []
    assert summary["selection_rule"] == "fixed" and summary["n_train"] == len(rows)
    assert np.isfinite(summary["history"][0]["loss"])
    ckpt = save_classifier(tmp_path / "clf.safetensors", model, {"selection": summary["selection"]})
    again = load_classifier(ckpt)
    assert again.cfg.class_names == CLASSES and again.cfg.width == 0.125
    p1 = predict(model, rows.head(4))
    p2 = predict(again, rows.head(4))
    assert p1.shape == (4, 3)
    np.testing.assert_allclose(p1, p2, atol=1e-5)
    np.testing.assert_allclose(p1.sum(1), 1.0, atol=1e-5)


def test_finetune_validation_uses_training_subjects_only(composite_cache, tmp_path):
    from train.data import attach_labels, load_index, select_rows
    from train.finetune import FinetuneConfig, finetune

    li = attach_labels(load_index(composite_cache), "composite")
    rows = select_rows(li.rows, exclude_subjects=["smic/s02"], kinds=("micro",))  # smic/s02: the "test" subject
    cfg = FinetuneConfig(epochs=2, batch_size=8, repeats=1, val_subjects=2, device="cpu", threads=1)
    _, summary = finetune(rows, li.classes, cfg, width=0.125, quiet=True)
    assert len(summary["val_subjects"]) == 2 and "smic/s02" not in summary["val_subjects"]
    assert not set(summary["val_subjects"]) & set(summary["train_subjects"])
    assert summary["selection_rule"] == "validation" and 1 <= summary["best_epoch"] <= 2
    assert all("val_uf1" in h for h in summary["history"])
    with pytest.raises(ValueError, match="leaves no subject"):
        finetune(rows, li.classes, FinetuneConfig(epochs=1, val_subjects=5, threads=1), width=0.125, quiet=True)


def test_pretrain_kinds_flag_selects_the_data(composite_cache, tmp_path):
    """--kinds micro (the 'without macro-expressions' ablation) pre-trains on micro pairs only,
    even when the caller hands over micro + macro rows."""
    from train.pretrain import PretrainConfig, parse_kinds, pretrain, pretrain_rows

    rows = pretrain_rows([composite_cache], max_pairs=6, seed=0)
    assert set(rows["kind"]) == {"micro", "macro"}
    assert set(pretrain_rows([composite_cache], kinds="micro")["kind"]) == {"micro"}
    cfg = PretrainConfig(epochs=1, batch_size=2, kinds="micro", device="cpu", threads=1, workers=0)
    pretrain(rows, tmp_path, width=0.125, cfg=cfg, quiet=True)
    info = json.loads((tmp_path / "pretrain.json").read_text())
    assert set(info["kinds_used"]) == {"micro"} and info["kinds"] == "micro"
    with pytest.raises(ValueError, match="--kinds"):
        parse_kinds("micro,frown")


def test_deterministic_switch():
    from train.distributed import set_deterministic

    try:
        set_deterministic(True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ.get("CUBLAS_WORKSPACE_CONFIG") in (":4096:8", ":16:8")
    finally:
        set_deterministic(False)
    assert not torch.are_deterministic_algorithms_enabled()


def test_cli_help(capsys):
    """--help of each command, in this process (a subprocess per command costs ~8 s of imports)."""
    import importlib

    flags = {"train.pretrain": ("--kinds", "--view-ops", "--recon-target", "--deterministic", "--freeze-bn",
                                "--no-sync-bn", "GLOBAL"),
             "train.finetune": ("--no-resume", "--deterministic", "--freeze-bn", "--workers"),
             "train.loso": ("--deterministic",)}
    for mod in ("train.pretrain", "train.finetune", "train.loso"):
        with pytest.raises(SystemExit) as e:
            importlib.import_module(mod).main(["--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert "examples:" in out and "--epochs" in out
        for f in flags[mod]:
            assert f in out, (mod, f)


def test_cli_errors_name_the_problem(tmp_path):
    from train import finetune

    with pytest.raises(SystemExit) as e:  # in this process: a subprocess costs ~8 s of imports
        finetune.main(["--cache", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert "no index.csv" in str(e.value.code)
