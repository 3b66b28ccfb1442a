"""The MoExt network: every shape of MOEXT.md's table, parameter counts, pre-trained weight
loading, the exported graph, and a small network overfitting motion-coded pairs."""
from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from core.contract import NORM_MEAN, NORM_STD
from train.moext import (
    ApexReconstructor, FeatureSeparator, MoExtClassifier, MoExtConfig, MoExtPretrainer, MotionExtractor,
    ProjectionHead, RecognitionGraph, normalize, param_breakdown,
)


@pytest.fixture(autouse=True)
def one_thread():
    # On a shared 2-core machine, 2 intra-op threads fighting other processes run ~10x slower.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def record_shapes(model: torch.nn.Module, names: dict[str, str]) -> dict[str, tuple]:
    """Forward hooks on the named submodules; returns the dict they fill with output shapes."""
    out: dict[str, tuple] = {}
    mods = dict(model.named_modules())
    for key, name in names.items():
        def hook(_m, _i, o, key=key):
            out[key] = tuple((o[0] if isinstance(o, tuple) else o).shape)
        mods[name].register_forward_hook(hook)
    return out


# module -> the row of MOEXT.md's table (and Table 2) it produces
SEPARATOR_ROWS = {
    "stem": "separator.trunk.maxpool", "layer1": "separator.trunk.layer1", "layer2": "separator.trunk.layer2",
    "layer3": "separator.trunk.layer3", "backbone": "separator.trunk", "shape_block": "separator.shape.block",
    "texture_block": "separator.texture.block", "C1": "motion.c1", "C2": "motion.c2",
    "R_8x8": "reconstructor.head.2", "R_7x7": "reconstructor.head", "R_14": "reconstructor.up.0",
    "R_28": "reconstructor.up.1", "R_56": "reconstructor.up.2", "R_112": "reconstructor.up",
    "R_blocks": "reconstructor.refine", "R_224": "reconstructor.out.0", "recon": "reconstructor",
}


def expected_rows(w: float, n: int) -> dict[str, tuple]:
    c = lambda k: max(1, int(k * w))  # noqa: E731
    C = c(512)
    return {
        "stem": (2 * n, c(64), 56, 56), "layer1": (2 * n, c(64), 56, 56), "layer2": (2 * n, c(128), 28, 28),
        "layer3": (2 * n, c(256), 14, 14), "backbone": (2 * n, C, 7, 7), "shape_block": (2 * n, C, 7, 7),
        "texture_block": (2 * n, C, 7, 7), "C1": (n, C, 1, 1), "C2": (n, C, 1, 1),
        "R_8x8": (n, c(512), 8, 8), "R_7x7": (n, c(512), 7, 7), "R_14": (n, c(512), 14, 14),
        "R_28": (n, c(256), 28, 28), "R_56": (n, c(128), 56, 56), "R_112": (n, c(64), 112, 112),
        "R_blocks": (n, c(32), 112, 112), "R_224": (n, c(32), 224, 224), "recon": (n, 3, 224, 224),
    }


@pytest.mark.parametrize("width,n", [(1.0, 1), (0.25, 2)])
def test_pretrainer_shapes_match_the_table(width, n):
    cfg = MoExtConfig(width=width)
    model = MoExtPretrainer(cfg).eval()
    seen = record_shapes(model, SEPARATOR_ROWS)
    onset, apex = torch.randn(n, 3, 224, 224), torch.randn(n, 3, 224, 224)
    with torch.no_grad():
        out = model(onset, apex)
    assert seen == expected_rows(width, n)
    C = cfg.channels
    assert C == int(512 * width)
    for k in ("S_o", "T_o", "S_a", "T_a", "M"):
        assert tuple(out[k].shape) == (n, C, 1, 1), k
    assert tuple(out["recon"].shape) == (n, 3, 224, 224)
    assert (out["recon"] >= 0).all()  # R ends in a ReLU
    z = model.project(out["S_o"])
    assert tuple(z.shape) == (n, cfg.proj_dim)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(n))


def test_width_1_table_2_channels_exactly():
    r = ApexReconstructor(MoExtConfig(width=1.0))
    convs = [m for m in r.modules() if isinstance(m, torch.nn.Conv2d)]
    got = [(m.in_channels, m.out_channels, m.kernel_size) for m in convs]
    want = ([(1024, 512, (3, 3)), (512, 512, (3, 3)), (512, 512, (3, 3)),
             (512, 512, (3, 3)), (512, 256, (3, 3)), (256, 128, (3, 3)), (128, 64, (3, 3)),
             (64, 32, (3, 3)), (32, 32, (3, 3))] + [(32, 32, (3, 3))] * 8 + [(32, 3, (3, 3))])
    assert got == want
    pools = [m for m in r.modules() if isinstance(m, torch.nn.AvgPool2d)]
    assert len(pools) == 1 and pools[0].kernel_size == 2 and pools[0].stride == 1
    motion = MotionExtractor(MoExtConfig())
    assert [(m.in_channels, m.out_channels, m.kernel_size) for m in motion.modules()
            if isinstance(m, torch.nn.Conv2d)] == [(512, 512, (1, 1)), (512, 512, (1, 1)),
                                                    (1024, 512, (1, 1)), (512, 512, (1, 1))]
    assert ProjectionHead(512).net[0].out_features == 1024 and ProjectionHead(512).net[2].out_features == 1024


