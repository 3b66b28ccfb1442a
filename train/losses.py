"""Pre-training losses of MoExt (arXiv 2407.07345, Sec. 3; MOEXT.md "Losses").

    L = L_re + a1 * L_st + a2 * L_ss,   a1 = 0.5, a2 = 1, margin eps in [0.2, 0.5] (default 0.3)

Tensor layout of the expansion sets. A batch has n input sets (onset/apex pairs); set i
holds an onset expansion set and an apex expansion set of m instances each (view 0 is the
frame itself, views 1..m-1 augmented, train/augment.py), so 2m instances per set:

    onset_views, apex_views : (n, m, 3, H, W)   normalised network input
    apex_targets            : (n, m, 3, H, W)   apex views in [0, 1] (reconstruction targets)
    z_shape, z_texture      : (n, 2m, D)        projected, L2-normalised features; along
                                                dim 1 the m onset views come first, then
                                                the m apex views (same view order)

so instance j < m has y_j = onset and j >= m has y_j = apex. d is the Euclidean distance.
The loss functions are small pure functions of these tensors (tested by hand);
``pretrain_losses`` runs a MoExtPretrainer on a batch and combines them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from train import distributed

A1 = 0.5  # weight of L_st (paper)
A2 = 1.0  # weight of L_ss (paper)
EPS = 0.3  # margin; the paper's range is [0.2, 0.5]


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_re: mean |R(...) - apex| over pixels, channels and batch. target in [0, 1]."""
    if recon.shape != target.shape:
        raise ValueError(f"reconstruction {tuple(recon.shape)} and target {tuple(target.shape)} differ in shape")
    return (recon - target).abs().mean()


def _dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distance along the last dim (gradient 0, not NaN, where a == b)."""
    return torch.linalg.vector_norm(a - b, dim=-1)


def shape_texture_loss(z_shape: torch.Tensor, z_texture: torch.Tensor, z_anchor: torch.Tensor,
                       eps: float = EPS) -> torch.Tensor:
    """L_st = 1/(n 2m) sum_ij max(0, d(f(S_bar), f(S_i^j)) - d(f(S_i^j), f(T_i^j)) + eps).

    z_shape, z_texture: (n, 2m, D); z_anchor: (D,) = f(S_bar), the projection of the mean
    shape feature over the whole batch (computed with gradients, see pretrain_losses)."""
    if z_shape.shape != z_texture.shape:
        raise ValueError(f"z_shape {tuple(z_shape.shape)} and z_texture {tuple(z_texture.shape)} differ in shape")
    d_anchor = _dist(z_anchor.reshape(1, 1, -1), z_shape)  # (n, 2m)
    d_texture = _dist(z_shape, z_texture)                  # (n, 2m)
    return F.relu(d_anchor - d_texture + eps).mean()


def onset_apex_labels(m: int, device=None) -> torch.Tensor:
    """y of the 2m instances of a set: (2m,) with 0 = onset view, 1 = apex view."""
    return torch.cat([torch.zeros(m, dtype=torch.long, device=device), torch.ones(m, dtype=torch.long, device=device)])


def shape_consistency_loss(z_shape: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """L_ss = 1/(n 2m 2m) sum_i sum_jk ([y_j = y_k] d_jk + [y_j != y_k] max(0, eps - d_jk)),
    d_jk = d(f(S_i^j), f(S_i^k)), over all ordered pairs j, k (the diagonal adds 0).

    z_shape: (n, 2m, D), onset views first (module docstring)."""
    n, k, _ = z_shape.shape
    if k % 2:
        raise ValueError(f"z_shape has {k} instances per set; expected 2m (m onset views then m apex views)")
    d = _dist(z_shape[:, :, None, :], z_shape[:, None, :, :])  # (n, 2m, 2m)
    y = onset_apex_labels(k // 2, z_shape.device)
    same = (y[:, None] == y[None, :])                          # (2m, 2m)
    return torch.where(same, d, F.relu(eps - d)).mean()


def total_loss(l_re: torch.Tensor, l_st: torch.Tensor, l_ss: torch.Tensor,
               a1: float = A1, a2: float = A2) -> torch.Tensor:
    """L = L_re + a1 L_st + a2 L_ss."""
    return l_re + a1 * l_st + a2 * l_ss


def as_sets(x_onset: torch.Tensor, x_apex: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Per-instance features of the flattened views, (n*m, C[, 1, 1]) each (row i*m + j is
    set i, view j) -> (n, 2m, C) in the expansion-set layout (onset views first)."""
    return torch.cat([x_onset.reshape(n, m, -1), x_apex.reshape(n, m, -1)], dim=1)


