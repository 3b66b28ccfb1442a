"""Engines: ONNX export, ONNX Runtime fp32/int8, the Recognizer, refusals, input contract.

Parity is measured against eager PyTorch fp32 on random crops and on real aligned face
crops from the bundled sample video. The network is narrow (width 0.25) so the suite
stays fast; its classifier is scaled and centred so the probabilities are far from both
uniform and saturated, which makes a probability tolerance a real test of the logits.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from core.contract import InputContractError
from engines.export import cached_export, export_onnx, load_checkpoint_graph
from engines.quantize import (LOW_PRECISION_MAX_ABS_DIFF, noise_spread, parity_report, quantize_qdq, split_pairs,
                              video_pairs)
from engines.recognizer import DEMO_WEIGHTS, DemoWeightsMissingError, Recognizer, engine_order
from engines.runners import EngineError, info_from_props
from engines.runners.onnxruntime_runner import OrtRunner
from engines.runners.torch_runner import TorchRunner
from train.checkpoint import CheckpointError, save_checkpoint
from train.moext import MoExtClassifier, MoExtConfig, RecognitionGraph

WIDTH = 0.25
FP32_TOL = 1e-4


def make_checkpoint(path, centre_on, width=WIDTH, seed=0, class_names=("negative", "positive", "surprise")):
    """A random-weight classifier checkpoint whose outputs are informative: random
    BatchNorm statistics, a 10x classifier (logit errors grow with it) and a bias that
    centres the mean log-probabilities on the pairs ``centre_on`` (so p is not saturated)."""
    torch.manual_seed(seed)
    cfg = MoExtConfig(width=width, num_classes=len(class_names), class_names=class_names)
    clf = MoExtClassifier(cfg).eval()
    with torch.no_grad():
        for m in clf.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
        clf.fc.weight.mul_(10)
        onset, apex = (torch.from_numpy(x).permute(0, 3, 1, 2).float() for x in centre_on)
        logp = torch.log(RecognitionGraph(clf)(onset, apex))
        clf.fc.bias.sub_(logp.mean(0))
    return save_checkpoint(path, clf, cfg, meta={"purpose": "engine tests"})


# engine caches in the session's folder, never the user's (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("cache_dir")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, faces):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "moext.safetensors", faces)


@pytest.fixture(scope="module")
def graph_info(ckpt):
    return load_checkpoint_graph(ckpt)


@pytest.fixture(scope="module")
def reference(graph_info):
    return TorchRunner(*graph_info)


@pytest.fixture(scope="module")
def fp32_onnx(graph_info, cache_dir):
    """The checkpoint's fp32 export, made where Recognizer.load caches it (one export for all)."""
    return cached_export(*graph_info, "fp32")


@pytest.fixture(scope="module")
def faces():
    """Aligned onset/apex crops (RGB uint8) from the bundled real-face video."""
    return video_pairs(n_pairs=6)


@pytest.fixture(scope="module")
def random_pairs():
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (5, 224, 224, 3), dtype=np.uint8),
            rng.integers(0, 256, (5, 224, 224, 3), dtype=np.uint8))


# ------------------------------------------------------------------ ONNX graph
def test_exported_graph_is_valid_with_names_shapes_dynamic_batch_and_metadata(fp32_onnx, graph_info):
    _, info = graph_info
    model = onnx.load(str(fp32_onnx))
    onnx.checker.check_model(model, full_check=True)
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in model.graph.initializer), "one file, weights inline"
    assert not list(fp32_onnx.parent.glob("*.data")), "no external-data side file"
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17

    def dims(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    inputs = {i.name: i for i in model.graph.input}
    assert set(inputs) == {"onset", "apex"}
    for v in inputs.values():
        assert v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        d = dims(v)
        assert isinstance(d[0], str) and d[1:] == [3, 224, 224], d  # symbolic batch
    assert dims(inputs["onset"])[0] == dims(inputs["apex"])[0]
    (out,) = model.graph.output
    assert out.name == "probs" and out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert isinstance(dims(out)[0], str) and dims(out)[1] == 3
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["moext.classes"]) == ["negative", "positive", "surprise"]
    assert float(props["moext.width"]) == WIDTH
    assert props["moext.checkpoint_hash"] == info.checkpoint_hash
    assert props["moext.input_size"] == "224" and props["moext.precision"] == "fp32"
    assert json.loads(props["moext.mean"]) == pytest.approx([0.485, 0.456, 0.406])
    assert "inside the graph" in props["moext.normalisation"]
    assert info_from_props(props).checkpoint_hash == info.checkpoint_hash