def test_parameter_counts_match_the_design_note():
    full = param_breakdown(MoExtConfig(width=1.0))
    assert full["trunk"] == pytest.approx(11.2e6, rel=0.01)  # torchvision resnet18 minus fc: 11,176,512
    assert full["trunk"] == 11_176_512
    assert full["shape_branch"] == pytest.approx(5.0e6, rel=0.01)
    assert full["motion_extractor"] == pytest.approx(1.3e6, rel=0.02)
    assert full["recognition"] == pytest.approx(17.5e6, rel=0.01)
    assert full["texture_branch"] == full["shape_branch"]
    half = param_breakdown(MoExtConfig(width=0.5))
    assert half["recognition"] == pytest.approx(4.4e6, rel=0.01)
    k3 = param_breakdown(MoExtConfig(width=1.0, motion_kernel=3))
    assert k3["recognition"] == pytest.approx(28e6, rel=0.01)  # MOEXT.md: 28 M with 3x3 kernels


def test_classifier_runs_trunk_once_on_2n_frames():
    cfg = MoExtConfig(width=0.25)
    clf = MoExtClassifier(cfg).eval()
    calls = []
    clf.separator.trunk.register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape)))
    onset, apex = torch.randn(3, 3, 224, 224), torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        logits = clf(onset, apex)
    assert calls == [(6, 3, 224, 224)]
    assert tuple(logits.shape) == (3, 3)
    assert clf.separator.texture is None
    assert not any(k.startswith(("reconstructor", "projection", "separator.texture")) for k in clf.state_dict())


def test_classifier_matches_pretrainer_motion():
    """The recognition network computes the same M as the pre-training model it came from."""
    cfg = MoExtConfig(width=0.25)
    pre = MoExtPretrainer(cfg).eval()
    clf = MoExtClassifier(cfg).eval()
    missing, unexpected = clf.load_pretrained(pre)
    assert missing == ["fc.bias", "fc.weight"] and unexpected == []
    onset, apex = torch.randn(2, 3, 224, 224), torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(clf.motion_features(onset, apex), pre(onset, apex)["M"])


def test_load_pretrained_reports_and_rejects():
    clf = MoExtClassifier(MoExtConfig(width=0.25))
    state = MoExtPretrainer(MoExtConfig(width=0.25)).state_dict()
    state["module.extra.weight"] = torch.zeros(1)
    del state["motion.c2.net.0.weight"]
    missing, unexpected = clf.load_pretrained(state)
    assert missing == ["fc.bias", "fc.weight", "motion.c2.net.0.weight"]
    assert unexpected == ["module.extra.weight"]
    with pytest.raises(ValueError, match="shape mismatches"):
        clf.load_pretrained(MoExtPretrainer(MoExtConfig(width=0.125)).state_dict())


def test_trunk_loads_torchvision_style_resnet18_state():
    cfg = MoExtConfig(width=1.0)
    sep = FeatureSeparator(cfg, texture=False)
    ref = FeatureSeparator(cfg, texture=False).trunk.state_dict()  # same key names as torchvision resnet18
    tv = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in ref.items()}
    tv["fc.weight"], tv["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    missing, unexpected = sep.trunk.load_resnet18({"module." + k: v for k, v in tv.items()})
    assert missing == [] and unexpected == []
    torch.testing.assert_close(sep.trunk.layer4[1].conv2.weight, tv["layer4.1.conv2.weight"])
    small = FeatureSeparator(MoExtConfig(width=0.5), texture=False)
    with pytest.raises(ValueError, match="width=1.0"):
        small.trunk.load_resnet18(tv)


def test_recognition_graph_is_softmax_of_normalised_input():
    cfg = MoExtConfig(width=0.25)
    clf = MoExtClassifier(cfg).eval()
    graph = RecognitionGraph(clf).eval()
    g = torch.Generator().manual_seed(1)
    onset = torch.randint(0, 256, (2, 3, 224, 224), generator=g).float()
    apex = torch.randint(0, 256, (2, 3, 224, 224), generator=g).float()
    keep = onset.clone()
    with torch.no_grad():
        probs = graph(onset, apex)
        want = torch.softmax(clf(normalize(onset / 255, NORM_MEAN, NORM_STD), normalize(apex / 255)), dim=1)
    assert torch.equal(onset, keep)  # inputs untouched
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(2))
    torch.testing.assert_close(probs, want, rtol=1e-5, atol=1e-6)
    assert tuple(probs.shape) == (2, cfg.num_classes)