RECON_TARGETS = ("apex", "views")


def pretrain_losses(model, onset_views: torch.Tensor, apex_views: torch.Tensor, apex_targets: torch.Tensor,
                    eps: float = EPS, a1: float = A1, a2: float = A2,
                    recon_target: str = "apex") -> dict[str, torch.Tensor]:
    """Run a MoExtPretrainer on one batch of expansion sets and return
    {"total", "re", "st", "ss", "st_active"} (scalars; "total" carries the gradients;
    "st_active": the share of instances whose L_st hinge is above zero).

    onset_views, apex_views: (n, m, 3, H, W) normalised; apex_targets: (n, m, 3, H, W) apex
    views in [0, 1]. F runs on all 2nm frames (L_st and L_ss use every instance).
    L_re (``recon_target``):
      "apex"  (the paper, Eq. 1): R(E(F(onset), F(apex)), T(onset)) of each set's own
              onset/apex (view 0) against its apex, apex_targets[:, 0];
      "views" (variant): every view pair j, against the augmented apex view j.
    S-bar, the batch-mean shape feature of L_st, is taken over the GLOBAL batch under DDP
    (train.distributed.global_mean, with gradients to every process's features)."""
    if onset_views.ndim != 5 or onset_views.shape != apex_views.shape or apex_views.shape != apex_targets.shape:
        raise ValueError(
            "expected onset_views, apex_views, apex_targets of one shape (n, m, 3, H, W); got "
            f"{tuple(onset_views.shape)}, {tuple(apex_views.shape)}, {tuple(apex_targets.shape)}"
        )
    if recon_target not in RECON_TARGETS:
        raise ValueError(f"recon_target must be one of {RECON_TARGETS}, got {recon_target!r}")
    n, m = onset_views.shape[:2]
    s, t = model.separator(torch.cat([onset_views.flatten(0, 1), apex_views.flatten(0, 1)]))  # (2nm, C, 1, 1)
    s_o, s_a, t_o, t_a = s[:n * m], s[n * m:], t[:n * m], t[n * m:]  # row i*m + j: set i, view j
    if recon_target == "apex":
        def first(x):                                           # view 0 of each set (a strided view)
            return x.reshape(n, m, *x.shape[1:])[:, 0]
        motion = model.motion(first(s_o), first(s_a))               # (n, C, 1, 1)
        recon = model.reconstructor(motion, first(t_o))             # (n, 3, H, W)
        target = apex_targets[:, 0]
    else:
        recon = model.reconstructor(model.motion(s_o, s_a), t_o)    # (n*m, 3, H, W)
        target = apex_targets.flatten(0, 1)
    l_re = reconstruction_loss(recon.float(), target.float())
    shapes = as_sets(s_o, s_a, n, m)                        # (n, 2m, C)
    textures = as_sets(t_o, t_a, n, m)                      # (n, 2m, C)
    c = shapes.shape[-1]
    s_bar = distributed.global_mean(shapes.reshape(-1, c))  # (1, C), gradients flow through it
    z = model.project(torch.cat([shapes.reshape(-1, c), textures.reshape(-1, c), s_bar.to(shapes.dtype)]))
    k = n * 2 * m
    z_shape = z[:k].reshape(n, 2 * m, -1).float()           # (n, 2m, D)
    z_texture = z[k:2 * k].reshape(n, 2 * m, -1).float()    # (n, 2m, D)
    z_anchor = z[-1].float()                                # (D,)
    l_st = shape_texture_loss(z_shape, z_texture, z_anchor, eps)
    l_ss = shape_consistency_loss(z_shape, eps)
    with torch.no_grad():   # share of instances whose L_st hinge is active (0: L_st gives no gradient)
        st_active = (_dist(z_anchor.reshape(1, 1, -1), z_shape) - _dist(z_shape, z_texture) + eps > 0).float().mean()
    return {"total": total_loss(l_re, l_st, l_ss, a1, a2), "re": l_re, "st": l_st, "ss": l_ss,
            "st_active": st_active}
