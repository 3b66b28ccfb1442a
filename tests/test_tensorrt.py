"""TensorRT: everything up to the TensorRT boundary runs everywhere; the rest needs TensorRT.

TensorRT cannot be installed on the machines this project is developed and tested on (its
wheel fetches the library from NVIDIA's index). So these tests check, without it, what
TensorRT would be given: the fp16 and Q/DQ ONNX graphs (validity, names, dtypes, dynamic
batch, parity in ONNX Runtime), the optimisation profile, the builder recipe for TensorRT
10 and 11, the metadata file and the refusal of mismatched plans. The tests marked
``tensorrt`` build and run real plans and skip, with the reason, where TensorRT is absent.
"""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from engines.export import cached_export, export_onnx, load_checkpoint_graph
from engines.quantize import quantize_qdq, video_pairs
from engines.runners import EngineError, EngineUnavailableError
from engines.runners.onnxruntime_runner import OrtRunner
from engines.runners.tensorrt_runner import (
    check_plan_metadata,
    metadata_path,
    model_info_from_metadata,
    read_plan_metadata,
)
from engines.runners.torch_runner import TorchRunner
from engines.tensorrt_build import BuildRecipe, build_recipe, plan_metadata, profile_shapes
from test_engines import make_checkpoint  # the same informative random-weight checkpoint

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
# trt.BuilderFlag in TensorRT 10.x (its Python API reference), and what the 10.x -> 11.x
# migration reference lists as removed: every precision-enabling flag (all networks are
# strongly typed in 11.x and take their precision from the ONNX graph).
TRT10_FLAGS = frozenset({
    "FP16", "BF16", "INT8", "DEBUG", "GPU_FALLBACK", "REFIT", "DISABLE_TIMING_CACHE", "TF32", "SPARSE_WEIGHTS",
    "SAFETY_SCOPE", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO",
    "REJECT_EMPTY_ALGORITHMS", "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME", "FP8", "ERROR_ON_TIMING_CACHE_MISS",
    "DISABLE_COMPILATION_CACHE", "WEIGHTLESS", "STRIP_PLAN", "REFIT_IDENTICAL", "WEIGHT_STREAMING", "INT4",
    "REFIT_INDIVIDUAL", "STRICT_NANS", "MONITOR_MEMORY", "FP4", "EDITABLE_TIMING_CACHE"})
REMOVED_IN_11 = frozenset({"FP16", "INT8", "FP8", "BF16", "INT4", "FP4", "OBEY_PRECISION_CONSTRAINTS",
                           "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO"})
TRT11_FLAGS = TRT10_FLAGS - REMOVED_IN_11


# engine caches in the session's folder, never the user's (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("cache_dir")


@pytest.fixture(scope="module")
def faces():
    return video_pairs(n_pairs=6)


@pytest.fixture(scope="module")
def graph_info(tmp_path_factory, faces):
    return load_checkpoint_graph(make_checkpoint(tmp_path_factory.mktemp("trt") / "moext.safetensors", faces))


@pytest.fixture(scope="module")
def fp16_onnx(graph_info, tmp_path_factory):
    graph, info = graph_info
    return export_onnx(graph, info, tmp_path_factory.mktemp("fp16") / "moext-fp16.onnx", precision="fp16")


@pytest.fixture(scope="module")
def qdq_onnx(graph_info, tmp_path_factory):
    fp32 = cached_export(*graph_info, "fp32")
    calib = video_pairs(n_pairs=8, gaps=(2, 5, 8))
    return quantize_qdq(fp32, tmp_path_factory.mktemp("qdq") / "moext-int8.onnx", *calib, target="tensorrt")


def _meta(graph_info, **over):
    _, info = graph_info
    meta = plan_metadata(info, precision="fp16", max_batch=64, opt_batch=1, tensorrt_version="11.4.0",
                         gpu_name="NVIDIA H200", compute_capability="9.0", recipe=BuildRecipe("fp16", strongly_typed=True))
    meta.update(over)
    return meta


