"""Augmentations of MoExt (arXiv 2407.07345; MOEXT.md "Losses" and "Data for each phase").

Pre-training views (the expansion sets). Every input set (onset, apex) becomes m = 3 view
pairs: view 0 is the pair itself, views 1 and 2 each apply 2 of the 3 paper operations

    contrast : increase contrast, x -> pivot + k (x - pivot), k ~ U[1.2, 1.8]
    grey     : ITU-R BT.601 luma copied to the 3 channels
    noise    : additive Gaussian noise, sigma ~ U[0.02, 0.08]

(applied in that order, then clipped to [0, 1]). A view uses the SAME parameters on the
onset and the apex of its set: the same contrast factor and pivot (the mean luma of the
pair), and the same noise field, so a view changes appearance but adds no motion.
The ranges are ours (the paper gives none).

Fine-tuning: horizontal mirror (p = 0.5) and rotation about the centre by an angle
~ U[-10, 10] degrees (positive = counter-clockwise on screen), the same transform on the
onset and the apex; the data are expanded 10x (copy 0 is the pair as is).

The maths works on torch float tensors (B, 3, H, W) RGB in [0, 1] (rotation with
affine_grid / grid_sample, no torchvision). ``expansion_views`` and ``finetune_augment``
are the forms train/data.py calls on (H, W, 3) uint8 crops. Randomness comes from a
numpy Generator, so a run is reproducible from its seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

VIEW_OPS = ("contrast", "grey", "noise")  # the order in which a view applies its operations
OPS_PER_VIEW = 2
VIEWS = 3  # m: the frame itself + 2 augmented views
CONTRAST_RANGE = (1.2, 1.8)
NOISE_STD_RANGE = (0.02, 0.08)
MAX_ANGLE = 10.0
REPEATS = 10
LUMA = (0.299, 0.587, 0.114)


def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


# ---------------------------------------------------------------------------------------
# pre-training views


@dataclass(frozen=True)
class ViewParams:
    ops: tuple[str, ...]  # a subset of VIEW_OPS
    contrast: float       # factor k > 1
    noise_std: float      # sigma on the [0, 1] scale
    noise_seed: int       # seeds the noise field (one field shared by onset and apex)


def sample_view_params(rng: np.random.Generator | int | None = None, ops_per_view: int = OPS_PER_VIEW,
                       contrast_range=CONTRAST_RANGE, noise_std_range=NOISE_STD_RANGE) -> ViewParams:
    """Draw ``ops_per_view`` of the 3 operations and their parameters."""
    rng = _rng(rng)
    if not 1 <= ops_per_view <= len(VIEW_OPS):
        raise ValueError(f"ops_per_view must be in 1..{len(VIEW_OPS)}, got {ops_per_view}")
    chosen = set(rng.choice(len(VIEW_OPS), size=ops_per_view, replace=False).tolist())
    return ViewParams(
        ops=tuple(op for i, op in enumerate(VIEW_OPS) if i in chosen),
        contrast=float(rng.uniform(*contrast_range)),
        noise_std=float(rng.uniform(*noise_std_range)),
        noise_seed=int(rng.integers(0, 2**62)),
    )


def luma(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB -> (B, 1, H, W) grey."""
    w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def to_grey(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 3, H, W) with the luma in every channel."""
    return luma(x).expand_as(x).contiguous()


def increase_contrast(x: torch.Tensor, factor: float, pivot: torch.Tensor) -> torch.Tensor:
    """pivot + factor (x - pivot), clipped to [0, 1]; pivot broadcastable to x (e.g. (B, 1, 1, 1))."""
    return (pivot + factor * (x - pivot)).clamp(0.0, 1.0)


def noise_field(shape, std: float, seed: int, dtype=torch.float32, device=None) -> torch.Tensor:
    g = torch.Generator().manual_seed(int(seed))
    return (torch.randn(shape, generator=g, dtype=dtype) * std).to(device)


def apply_view_pair(onset: torch.Tensor, apex: torch.Tensor, p: ViewParams) -> tuple[torch.Tensor, torch.Tensor]:
    """One view with the same parameters on both frames: (B, 3, H, W) in [0, 1] each."""
    if onset.shape != apex.shape:
        raise ValueError(f"onset {tuple(onset.shape)} and apex {tuple(apex.shape)} differ in shape")
    pivot = 0.5 * (luma(onset).mean(dim=(1, 2, 3), keepdim=True) + luma(apex).mean(dim=(1, 2, 3), keepdim=True))
    noise = noise_field(onset.shape, p.noise_std, p.noise_seed, onset.dtype, onset.device) if "noise" in p.ops else None
    out = []
    for x in (onset, apex):
        if "contrast" in p.ops:
            x = increase_contrast(x, p.contrast, pivot)
        if "grey" in p.ops:
            x = to_grey(x)
        if noise is not None:
            x = x + noise
        out.append(x.clamp(0.0, 1.0))
    return out[0], out[1]


def expansion_sets(onset: torch.Tensor, apex: torch.Tensor, m: int = VIEWS,
                   rng: np.random.Generator | int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, H, W) onset and apex in [0, 1] -> onset and apex expansion sets (B, m, 3, H, W);
    view 0 is the frame itself, every other view of every sample draws its own parameters."""
    rng = _rng(rng)
    views_o, views_a = [onset], [apex]
    for _ in range(1, m):
        vo, va = [], []
        for b in range(onset.shape[0]):
            o, a = apply_view_pair(onset[b:b + 1], apex[b:b + 1], sample_view_params(rng))
            vo.append(o)
            va.append(a)
        views_o.append(torch.cat(vo))
        views_a.append(torch.cat(va))
    return torch.stack(views_o, dim=1), torch.stack(views_a, dim=1)  # (B, m, 3, H, W) each


