"""Self-supervised pre-training of MoExt on micro- and macro-expression pairs.

Paper: Li et al., arXiv 2407.07345, Sec. 3 ("pre-training"); MOEXT.md ("Losses", "Data for
each phase", "Hyper-parameters"). Each onset/apex pair becomes an onset and an apex
expansion set (m = 3 views, train/augment.py); the model (train/moext.py MoExtPretrainer)
rebuilds the apex from the onset's texture and the motion, and is trained on

    L = L_re + 0.5 L_st + 1.0 L_ss                      (train/losses.py)

Defaults are the paper's: micro + macro pairs (--kinds), views of one operation each
(--view-ops 1), L_re on each set's own apex (--recon-target apex), global batch 20 input
sets, 30 epochs, Adam lr 1e-4, weight decay 1e-4, betas (0.9, 0.999). Labels are never
read. The loop below is a plain epoch loop:

    for epoch: for batch: decode (loader workers) -> views on the device -> loss = pretrain_losses(...);
               backward; step
               log the epoch means, save the weights (safetensors) and a resume state

Outputs in --out: pretrained.safetensors (train/checkpoint.py, kind "pretrainer", updated
after every epoch), resume.pt (model + optimiser + RNG + epoch, written atomically, read
back with torch.load(weights_only=True) by --resume), log.jsonl (one line per epoch) and
pretrain.json (settings and "finished" once the last epoch is done).

Runs on CPU or CUDA (mixed precision bf16/fp16 on CUDA), reproducible from --seed (the data
order and augmentation of epoch e depend only on (seed, e), so a resumed run sees the same
data; --deterministic for reproducible CUDA kernels), and on several GPUs or processes with
torchrun (DistributedDataParallel; --batch-size is the global batch, S-bar of L_st and the
logged losses are global, SyncBatchNorm on CUDA; train/distributed.py):

    python -m train.pretrain --cache cache/casme2 --cache cache/casme3 --out runs/pre
    python -m train.pretrain --cache cache/synth_train --width 0.25 --epochs 3 --out runs/pre_demo
    torchrun --nproc_per_node 4 -m train.pretrain --cache cache/casme2 --out runs/pre --device cuda

The run-time helpers (device, mixed precision, DDP, loaders: train/distributed.py) are
shared with train.finetune and train.loso.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from train import losses
from train.augment import OPS_PER_VIEW
from train.cache import CacheError
from train.checkpoint import load_resnet18_trunk, save_checkpoint
from train.data import PretrainDataset, load_index, select_rows
from train.distributed import (  # several re-exported: callers import them from train.pretrain
    DistInfo,
    GlobalBatchSampler,
    amp_dtype,
    atomic_torch_save,
    autocast,
    barrier,
    default_workers,
    grad_scaler,
    init_distributed,
    local_batch,
    maybe_sync_batchnorm,
    mean_across,
    pick_device,  # noqa: F401
    rng_state,
    seed_everything,
    set_rng_state,
    set_threads,
    train_loader,
    train_mode,
    unwrap,
)
from train.moext import MoExtConfig, MoExtPretrainer
from train.report import write_json

KINDS = ("micro", "macro")  # the paper pre-trains on micro- AND macro-expressions

# ---------------------------------------------------------------------------------------
# run-time helpers (shared with train.finetune and train.loso; the DDP ones live in train.distributed)


def make_loader(ds: Dataset, batch_size: int, epoch: int, seed: int, info: DistInfo,
                shuffle: bool = True, workers: int = 0, device: torch.device | None = None) -> DataLoader:
    """A loader whose order depends only on (seed, epoch): ``batch_size`` is the GLOBAL batch,
    each process gets its slice of every step (train.distributed.GlobalBatchSampler).
    Batches of 1 are avoided: the motion extractor's BatchNorm sees (N, C, 1, 1) maps."""
    if hasattr(ds, "set_epoch"):
        ds.set_epoch(epoch)
    sampler = GlobalBatchSampler(len(ds), batch_size, info, seed, shuffle=shuffle, min_local=2 if shuffle else 1)
    sampler.set_epoch(epoch)
    return DataLoader(ds, batch_sampler=sampler, num_workers=workers,
                      pin_memory=bool(device is not None and device.type == "cuda"),
                      generator=torch.Generator().manual_seed(seed))


