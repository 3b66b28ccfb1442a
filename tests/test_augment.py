"""Pre-training views and fine-tuning augmentation (same parameters on onset and apex)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from train import augment
from train.augment import FinetuneParams, ViewParams


def rand01(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def test_view_params_one_operation_per_view_by_default():
    """The paper: each augmented view applies ONE operation type, drawn at random."""
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        p = augment.sample_view_params(rng)
        assert len(p.ops) == 1 and set(p.ops) <= set(augment.VIEW_OPS)
        assert augment.CONTRAST_RANGE[0] <= p.contrast <= augment.CONTRAST_RANGE[1]
        assert augment.NOISE_STD_RANGE[0] <= p.noise_std <= augment.NOISE_STD_RANGE[1]
        seen.add(p.ops)
    assert seen == {("contrast",), ("grey",), ("noise",)}
    assert augment.sample_view_params(7) == augment.sample_view_params(7)
    # the older variant (--view-ops 2): two of the three at once
    pairs = {augment.sample_view_params(rng, ops_per_view=2).ops for _ in range(200)}
    assert pairs == {("contrast", "grey"), ("contrast", "noise"), ("grey", "noise")}
    with pytest.raises(ValueError, match="ops_per_view"):
        augment.sample_view_params(rng, ops_per_view=4)


@pytest.mark.parametrize("ops", [("contrast",), ("grey",), ("noise",), ("contrast", "grey"), ("grey", "noise")])
def test_same_parameters_on_onset_and_apex_add_no_motion(ops):
    x = rand01(2, 3, 32, 32)
    p = ViewParams(ops=ops, contrast=1.5, noise_std=0.05, noise_seed=3)
    o, a = augment.apply_view_pair(x, x.clone(), p)
    assert torch.equal(o, a)  # identical frames stay identical: the view adds no motion
    assert not torch.equal(o, x)
    assert o.min() >= 0 and o.max() <= 1


def test_the_three_operations():
    x = 0.3 + 0.4 * rand01(1, 3, 64, 64)
    grey = augment.to_grey(x)
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    torch.testing.assert_close(grey[0, 0, 5, 7], 0.299 * x[0, 0, 5, 7] + 0.587 * x[0, 1, 5, 7] + 0.114 * x[0, 2, 5, 7])
    pivot = torch.full((1, 1, 1, 1), 0.5)
    c = augment.increase_contrast(x, 1.5, pivot)
    torch.testing.assert_close(c - 0.5, 1.5 * (x - 0.5))  # no clipping in this range
    noisy, _ = augment.apply_view_pair(torch.full((1, 3, 128, 128), 0.5), torch.full((1, 3, 128, 128), 0.5),
                                       ViewParams(("noise",), 1.0, 0.05, 1))
    assert (noisy - 0.5).std().item() == pytest.approx(0.05, rel=0.05)
    # contrast pivot is shared: the apex gets exactly the onset's mapping where it is unchanged
    onset, apex = x.clone(), x.clone()
    apex[..., :8, :8] = 0.9  # a local change (the "motion")
    o, a = augment.apply_view_pair(onset, apex, ViewParams(("contrast",), 1.5, 0.0, 0))
    torch.testing.assert_close(o[..., 8:, 8:], a[..., 8:, 8:])


def test_expansion_sets_layout():
    onset, apex = rand01(2, 3, 24, 24, seed=1), rand01(2, 3, 24, 24, seed=2)
    vo, va = augment.expansion_sets(onset, apex, m=3, rng=0)
    assert tuple(vo.shape) == tuple(va.shape) == (2, 3, 3, 24, 24)
    assert torch.equal(vo[:, 0], onset) and torch.equal(va[:, 0], apex)  # view 0 is the frame itself
    assert not torch.equal(vo[:, 1], onset) and not torch.equal(vo[:, 1], vo[:, 2])
    assert vo.min() >= 0 and vo.max() <= 1
    vo2, va2 = augment.expansion_sets(onset, apex, m=3, rng=0)
    assert torch.equal(vo, vo2) and torch.equal(va, va2)  # reproducible from the seed


def test_batched_views_match_one_pair_at_a_time_without_quantisation():
    """expand_views works on the whole batch (one call per view) and gives each set exactly
    what apply_view_pair gives it alone; the result stays float (no uint8 round trip)."""
    onset, apex = rand01(4, 3, 20, 20, seed=7), rand01(4, 3, 20, 20, seed=8)
    rngs = [np.random.default_rng([3, i]) for i in range(4)]
    vb = augment.draw_view_batch(rngs, m=3)
    assert tuple(vb.ops.shape) == (4, 2, 3) and bool((vb.ops.sum(-1) == 1).all())
    vo, va = augment.expand_views(onset, apex, vb)
    assert tuple(vo.shape) == (4, 3, 3, 20, 20)
    again = [np.random.default_rng([3, i]) for i in range(4)]
    for b in range(4):
        for j in (1, 2):
            p = augment.sample_view_params(again[b])
            o, a = augment.apply_view_pair(onset[b:b + 1], apex[b:b + 1], p)
            torch.testing.assert_close(vo[b, j], o[0], rtol=0, atol=1e-6)
            torch.testing.assert_close(va[b, j], a[0], rtol=0, atol=1e-6)
    steps = vo[:, 1:] * 255
    assert float((steps - steps.round()).abs().max()) > 1e-3  # not quantised to 1/255
    with pytest.raises(ValueError, match="view parameter rows"):
        augment.expand_views(onset[:2], apex[:2], vb)


def test_mirror_and_rotation_geometry():
    x = torch.zeros(1, 1, 21, 21)
    x[0, 0, 10, 15] = 1.0  # right of the centre
    assert augment.mirror(x)[0, 0, 10, 5] == 1.0
    y = augment.rotate(x, 90.0, padding_mode="zeros")
    assert (y[0, 0] == y.max()).nonzero().tolist() == [[5, 10]]  # counter-clockwise on screen: now above
    img = rand01(1, 3, 64, 64)
    torch.testing.assert_close(augment.rotate(img, 0.0), img, atol=1e-5, rtol=0)
    smooth = torch.nn.functional.interpolate(rand01(1, 3, 8, 8), size=(64, 64), mode="bilinear")
    back = augment.rotate(augment.rotate(smooth, 10.0), -10.0)  # +10 then -10: back where it was
    torch.testing.assert_close(back[..., 16:48, 16:48], smooth[..., 16:48, 16:48], atol=0.06, rtol=0)
    assert (back - smooth)[..., 16:48, 16:48].abs().mean() < 0.01


def test_finetune_transform_same_on_both_frames():
    onset, apex = rand01(1, 3, 48, 48, seed=3), rand01(1, 3, 48, 48, seed=4)
    p = FinetuneParams(mirror=True, angle=-7.0)
    o, a = augment.finetune_transform(onset, apex, p)
    torch.testing.assert_close(o, augment.rotate(augment.mirror(onset), -7.0))
    torch.testing.assert_close(a, augment.rotate(augment.mirror(apex), -7.0))
    rng = np.random.default_rng(0)
    ps = [augment.sample_finetune_params(rng) for _ in range(300)]
    assert all(-10.0 <= q.angle <= 10.0 for q in ps)
    assert min(q.angle for q in ps) < -9 and max(q.angle for q in ps) > 9
    assert 0.35 < np.mean([q.mirror for q in ps]) < 0.65


def test_finetune_batch_per_item_transforms():
    """One batched call: each item gets its own mirror / angle (the same on onset and apex),
    an item with neither comes back bit for bit."""
    onset, apex = rand01(3, 3, 40, 40, seed=5), rand01(3, 3, 40, 40, seed=6)
    flips, angles = augment.draw_finetune_batch([None, np.random.default_rng(1), np.random.default_rng(2)])
    assert not flips[0] and angles[0] == 0.0 and angles[1] != 0.0
    o, a = augment.finetune_batch(onset, apex, flips, angles)
    assert torch.equal(o[0], onset[0]) and torch.equal(a[0], apex[0])
    for b in (1, 2):
        p = FinetuneParams(bool(flips[b]), float(angles[b]))
        want_o, want_a = augment.finetune_transform(onset[b:b + 1], apex[b:b + 1], p)
        torch.testing.assert_close(o[b:b + 1], want_o, rtol=0, atol=1e-6)
        torch.testing.assert_close(a[b:b + 1], want_a, rtol=0, atol=1e-6)
    same = augment.finetune_batch(onset[:1], onset[:1].clone(), torch.tensor([True]), torch.tensor([4.0]))
    assert torch.equal(same[0], same[1])  # no motion added
