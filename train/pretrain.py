"""Self-supervised pre-training of MoExt on micro- and macro-expression pairs.

Paper: Li et al., arXiv 2407.07345, Sec. 3 ("pre-training"); MOEXT.md ("Losses", "Data for
each phase", "Hyper-parameters"). Each onset/apex pair becomes an onset and an apex
expansion set (m = 3 views, train/augment.py); the model (train/moext.py MoExtPretrainer)
rebuilds the apex from the onset's texture and the motion, and is trained on

    L = L_re + 0.5 L_st + 1.0 L_ss                      (train/losses.py)

Defaults are the paper's: batch 20 input sets, 30 epochs, Adam lr 1e-4, weight decay 1e-4,
betas (0.9, 0.999). Labels are never read. The loop below is a plain epoch loop:

    for epoch: for batch: loss = pretrain_losses(...); backward; step
               log the epoch means, save the weights (safetensors) and a resume state

Outputs in --out: pretrained.safetensors (train/checkpoint.py, kind "pretrainer", updated
after every epoch), resume.pt (model + optimiser + epoch, read back with
torch.load(weights_only=True) by --resume), log.jsonl (one line per epoch) and
pretrain.json (settings and "finished" once the last epoch is done).

Runs on CPU or CUDA (mixed precision bf16/fp16 on CUDA), reproducible from --seed (the data
order and augmentation of epoch e depend only on (seed, e), so a resumed run sees the same
data), and on several GPUs or processes with torchrun (DistributedDataParallel):

    python -m train.pretrain --cache cache/casme2 --cache cache/casme3 --out runs/pre
    python -m train.pretrain --cache cache/synth_train --width 0.25 --epochs 3 --out runs/pre_demo
    torchrun --nproc_per_node 4 -m train.pretrain --cache cache/casme2 --out runs/pre --device cuda

The run-time helpers (device, mixed precision, DDP, loaders) are shared with train.finetune.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from train import losses
from train.cache import CacheError
from train.report import write_json

# ---------------------------------------------------------------------------------------
# run-time helpers (shared with train.finetune and train.loso)


def pick_device(name: str = "auto") -> torch.device:
    """"auto" -> cuda if available else cpu; "cuda" without a GPU is an error that says so."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch sees no CUDA GPU (torch.cuda.is_available() is False); "
                         "use --device cpu, or install a CUDA build of torch==2.13.0")
    if name != "cpu" and not name.startswith("cuda"):
        raise SystemExit(f"error: --device must be cpu, cuda, cuda:N or auto, got {name!r}")
    return torch.device(name)


def amp_dtype(device: torch.device, amp: str = "auto") -> torch.dtype | None:
    """Autocast dtype: "auto" = bf16 on CUDA (fp16 where bf16 is unsupported), none on CPU."""
    if amp not in ("auto", "bf16", "fp16", "off"):
        raise SystemExit(f"error: --amp must be auto, bf16, fp16 or off, got {amp!r}")
    if amp == "off":
        return None
    if device.type != "cuda":
        if amp == "auto":
            return None
        if amp == "fp16":
            raise SystemExit("error: --amp fp16 needs CUDA; use --amp bf16 or off on CPU")
        return torch.bfloat16
    if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """Loss scaling is needed for fp16 only (bf16 has fp32's range)."""
    return torch.amp.GradScaler(device.type, enabled=(dtype == torch.float16 and device.type == "cuda"))


@dataclass
class DistInfo:
    """This process's place in a torchrun job (world 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str = "auto") -> tuple[DistInfo, torch.device]:
    """Join the torchrun process group when WORLD_SIZE > 1: nccl on CUDA (one GPU per
    process, LOCAL_RANK), gloo on CPU. Without torchrun: DistInfo() and pick_device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), pick_device(device_name)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world, local), device


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()


