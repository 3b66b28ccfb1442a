"""Run-time helpers of train.pretrain, train.finetune and train.loso: device, mixed
precision, processes (DistributedDataParallel), the batch sampler, determinism and atomic
state files.

DDP semantics (torchrun, one process per GPU, or several CPU processes with gloo):
- ``--batch-size`` is the GLOBAL batch: each of the W processes takes batch / W pairs of
  every step (``local_batch`` refuses a batch that W does not divide). ``GlobalBatchSampler``
  cuts the same seeded permutation as a 1-process run into global batches and gives rank r
  the r-th slice of each, so the union over ranks of a step is the 1-process batch.
- Statistics that the paper defines over the batch are taken over the global batch:
  ``global_mean`` (differentiable) gives L_st its S-bar from every rank's shape features;
  on CUDA the BatchNorm layers become SyncBatchNorm (``maybe_sync_batchnorm``; torch's
  SyncBatchNorm refuses CPU tensors, so CPU processes keep per-process statistics).
- Logged losses and accuracies are reduced across ranks (``mean_across``, ``sum_across``).
Without torchrun (WORLD_SIZE unset or 1) all of this reduces to plain single-process code.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

# ---------------------------------------------------------------------------------------
# device and mixed precision


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


def default_workers() -> int:
    """Data-loader workers by default: min(4, CPU count)."""
    return min(4, os.cpu_count() or 1)


def set_threads(threads: int) -> None:
    """torch intra-op threads (0 = torch's default). On a CPU shared with other jobs, 1
    thread is often several times faster than 2 (no threads spinning at barriers)."""
    if threads and threads > 0:
        torch.set_num_threads(threads)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed torch and numpy; with ``deterministic`` also make CUDA reproducible
    (``set_deterministic``). Without it, cuDNN may pick the fastest kernels (benchmark)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    set_deterministic(deterministic)


def set_deterministic(on: bool) -> None:
    """--deterministic: torch.use_deterministic_algorithms(True), cudnn.benchmark off,
    cudnn.deterministic on, CUBLAS_WORKSPACE_CONFIG=:4096:8 (needed by cuBLAS >= 10.2).
    Off: cudnn.benchmark on (the input size never changes), nondeterministic kernels allowed."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(bool(on))
    torch.backends.cudnn.deterministic = bool(on)
    torch.backends.cudnn.benchmark = not on


# ---------------------------------------------------------------------------------------
# processes


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


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def mean_across(info: DistInfo, values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average a dict of floats over the processes of a DDP job (equal weights)."""
    if not info.enabled:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) / info.world for k, v in zip(keys, t.tolist())}


def sum_across(info: DistInfo, values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Sum a dict of floats (e.g. loss sums and sample counts) over the processes."""
    if not info.enabled:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) for k, v in zip(keys, t.tolist())}


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward is again a sum over ranks: rank r's input receives the
    gradient of every rank's loss (the DDP average then divides by the world size)."""

    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


def global_mean(x: torch.Tensor) -> torch.Tensor:
    """(N, C) rows of this rank -> (1, C) mean over the rows of ALL ranks, with gradients to
    every rank's rows (S-bar of L_st). One process: x.mean(0, keepdim=True)."""
    if not _active():
        return x.mean(dim=0, keepdim=True)
    total = _AllReduceSum.apply(x.float().sum(dim=0, keepdim=True))
    count = torch.tensor([float(x.shape[0])], dtype=torch.float32, device=x.device)
    dist.all_reduce(count)
    return (total / count).to(x.dtype)


# ---------------------------------------------------------------------------------------
# BatchNorm under DDP


def maybe_sync_batchnorm(model: nn.Module, info: DistInfo, device: torch.device, enabled: bool = True) -> nn.Module:
    """SyncBatchNorm across the processes of a CUDA DDP job (statistics over the global
    batch); unchanged on CPU (torch's SyncBatchNorm refuses CPU tensors) or one process."""
    if enabled and info.enabled and device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def revert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """SyncBatchNorm -> BatchNorm2d with the same weights and statistics (for export/CPU use)."""
    out = module
    if isinstance(module, nn.SyncBatchNorm):
        out = nn.BatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                             module.track_running_stats).to(module.weight.device if module.affine else "cpu")
        out.load_state_dict(module.state_dict())
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, revert_sync_batchnorm(child))
    return out