def test_reference_outputs_are_informative(reference, faces):
    """Guards the parity tests: probabilities neither uniform nor saturated."""
    p = reference.run(*faces)
    assert p.shape == (6, 3) and np.allclose(p.sum(1), 1, atol=1e-5)
    assert 0.01 < p.min() and p.max() < 0.99 and p.max() - p.min() > 0.04, p


# ------------------------------------------------------------------ parity
@pytest.mark.parametrize("n", [1, 5])
def test_onnxruntime_fp32_parity_random_inputs_dynamic_batch(fp32_onnx, reference, random_pairs, n):
    onset, apex = random_pairs[0][:n], random_pairs[1][:n]
    p = OrtRunner(fp32_onnx).run(onset, apex)
    assert p.shape == (n, 3) and p.dtype == np.float32
    assert np.abs(p - reference.run(onset, apex)).max() <= FP32_TOL


def test_onnxruntime_fp32_parity_real_faces(fp32_onnx, reference, faces):
    diff = np.abs(OrtRunner(fp32_onnx).run(*faces) - reference.run(*faces)).max()
    assert diff <= FP32_TOL, diff


def test_int8_qdq_parity_on_held_out_faces(fp32_onnx, tmp_path, faces):
    """Stated tolerance for int8: max |dp| <= LOW_PRECISION_MAX_ABS_DIFF (0.02) against fp32 on face
    pairs not used for calibration. (Top-1 agreement is reported, not asserted: these
    random-weight probabilities are close together, so argmax flips with tiny noise.)"""
    calib = video_pairs(n_pairs=12, gaps=(2, 5, 8))
    int8 = quantize_qdq(fp32_onnx, tmp_path / "int8.onnx", *calib)
    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    r8 = OrtRunner(int8)
    assert r8.precision == "int8"
    report = parity_report(OrtRunner(fp32_onnx), r8, *faces, repeats=2)
    assert report.within_tolerance, report.summary()
    assert report.max_abs_diff <= LOW_PRECISION_MAX_ABS_DIFF
    # the agreement the report prints is the share of pairs whose top class is the same
    p32, p8 = OrtRunner(fp32_onnx).run(*faces), r8.run(*faces)
    assert report.pairs == len(faces[0]) > 0
    assert report.top1_agreement == pytest.approx(float((p32.argmax(1) == p8.argmax(1)).mean()))


def test_noise_spread_of_the_demo_weights_on_real_faces(faces):
    """The fp32 network's own movement under camera noise (engines.bench prints it beside
    the gate): none without noise, reproducible from its seed, and for the demo weights on
    real face pairs larger than the 0.02 gate already at half a grey level (README, "Engines")."""
    graph, info = load_checkpoint_graph(DEMO_WEIGHTS)
    runner = TorchRunner(graph, info)
    onset, apex = faces
    assert noise_spread(runner, onset, apex, sigma=0.0) == 0.0
    spread = noise_spread(runner, onset, apex, sigma=0.5, seed=3)
    assert spread == noise_spread(runner, onset, apex, sigma=0.5, seed=3)
    assert spread > LOW_PRECISION_MAX_ABS_DIFF


def test_split_pairs_alternates():
    on = np.zeros((5, 224, 224, 3), np.uint8) + np.arange(5, dtype=np.uint8)[:, None, None, None]
    (c, _), (h, _) = split_pairs(on, on)
    assert [int(x[0, 0, 0]) for x in c] == [0, 2, 4] and [int(x[0, 0, 0]) for x in h] == [1, 3]