# ------------------------------------------------------------------ builder recipe and profile
def _flag_sets():
    sets = {"tensorrt 10 (documented)": TRT10_FLAGS, "tensorrt 11 (documented)": TRT11_FLAGS}
    if HAS_TENSORRT:
        import tensorrt as trt  # optional: only where it is installed

        sets[f"tensorrt {trt.__version__} (installed)"] = frozenset(trt.BuilderFlag.__members__)
    return sets


@pytest.mark.parametrize("version", list(_flag_sets()))
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_recipe_uses_only_flags_that_exist_and_yields_the_asked_precision(version, precision):
    """What a build relies on: no flag the installed TensorRT lacks (an AttributeError
    mid-build), and the plan computes in the precision asked for: a strongly typed network
    takes it from the ONNX graph; a weakly typed one needs the precision flag."""
    flags = _flag_sets()[version]
    r = build_recipe(precision, flags)
    assert set(r.set_flags) <= flags and set(r.clear_flags) <= flags
    if r.strongly_typed:
        assert r.onnx_precision == precision and not r.set_flags
    else:
        assert "FP16" in flags                         # weak typing exists only where FP16 is a flag
        want = {"fp32": set(), "fp16": {"FP16"}, "int8": {"INT8"}}[precision]
        assert want <= set(r.set_flags)
        assert r.onnx_precision in ("fp32", precision)
    if precision == "fp32" and "TF32" in flags:
        assert "TF32" in r.clear_flags                 # fp32 means fp32, not TF32 matmuls


def test_tensorrt11_builds_are_strongly_typed_and_unknown_precision_is_refused():
    assert all(build_recipe(p, TRT11_FLAGS).strongly_typed for p in ("fp32", "fp16", "int8"))
    with pytest.raises(ValueError, match="precision must be one of"):
        build_recipe("bf16", TRT10_FLAGS)


def test_profile_shapes_cover_batch_1_to_max_on_both_inputs():
    shapes = profile_shapes(64)
    assert shapes == {name: ((1, 3, 224, 224), (1, 3, 224, 224), (64, 3, 224, 224)) for name in ("onset", "apex")}
    assert profile_shapes(16, opt_batch=8)["apex"][1] == (8, 3, 224, 224)
    with pytest.raises(ValueError, match="max batch"):
        profile_shapes(0)
    with pytest.raises(ValueError, match="opt batch"):
        profile_shapes(8, opt_batch=9)


# ------------------------------------------------------------------ metadata and refusals
def test_plan_metadata_contents_and_round_trip(graph_info, tmp_path):
    _, info = graph_info
    meta = _meta(graph_info)
    for key, value in {"tensorrt_version": "11.4.0", "gpu_name": "NVIDIA H200", "compute_capability": "9.0",
                       "precision": "fp16", "input_size": 224, "classes": ["negative", "positive", "surprise"],
                       "checkpoint_hash": info.checkpoint_hash, "max_batch": 64, "width": 0.25}.items():
        assert meta[key] == value, key
    assert meta["mean"] == pytest.approx([0.485, 0.456, 0.406]) and "inside the graph" in meta["normalisation"]
    plan = tmp_path / "moext.plan"
    plan.write_bytes(b"not a real plan")
    metadata_path(plan).write_text(json.dumps(meta))
    assert metadata_path(plan).name == "moext.plan.json"
    back = read_plan_metadata(plan)
    assert back == json.loads(json.dumps(meta))
    assert model_info_from_metadata(back, str(plan)).classes == info.classes


def test_matching_plan_is_accepted(graph_info):
    meta = _meta(graph_info)
    check_plan_metadata(meta, tensorrt_version="11.4.0", gpu_name="NVIDIA H200", compute_capability="9.0",
                        expect_hash=meta["checkpoint_hash"])


