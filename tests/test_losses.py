"""Pre-training losses against hand-computed values, and gradients reaching the trunk."""
from __future__ import annotations

import math

import pytest
import torch

from train import losses
from train.moext import MoExtConfig, MoExtPretrainer


@pytest.fixture(autouse=True)
def one_thread():
    # On a shared 2-core machine, 2 intra-op threads fighting other processes run ~10x slower.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def t(x):
    return torch.tensor(x, dtype=torch.float32)


def test_reconstruction_loss_by_hand():
    recon = t([[0.0, 1.0], [2.0, 3.0]])
    target = t([[0.5, 0.5], [0.5, 0.5]])
    # |.| = 0.5, 0.5, 1.5, 2.5 -> mean 1.25
    assert losses.reconstruction_loss(recon, target).item() == pytest.approx(1.25)
    with pytest.raises(ValueError, match="differ in shape"):
        losses.reconstruction_loss(recon, target[:1])


def test_shape_texture_loss_by_hand_inactive_and_active():
    # one set, 2m = 2 instances, D = 2
    z_s = t([[[1.0, 0.0], [0.0, 1.0]]])
    z_t = t([[[0.0, 1.0], [0.0, -1.0]]])
    anchor = t([1.0, 0.0])
    # instance 0: d(anchor, s) = 0, d(s, t) = sqrt 2 ; instance 1: d(anchor, s) = sqrt 2, d(s, t) = 2
    assert losses.shape_texture_loss(z_s, z_t, anchor, eps=0.3).item() == 0.0  # both hinges inactive
    want = (0.0 + max(0.0, math.sqrt(2) - 2 + 0.8)) / 2  # only instance 1 active
    assert losses.shape_texture_loss(z_s, z_t, anchor, eps=0.8).item() == pytest.approx(want, abs=1e-6)


def test_shape_texture_hinge_at_the_margin():
    z_s = t([[[1.0, 0.0]]])
    z_t = t([[[1.0, 1.5]]])
    anchor = t([0.0, 0.0])
    # d(anchor, s) = 1, d(s, t) = 1.5: 1 - 1.5 + eps
    assert losses.shape_texture_loss(z_s, z_t, anchor, eps=0.5).item() == 0.0
    assert losses.shape_texture_loss(z_s, z_t, anchor, eps=0.4).item() == 0.0
    assert losses.shape_texture_loss(z_s, z_t, anchor, eps=0.6).item() == pytest.approx(0.1, abs=1e-6)
    # active: gradient pulls the shape towards the anchor and away from its texture
    z = z_s.clone().requires_grad_(True)
    losses.shape_texture_loss(z, z_t, anchor, eps=0.6).backward()
    # d/ds (|s - a| - |s - t|) = (s - a)/|s - a| - (s - t)/|s - t| = (1, 0) - (0, -1) = (1, 1)
    torch.testing.assert_close(z.grad, t([[[1.0, 1.0]]]))
    # inactive: no gradient at all
    z.grad = None
    losses.shape_texture_loss(z, z_t, anchor, eps=0.4).backward()
    torch.testing.assert_close(z.grad, torch.zeros_like(z))


def test_shape_consistency_by_hand_m1():
    # onset view and apex view 0.1 apart, eps 0.3: 2x2 matrix [[0, 0.2], [0.2, 0]] -> mean 0.1
    z = t([[[0.0, 0.0], [0.1, 0.0]]])
    assert losses.shape_consistency_loss(z, eps=0.3).item() == pytest.approx(0.1, abs=1e-6)
    # apart by more than the margin: the push term is inactive, nothing pulls -> 0
    z = t([[[0.0, 0.0], [0.5, 0.0]]])
    assert losses.shape_consistency_loss(z, eps=0.3).item() == 0.0
    # exactly at the margin: inactive
    z = t([[[0.0, 0.0], [0.25, 0.0]]])
    assert losses.shape_consistency_loss(z, eps=0.25).item() == 0.0


def test_shape_consistency_by_hand_m2_two_sets():
    far = t([[0.0, 0.0], [0.0, 0.2], [1.0, 0.0], [1.0, 0.2]])   # onset, onset, apex, apex
    near = t([[0.0, 0.0], [0.0, 0.2], [0.1, 0.0], [0.1, 0.2]])
    # same-frame pairs (0,1), (1,0), (2,3), (3,2): d = 0.2 each -> 0.8 in both sets
    # far: onset-apex distances >= 1 > eps -> 0
    far_sum = 0.8
    # near: onset-apex d = 0.1, sqrt(0.05), sqrt(0.05), 0.1 (and the symmetric 4)
    near_sum = 0.8 + 2 * (2 * (0.3 - 0.1) + 2 * (0.3 - math.sqrt(0.05)))
    z = torch.stack([far, near])  # (n=2, 2m=4, D=2)
    want = (far_sum + near_sum) / (2 * 4 * 4)
    assert losses.shape_consistency_loss(z, eps=0.3).item() == pytest.approx(want, abs=1e-6)


def test_shape_consistency_gradient_finite_on_the_diagonal():
    z = torch.randn(2, 6, 8, requires_grad=True)
    losses.shape_consistency_loss(z).backward()
    assert torch.isfinite(z.grad).all()
    with pytest.raises(ValueError, match="2m"):
        losses.shape_consistency_loss(torch.randn(1, 3, 4))