def append_jsonl(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def tqdm_bar(iterable, info: DistInfo, **kw):
    return tqdm(iterable, disable=not info.is_main or kw.pop("quiet", False), leave=False, dynamic_ncols=True, **kw)


# ---------------------------------------------------------------------------------------
# pre-training


@dataclass
class PretrainConfig:
    """Pre-training schedule; defaults are the paper's (MOEXT.md, "Hyper-parameters")."""

    epochs: int = 30
    batch_size: int = 20  # GLOBAL batch of input sets (onset/apex pairs), each expanded to 2m images
    lr: float = 1e-4
    weight_decay: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.999
    views: int = 3  # m
    eps: float = losses.EPS  # contrastive margin, paper's range [0.2, 0.5]
    a1: float = losses.A1  # weight of L_st
    a2: float = losses.A2  # weight of L_ss
    seed: int = 0
    workers: int = field(default_factory=default_workers)  # loader processes (decode only)
    device: str = "auto"
    amp: str = "auto"
    max_pairs: int = 0  # 0 = every pair; else a seeded subset (quick runs)
    preload: bool = False  # keep decoded crops in memory
    threads: int = 0  # torch CPU threads, 0 = default
    ops_per_view: int = OPS_PER_VIEW  # operations per augmented view: 1 = the paper, 2 = older variant
    recon_target: str = "apex"  # L_re target: "apex" = each set's own apex (paper), "views" = every view pair
    kinds: str = ",".join(KINDS)  # expression kinds pre-trained on: "micro,macro" (paper) or "micro" (ablation)
    deterministic: bool = False  # torch.use_deterministic_algorithms + cuDNN deterministic
    freeze_bn: bool = False  # BatchNorm on running statistics (tiny per-process batches; the DDP test)
    sync_bn: bool = True  # SyncBatchNorm across processes on CUDA under DDP (never on CPU)
    trunk_weights: str = ""  # a user-supplied ImageNet ResNet-18 file to start the trunk from ("" = random init)


def parse_kinds(kinds: str | Sequence[str]) -> tuple[str, ...]:
    """"micro,macro" -> ("micro", "macro"); refuses anything else."""
    out = tuple(k.strip() for k in (kinds.split(",") if isinstance(kinds, str) else kinds) if k.strip())
    bad = [k for k in out if k not in KINDS]
    if not out or bad:
        raise ValueError(f"--kinds must be a comma-separated subset of {','.join(KINDS)}, got {kinds!r}")
    return out


class PretrainObjective(nn.Module):
    """The loss as a module, so DDP sees the whole computation (model + projection) in one forward."""

    def __init__(self, model: nn.Module, eps: float, a1: float, a2: float, recon_target: str = "apex"):
        super().__init__()
        self.model, self.eps, self.a1, self.a2, self.recon_target = model, eps, a1, a2, recon_target

    def forward(self, onset_views, apex_views, apex_targets):  # (n, m, 3, H, W) each
        return losses.pretrain_losses(self.model, onset_views, apex_views, apex_targets, self.eps, self.a1, self.a2,
                                      recon_target=self.recon_target)


def pretrain_rows(cache_dirs, exclude_subjects: Sequence[str] = (), max_pairs: int = 0, seed: int = 0,
                  kinds: str | Sequence[str] = KINDS):
    """Index rows used for pre-training: pairs of ``kinds`` (micro + macro), minus excluded subjects."""
    rows = select_rows(load_index(cache_dirs), exclude_subjects=exclude_subjects, kinds=parse_kinds(kinds))
    if max_pairs and len(rows) > max_pairs:
        keep = np.sort(np.random.default_rng(seed).choice(len(rows), size=max_pairs, replace=False))
        rows = rows.iloc[keep].reset_index(drop=True)
    return rows


def save_resume_state(path: Path, model: nn.Module, opt, scaler, epoch: int, extra: dict | None = None) -> None:
    """Atomic resume state (temp file, fsync, os.replace); torch.load(weights_only=True) reads it.
    ``opt=None`` leaves the optimiser out (a finished run needs no more steps: 1/3 of the size)."""
    atomic_torch_save({"model": unwrap(model).state_dict(), "optimizer": opt.state_dict() if opt else {},
                       "scaler": scaler.state_dict() if scaler.is_enabled() else {}, "epoch": int(epoch),
                       "rng": rng_state(), **(extra or {})}, path)


def pretrain(rows, out_dir: str | Path, width: float = 1.0, cfg: PretrainConfig | None = None,
             resume: bool = False, meta: dict | None = None, quiet: bool = False) -> Path:
    """Pre-train a MoExtPretrainer on the index ``rows`` (those of ``cfg.kinds``) and return
    the path of pretrained.safetensors. Resumes from out_dir/resume.pt with ``resume``."""
    cfg = cfg or PretrainConfig()
    out = Path(out_dir)
    set_threads(cfg.threads)
    info, device = init_distributed(cfg.device)
    dtype = amp_dtype(device, cfg.amp)
    say = (lambda *a: None) if quiet or not info.is_main else (lambda *a: print(*a, flush=True))
    local_batch(cfg.batch_size, info.world)
    if cfg.recon_target not in losses.RECON_TARGETS:
        raise ValueError(f"--recon-target must be one of {losses.RECON_TARGETS}, got {cfg.recon_target!r}")
    kinds = parse_kinds(cfg.kinds)
    rows = rows[rows["kind"].isin(kinds)].reset_index(drop=True)

    model_cfg = MoExtConfig(width=width)
    seed_everything(cfg.seed, cfg.deterministic)
    model = MoExtPretrainer(model_cfg)
    if cfg.trunk_weights:
        load_resnet18_trunk(model, cfg.trunk_weights)  # safe loading (safetensors / weights_only); width 1.0
    model = model.to(device)
    ds = PretrainDataset(rows, views=cfg.views, mean=model_cfg.mean, std=model_cfg.std, preload=cfg.preload,
                         seed=cfg.seed, raw=True, ops_per_view=cfg.ops_per_view)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                           weight_decay=cfg.weight_decay)
    scaler = grad_scaler(device, dtype)
    start = 0
    state_path, ckpt_path, log_path = out / "resume.pt", out / "pretrained.safetensors", out / "log.jsonl"
    if resume and state_path.is_file():
        st = torch.load(state_path, map_location=device, weights_only=True)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        if st.get("scaler"):
            scaler.load_state_dict(st["scaler"])
        if st.get("rng"):
            set_rng_state(st["rng"])
        start = int(st["epoch"])
        say(f"pretrain: resuming {out} after epoch {start}/{cfg.epochs}")
    elif info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        log_path.unlink(missing_ok=True)
    settings = {"width": width, **asdict(cfg), "pairs": len(ds), "world_size": info.world,
                "local_batch": cfg.batch_size // info.world,
                "subjects": sorted(set(ds.rows["subject"])), "kinds_used": ds.rows["kind"].value_counts().to_dict(),
                "device": str(device), "amp": str(dtype).replace("torch.", "") if dtype else "off"}
    if info.is_main:
        write_json(out / "pretrain.json", {**settings, **(meta or {}), "finished": start >= cfg.epochs,
                                           "epochs_done": start})
    say(f"pretrain: {len(ds)} pairs ({settings['kinds_used']}) from {len(settings['subjects'])} subjects, "
        f"width {width}, {cfg.epochs} epochs, global batch {cfg.batch_size} ({info.world} x "
        f"{settings['local_batch']}), device {device}, amp {settings['amp']}")

    model = maybe_sync_batchnorm(model, info, device, cfg.sync_bn)
    objective = PretrainObjective(model, cfg.eps, cfg.a1, cfg.a2, cfg.recon_target)
    if info.enabled:
        objective = nn.parallel.DistributedDataParallel(
            objective, device_ids=[device.index] if device.type == "cuda" else None)
    loader, sampler = train_loader(ds, cfg.batch_size, cfg.seed, info, cfg.workers if start < cfg.epochs else 0,
                                   device)

    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        train_mode(objective, cfg.freeze_bn)
        sampler.set_epoch(epoch)
        sums, steps = {"total": 0.0, "re": 0.0, "st": 0.0, "ss": 0.0, "st_active": 0.0}, 0
        bar = tqdm_bar(loader, info, desc=f"pretrain {epoch + 1}/{cfg.epochs}", unit="batch", quiet=quiet)
        for idx, onset_u8, apex_u8 in bar:  # (n,), (n, 3, 224, 224) uint8 x2
            onset_v, apex_v, target = ds.prepare_batch(onset_u8, apex_u8, idx, epoch, device)  # (n, m, 3, H, W)
            with autocast(device, dtype):
                parts = objective(onset_v, apex_v, target)
            loss = parts["total"].float()
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"pretrain: loss became {loss.item()} at epoch {epoch + 1}, step {steps + 1}; "
                    "lower --lr, or use --amp off to rule out mixed precision")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            for k in sums:
                sums[k] += float(parts[k].detach())
            steps += 1
            bar.set_postfix(loss=f"{sums['total'] / steps:.4f}")
        means = mean_across(info, {k: v / max(steps, 1) for k, v in sums.items()}, device)
        record = {"epoch": epoch + 1, "loss": means["total"], "l_re": means["re"], "l_st": means["st"],
                  "l_ss": means["ss"], "l_st_active": means["st_active"], "steps": steps, "lr": cfg.lr,
                  "time_s": round(time.perf_counter() - t0, 2)}
        if info.is_main:
            append_jsonl(log_path, record)
            save_checkpoint(ckpt_path, unwrap(model), model_cfg,
                            meta={"phase": "pretrain", "epoch": epoch + 1, "epochs": cfg.epochs,
                                  "loss": means["total"], **(meta or {})})
            save_resume_state(state_path, model, opt, scaler, epoch + 1)
            write_json(out / "pretrain.json", {**settings, **(meta or {}), "finished": epoch + 1 >= cfg.epochs,
                                               "epochs_done": epoch + 1, "last": record})
        say(f"pretrain epoch {epoch + 1}/{cfg.epochs}: loss {means['total']:.4f} (re {means['re']:.4f}, "
            f"st {means['st']:.4f}, ss {means['ss']:.4f}) {record['time_s']:.0f} s")
        barrier(info)
    if start >= cfg.epochs:
        say(f"pretrain: {out} already finished {cfg.epochs} epochs")
    return ckpt_path


