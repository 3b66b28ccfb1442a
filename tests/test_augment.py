"""Pre-training views and fine-tuning augmentation (same parameters on onset and apex)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from train import augment
from train.augment import FinetuneParams, ViewParams


def rand01(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def test_view_params_draw_two_of_three_in_range():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        p = augment.sample_view_params(rng)
        assert len(p.ops) == 2 and set(p.ops) <= set(augment.VIEW_OPS)
        assert augment.CONTRAST_RANGE[0] <= p.contrast <= augment.CONTRAST_RANGE[1]
        assert augment.NOISE_STD_RANGE[0] <= p.noise_std <= augment.NOISE_STD_RANGE[1]
        seen.add(p.ops)
    assert seen == {("contrast", "grey"), ("contrast", "noise"), ("grey", "noise")}
    assert augment.sample_view_params(7) == augment.sample_view_params(7)


@pytest.mark.parametrize("ops", [("contrast", "grey"), ("contrast", "noise"), ("grey", "noise")])
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


def test_expansion_views_uint8_form():
    rng = np.random.default_rng(0)
    onset = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    views = augment.expansion_views(onset, onset.copy(), 3, np.random.default_rng(5))
    assert len(views) == 3
    assert views[0][0] is onset
    for o, a in views:
        assert o.dtype == np.uint8 and o.shape == (40, 40, 3)
        np.testing.assert_array_equal(o, a)  # same parameters on both frames
    with pytest.raises(ValueError, match="uint8"):
        augment.expansion_views(onset.astype(np.float32), onset, 3, 0)


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
    u8 = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    ou, au = augment.finetune_augment(u8, u8.copy(), np.random.default_rng(2))
    assert ou.dtype == np.uint8 and ou.shape == (32, 32, 3)
    np.testing.assert_array_equal(ou, au)


def test_tenfold_expansion_is_deterministic():
    plan = augment.expansion_plan(4, repeats=10, seed=3)
    assert len(plan) == 40
    assert [k for k, _ in plan[:4]] == [0, 1, 2, 3] and all(p is None for _, p in plan[:4])
    assert all(p is not None for _, p in plan[4:])
    assert sorted(k for k, _ in plan) == sorted(list(range(4)) * 10)
    assert plan == augment.expansion_plan(4, repeats=10, seed=3)
    assert plan != augment.expansion_plan(4, repeats=10, seed=4)
    onset, apex = rand01(4, 3, 16, 16, seed=5), rand01(4, 3, 16, 16, seed=6)
    labels = torch.tensor([0, 1, 2, 1])
    o, a, y = augment.expand_pairs(onset, apex, labels, repeats=10, seed=3)
    assert tuple(o.shape) == (40, 3, 16, 16) and tuple(a.shape) == (40, 3, 16, 16)
    assert y.tolist() == labels.tolist() * 10
    assert torch.equal(o[:4], onset) and torch.equal(a[:4], apex)
    o2, a2, _ = augment.expand_pairs(onset, apex, labels, repeats=10, seed=3)
    assert torch.equal(o, o2) and torch.equal(a, a2)
    k, p = plan[13]
    want_o, _ = augment.finetune_transform(onset[k:k + 1], apex[k:k + 1], p)
    torch.testing.assert_close(o[13:14], want_o)