# ------------------------------------------------------------------ Recognizer
def test_recognizer_from_checkpoint_picks_onnxruntime_on_cpu_and_caches_export(ckpt, reference, faces, cache_dir):
    rec = Recognizer.load(ckpt, device="cpu")
    assert (rec.name, rec.precision, rec.device) == ("onnxruntime", "fp32", "cpu")
    assert rec.classes == ("negative", "positive", "surprise")
    p = rec.predict(*faces)
    assert p.dtype == np.float32 and np.abs(p - reference.run(*faces)).max() <= FP32_TOL
    info = rec.info()
    assert info["weights"] == str(ckpt) and info["width"] == WIDTH and info["params"] > 0
    assert info["checkpoint_hash"] == reference.model.checkpoint_hash
    cached = list((cache_dir / "onnx").glob(f"moext-{info['checkpoint_hash'][:24]}-fp32.onnx"))
    assert len(cached) == 1
    mtime = cached[0].stat().st_mtime_ns
    rec.close()
    Recognizer.load(ckpt, device="cpu").close()
    assert cached[0].stat().st_mtime_ns == mtime, "the second load must reuse the cached export"


def test_recognizer_rebuilds_a_damaged_cached_export(ckpt, cache_dir, faces, reference):
    from train.checkpoint import checkpoint_hash

    path = cache_dir / "onnx" / f"moext-{checkpoint_hash(ckpt)[:24]}-fp32.onnx"
    Recognizer.load(ckpt, device="cpu").close()
    path.write_bytes(path.read_bytes()[:1000])
    rec = Recognizer.load(ckpt, device="cpu")
    assert np.abs(rec.predict(*faces) - reference.run(*faces)).max() <= FP32_TOL


def test_recognizer_each_file_kind(ckpt, fp32_onnx, faces, reference):
    ref = reference.run(*faces)
    with Recognizer.load(ckpt, engine="torch") as rec:
        assert rec.name == "torch" and rec.device == "cpu"
        assert np.abs(rec.predict(*faces) - ref).max() == 0
    with Recognizer.load(fp32_onnx) as rec:
        assert rec.name == "onnxruntime" and rec.info()["weights"] == str(fp32_onnx)
        assert np.abs(rec.predict(*faces) - ref).max() <= FP32_TOL


def test_recognizer_predict_dicts_single_pair_and_close(fp32_onnx, faces):
    rec = Recognizer.load(fp32_onnx)
    dicts = rec.predict_dicts(faces[0][0], faces[1][0])  # one (224, 224, 3) pair
    assert len(dicts) == 1 and list(dicts[0]) == list(rec.classes)
    assert sum(dicts[0].values()) == pytest.approx(1.0, abs=1e-5)
    rec.close()
    with pytest.raises(RuntimeError, match="closed"):
        rec.predict(*faces)


def test_auto_without_demo_weights_names_the_file(monkeypatch, tmp_path):
    import engines.recognizer as recognizer_module

    monkeypatch.setattr(recognizer_module, "DEMO_WEIGHTS", tmp_path / "moext_demo.safetensors")
    with pytest.raises(DemoWeightsMissingError, match="moext_demo.safetensors"):
        Recognizer.load("auto")


def test_auto_loads_demo_weights_on_best_engine(faces):
    with Recognizer.load("auto", device="cpu") as rec:
        p = rec.predict(*faces)
        assert p.shape == (len(faces[0]), len(rec.classes))
        assert rec.info()["weights"] == str(DEMO_WEIGHTS)