def is_finished(out_dir: str | Path) -> bool:
    """True when a pre-training run in ``out_dir`` completed its schedule."""
    p = Path(out_dir) / "pretrain.json"
    if not p.is_file() or not (Path(out_dir) / "pretrained.safetensors").is_file():
        return False
    try:
        return bool(json.loads(p.read_text()).get("finished"))
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------
# CLI


EXAMPLES = """examples:
  # the paper's pre-training data: CASME II + CAS(ME)^3 part A, micro + macro pairs
  python -m train.pretrain --cache cache/casme2 --cache cache/casme3 --out runs/pretrain
  # strict mode for one LOSO fold: leave the test subject out of pre-training too
  python -m train.pretrain --cache cache/casme2 --exclude-subjects casme2/sub01 --out runs/pre_sub01
  # a small model on synthetic pairs, CPU
  python -m train.pretrain --cache cache/synth_train --width 0.25 --epochs 3 --device cpu --out runs/pre_demo
  # resume after an interruption
  python -m train.pretrain --cache cache/casme2 --out runs/pretrain --resume
  # several GPUs (DistributedDataParallel): the global batch of 20 is 5 pairs per GPU
  torchrun --nproc_per_node 4 -m train.pretrain --cache cache/casme2 --cache cache/casme3 --device cuda --out runs/pretrain
  # ablation: without macro-expressions; older view / reconstruction variants
  python -m train.pretrain --cache cache/casme2 --cache cache/casme3 --kinds micro --out runs/pre_micro
  python -m train.pretrain --cache cache/casme2 --view-ops 2 --recon-target views --out runs/pre_variant
"""