@pytest.mark.parametrize("installed, match", [
    (dict(tensorrt_version="10.13.0"), "built with TensorRT 11.4.0, installed is 10.13.0"),
    (dict(gpu_name="NVIDIA GeForce RTX 4090", compute_capability="8.9"), "built on NVIDIA H200"),
    (dict(expect_hash="f" * 64), "built from weights with hash"),
])
def test_mismatched_plan_is_refused_with_rebuild_command(graph_info, installed, match):
    meta = _meta(graph_info)
    args = dict(tensorrt_version="11.4.0", gpu_name="NVIDIA H200", compute_capability="9.0", where="moext.plan")
    args.update(installed)
    with pytest.raises(EngineError, match=match) as e:
        check_plan_metadata(meta, **args)
    assert "python -m engines.build CHECKPOINT --engine tensorrt --out moext.plan --precision fp16" in str(e.value)


def test_every_mismatch_is_listed_at_once(graph_info):
    with pytest.raises(EngineError) as e:
        check_plan_metadata(_meta(graph_info, format=0), tensorrt_version="10.0.1", gpu_name="Tesla T4",
                            compute_capability="7.5")
    msg = str(e.value)
    assert "metadata format" in msg and "TensorRT 11.4.0" in msg and "Tesla T4" in msg


def test_missing_or_broken_metadata_is_refused(tmp_path):
    plan = tmp_path / "moext.plan"
    plan.write_bytes(b"\0" * 16)
    with pytest.raises(EngineError, match="moext.plan.json is missing"):
        read_plan_metadata(plan)
    metadata_path(plan).write_text("{not json")
    with pytest.raises(EngineError, match="unreadable metadata"):
        read_plan_metadata(plan)
    metadata_path(plan).write_text(json.dumps({"format": 1}))
    with pytest.raises(EngineError, match="metadata lacks"):
        read_plan_metadata(plan)


@pytest.mark.skipif(HAS_TENSORRT, reason="checks the path where TensorRT is absent")
def test_without_tensorrt_plans_and_builds_say_what_to_install(graph_info, tmp_path):
    from engines.build import main as build_main
    from engines.recognizer import Recognizer
    from engines.tensorrt_build import build_plan

    plan = tmp_path / "moext.plan"
    plan.write_bytes(b"\0" * 16)
    metadata_path(plan).write_text(json.dumps(_meta(graph_info)))
    with pytest.raises(EngineUnavailableError, match="TensorRT is not installed"):
        Recognizer.load(plan)
    with pytest.raises(EngineUnavailableError, match="TensorRT is not installed"):
        build_plan(graph_info[1].weights, tmp_path / "x.plan")
    assert build_main([graph_info[1].weights, "--engine", "tensorrt", "--out", str(tmp_path / "y.plan")]) == 1


# ------------------------------------------------------------------ the ONNX graphs TensorRT would parse
def test_fp16_graph_has_fp32_io_fp16_weights_and_dynamic_batch(fp16_onnx):
    model = onnx.load(str(fp16_onnx))
    onnx.checker.check_model(model, full_check=True)
    for v in list(model.graph.input) + list(model.graph.output):
        assert v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT, v.name  # fp32 at the boundary
        assert v.type.tensor_type.shape.dim[0].dim_param, v.name  # symbolic batch
    float_inits = [t for t in model.graph.initializer
                   if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16) and len(t.dims) >= 2]
    assert float_inits and all(t.data_type == onnx.TensorProto.FLOAT16 for t in float_inits)
    props = {p.key: p.value for p in model.metadata_props}
    assert props["moext.precision"] == "fp16"


def test_fp16_graph_parity_in_onnxruntime(fp16_onnx, graph_info, faces):
    """The fp16 graph computes what fp32 does within the fp16 tolerance (1e-2), batches 1 and 6."""
    ref = TorchRunner(*graph_info)
    rng = np.random.default_rng(1)
    rand = rng.integers(0, 256, (5, 224, 224, 3), dtype=np.uint8), rng.integers(0, 256, (5, 224, 224, 3), dtype=np.uint8)
    runner = OrtRunner(fp16_onnx)
    for onset, apex in ((faces[0][:1], faces[1][:1]), faces, rand):
        assert np.abs(runner.run(onset, apex) - ref.run(onset, apex)).max() <= 1e-2