def mean_across(info: DistInfo, values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average a dict of floats over the processes of a DDP job."""
    if not info.enabled:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) / info.world for k, v in zip(keys, t.tolist())}


def set_threads(threads: int) -> None:
    """torch intra-op threads (0 = torch's default). On a CPU shared with other jobs, 1
    thread is often several times faster than 2 (no threads spinning at barriers)."""
    if threads and threads > 0:
        torch.set_num_threads(threads)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def make_loader(ds: Dataset, batch_size: int, epoch: int, seed: int, info: DistInfo,
                shuffle: bool = True, workers: int = 0, device: torch.device | None = None) -> DataLoader:
    """A loader whose order depends only on (seed, epoch). Batches of 1 are avoided: the
    motion extractor's BatchNorm sees (N, C, 1, 1) maps and needs N >= 2 in training."""
    if hasattr(ds, "set_epoch"):
        ds.set_epoch(epoch)
    n = len(ds) // info.world if info.enabled else len(ds)
    bs = max(1, min(batch_size, n))
    drop_last = shuffle and n % bs == 1  # never a last training batch of 1
    if info.enabled:
        sampler = DistributedSampler(ds, info.world, info.rank, shuffle=shuffle, seed=seed, drop_last=shuffle)
        sampler.set_epoch(epoch)
        kw = {"sampler": sampler}
    else:
        g = torch.Generator().manual_seed(seed * 100003 + epoch)
        kw = {"shuffle": shuffle, "generator": g}
    return DataLoader(ds, batch_size=bs, drop_last=drop_last, num_workers=workers,
                      pin_memory=bool(device is not None and device.type == "cuda"),
                      persistent_workers=False, **kw)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def append_jsonl(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def tqdm_bar(iterable, info: DistInfo, **kw):
    from tqdm import tqdm

    return tqdm(iterable, disable=not info.is_main or kw.pop("quiet", False), leave=False, dynamic_ncols=True, **kw)


# ---------------------------------------------------------------------------------------
# pre-training


@dataclass
class PretrainConfig:
    """Pre-training schedule; defaults are the paper's (MOEXT.md, "Hyper-parameters")."""

    epochs: int = 30
    batch_size: int = 20  # input sets (onset/apex pairs), each expanded to 2m images
    lr: float = 1e-4
    weight_decay: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.999
    views: int = 3  # m
    eps: float = losses.EPS  # contrastive margin, paper's range [0.2, 0.5]
    a1: float = losses.A1  # weight of L_st
    a2: float = losses.A2  # weight of L_ss
    seed: int = 0
    workers: int = 0
    device: str = "auto"
    amp: str = "auto"
    max_pairs: int = 0  # 0 = every pair; else a seeded subset (quick runs)
    preload: bool = False  # keep decoded crops in memory
    threads: int = 0  # torch CPU threads, 0 = default


class PretrainObjective(nn.Module):
    """The loss as a module, so DDP sees the whole computation (model + projection) in one forward."""

    def __init__(self, model: nn.Module, eps: float, a1: float, a2: float):
        super().__init__()
        self.model, self.eps, self.a1, self.a2 = model, eps, a1, a2

    def forward(self, onset_views, apex_views, apex_targets):  # (n, m, 3, H, W) each
        return losses.pretrain_losses(self.model, onset_views, apex_views, apex_targets, self.eps, self.a1, self.a2)


def pretrain_rows(cache_dirs, exclude_subjects: Sequence[str] = (), max_pairs: int = 0, seed: int = 0):
    """Index rows used for pre-training: micro + macro pairs, minus excluded subjects."""
    from train.data import load_index, select_rows

    rows = select_rows(load_index(cache_dirs), exclude_subjects=exclude_subjects, kinds=("micro", "macro"))
    if max_pairs and len(rows) > max_pairs:
        keep = np.sort(np.random.default_rng(seed).choice(len(rows), size=max_pairs, replace=False))
        rows = rows.iloc[keep].reset_index(drop=True)
    return rows


def pretrain(rows, out_dir: str | Path, width: float = 1.0, cfg: PretrainConfig | None = None,
             resume: bool = False, meta: dict | None = None, quiet: bool = False) -> Path:
    """Pre-train a MoExtPretrainer on the index ``rows`` (micro + macro pairs) and return
    the path of pretrained.safetensors. Resumes from out_dir/resume.pt with ``resume``."""
    from train.checkpoint import save_checkpoint
    from train.data import PretrainDataset
    from train.moext import MoExtConfig, MoExtPretrainer

    cfg = cfg or PretrainConfig()
    out = Path(out_dir)
    set_threads(cfg.threads)
    info, device = init_distributed(cfg.device)
    dtype = amp_dtype(device, cfg.amp)
    say = (lambda *a: None) if quiet or not info.is_main else (lambda *a: print(*a, flush=True))

    model_cfg = MoExtConfig(width=width)
    seed_everything(cfg.seed)
    model = MoExtPretrainer(model_cfg).to(device)
    ds = PretrainDataset(rows, views=cfg.views, mean=model_cfg.mean, std=model_cfg.std,
                         preload=cfg.preload, seed=cfg.seed)
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
        start = int(st["epoch"])
        say(f"pretrain: resuming {out} after epoch {start}/{cfg.epochs}")
    elif info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        log_path.unlink(missing_ok=True)
    settings = {"width": width, **asdict(cfg), "pairs": len(ds), "world_size": info.world,
                "subjects": sorted(set(ds.rows["subject"])), "kinds": ds.rows["kind"].value_counts().to_dict(),
                "device": str(device), "amp": str(dtype).replace("torch.", "") if dtype else "off"}
    if info.is_main:
        write_json(out / "pretrain.json", {**settings, **(meta or {}), "finished": start >= cfg.epochs,
                                           "epochs_done": start})
    say(f"pretrain: {len(ds)} pairs from {len(settings['subjects'])} subjects, width {width}, "
        f"{cfg.epochs} epochs, batch {cfg.batch_size}, device {device}, amp {settings['amp']}, world {info.world}")

    objective = PretrainObjective(model, cfg.eps, cfg.a1, cfg.a2)
    if info.enabled:
        objective = nn.parallel.DistributedDataParallel(
            objective, device_ids=[device.index] if device.type == "cuda" else None)

    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        model.train()
        loader = make_loader(ds, cfg.batch_size, epoch, cfg.seed, info, True, cfg.workers, device)
        sums, steps = {"total": 0.0, "re": 0.0, "st": 0.0, "ss": 0.0}, 0
        bar = tqdm_bar(loader, info, desc=f"pretrain {epoch + 1}/{cfg.epochs}", unit="batch", quiet=quiet)
        for onset_v, apex_v, target in bar:  # (n, m, 3, 224, 224) each
            onset_v, apex_v, target = (x.to(device, non_blocking=True) for x in (onset_v, apex_v, target))
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
                  "l_ss": means["ss"], "steps": steps, "lr": cfg.lr, "time_s": round(time.perf_counter() - t0, 2)}
        if info.is_main:
            append_jsonl(log_path, record)
            save_checkpoint(ckpt_path, unwrap(model), model_cfg,
                            meta={"phase": "pretrain", "epoch": epoch + 1, "epochs": cfg.epochs,
                                  "loss": means["total"], **(meta or {})})
            tmp = state_path.with_name("resume.pt.tmp")
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                        "scaler": scaler.state_dict() if scaler.is_enabled() else {}, "epoch": epoch + 1}, tmp)
            os.replace(tmp, state_path)
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
  # several GPUs (DistributedDataParallel)
  torchrun --nproc_per_node 4 -m train.pretrain --cache cache/casme2 --device cuda --out runs/pretrain
