"""Augmentations of MoExt (arXiv 2407.07345; MOEXT.md "Losses" and "Data for each phase").

Pre-training views (the expansion sets). Every input set (onset, apex) becomes m = 3 view
pairs: view 0 is the pair itself, views 1 and 2 each apply ONE of the 3 paper operations,
drawn at random per view (the paper's "m-1 types of operations", m = 3):

    contrast : increase contrast, x -> pivot + k (x - pivot), k ~ U[1.2, 1.8]
    grey     : ITU-R BT.601 luma copied to the 3 channels
    noise    : additive Gaussian noise, sigma ~ U[0.02, 0.08]

then clipped to [0, 1]. ``ops_per_view=2`` (``--view-ops 2``) is the older variant, two
operations per view (applied in the order above). A view uses the SAME parameters on the
onset and the apex of its set: the same contrast factor and pivot (the mean luma of the
pair), and the same noise field, so a view changes appearance but adds no motion.
The ranges are ours (the paper gives none).

Fine-tuning: horizontal mirror (p = 0.5) and rotation about the centre by an angle
~ U[-10, 10] degrees (positive = counter-clockwise on screen), the same transform on the
onset and the apex; the data are expanded 10x (copy 0 is the pair as is).

Everything runs batched on the training device: float tensors (B, 3, H, W) RGB in [0, 1]
(rotation with affine_grid / grid_sample, no torchvision), no uint8 round trips. The random
parameters are drawn per item with numpy (train/data.py seeds them from (seed, epoch,
item)), so a run is reproducible from its seed whatever the number of processes or loader
workers; noise fields are drawn on the device from a per-view seed (CPU and CUDA give
different fields for the same seed).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

VIEW_OPS = ("contrast", "grey", "noise")  # the order in which a view applies its operations
OPS_PER_VIEW = 1  # the paper: one operation type per augmented view
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


def increase_contrast(x: torch.Tensor, factor, pivot: torch.Tensor) -> torch.Tensor:
    """pivot + factor (x - pivot), clipped to [0, 1]; factor a float or a tensor and pivot
    broadcastable to x (e.g. (B, 1, 1, 1))."""
    return (pivot + factor * (x - pivot)).clamp(0.0, 1.0)


def noise_field(shape, std: float, seed: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """std * N(0, 1) of ``shape``, drawn on ``device`` from a generator seeded with ``seed``."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    g = torch.Generator(device=device).manual_seed(int(seed))
    return torch.randn(tuple(shape), generator=g, dtype=dtype, device=device) * std


@dataclass
class ViewBatch:
    """Parameters of the m-1 augmented views of B sets, as tensors:
    ops (B, m-1, 3) bool in VIEW_OPS order, contrast, noise_std (B, m-1) float, noise_seed (B, m-1) int64."""

    ops: torch.Tensor
    contrast: torch.Tensor
    noise_std: torch.Tensor
    noise_seed: torch.Tensor

    @property
    def views(self) -> int:
        return self.ops.shape[1] + 1

    @classmethod
    def from_params(cls, params: Sequence[Sequence[ViewParams]]) -> ViewBatch:
        """params[b][j]: view j + 1 of set b."""
        ops = torch.tensor([[[op in p.ops for op in VIEW_OPS] for p in row] for row in params], dtype=torch.bool)
        b, v = len(params), (len(params[0]) if len(params) else 0)
        return cls(ops.reshape(b, v, len(VIEW_OPS)),
                   torch.tensor([[p.contrast for p in row] for row in params], dtype=torch.float32).reshape(b, v),
                   torch.tensor([[p.noise_std for p in row] for row in params], dtype=torch.float32).reshape(b, v),
                   torch.tensor([[p.noise_seed for p in row] for row in params], dtype=torch.int64).reshape(b, v))


def draw_view_batch(rngs: Sequence[np.random.Generator], m: int = VIEWS, ops_per_view: int = OPS_PER_VIEW) -> ViewBatch:
    """One generator per set -> the parameters of its m-1 augmented views."""
    return ViewBatch.from_params([[sample_view_params(r, ops_per_view) for _ in range(1, m)] for r in rngs])


