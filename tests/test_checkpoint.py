"""Checkpoints: bit-exact round trip, clear failures on corrupt / mismatched / unsafe files."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from train.checkpoint import (
    CheckpointError, checkpoint_hash, checkpoint_info, load_checkpoint, load_classifier, load_pretrainer,
    load_resnet18_trunk, load_state_file, save_checkpoint,
)
from train.moext import MoExtClassifier, MoExtConfig, MoExtPretrainer

CLASSES5 = ("happiness", "disgust", "repression", "surprise", "others")


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def trained_classifier(width=0.125, classes=CLASSES5, seed=0) -> MoExtClassifier:
    """A classifier whose BatchNorm buffers moved away from their defaults."""
    torch.manual_seed(seed)
    model = MoExtClassifier(MoExtConfig(width=width, num_classes=len(classes), class_names=classes, input_size=64))
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 64, 64), torch.randn(4, 3, 64, 64))
    return model.eval()


@pytest.fixture
def saved(tmp_path):
    model = trained_classifier()
    path = save_checkpoint(tmp_path / "clf.safetensors", model, model.cfg, meta={"epoch": 7, "uf1": 0.5})
    return path, model


def test_round_trip_is_bit_exact(saved):
    path, model = saved
    state, cfg, meta = load_checkpoint(path)
    ref = model.state_dict()
    assert set(state) == set(ref)
    for k, v in ref.items():
        assert state[k].dtype == v.dtype and torch.equal(state[k], v), k
    assert cfg == model.cfg and cfg.class_names == CLASSES5
    assert meta == {"epoch": 7, "uf1": 0.5}
    with safe_open(str(path), "pt") as f:
        md = f.metadata()
    assert json.loads(md["class_names"]) == list(CLASSES5)
    assert MoExtConfig.from_json(md["config"]) == model.cfg
    info = checkpoint_info(path)
    assert info["kind"] == "classifier" and info["dtype"] == "float32"
    clf = load_classifier(path)
    assert not clf.training
    x = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(clf(*x), model(*x))


def test_hash_is_sha256_of_the_file_and_stable(saved, tmp_path):
    path, model = saved
    assert checkpoint_hash(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    again = save_checkpoint(tmp_path / "again.safetensors", model, model.cfg, meta={"uf1": 0.5, "epoch": 7})
    assert checkpoint_hash(again) == checkpoint_hash(path)  # same content, same hash
    other = save_checkpoint(tmp_path / "other.safetensors", model, model.cfg, meta={"epoch": 8})
    assert checkpoint_hash(other) != checkpoint_hash(path)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        checkpoint_hash(tmp_path / "missing.safetensors")


def test_fp16_storage_loads_as_fp32(saved, tmp_path):
    path, model = saved
    half = save_checkpoint(tmp_path / "half.safetensors", model, model.cfg, dtype=torch.float16)
    assert half.stat().st_size < 0.6 * path.stat().st_size
    assert checkpoint_info(half)["dtype"] == "float16"
    state, _, _ = load_checkpoint(half)
    for k, v in model.state_dict().items():
        if v.is_floating_point():
            assert state[k].dtype == torch.float32
            torch.testing.assert_close(state[k], v.half().float(), rtol=0, atol=0)
        else:
            assert torch.equal(state[k], v)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip_data", "empty"])
def test_corrupt_files_fail_clearly(saved, tmp_path, damage):
    path, _ = saved
    data = bytearray(path.read_bytes())
    bad = tmp_path / f"{damage}.safetensors"
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "garbage":
        data = bytearray(b"not a checkpoint at all" * 10)
    elif damage == "flip_data":
        data[-100] ^= 0xFF  # inside the tensor data: the header still parses
    else:
        data = bytearray()
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(bad)
    assert str(bad) in str(e.value)
    assert "corrupt" in str(e.value)


def test_mismatched_config_names_the_mismatch(saved):
    path, _ = saved
    with pytest.raises(CheckpointError, match=r"width 0\.125 in the checkpoint vs 0\.25 requested"):
        load_classifier(path, cfg=MoExtConfig(width=0.25, num_classes=5, class_names=CLASSES5, input_size=64))
    with pytest.raises(CheckpointError, match=r"num_classes 5 in the checkpoint vs 3 requested.*class_names"):
        load_classifier(path, cfg=MoExtConfig(width=0.125, input_size=64))
    same = MoExtConfig(width=0.125, num_classes=5, class_names=CLASSES5, input_size=64, dropout=0.3)
    assert load_classifier(path, cfg=same).cfg.dropout == 0.3  # dropout holds no weights


def test_tensors_that_do_not_fit_the_config_fail(saved, tmp_path):
    path, _ = saved
    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        md = dict(f.metadata())
    # a config claiming another width than the tensors have
    cfg = json.loads(md["config"])
    cfg["width"] = 0.25
    md_wrong = dict(md, config=json.dumps(cfg))
    wrong = tmp_path / "wrong_width.safetensors"
    save_file(tensors, str(wrong), metadata=md_wrong)
    with pytest.raises(CheckpointError, match=r"wrong_width.*shape mismatches"):
        load_checkpoint(wrong)
    # a missing tensor
    del tensors["motion.c1.net.0.weight"]
    missing = tmp_path / "missing_key.safetensors"
    save_file(tensors, str(missing), metadata={k: v for k, v in md.items() if k != "tensors_sha256"})
    with pytest.raises(CheckpointError, match=r"missing keys.*motion\.c1\.net\.0\.weight"):
        load_checkpoint(missing)
    # a plain safetensors file that is not ours
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(CheckpointError, match="not a MoExt checkpoint"):
        load_checkpoint(plain)
    # and saving a state that does not match the config is refused
    model = trained_classifier(width=0.125)
    with pytest.raises(CheckpointError, match="does not match its config"):
        save_checkpoint(tmp_path / "x.safetensors", model, MoExtConfig(width=0.25, num_classes=5,
                                                                        class_names=CLASSES5))


def test_pretraining_checkpoint_only_when_asked(tmp_path):
    torch.manual_seed(0)
    cfg = MoExtConfig(width=0.125, proj_dim=32)
    pre = MoExtPretrainer(cfg).eval()
    path = save_checkpoint(tmp_path / "pre.safetensors", pre, cfg, meta={"phase": "pretrain"})
    assert checkpoint_info(path)["kind"] == "pretrainer"
    with pytest.raises(CheckpointError, match="pre-training checkpoint"):
        load_classifier(path)
    clf = load_classifier(path, allow_pretrain=True)
    x = torch.randn(2, 3, 224, 224), torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(clf.motion_features(*x), pre(*x)["M"])
    with pytest.raises(CheckpointError, match=r"width 0\.125 in the checkpoint vs 0\.25 requested"):
        load_classifier(path, cfg=MoExtConfig(width=0.25), allow_pretrain=True)
    back = load_pretrainer(path)
    for k, v in pre.state_dict().items():
        assert torch.equal(back.state_dict()[k], v)


class Payload:
    """Anything that is not a tensor or a plain container; unpickling it must not happen."""

    ran = False

    def __setstate__(self, state):
        Payload.ran = True
        self.__dict__.update(state)


def test_pt_files_use_weights_only_and_refuse_objects(tmp_path):
    model = trained_classifier()
    ok = tmp_path / "ok.pt"
    torch.save({"state_dict": model.state_dict(), "config": model.cfg.to_dict(), "meta": {"epoch": 1}}, ok)
    state, cfg, meta = load_checkpoint(ok)
    assert cfg == model.cfg and meta == {"epoch": 1}
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    bare = tmp_path / "bare.pth"
    torch.save(model.state_dict(), bare)
    with pytest.raises(CheckpointError, match="holds no MoExt config"):
        load_checkpoint(bare)
    assert load_checkpoint(bare, cfg=model.cfg)[1] == model.cfg

    evil = tmp_path / "evil.pt"
    p = Payload()
    p.x = 1
    torch.save({"state_dict": model.state_dict(), "extra": p}, evil)
    for loader in (load_checkpoint, load_state_file):
        with pytest.raises(CheckpointError, match=r"evil\.pt: refused.*arbitrary code"):
            loader(evil)
    assert Payload.ran is False

    cut = tmp_path / "cut.pt"
    cut.write_bytes(ok.read_bytes()[:500])
    with pytest.raises(CheckpointError, match=r"cut\.pt.*corrupt or truncated"):
        load_state_file(cut)
    npz = tmp_path / "w.npz"
    npz.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unknown weights format"):
        load_state_file(npz)


def test_resnet18_weights_file_into_the_trunk(tmp_path):
    torch.manual_seed(0)
    donor = MoExtClassifier(MoExtConfig(width=0.125)).separator.trunk.state_dict()  # torchvision key names
    donor["fc.weight"], donor["fc.bias"] = torch.zeros(10, 64), torch.zeros(10)
    pth = tmp_path / "resnet18.pth"
    torch.save(donor, pth)
    model = MoExtPretrainer(MoExtConfig(width=0.125, proj_dim=16))
    assert load_resnet18_trunk(model, pth) == ([], [])
    assert torch.equal(model.separator.trunk.conv1.weight, donor["conv1.weight"])
    with pytest.raises(CheckpointError, match=r"resnet18\.pth.*width=1\.0"):
        load_resnet18_trunk(MoExtClassifier(MoExtConfig(width=0.25)), pth)
