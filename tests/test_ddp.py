"""DistributedDataParallel semantics: a 2-process gloo run on the CPU matches a 1-process run
with the same GLOBAL batch and seed (pre-training, then fine-tuning from its checkpoint).

What must match, and why it catches the bugs of the issue:
- ``--batch-size`` is global: with 2 processes each step takes 2 + 2 pairs of the same
  seeded order the 1-process run takes 4 at a time (a per-process batch would halve the
  steps per epoch and change every weight);
- S-bar of L_st is the mean over the GLOBAL batch, with gradients reaching every rank's
  features (a per-rank S-bar changes L_st and its gradients);
- the logged losses / accuracies are reduced over the ranks.

BatchNorm: on CPU each rank normalises with the statistics of its own half-batch (torch's
SyncBatchNorm refuses CPU tensors), which alone would make the runs differ. Both runs use
``freeze_bn`` (BatchNorm on its running statistics, in eval mode), so BatchNorm is the same
affine map in both and any difference left comes from the batch split, S-bar or the
reductions. This mode is a real flag (--freeze-bn), not a test-only path; SyncBatchNorm on
CUDA is what makes the statistics global on GPUs (not testable here).

Run as a script under torchrun, this file is the 2-process job:
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/test_ddp.py --cache C --out O
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script by torchrun
    sys.path.insert(0, str(ROOT))

from train.distributed import DistInfo, GlobalBatchSampler, local_batch

WIDTH = 0.125


def job(cache: Path, out: Path) -> None:
    """Pre-train 2 epochs x 2 steps (global batch 4), then fine-tune 1 epoch x 4 steps."""
    from train.data import attach_labels, load_index, select_rows
    from train.finetune import FinetuneConfig, finetune, save_classifier
    from train.pretrain import PretrainConfig, pretrain, pretrain_rows

    # margin 3 > 2, the largest distance between unit vectors: every L_st hinge is active, so
    # S-bar reaches the loss and the gradients (with the default 0.3, L_st is 0 on these pairs)
    pcfg = PretrainConfig(epochs=2, batch_size=4, seed=1, device="cpu", threads=1, workers=0, freeze_bn=True,
                          eps=3.0)
    path = pretrain(pretrain_rows([cache], max_pairs=8, seed=1), out / "pre", width=WIDTH, cfg=pcfg, quiet=True)
    li = attach_labels(load_index(cache), "demo")
    rows = select_rows(li.rows, kinds=("micro",))
    fcfg = FinetuneConfig(epochs=1, batch_size=4, repeats=2, seed=2, device="cpu", threads=1, workers=0,
                          freeze_bn=True)
    model, _ = finetune(rows, li.classes, fcfg, pretrained=path, out_dir=out / "ft", quiet=True)
    if int(os.environ.get("RANK", "0")) == 0:
        save_classifier(out / "ft" / "classifier.safetensors", model, {})


def _log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------------------------------
# the sampler and the batch check (no processes)


def test_global_batch_is_split_across_ranks():
    one = GlobalBatchSampler(22, 8, DistInfo(), seed=3)
    ranks = [GlobalBatchSampler(22, 8, DistInfo(r, 2, r), seed=3) for r in range(2)]
    for s in [one, *ranks]:
        s.set_epoch(5)
    per_rank = [list(s) for s in ranks]
    whole = list(one)
    # 22 = 8 + 8 + 6: every step's union over the ranks is the 1-process batch, in order
    assert [len(b) for b in whole] == [8, 8, 6]
    assert [len(b) for b in per_rank[0]] == [4, 4, 3]
    for step, b in enumerate(whole):
        assert per_rank[0][step] + per_rank[1][step] == b
    assert len(one) == len(ranks[0]) == 3
    # another epoch, another order; the same epoch, the same order
    other = GlobalBatchSampler(22, 8, DistInfo(), seed=3)
    other.set_epoch(6)
    assert list(other) != whole
    other.set_epoch(5)
    assert list(other) == whole
    # a short last batch is cut to a multiple of the world size, or dropped below 2 per rank
    assert [len(b) for b in GlobalBatchSampler(21, 8, DistInfo(0, 2, 0))] == [4, 4, 2]
    assert [len(b) for b in GlobalBatchSampler(19, 8, DistInfo(0, 2, 0))] == [4, 4]
    assert [len(b) for b in GlobalBatchSampler(17, 8, DistInfo())] == [8, 8]  # never a batch of 1


def test_batch_size_must_split_evenly():
    assert local_batch(20, 4) == 5
    with pytest.raises(ValueError, match=r"--batch-size 20 is the global batch .* divisible .* processes 3"):
        local_batch(20, 3)
    with pytest.raises(ValueError, match=r"--batch-size 2 over 2 process\(es\) gives 1 pair"):
        GlobalBatchSampler(10, 2, DistInfo(0, 2, 0))


def test_sync_batchnorm_only_on_cuda_and_reverts_for_export():
    """SyncBatchNorm is used under DDP on CUDA only (it refuses CPU tensors); the fine-tuned
    model comes back with plain BatchNorm2d and the same state (so it exports and runs on CPU)."""
    from torch import nn

    from train.distributed import maybe_sync_batchnorm, revert_sync_batchnorm
    from train.moext import MoExtClassifier, MoExtConfig

    torch.manual_seed(0)
    model = MoExtClassifier(MoExtConfig(width=0.125, num_classes=3)).eval()
    two = DistInfo(0, 2, 0)
    assert maybe_sync_batchnorm(model, two, torch.device("cpu")) is model
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # what CUDA DDP runs
    assert any(isinstance(m, nn.SyncBatchNorm) for m in synced.modules())
    back = revert_sync_batchnorm(synced)
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in back.modules())
    x = torch.rand(2, 3, 64, 64)
    ref = MoExtClassifier(MoExtConfig(width=0.125, num_classes=3)).eval()
    ref.load_state_dict(back.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(back(x, x.flip(-1)), ref(x, x.flip(-1)))


# ---------------------------------------------------------------------------------------
# 2 processes == 1 process


@pytest.mark.slow
def test_two_process_gloo_run_matches_one_process(tmp_path):
    from test_training import write_toy_cache

    from train.checkpoint import load_checkpoint

    cache = write_toy_cache(tmp_path / "cache", {"synth": 4}, per_subject=2, macro_per_subject=1, seed=4)
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(Path(__file__).resolve()), "--cache", str(cache), "--out", str(tmp_path / "two")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    torch.set_num_threads(1)
    try:
        job(cache, tmp_path / "one")  # the 1-process reference, here, while the 2 ranks run
    finally:
        stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stdout[-2000:] + stderr[-4000:]

    one, two = tmp_path / "one", tmp_path / "two"
    assert json.loads((two / "pre" / "pretrain.json").read_text())["world_size"] == 2
    # logged losses: per epoch, reduced over the ranks; the same number of steps
    for a, b in zip(_log(one / "pre" / "log.jsonl"), _log(two / "pre" / "log.jsonl"), strict=True):
        assert a["steps"] == b["steps"] == 2
        for k in ("loss", "l_re", "l_st", "l_ss"):
            assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-6), k
    for a, b in zip(_log(one / "ft" / "log.jsonl"), _log(two / "ft" / "log.jsonl"), strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-6)
        assert b["train_acc"] == pytest.approx(a["train_acc"], abs=1e-9)
    # parameters. Adam turns float-rounding noise in near-zero gradients (summation order: two
    # processes, or even 1 vs 2 threads in ONE process, which gives the same gaps) into +-lr
    # steps of single elements, so compare whole updates, |d_two - d_one| / |d_one|. Checked
    # by breaking the code on purpose: a per-process batch fails the step counts above, a
    # per-rank S-bar fails the logged losses and these gaps.
    from train.distributed import seed_everything
    from train.moext import MoExtConfig, MoExtPretrainer

    seed_everything(1)
    init = MoExtPretrainer(MoExtConfig(width=WIDTH)).state_dict()
    pre_one, _, _ = load_checkpoint(one / "pre" / "pretrained.safetensors")
    pre_two, _, _ = load_checkpoint(two / "pre" / "pretrained.safetensors")
    assert _relative_update_gap(init, pre_one, pre_two) < 0.01  # 0.03% here; 8% with a per-rank S-bar
    ft_one, _, _ = load_checkpoint(one / "ft" / "classifier.safetensors")
    ft_two, _, _ = load_checkpoint(two / "ft" / "classifier.safetensors")
    assert _relative_update_gap(pre_one, ft_one, ft_two) < 0.1  # 2% here (noise, see above); 23% downstream
    #                                                              of a per-rank S-bar


def _relative_update_gap(start: dict, one: dict, two: dict) -> float:
    """|(two - start) - (one - start)| / |one - start| over the float tensors ``start`` has."""
    assert one.keys() == two.keys()
    keys = [k for k in one if k in start and one[k].is_floating_point()]
    d_one = torch.cat([(one[k] - start[k]).flatten() for k in keys])
    d_two = torch.cat([(two[k] - start[k]).flatten() for k in keys])
    assert float(d_one.norm()) > 1e-2  # the steps moved the weights: the comparison is not vacuous
    return float((d_two - d_one).norm() / d_one.norm())

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    a = ap.parse_args()
    torch.set_num_threads(1)
    job(a.cache, a.out)
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