def _view_batch(onset: torch.Tensor, apex: torch.Tensor, ops: torch.Tensor, contrast: torch.Tensor,
                noise_std: torch.Tensor, noise_seed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One view of B sets: ops (B, 3) bool, contrast / noise_std / noise_seed (B,). Each
    operation runs on the sets that use it only."""
    dev, dt = onset.device, onset.dtype
    ops = ops.cpu()
    o, a = onset.clone(), apex.clone()
    sel = torch.nonzero(ops[:, 0]).flatten()
    if len(sel):  # contrast, pivot = the mean luma of the set's onset and apex
        idx = sel.to(dev)
        so, sa = o[idx], a[idx]
        pivot = 0.5 * (luma(so).mean(dim=(1, 2, 3), keepdim=True) + luma(sa).mean(dim=(1, 2, 3), keepdim=True))
        k = contrast[sel].to(dev, dt).view(-1, 1, 1, 1)
        o[idx], a[idx] = increase_contrast(so, k, pivot), increase_contrast(sa, k, pivot)
    sel = torch.nonzero(ops[:, 1]).flatten()
    if len(sel):  # grey
        idx = sel.to(dev)
        o[idx], a[idx] = to_grey(o[idx]), to_grey(a[idx])
    for b in torch.nonzero(ops[:, 2]).flatten().tolist():  # noise: one field per set, on both frames
        noise = noise_field(onset.shape[1:], float(noise_std[b]), int(noise_seed[b]), dt, dev)
        o[b] += noise
        a[b] += noise
    return o.clamp_(0.0, 1.0), a.clamp_(0.0, 1.0)


def expand_views(onset: torch.Tensor, apex: torch.Tensor, vb: ViewBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, H, W) onset and apex in [0, 1] (any device) -> onset and apex expansion sets
    (B, m, 3, H, W); view 0 is the frame itself, view j uses vb's parameters j - 1 on both."""
    if onset.shape != apex.shape:
        raise ValueError(f"onset {tuple(onset.shape)} and apex {tuple(apex.shape)} differ in shape")
    if vb.ops.shape[0] != onset.shape[0]:
        raise ValueError(f"{vb.ops.shape[0]} view parameter rows for a batch of {onset.shape[0]}")
    views_o, views_a = [onset], [apex]
    for j in range(vb.views - 1):
        o, a = _view_batch(onset, apex, vb.ops[:, j], vb.contrast[:, j], vb.noise_std[:, j], vb.noise_seed[:, j])
        views_o.append(o)
        views_a.append(a)
    return torch.stack(views_o, dim=1), torch.stack(views_a, dim=1)


def apply_view_pair(onset: torch.Tensor, apex: torch.Tensor, p: ViewParams) -> tuple[torch.Tensor, torch.Tensor]:
    """One view with the same parameters on every frame of a batch: (B, 3, H, W) in [0, 1] each."""
    vb = ViewBatch.from_params([[p]] * onset.shape[0])
    o, a = expand_views(onset, apex, vb)
    return o[:, 1], a[:, 1]


def expansion_sets(onset: torch.Tensor, apex: torch.Tensor, m: int = VIEWS,
                   rng: np.random.Generator | int | None = None,
                   ops_per_view: int = OPS_PER_VIEW) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, H, W) onset and apex in [0, 1] -> onset and apex expansion sets (B, m, 3, H, W);
    view 0 is the frame itself, every other view of every sample draws its own parameters
    from ``rng``."""
    rng = _rng(rng)
    return expand_views(onset, apex, draw_view_batch([rng] * onset.shape[0], m, ops_per_view))


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


def _rotation_thetas(angles_deg: torch.Tensor, h: int, w: int, dtype, device) -> torch.Tensor:
    """(B,) angles -> (B, 2, 3) affine_grid matrices of a rotation about the centre."""
    a = angles_deg.to(device=device, dtype=torch.float64) * (math.pi / 180.0)
    c, s = torch.cos(a), torch.sin(a)
    # affine_grid maps each output position to the input position it samples, in [-1, 1]
    # coords with y pointing down. Output (x, y) samples input (c x - s y, s x + c y): a point
    # right of the centre ends up above it for a = +90 deg (tests/test_augment.py checks it).
    zero = torch.zeros_like(c)
    theta = torch.stack([torch.stack([c, -s * (h / w), zero], -1), torch.stack([s * (w / h), c, zero], -1)], 1)
    return theta.to(dtype)


def rotate(x: torch.Tensor, angle_deg, padding_mode: str = "border") -> torch.Tensor:
    """Rotate (B, C, H, W) about the image centre by ``angle_deg`` (a float, or a (B,) tensor
    of per-item angles; counter-clockwise on screen), bilinear; pixels from outside take the
    nearest border value (our choice). The rotation stays rigid in pixels on non-square images."""
    h, w = x.shape[-2:]
    angles = angle_deg if torch.is_tensor(angle_deg) else torch.full((x.shape[0],), float(angle_deg))
    theta = _rotation_thetas(angles.reshape(-1).expand(x.shape[0]), h, w, x.dtype, x.device)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def finetune_batch(onset: torch.Tensor, apex: torch.Tensor, mirrored: torch.Tensor,
                   angles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched fine-tuning transform on the device: (B, 3, H, W) onset / apex, per-item
    mirror flags (B,) bool and angles (B,) degrees; the same transform on both frames of an
    item. Items with no mirror and angle 0 come back unchanged (bit for bit)."""
    dev = onset.device
    flip = mirrored.to(dev).view(-1, 1, 1, 1)
    turn = (angles != 0).to(dev).view(-1, 1, 1, 1)
    out = []
    for x in (onset, apex):
        x = torch.where(flip, mirror(x), x)
        if bool(turn.any()):
            x = torch.where(turn, rotate(x, angles.to(dev)), x)
        out.append(x)
    return out[0], out[1]


def finetune_transform(onset: torch.Tensor, apex: torch.Tensor, p: FinetuneParams) -> tuple[torch.Tensor, torch.Tensor]:
    """The same mirror + rotation on both frames, (B, 3, H, W) each."""
    b = onset.shape[0]
    return finetune_batch(onset, apex, torch.full((b,), p.mirror), torch.full((b,), float(p.angle)))


def draw_finetune_batch(rngs: Sequence[np.random.Generator | None],
                        max_angle: float = MAX_ANGLE) -> tuple[torch.Tensor, torch.Tensor]:
    """One generator per item (None = the item as is) -> (mirror (B,) bool, angle (B,) float32)."""
    ps = [sample_finetune_params(r, max_angle) if r is not None else FinetuneParams(False, 0.0) for r in rngs]
    return (torch.tensor([p.mirror for p in ps], dtype=torch.bool),
            torch.tensor([p.angle for p in ps], dtype=torch.float32))