def test_engine_order():
    assert engine_order("best", "auto", cuda=True) == ["cuda", "onnx", "torch"]
    assert engine_order("best", "auto", cuda=False) == ["onnx", "torch"]
    assert engine_order("best", "cpu", cuda=True) == ["onnx", "torch"]
    assert engine_order("best", "cuda", cuda=True) == ["cuda", "torch"]
    assert engine_order("onnx-int8", "cpu", cuda=False) == ["onnx-int8"]
    with pytest.raises(ValueError, match="engine must be"):
        engine_order("tflite", "cpu", cuda=False)
    with pytest.raises(ValueError, match="device must be"):
        engine_order("best", "gpu", cuda=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_cuda_engine_without_gpu_is_a_clear_error(ckpt):
    with pytest.raises(RuntimeError, match="NVIDIA GPU"):
        Recognizer.load(ckpt, engine="cuda")


def test_a_cached_export_runs_without_loading_torch(ckpt, cache_dir, reference, faces):
    """Once a checkpoint's ONNX export is cached, loading it (and importing every front end)
    does not import torch: ~200 MB and a second of start-up stay out of the live path. The
    probabilities are the export's, as before."""
    onset, apex = faces
    first = Recognizer.load(ckpt, device="cpu")            # exports once (torch, in this process)
    assert first.name == "onnxruntime"
    code = (
        "import sys, json, numpy as np\n"
        "import realtime.frontends.cli, realtime.bench.cli, realtime.batch.cli, realtime.evaluate.cli\n"
        "from engines.recognizer import Recognizer\n"
        f"r = Recognizer.load({str(ckpt)!r}, device='cpu')\n"
        f"d = np.load({str(cache_dir / 'pairs.npz')!r})\n"
        "p = r.predict(d['onset'], d['apex'])\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'engine': r.name, 'weights': r.info()['weights'], "
        "'p': p.tolist()}))\n")
    np.savez(cache_dir / "pairs.npz", onset=onset, apex=apex)
    env = dict(os.environ, MOEXT_CACHE_DIR=str(cache_dir))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["torch"] is False and got["engine"] == "onnxruntime" and got["weights"] == str(ckpt)
    np.testing.assert_allclose(np.array(got["p"]), first.predict(onset, apex), atol=1e-6)
    np.testing.assert_allclose(np.array(got["p"]), reference.run(onset, apex), atol=1e-4)


def test_best_engine_falls_back_with_logged_reason(ckpt, monkeypatch, caplog):
    """If ONNX Runtime cannot run, a checkpoint still loads on eager torch, with the reason logged."""
    import engines.recognizer as recognizer

    def broken(*a, **k):
        raise EngineError("onnxruntime broke (simulated)")

    monkeypatch.setattr(recognizer, "OrtRunner", broken)      # the cached-export shortcut and the full path
    with caplog.at_level("WARNING", logger="engines.recognizer"):
        rec = Recognizer.load(ckpt, device="cpu")
    assert rec.name == "torch"
    assert "falling back to torch" in caplog.text and "simulated" in rec.info()["fallbacks"][0]


# ------------------------------------------------------------------ refusals
def test_corrupt_onnx_is_refused_with_rebuild_hint(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 100)
    with pytest.raises(EngineError, match="rebuild it with python -m engines.build"):
        Recognizer.load(bad)


def test_truncated_onnx_is_refused(fp32_onnx, tmp_path):
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(fp32_onnx.read_bytes()[: fp32_onnx.stat().st_size // 2])
    with pytest.raises(EngineError, match="truncated.onnx"):
        Recognizer.load(bad)


def test_foreign_onnx_without_metadata_is_refused(tmp_path):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("onset", TensorProto.FLOAT, ["N", 3, 224, 224])
    y = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3, 224, 224])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["onset"], ["probs"])], "g", [x], [y]))
    path = tmp_path / "foreign.onnx"
    onnx.save(model, str(path))
    with pytest.raises(EngineError, match="not a graph written by engines.export"):
        Recognizer.load(path)


def test_onnx_built_for_other_weights_is_refused(fp32_onnx):
    with pytest.raises(EngineError, match="built from other weights"):
        Recognizer.load(fp32_onnx, expect_hash="0" * 64)


def test_truncated_checkpoint_is_refused(ckpt, tmp_path):
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 3])
    with pytest.raises(CheckpointError, match="truncated.safetensors"):
        Recognizer.load(bad)


def test_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="unknown file type"):
        Recognizer.load(tmp_path / "weights.h5")
    with pytest.raises(FileNotFoundError, match="no such file"):
        Recognizer.load(tmp_path / "absent.onnx")


# ------------------------------------------------------------------ input contract
@pytest.mark.parametrize("onset, apex, match", [
    (np.zeros((1, 224, 224, 3), np.float32), np.zeros((1, 224, 224, 3), np.uint8), "dtype uint8"),
    (np.zeros((1, 112, 112, 3), np.uint8), np.zeros((1, 112, 112, 3), np.uint8), "expected shape"),
    (np.zeros((1, 3, 224, 224), np.uint8), np.zeros((1, 3, 224, 224), np.uint8), "expected shape"),
    (np.zeros((2, 224, 224, 3), np.uint8), np.zeros((3, 224, 224, 3), np.uint8), "batch sizes differ"),
    (np.zeros((0, 224, 224, 3), np.uint8), np.zeros((0, 224, 224, 3), np.uint8), "empty batch"),
    ([[0]], np.zeros((1, 224, 224, 3), np.uint8), "numpy array"),
])
def test_wrong_inputs_raise_input_contract_error(fp32_onnx, onset, apex, match):
    rec = Recognizer.load(fp32_onnx)
    with pytest.raises(InputContractError, match=match):
        rec.predict(onset, apex)