def add_common_args(ap: argparse.ArgumentParser, epochs: int = 30) -> None:
    """Flags shared by pretrain, finetune and loso (defaults: the paper's)."""
    d = PretrainConfig()
    ap.add_argument("--width", type=float, default=1.0, help="channel multiplier (1.0 = the paper's network)")
    ap.add_argument("--epochs", type=int, default=epochs, help=f"epochs (default {epochs})")
    ap.add_argument("--batch-size", type=int, default=d.batch_size,
                    help="onset/apex pairs per optimisation step, the GLOBAL batch: under torchrun each of the W "
                         "processes takes batch/W of them (W must divide it) (default 20)")
    ap.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate (default 1e-4)")
    ap.add_argument("--weight-decay", type=float, default=d.weight_decay, help="Adam weight decay (default 1e-4)")
    ap.add_argument("--beta1", type=float, default=d.beta1, help="Adam beta1 (default 0.9)")
    ap.add_argument("--beta2", type=float, default=d.beta2, help="Adam beta2 (default 0.999)")
    ap.add_argument("--seed", type=int, default=0, help="seed of weights, data order and augmentation")
    ap.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    ap.add_argument("--amp", default="auto", choices=("auto", "bf16", "fp16", "off"),
                    help="mixed precision: auto = bf16 on CUDA, off on CPU")
    ap.add_argument("--workers", type=int, default=default_workers(),
                    help="data-loader worker processes that decode crops; augmentation runs batched on the "
                         f"training device (default min(4, CPU count) = {default_workers()}; 0 = in the main process)")
    ap.add_argument("--preload", action="store_true", help="keep decoded crops in memory")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads (0 = default; 1 is fastest on a CPU shared with other jobs)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    ap.add_argument("--deterministic", action="store_true",
                    help="reproducible kernels: torch.use_deterministic_algorithms(True), cudnn.deterministic, "
                         "cudnn.benchmark off, CUBLAS_WORKSPACE_CONFIG=:4096:8 (slower on CUDA; CPU runs are "
                         "reproducible without it)")
    ap.add_argument("--freeze-bn", action="store_true",
                    help="BatchNorm layers use (and keep) their running statistics instead of batch statistics "
                         "(for tiny per-process batches; off by default, as in the paper)")
    ap.add_argument("--no-sync-bn", dest="sync_bn", action="store_false",
                    help="under torchrun on CUDA, keep per-GPU BatchNorm statistics (default: SyncBatchNorm, "
                         "statistics over the global batch; CPU processes never sync)")