def train_mode(model: nn.Module, freeze_bn: bool = False) -> None:
    """model.train(); with ``freeze_bn`` every BatchNorm keeps eval mode (running statistics,
    not batch statistics, and no updates of them)."""
    model.train()
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# ---------------------------------------------------------------------------------------
# batches


def local_batch(global_batch: int, world: int) -> int:
    """Pairs per process and step; the global batch must split evenly."""
    if global_batch < 1:
        raise ValueError(f"--batch-size must be >= 1, got {global_batch}")
    if global_batch % world:
        raise ValueError(f"--batch-size {global_batch} is the global batch and must be divisible by the "
                         f"number of processes {world}; use e.g. --batch-size {global_batch - global_batch % world or world}")
    return global_batch // world


class GlobalBatchSampler(torch.utils.data.Sampler):
    """Index lists for this rank: the seeded permutation of epoch e (or 0..n-1 without
    shuffle) cut into global batches of ``global_batch``; rank r gets slice r of each.

    The last, short global batch is cut to a multiple of the world size and kept when every
    rank still gets at least ``min_local`` pairs (BatchNorm on (N, C, 1, 1) maps needs 2);
    the order changes every epoch, so no pair is always the one left out."""

    def __init__(self, n: int, global_batch: int, info: DistInfo | None = None, seed: int = 0,
                 shuffle: bool = True, min_local: int = 2):
        self.info = info or DistInfo()
        w = self.info.world
        local_batch(global_batch, w)
        self.n, self.seed, self.shuffle, self.min_local = int(n), int(seed), shuffle, min_local
        if global_batch // w < min_local:
            raise ValueError(f"--batch-size {global_batch} over {w} process(es) gives {global_batch // w} pair(s) "
                             f"per process; BatchNorm on (N, C, 1, 1) maps needs >= {min_local}: use --batch-size "
                             f">= {w * min_local}")
        bs = min(global_batch, self.n - self.n % w)
        if bs < w * min_local:
            raise ValueError(f"{self.n} training pair(s) cannot fill a batch of {min_local} pair(s) on each of "
                             f"{w} process(es); add data or use fewer processes")
        self.global_batch = bs
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def global_batches(self) -> list[list[int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        w, out = self.info.world, []
        for i in range(0, self.n, self.global_batch):
            b = order[i:i + self.global_batch]
            b = b[:len(b) - len(b) % w]
            if len(b) >= w * self.min_local:
                out.append(b)
        return out

    def __iter__(self) -> Iterator[list[int]]:
        w, r = self.info.world, self.info.rank
        for b in self.global_batches():
            k = len(b) // w
            yield b[r * k:(r + 1) * k]

    def __len__(self) -> int:
        return len(self.global_batches())


def train_loader(ds, global_batch: int, seed: int, info: DistInfo, workers: int = 0,
                 device: torch.device | None = None) -> tuple[torch.utils.data.DataLoader, GlobalBatchSampler]:
    """A loader over ``ds`` with a GlobalBatchSampler (call sampler.set_epoch(e) before each
    epoch). Workers persist across epochs; the loader has its own generator, so it never
    draws from torch's global random state (a resumed run repeats the uninterrupted one)."""
    sampler = GlobalBatchSampler(len(ds), global_batch, info, seed)
    loader = torch.utils.data.DataLoader(
        ds, batch_sampler=sampler, num_workers=workers, persistent_workers=workers > 0,
        pin_memory=bool(device is not None and device.type == "cuda"),
        generator=torch.Generator().manual_seed(seed))
    return loader, sampler


# ---------------------------------------------------------------------------------------
# atomic state files


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_torch_save(obj, path: str | Path) -> Path:
    """torch.save to a temp file, fsync, os.replace: a kill leaves the old file or the new
    one, never half of one. Read back with torch.load(weights_only=True)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    buf = io.BytesIO()
    torch.save(obj, buf)
    with open(tmp, "wb") as f:
        f.write(buf.getbuffer())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return path


def rng_state() -> dict:
    """torch's CPU (and CUDA) random states, as tensors (weights_only-loadable)."""
    st = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return st


def set_rng_state(st: dict) -> None:
    if "cpu" in st:
        torch.set_rng_state(st["cpu"].cpu())
    if "cuda" in st and torch.cuda.is_available():
        states = list(st["cuda"].cpu())
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)


def config_fingerprint(obj) -> str:
    return json.dumps(obj, sort_keys=True, default=str)