# ---------------------------------------------------------------------------------------
# uint8 <-> tensor


def u8_to_tensor(img: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [0, 1]."""
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB crop, got {img.dtype} {img.shape}")
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255.0


def tensor_to_u8(x: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) in [0, 1] -> (H, W, 3) uint8 (rounded)."""
    return (x[0].permute(1, 2, 0).clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()


def expansion_views(onset: np.ndarray, apex: np.ndarray, views: int = VIEWS,
                    rng: np.random.Generator | int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Uint8 form for data loaders: (H, W, 3) onset and apex -> ``views`` (onset, apex) pairs,
    the first the input itself."""
    o, a = expansion_sets(u8_to_tensor(onset), u8_to_tensor(apex), views, rng)  # (1, m, 3, H, W)
    return [(onset, apex)] + [(tensor_to_u8(o[:, j]), tensor_to_u8(a[:, j])) for j in range(1, views)]


# ---------------------------------------------------------------------------------------
# fine-tuning


@dataclass(frozen=True)
class FinetuneParams:
    mirror: bool
    angle: float  # degrees, positive = counter-clockwise on screen


def sample_finetune_params(rng: np.random.Generator | int | None = None, max_angle: float = MAX_ANGLE,
                           p_mirror: float = 0.5) -> FinetuneParams:
    rng = _rng(rng)
    return FinetuneParams(mirror=bool(rng.random() < p_mirror), angle=float(rng.uniform(-max_angle, max_angle)))


def mirror(x: torch.Tensor) -> torch.Tensor:
    """Horizontal flip of (B, C, H, W)."""
    return torch.flip(x, dims=[-1])


def rotate(x: torch.Tensor, angle_deg: float, padding_mode: str = "border") -> torch.Tensor:
    """Rotate (B, C, H, W) about the image centre by ``angle_deg`` (counter-clockwise on
    screen), bilinear; pixels from outside take the nearest border value (our choice)."""
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    # affine_grid maps each output position to the input position it samples, in [-1, 1]
    # coords with y pointing down. Output (x, y) samples input (c x - s y, s x + c y): a point
    # right of the centre ends up above it for a = +90 deg (tests/test_augment.py checks it).
    theta = torch.tensor([[c, -s, 0.0], [s, c, 0.0]], dtype=x.dtype, device=x.device)
    h, w = x.shape[-2:]
    if h != w:  # keep the rotation rigid in pixels on non-square images
        theta[0, 1] *= h / w
        theta[1, 0] *= w / h
    grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def finetune_transform(onset: torch.Tensor, apex: torch.Tensor, p: FinetuneParams) -> tuple[torch.Tensor, torch.Tensor]:
    """The same mirror + rotation on both frames, (B, 3, H, W) each."""
    out = []
    for x in (onset, apex):
        if p.mirror:
            x = mirror(x)
        if p.angle != 0.0:
            x = rotate(x, p.angle)
        out.append(x)
    return out[0], out[1]


def finetune_augment(onset: np.ndarray, apex: np.ndarray,
                     rng: np.random.Generator | int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Uint8 form for data loaders: one random mirror/rotation of an (H, W, 3) pair."""
    p = sample_finetune_params(rng)
    o, a = finetune_transform(u8_to_tensor(onset), u8_to_tensor(apex), p)
    return tensor_to_u8(o), tensor_to_u8(a)


def expansion_plan(n: int, repeats: int = REPEATS, seed: int = 0,
                   max_angle: float = MAX_ANGLE) -> list[tuple[int, FinetuneParams | None]]:
    """The 10x fine-tuning expansion of n pairs as (source index, transform or None) per
    item. Item i = copy * n + k is copy ``copy`` of pair k; copy 0 is the pair unchanged.
    Each item's transform depends only on (seed, i), so the plan is deterministic."""
    plan = []
    for i in range(n * repeats):
        k, copy = i % n, i // n
        plan.append((k, None if copy == 0 else sample_finetune_params(np.random.default_rng([seed, i]), max_angle)))
    return plan


def expand_pairs(onset: torch.Tensor, apex: torch.Tensor, labels: torch.Tensor, repeats: int = REPEATS,
                 seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, 3, H, W) onset/apex in [0, 1] and (N,) labels -> the (repeats*N, ...) expanded set
    of ``expansion_plan`` (deterministic from ``seed``)."""
    n = onset.shape[0]
    outs_o, outs_a, outs_y = [], [], []
    for k, p in expansion_plan(n, repeats, seed):
        o, a = onset[k:k + 1], apex[k:k + 1]
        if p is not None:
            o, a = finetune_transform(o, a, p)
        outs_o.append(o)
        outs_a.append(a)
        outs_y.append(labels[k:k + 1])
    return torch.cat(outs_o), torch.cat(outs_a), torch.cat(outs_y)
