"""Face-crop cache: build, resume, settings key, failures, reader (train/cache.py)."""
from __future__ import annotations

import dataclasses
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest

import fixtures_datasets as fx
from core.face import warp_face
from train import cache as C
from train.datasets import load_dataset


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A folder-format tree (alice, bob, and carol whose clip comes from no_face.mp4),
    cropped once with 2 worker processes."""
    base = tmp_path_factory.mktemp("cache")
    fix = fx.make_folder(base / "clips", no_face=True)
    samples, _ = load_dataset("folder", fix.root)
    out = base / "cache"
    summary = C.build_cache(samples, out, workers=2, progress=False)
    return samples, out, summary


def test_build_writes_index_pngs_meta_and_failures(built):
    samples, out, summary = built
    assert summary.requested == 5 and summary.built == 4 and summary.failed_now == 1
    df = C.read_cache(out)
    assert tuple(pd.read_csv(out / "index.csv").columns) == C.INDEX_COLUMNS
    assert len(df) == 4 and set(df.subject) == {"custom/alice", "custom/bob"}
    for row in df.itertuples():
        for rel in (row.onset_path, row.apex_path):
            img = cv2.imread(str(out / rel))
            assert img.shape == (224, 224, 3) and not rel.startswith("/")
    macro = df[df.kind == "macro"].iloc[0]
    # pseudo-apex: the 5th frame counting the onset (frame 1) as the 1st, i.e. onset + 4
    assert (macro.onset_frame, macro.apex_frame) == (1, 5)
    assert macro.apex_path.endswith("apex_5.png")
    micro = df[(df.subject == "custom/alice") & (df["sample"] == "clip1")].iloc[0]
    assert (micro.onset_frame, micro.apex_frame, micro.raw_label) == (1, 4, "negative")
    meta = C.read_meta(out)
    assert meta["key"] == C.CacheSettings().key and meta["settings"]["crop_size"] == 224
    assert meta["settings"]["align_indices"] == [7, 8, 24, 39, 42]
    fails = pd.read_csv(out / "failures.csv")
    assert list(fails["sample"]) == ["noface"] and "no face" in fails["reason"][0]
    assert "carol/noface" in str(summary) and "failures.csv" in str(summary)
    assert summary.seconds_per_sample > 0 and summary.bytes_per_sample > 10_000


def test_load_pair_is_rgb_of_the_png(built):
    _, out, _ = built
    row = C.read_cache(out).iloc[0]
    onset, apex = C.load_pair(out, row)
    for img, rel in ((onset, row.onset_path), (apex, row.apex_path)):
        assert img.dtype == np.uint8 and img.shape == (224, 224, 3)
        assert np.array_equal(img, cv2.imread(str(out / rel))[..., ::-1])
    assert not np.array_equal(onset, apex)
    assert np.array_equal(C.load_pair(out, row.to_dict())[0], onset)


def test_apex_is_cut_with_the_onset_transform(built):
    """One transform per sample, computed on the onset: the cached apex crop is exactly the
    apex frame warped by the onset's transform (PNG is lossless)."""
    samples, out, _ = built
    s = samples[0]
    row = C.read_cache(out).query("subject == @s.subject and sample == @s.sample").iloc[0]
    aligner = C.process_aligner(C.CacheSettings())
    m = aligner.transform_of(s.read_frame(s.onset))
    expected = warp_face(s.read_frame(s.apex), m)
    assert np.array_equal(cv2.imread(str(out / row.apex_path)), expected)


def test_second_run_does_nothing_new(built):
    samples, out, _ = built
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    summary = C.build_cache(samples, out, workers=2, progress=False)
    assert (summary.built, summary.failed_now, summary.already_done, summary.skipped_failed) == (0, 0, 4, 1)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == before
    assert len(summary.failures) == 1                   # still listed in the summary


