"""Resumable fine-tuning: a run killed (SIGKILL) after an epoch is on disk, started again,
ends bit for bit where an uninterrupted run ends (weights and predictions).

train.finetune writes OUT/finetune_resume.pt atomically after every epoch (model,
optimiser, loss scaler, torch RNG, epoch, history, validation choice); a run on the same OUT
continues after the last finished epoch. Dropout is on, so the RNG state has to come back
too. LOSO runs each fold's fine-tuning in its own folder, so this is also mid-fold resume.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 4
ARGS = ["--protocol", "demo", "--width", "0.125", "--epochs", str(EPOCHS), "--repeats", "2", "--batch-size", "4",
        "--dropout", "0.3", "--lr", "1e-3", "--seed", "3", "--device", "cpu", "--threads", "1", "--workers", "0",
        "--quiet"]


def _cli(cache: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "train.finetune", "--cache", str(cache), "--out", str(out), *ARGS, *extra]


def _epoch_on_disk(out: Path) -> int:
    path = out / "finetune_resume.pt"
    if not path.is_file():
        return 0
    return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_killed_finetune_resumes_to_the_uninterrupted_result(tmp_path):
    from test_training import write_toy_cache

    from train.checkpoint import load_checkpoint, load_classifier
    from train.data import attach_labels, load_index, select_rows
    from train.finetune import FinetuneConfig, finetune, predict

    cache = write_toy_cache(tmp_path / "cache", {"synth": 3}, per_subject=3, seed=6)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    # the interrupted run: SIGKILL as soon as epoch 2 is on disk (polled, never a fixed sleep)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cli(cache, killed), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    while _epoch_on_disk(killed) < 2:
        assert proc.poll() is None, proc.communicate()[1].decode()[-3000:]
        assert time.monotonic() - t0 < 300, "no epoch on disk after 300 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _epoch_on_disk(killed)
    assert 2 <= done < EPOCHS and not (killed / "classifier.safetensors").exists()

    # the uninterrupted run, here, while nothing else runs
    li = attach_labels(load_index(cache), "demo")
    rows = select_rows(li.rows, kinds=("micro",))
    cfg = FinetuneConfig(epochs=EPOCHS, batch_size=4, repeats=2, dropout=0.3, lr=1e-3, seed=3, device="cpu",
                         threads=1, workers=0)
    whole, summary = finetune(rows, li.classes, cfg, width=0.125, out_dir=tmp_path / "whole", quiet=True)
    assert summary["resumed_after_epoch"] is None

    # started again on the same folder: continues after the last finished epoch
    r = subprocess.run(_cli(cache, killed), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    info = json.loads((killed / "finetune.json").read_text())
    assert info["resumed_after_epoch"] == done
    assert [h["epoch"] for h in info["history"]] == list(range(1, EPOCHS + 1))
    assert len((killed / "log.jsonl").read_text().splitlines()) == EPOCHS
    resumed, _, _ = load_checkpoint(killed / "classifier.safetensors")
    want = whole.state_dict()
    assert resumed.keys() == want.keys()
    for k in want:
        assert torch.equal(resumed[k], want[k]), k  # bit for bit
    for a, b in zip(summary["history"], info["history"], strict=True):
        assert a["loss"] == b["loss"] and a["train_acc"] == b["train_acc"]
    p_whole = predict(whole, rows, "cpu")
    p_resumed = predict(load_classifier(killed / "classifier.safetensors"), rows, "cpu")
    assert (p_whole == p_resumed).all()

    # a finished state returns at once with the same weights; other settings are refused
    again, s2 = finetune(rows, li.classes, cfg, width=0.125, out_dir=tmp_path / "whole", quiet=True)
    assert s2["resumed_after_epoch"] == EPOCHS
    assert all(torch.equal(again.state_dict()[k], want[k]) for k in want)
    from dataclasses import replace

    with pytest.raises(ValueError, match="other settings or data.*--no-resume"):
        finetune(rows, li.classes, replace(cfg, lr=5e-4), width=0.125, out_dir=tmp_path / "whole", quiet=True)
    _, s3 = finetune(rows, li.classes, replace(cfg, lr=5e-4, epochs=1), width=0.125, out_dir=tmp_path / "whole",
                     quiet=True, resume=False)
    assert s3["resumed_after_epoch"] is None and len(s3["history"]) == 1