def add_pretrain_args(ap: argparse.ArgumentParser) -> None:
    """Pre-training flags whose defaults are the paper's; each deviation is named (train.loso uses them too)."""
    d = PretrainConfig()
    ap.add_argument("--kinds", default=d.kinds,
                    help="expression kinds to pre-train on: micro,macro (default, the paper) or micro "
                         "(the 'without macro-expressions' ablation)")
    ap.add_argument("--view-ops", type=int, default=d.ops_per_view, choices=(1, 2),
                    help="operations per augmented view: 1 (default, the paper: one of noise / contrast / grey "
                         "per view) or 2 (older variant: two at once)")
    ap.add_argument("--recon-target", default=d.recon_target, choices=losses.RECON_TARGETS,
                    help="L_re target: apex (default, the paper: each set's own apex rebuilt from its original "
                         "onset/apex) or views (variant: every view pair, the augmented apex as target)")


def split_list(text: str | None) -> list[str]:
    return [s.strip() for s in (text or "").split(",") if s.strip()]


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m train.pretrain", description=__doc__.split("\n\n")[0],
                                 epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", action="append", required=True, metavar="DIR",
                    help="crop cache (repeat for several); micro and macro pairs are used, labels are not")
    ap.add_argument("--out", required=True, help="output folder (pretrained.safetensors, log.jsonl, resume.pt)")
    ap.add_argument("--exclude-subjects", default="", help="comma-separated subjects left out (strict LOSO)")
    ap.add_argument("--resume", action="store_true", help="continue from OUT/resume.pt")
    add_common_args(ap)
    d = PretrainConfig()
    ap.add_argument("--views", type=int, default=d.views, help="m, instances per expansion set (default 3)")
    ap.add_argument("--margin", type=float, default=d.eps, help=f"contrastive margin eps (default {d.eps})")
    ap.add_argument("--a1", type=float, default=d.a1, help="weight of L_st (default 0.5)")
    ap.add_argument("--a2", type=float, default=d.a2, help="weight of L_ss (default 1.0)")
    ap.add_argument("--max-pairs", type=int, default=0, help="use a seeded subset of this many pairs (0 = all)")
    ap.add_argument("--trunk-weights", default="", metavar="FILE",
                    help="start the trunk from this ImageNet ResNet-18 file you supply (.safetensors, or .pt/.pth read "
                         "with weights_only=True; torchvision key names; --width 1.0); nothing is downloaded")
    add_pretrain_args(ap)
    args = ap.parse_args(argv)
    cfg = PretrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                         beta1=args.beta1, beta2=args.beta2, views=args.views, eps=args.margin, a1=args.a1, a2=args.a2,
                         seed=args.seed, workers=args.workers, device=args.device, amp=args.amp,
                         max_pairs=args.max_pairs, preload=args.preload, threads=args.threads,
                         ops_per_view=args.view_ops, recon_target=args.recon_target, kinds=args.kinds,
                         deterministic=args.deterministic, freeze_bn=args.freeze_bn, sync_bn=args.sync_bn,
                         trunk_weights=args.trunk_weights)
    try:
        rows = pretrain_rows(args.cache, split_list(args.exclude_subjects), cfg.max_pairs, cfg.seed, cfg.kinds)
        path = pretrain(rows, args.out, args.width, cfg, resume=args.resume,
                        meta={"caches": [str(c) for c in args.cache],
                              "excluded_subjects": split_list(args.exclude_subjects)},
                        quiet=args.quiet)
    except (ValueError, FileNotFoundError, CacheError) as e:
        raise SystemExit(f"error: {e}") from None
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"wrote {path}")
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