def test_qdq_graph_is_symmetric_int8_per_channel(qdq_onnx):
    """TensorRT's explicit quantisation needs int8 Q/DQ with zero points 0; weights per channel."""
    model = onnx.load(str(qdq_onnx))
    onnx.checker.check_model(model)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 13
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert nodes
    for n in nodes:
        zp = inits.get(n.input[2]) if len(n.input) > 2 else None
        assert zp is None or (zp.dtype == np.int8 and not zp.any()), n.name
    per_channel = [n for n in nodes if n.op_type == "DequantizeLinear" and inits.get(n.input[1]) is not None
                   and inits[n.input[1]].size > 1]
    assert per_channel, "conv weights should be quantised per output channel"
    conv_inputs = {i for n in model.graph.node if n.op_type == "Conv" for i in n.input}
    assert any(n.output[0] in conv_inputs for n in per_channel)
    assert {p.key: p.value for p in model.metadata_props}["moext.precision"] == "int8"
    bias_dq = [n for n in nodes if n.op_type == "DequantizeLinear" and inits.get(n.input[0]) is not None
               and inits[n.input[0]].dtype == np.int32]
    assert not bias_dq, "TensorRT rejects int32 (bias) DequantizeLinear inputs: biases must stay float"


def test_qdq_graph_for_tensorrt_keeps_int8_parity_in_onnxruntime(qdq_onnx, graph_info, faces):
    """The graph TensorRT INT8 would be built from computes within the int8 tolerance (run here by ONNX Runtime)."""
    from engines.quantize import LOW_PRECISION_MAX_ABS_DIFF

    ref = TorchRunner(*graph_info).run(*faces)
    assert np.abs(OrtRunner(qdq_onnx).run(*faces) - ref).max() <= LOW_PRECISION_MAX_ABS_DIFF


# ------------------------------------------------------------------ real TensorRT (skipped without it)
@pytest.fixture(scope="module")
def checkpoint_path(graph_info):
    return graph_info[1].weights


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision, tol", [("fp32", 1e-4), ("fp16", 1e-2), ("int8", 0.05)])
def test_tensorrt_plan_builds_runs_and_matches_eager(checkpoint_path, graph_info, faces, tmp_path, precision, tol):
    import tensorrt as trt

    from engines.recognizer import Recognizer
    from engines.tensorrt_build import build_plan

    plan = build_plan(checkpoint_path, tmp_path / f"moext-{precision}.plan", precision=precision, max_batch=8)
    meta = read_plan_metadata(plan)
    assert meta["tensorrt_version"] == trt.__version__ and meta["precision"] == precision and meta["max_batch"] == 8
    ref = TorchRunner(*graph_info)
    with Recognizer.load(plan) as rec:
        assert (rec.name, rec.precision) == ("tensorrt", precision)
        for onset, apex in ((faces[0][:1], faces[1][:1]), (faces[0][:5], faces[1][:5])):
            assert np.abs(rec.predict(onset, apex) - ref.run(onset, apex)).max() <= tol
        big = np.concatenate([faces[0]] * 2), np.concatenate([faces[1]] * 2)  # 12 > max batch 8: chunked
        assert rec.predict(*big).shape == (12, 3)


@pytest.mark.tensorrt
def test_tensorrt_refuses_tampered_metadata_and_corrupt_plan(checkpoint_path, tmp_path):
    from engines.recognizer import Recognizer
    from engines.tensorrt_build import build_plan

    plan = build_plan(checkpoint_path, tmp_path / "moext.plan", precision="fp32", max_batch=2)
    meta = read_plan_metadata(plan)
    metadata_path(plan).write_text(json.dumps({**meta, "tensorrt_version": "0.0.1"}))
    with pytest.raises(EngineError, match="installed is"):
        Recognizer.load(plan)
    metadata_path(plan).write_text(json.dumps(meta))
    with pytest.raises(EngineError, match="other weights|weights with hash"):
        Recognizer.load(plan, expect_hash="0" * 64)
    plan.write_bytes(plan.read_bytes()[:1000])
    with pytest.raises(EngineError, match="could not deserialize"):
        Recognizer.load(plan)