def test_cache_dir_is_outside_the_source_tree(cache_dir):
    from engines.runners import user_cache_dir

    assert user_cache_dir("onnx").is_relative_to(cache_dir)
    assert os.environ["MOEXT_CACHE_DIR"] == str(cache_dir)


@pytest.mark.slow
def test_full_width_export_parity(tmp_path, faces):
    """The full network (width 1.0, ~17.5 M parameters) exports and matches eager fp32."""
    from engines.runners import ModelInfo
    from train.moext import count_params

    torch.manual_seed(1)
    cfg = MoExtConfig(width=1.0)
    clf = MoExtClassifier(cfg).eval()
    graph = RecognitionGraph(clf).eval()
    info = ModelInfo(classes=cfg.class_names, width=1.0, checkpoint_hash="full-width-test", params=count_params(clf))
    assert 17.0e6 < info.params < 18.0e6
    path = export_onnx(graph, info, tmp_path / "full.onnx")
    assert path.stat().st_size > 60e6  # fp32 weights inline
    ref = TorchRunner(graph, info).run(*faces)
    assert np.abs(OrtRunner(path).run(*faces) - ref).max() <= FP32_TOL


# ------------------------------------------------------------------ GPU (skipped without one)
@pytest.mark.gpu
def test_cuda_runner_fp16_parity_and_padding(ckpt, faces, random_pairs):
    graph, info = load_checkpoint_graph(ckpt)
    ref = TorchRunner(graph, info, device="cuda")
    rec = Recognizer.load(ckpt, device="cuda")
    assert (rec.name, rec.precision) == ("cuda", "fp16")
    for onset, apex in (faces, random_pairs, (faces[0][:3], faces[1][:3])):  # 6, 5, 3 pairs: padded to 8, 8, 4
        assert np.abs(rec.predict(onset, apex) - ref.run(onset, apex)).max() <= 1e-2
    big = np.concatenate([faces[0]] * 12), np.concatenate([faces[1]] * 12)  # 72 > 64: split into chunks
    assert rec.predict(*big).shape == (72, 3)


@pytest.mark.gpu
def test_eager_torch_cuda_parity(ckpt, faces, reference):
    with Recognizer.load(ckpt, device="cuda", engine="torch") as rec:
        assert rec.device.startswith("cuda")
        assert np.abs(rec.predict(*faces) - reference.run(*faces)).max() <= FP32_TOL


def test_bench_table_and_machine_description():
    """The benchmark's report pieces (the benchmark itself is a script, not a timed test)."""
    from engines.bench import machine, markdown

    mach = machine()
    assert mach["cores_physical"] >= 1 and mach["torch"] and mach["onnxruntime"]
    rows = [{"engine": "onnxruntime fp32", "precision": "fp32", "device": "cpu", "p50_ms": 10.0, "p99_ms": 12.5,
             "min_ms": 9.0, "cpu_ms": 19.5, "batch": 64, "pairs_per_s": 120.0, "max_abs_diff": 3e-8,
             "top1_agreement": 1.0, "within_gate": True, "speedup_vs_ort_fp32": 1.0},
            {"engine": "openvino int8", "precision": "int8", "device": "cpu", "p50_ms": 4.0, "p99_ms": 5.0,
             "min_ms": 3.5, "cpu_ms": 8.0, "batch": 64, "pairs_per_s": 400.0, "max_abs_diff": 0.25,
             "top1_agreement": 0.875, "within_gate": False, "speedup_vs_ort_fp32": 2.5},
            {"engine": "tensorrt", "note": "TensorRT not installed"}]
    table = markdown(rows, mach, spread=0.125)
    assert "0.5 grey levels of independent noise per frame moves by max |dp| 1.2e-01" in table
    assert "| onnxruntime fp32 | fp32 | cpu | 10.00 | 12.50 | 9.00 | 19.5 | 1.00 | 120.0 | 3.0e-08 | 100% |  |" in table
    assert "| openvino int8 | int8 | cpu | 4.00 | 5.00 | 3.50 | 8.0 | 2.50 | 400.0 | 2.5e-01 | 88% | **fail** |" in table
    assert "gate (<= 0.02)" in table
    assert "pairs/s at batch 64" in table and "TensorRT not installed" in table