"""


def add_common_args(ap: argparse.ArgumentParser, epochs: int = 30) -> None:
    """Flags shared by pretrain, finetune and loso (defaults: the paper's)."""
    d = PretrainConfig()
    ap.add_argument("--width", type=float, default=1.0, help="channel multiplier (1.0 = the paper's network)")
    ap.add_argument("--epochs", type=int, default=epochs, help=f"epochs (default {epochs})")
    ap.add_argument("--batch-size", type=int, default=d.batch_size, help="onset/apex pairs per batch (default 20)")
    ap.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate (default 1e-4)")
    ap.add_argument("--weight-decay", type=float, default=d.weight_decay, help="Adam weight decay (default 1e-4)")
    ap.add_argument("--beta1", type=float, default=d.beta1, help="Adam beta1 (default 0.9)")
    ap.add_argument("--beta2", type=float, default=d.beta2, help="Adam beta2 (default 0.999)")
    ap.add_argument("--seed", type=int, default=0, help="seed of weights, data order and augmentation")
    ap.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    ap.add_argument("--amp", default="auto", choices=("auto", "bf16", "fp16", "off"),
                    help="mixed precision: auto = bf16 on CUDA, off on CPU")
    ap.add_argument("--workers", type=int, default=0, help="data-loader worker processes (default 0)")
    ap.add_argument("--preload", action="store_true", help="keep decoded crops in memory")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads (0 = default; 1 is fastest on a CPU shared with other jobs)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")


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
    args = ap.parse_args(argv)
    cfg = PretrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                         beta1=args.beta1, beta2=args.beta2, views=args.views, eps=args.margin, a1=args.a1, a2=args.a2,
                         seed=args.seed, workers=args.workers, device=args.device, amp=args.amp,
                         max_pairs=args.max_pairs, preload=args.preload,
                         threads=args.threads)
    try:
        rows = pretrain_rows(args.cache, split_list(args.exclude_subjects), cfg.max_pairs, cfg.seed)
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