def test_config_round_trip_and_errors():
    cfg = MoExtConfig(width=0.5, num_classes=5, class_names=("a", "b", "c", "d", "e"), dropout=0.2)
    assert MoExtConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="num_classes=5 but 3 class_names"):
        MoExtConfig(num_classes=5)
    with pytest.raises(ValueError, match="unknown MoExtConfig fields"):
        MoExtConfig.from_dict({"width": 1.0, "depth": 3})
    with pytest.raises(ValueError, match="input_size=224"):
        MoExtPretrainer(MoExtConfig(input_size=64))
    clf = MoExtClassifier(MoExtConfig(width=0.125, input_size=64)).train()
    with pytest.raises(ValueError, match="at least 2 onset/apex pairs"):
        clf(torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64))
    assert tuple(clf.eval()(torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64)).shape) == (1, 3)


# ---------------------------------------------------------------------------------------
# overfitting pairs whose class is only in the motion


DIRECTIONS = ((0, -1), (0, 1), (-1, 0))  # class 0: blob moves up, 1: down, 2: left (dx, dy)


def motion_coded_pairs(size: int, n_textures: int = 4, seed: int = 0):
    """Noise textures (shared by all classes) with a bright blob at a random place in the
    onset that moves up / down / left in the apex. Neither frame alone gives the class:
    the same textures appear in every class and the blob's start is random."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    r, step = size / 14, size / 8

    def blob(x0, y0):
        return torch.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * r * r))

    onsets, apexes, labels = [], [], []
    for _ in range(n_textures):
        coarse = torch.rand(1, 3, 8, 8, generator=g)
        tex = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)[0]
        tex = 0.3 + 0.4 * tex + 0.05 * torch.randn(3, size, size, generator=g)
        for label, (dx, dy) in enumerate(DIRECTIONS):
            cx, cy = (size / 2 + (torch.rand(2, generator=g) - 0.5) * size / 4).tolist()
            onsets.append((tex + 0.6 * blob(cx, cy)).clamp(0, 1))
            apexes.append((tex + 0.6 * blob(cx + dx * step, cy + dy * step)).clamp(0, 1))
            labels.append(label)
    return torch.stack(onsets), torch.stack(apexes), torch.tensor(labels)


def test_small_network_overfits_motion_coded_pairs():
    # 64 px crops keep this within seconds on a shared CPU; the classifier takes any size >= 32.
    torch.manual_seed(0)
    onset, apex, y = motion_coded_pairs(64)          # 12 pairs, 3 classes
    onset, apex = normalize(onset), normalize(apex)
    model = MoExtClassifier(MoExtConfig(width=0.125, input_size=64))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    t0, losses, acc = time.time(), [], 0.0
    for step in range(150):
        model.train()
        loss = F.cross_entropy(model(onset, apex), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % 10 == 9:
            model.eval()
            with torch.no_grad():
                acc = (model(onset, apex).argmax(dim=1) == y).float().mean().item()
            if acc == 1.0:
                break
    assert acc == 1.0, f"accuracy {acc:.2f} after {step + 1} steps (losses {losses[0]:.3f} -> {losses[-1]:.3f})"
    assert losses[-1] < 0.25 * losses[0]
    assert time.time() - t0 < 60


# ---------------------------------------------------------------------------------------
# ablation: without the motion extractor (paper, Table 7)


def test_without_motion_extractor_feeds_abs_shape_difference_to_the_fc(tmp_path):
    from train.checkpoint import load_classifier, save_checkpoint
    from train.moext import motion_of, without_motion_extractor

    torch.manual_seed(0)
    cfg = MoExtConfig(width=0.0625, motion_extractor=False)
    clf = MoExtClassifier(cfg).eval()
    assert clf.motion is None and param_breakdown(cfg)["motion_extractor"] == 0
    onset, apex = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        s, _ = clf.separator(torch.cat([onset, apex]))
        want = clf.fc(torch.abs(s[2:] - s[:2]).flatten(1))
        torch.testing.assert_close(clf(onset, apex), want)
        torch.testing.assert_close(motion_of(None, s[:2], s[2:]), torch.abs(s[2:] - s[:2]))
    # a pretrainer without E reconstructs from |S_a - S_o| too, and trains (BN-free M)
    pre = MoExtPretrainer(MoExtConfig(width=0.0625, motion_extractor=False))
    assert pre.motion is None and pre(torch.randn(1, 3, 224, 224), torch.randn(1, 3, 224, 224))["M"].shape[0] == 1

    # from a pre-training model WITH E: E's weights are dropped (not "unexpected"), the rest kept
    full = MoExtPretrainer(MoExtConfig(width=0.0625))
    missing, unexpected = clf.load_pretrained(full.state_dict())
    assert unexpected == [] and missing == ["fc.bias", "fc.weight"]
    with_e = MoExtClassifier(MoExtConfig(width=0.0625)).eval()
    no_e = without_motion_extractor(with_e).eval()
    assert no_e.motion is None and not no_e.cfg.motion_extractor and with_e.motion is not None
    torch.testing.assert_close(no_e.separator.trunk.conv1.weight, with_e.separator.trunk.conv1.weight)
    # the config travels in the checkpoint
    path = save_checkpoint(tmp_path / "no_e.safetensors", no_e, no_e.cfg)
    back = load_classifier(path)
    assert back.motion is None and not back.cfg.motion_extractor
    with torch.no_grad():
        torch.testing.assert_close(back(onset, apex), no_e(onset, apex))