def test_total_and_layout():
    assert losses.total_loss(t(1.0), t(2.0), t(3.0)).item() == pytest.approx(1 + 0.5 * 2 + 1 * 3)
    assert losses.A1 == 0.5 and losses.A2 == 1.0 and 0.2 <= losses.EPS <= 0.5
    n, m, c = 2, 3, 4
    x_o = torch.arange(n * m * c, dtype=torch.float32).reshape(n * m, c, 1, 1)
    x_a = -x_o
    sets = losses.as_sets(x_o, x_a, n, m)
    assert tuple(sets.shape) == (n, 2 * m, c)
    torch.testing.assert_close(sets[1, 2], x_o[1 * m + 2].flatten())
    torch.testing.assert_close(sets[1, m + 2], x_a[1 * m + 2].flatten())
    assert losses.onset_apex_labels(m).tolist() == [0, 0, 0, 1, 1, 1]


def test_gradients_reach_the_trunk_from_each_loss():
    torch.manual_seed(0)
    model = MoExtPretrainer(MoExtConfig(width=0.125, proj_dim=64)).train()
    n, m = 2, 3
    targets = torch.rand(n, m, 3, 224, 224)
    onset = torch.randn(n, m, 3, 224, 224)
    apex = torch.randn(n, m, 3, 224, 224)
    # eps 3 > max distance 2 between unit vectors: every hinge is active, so L_st has a gradient
    out = losses.pretrain_losses(model, onset, apex, targets, eps=3.0)
    assert set(out) == {"total", "re", "st", "ss", "st_active"} and out["st_active"].item() == 1.0
    w = model.separator.trunk.conv1.weight
    for name in ("re", "st", "ss"):
        (g,) = torch.autograd.grad(out[name], w, retain_graph=True)
        assert torch.isfinite(g).all() and g.abs().sum() > 0, f"L_{name} does not reach the trunk"
    # the total is the weighted sum
    want = out["re"] + 0.5 * out["st"] + out["ss"]
    torch.testing.assert_close(out["total"], want)
    # the texture branch and the reconstructor get gradients (L_re through T_o, L_st through T)
    out["total"].backward()
    assert model.separator.texture.fc.weight.grad.abs().sum() > 0
    assert model.reconstructor.out[1].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"\(n, m, 3, H, W\)"):
        losses.pretrain_losses(model, onset[0], apex[0], targets[0])


def test_reconstruction_target_apex_by_default_views_as_variant():
    """Default (the paper): L_re rebuilds each set's own apex from its original onset/apex
    (view 0), so the augmented apex views are not targets; "views" targets every view pair."""
    torch.manual_seed(0)
    model = MoExtPretrainer(MoExtConfig(width=0.125, proj_dim=32)).train()
    n, m = 2, 3
    onset, apex = torch.randn(n, m, 3, 224, 224), torch.randn(n, m, 3, 224, 224)
    targets = torch.rand(n, m, 3, 224, 224)
    other = targets.clone()
    other[:, 1:] = torch.rand(n, m - 1, 3, 224, 224)  # change only the augmented views' targets
    with torch.no_grad():
        a = losses.pretrain_losses(model, onset, apex, targets)
        b = losses.pretrain_losses(model, onset, apex, other)
        va = losses.pretrain_losses(model, onset, apex, targets, recon_target="views")
        vb = losses.pretrain_losses(model, onset, apex, other, recon_target="views")
        # L_re by hand from view 0
        s, t = model.separator(torch.cat([onset.flatten(0, 1), apex.flatten(0, 1)]))
        first = torch.arange(n) * m
        recon = model.reconstructor(model.motion(s[:n * m][first], s[n * m:][first]), t[:n * m][first])
    assert a["re"].item() == pytest.approx(b["re"].item(), abs=0)
    assert va["re"].item() != pytest.approx(vb["re"].item(), abs=1e-6)
    assert a["re"].item() == pytest.approx((recon - targets[:, 0]).abs().mean().item(), rel=1e-5)
    # L_st and L_ss use all 2m instances either way
    assert a["st"].item() == pytest.approx(va["st"].item(), rel=1e-5)
    assert a["ss"].item() == pytest.approx(va["ss"].item(), rel=1e-5)
    with pytest.raises(ValueError, match="recon_target"):
        losses.pretrain_losses(model, onset, apex, targets, recon_target="augmented")


def test_l_st_hinge_is_inactive_at_initialisation_with_the_papers_margin():
    """What the README reports: at the paper's margins (0.2-0.5) no L_st term is active on a
    freshly initialised network (shape features sit near their mean, far from their texture
    features), so L_st is 0 and gives no gradient; st_active says so."""
    torch.manual_seed(0)
    model = MoExtPretrainer(MoExtConfig(width=0.25)).train()
    n, m = 2, 3
    onset = torch.randn(n, m, 3, 224, 224)
    apex = onset + 0.1 * torch.randn_like(onset)
    out = losses.pretrain_losses(model, onset, apex, torch.rand(n, m, 3, 224, 224), eps=0.5)
    assert out["st"].item() == 0.0 and out["st_active"].item() == 0.0