def test_resume_recrops_a_lost_png_and_key_change_needs_rebuild(built, tmp_path):
    samples, out, _ = built
    copy = tmp_path / "cache"
    shutil.copytree(out, copy)
    lost = copy / C.read_cache(copy).iloc[1].apex_path
    lost.unlink()
    summary = C.build_cache(samples, copy, workers=1, progress=False)
    assert summary.built == 1 and summary.already_done == 3 and lost.is_file()

    # A corrected annotation (new apex) re-crops that sample; a new label alone does not.
    i = next(i for i, s in enumerate(samples) if s.kind == "micro" and s.apex != 5)
    edited = list(samples)
    edited[i] = dataclasses.replace(samples[i], apex=5)
    edited[i + 1] = dataclasses.replace(samples[i + 1], raw_label="surprise")
    summary = C.build_cache(edited, copy, workers=1, progress=False)
    assert summary.built == 1 and summary.already_done == 3
    df = C.read_cache(copy).set_index(["subject", "sample"])
    assert df.loc[(edited[i].subject, edited[i].sample), "apex_frame"] == 5
    assert df.loc[(edited[i + 1].subject, edited[i + 1].sample), "raw_label"] == "surprise"
    assert len(list(copy.rglob("*.png"))) == 8

    # The pseudo-apex step is used, not only hashed: another step is another key, and with
    # --rebuild the macro sample's apex crop is the frame that many frames after the onset.
    step2 = C.CacheSettings(pseudo_apex_step=2)
    assert step2.key != C.CacheSettings().key and C.CacheSettings().pseudo_apex_step == 4
    with pytest.raises(C.CacheKeyError, match="pseudo_apex_step"):
        C.build_cache(samples, copy, settings=step2, progress=False)
    macro_only = [s for s in samples if s.kind == "macro"]
    other_dir = tmp_path / "step2"
    C.build_cache(macro_only, other_dir, settings=step2, workers=1, progress=False)
    row = C.read_cache(other_dir).iloc[0]
    assert (row.onset_frame, row.apex_frame) == (1, 3) and C.read_meta(other_dir)["settings"]["pseudo_apex_step"] == 2

    other = C.CacheSettings(upsample=0)
    assert other.key != C.CacheSettings().key
    with pytest.raises(C.CacheKeyError, match=r"--rebuild.*"):
        C.build_cache(samples, copy, settings=other, progress=False)
    assert C.read_meta(copy)["key"] == C.CacheSettings().key            # refused: untouched
    summary = C.build_cache(samples, copy, settings=other, rebuild=True, workers=1, progress=False)
    assert summary.already_done == 0 and summary.built == 4 and summary.failed_now == 1
    assert C.read_meta(copy)["key"] == other.key


def test_phase_selection(built):
    samples, _, _ = built
    unlabelled = dataclasses.replace(samples[0], sample="other", label=None)
    pool = list(samples) + [unlabelled]
    assert len(C.select_samples(pool, "pretrain")) == len(C.select_samples(pool, "all")) == 6
    fine = C.select_samples(pool, "finetune")
    assert len(fine) == 4 and all(s.kind == "micro" and s.label for s in fine)
    with pytest.raises(ValueError, match="phase"):
        C.select_samples(pool, "train")


def test_reader_errors_say_what_to_do(built, tmp_path):
    with pytest.raises(C.CacheError, match="python -m train.cache"):
        C.read_cache(tmp_path)
    _, out, _ = built
    copy = tmp_path / "c"
    shutil.copytree(out, copy)
    row = C.read_cache(copy).iloc[0]
    (copy / row.onset_path).write_bytes(b"not a png")
    with pytest.raises(C.CacheError, match="corrupt"):
        C.load_pair(copy, row)
    (copy / row.onset_path).unlink()
    with pytest.raises(C.CacheError, match="missing"):
        C.load_pair(copy, row)
    cv2.imwrite(str(copy / row.onset_path), np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(C.CacheError, match="expected 224x224"):
        C.load_pair(copy, row)
    pd.read_csv(copy / "index.csv").drop(columns=["apex_path"]).to_csv(copy / "index.csv", index=False)
    with pytest.raises(C.CacheError, match="apex_path"):
        C.read_cache(copy)
    (copy / "meta.json").unlink()
    with pytest.raises(C.CacheKeyError, match="no meta.json"):
        C.build_cache([], copy, progress=False)


def test_samm_greyscale_crop_has_three_equal_channels(tmp_path):
    fix = fx.make_samm(tmp_path / "samm")
    samples, _ = load_dataset("samm", fix.root)
    out = tmp_path / "cache"
    summary = C.build_cache(samples[:1], out, workers=1, progress=False)
    assert summary.built == 1
    onset, apex = C.load_pair(out, C.read_cache(out).iloc[0])
    assert np.array_equal(onset[..., 0], onset[..., 1]) and np.array_equal(onset[..., 1], onset[..., 2])
    assert C.read_cache(out).subject[0] == "samm/006"


def test_cli_builds_and_resumes(tmp_path, capsys):
    fix = fx.make_folder(tmp_path / "clips")
    args = ["--dataset", "folder", "--root", str(fix.root), "--out", str(tmp_path / "cache"), "--workers", "1",
            "--no-progress", "--phase", "finetune", "--limit", "3", "--name", "lab"]
    assert C.main(args) == 0
    out = capsys.readouterr().out
    assert "lab/alice" in out and "3 built now" in out                       # limit 3, all micro
    df = C.read_cache(tmp_path / "cache")
    assert set(df.dataset) == {"lab"} and set(df.kind) == {"micro"}
    assert C.main(args) == 0 and "0 built now" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        C.main(args + ["--upsample", "0"])
    assert "--rebuild" in capsys.readouterr().err
