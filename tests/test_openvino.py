"""OpenVINO engines (the ``openvino`` extra): fp32 parity, bf16 and int8 on real face crops,
the Recognizer's checkpoint engines, refusals. Skipped where OpenVINO is not installed.

The network is the narrow test checkpoint of tests/test_engines.py (random weights made
informative: probabilities neither uniform nor saturated)."""
from __future__ import annotations

import numpy as np
import pytest

from engines.export import cached_export
from engines.quantize import LOW_PRECISION_MAX_ABS_DIFF, quantize_qdq, video_pairs
from engines.recognizer import Recognizer
from engines.runners import EngineError
from engines.runners.torch_runner import TorchRunner
from tests import test_engines as _engine_tests

# shared with the ONNX Runtime engine tests: the narrow test checkpoint and real face pairs
faces, ckpt, graph_info = _engine_tests.faces, _engine_tests.ckpt, _engine_tests.graph_info
FP32_TOL = _engine_tests.FP32_TOL

ov = pytest.importorskip("openvino", reason="the openvino extra is not installed")

from engines.runners.openvino_runner import OpenVinoRunner  # noqa: E402

pytestmark = pytest.mark.usefixtures("cache_dir")
HAS_BF16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.fixture(scope="module")
def fp32_onnx(graph_info, cache_dir):
    return cached_export(*graph_info, "fp32")


@pytest.fixture(scope="module")
def reference(graph_info, faces):
    return TorchRunner(*graph_info).run(*faces)


def test_fp32_matches_eager_torch_on_real_faces_at_batch_1_and_n(fp32_onnx, graph_info, faces, reference):
    r = OpenVinoRunner(fp32_onnx, precision="fp32", threads=1)
    assert r.precision == "fp32" and r.name == "openvino" and r.device == "cpu"
    assert r.model.checkpoint_hash == graph_info[1].checkpoint_hash and r.model.classes == graph_info[1].classes
    assert r.describe()["inference_precision"] == "f32"  # forced: OpenVINO would pick bf16 on such CPUs by itself
    p = r.run(*faces)
    assert p.shape == (len(faces[0]), 3) and p.dtype == np.float32
    assert np.abs(p - reference).max() <= FP32_TOL
    one = r.run(faces[0][:1], faces[1][:1])  # another batch size through the same compiled model
    assert np.abs(one - reference[:1]).max() <= FP32_TOL


@pytest.mark.skipif(not HAS_BF16, reason="this CPU has no bf16 arithmetic")
def test_bf16_runs_in_bf16_and_stays_close_on_a_random_weight_net(fp32_onnx, faces, reference):
    r = OpenVinoRunner(fp32_onnx, precision="bf16")
    assert r.describe()["inference_precision"] == "bf16"
    d = np.abs(r.run(*faces) - reference).max()
    # bf16 rounds: not bit-equal to fp32, but close on this net (trained weights are measured by engines.bench)
    assert 0 < d <= 0.1, d


def test_int8_runs_the_qdq_graph(fp32_onnx, tmp_path, faces, reference):
    int8 = quantize_qdq(fp32_onnx, tmp_path / "int8.onnx", *video_pairs(n_pairs=8, gaps=(2, 5, 8)))
    r = OpenVinoRunner(int8, precision="int8")
    assert r.precision == "int8"
    assert np.abs(r.run(*faces) - reference).max() <= LOW_PRECISION_MAX_ABS_DIFF
    with pytest.raises(EngineError, match="int8 graph cannot run at precision fp32"):
        OpenVinoRunner(int8, precision="fp32")


def test_fp32_graph_refused_at_int8(fp32_onnx):
    with pytest.raises(EngineError, match="fp32 graph cannot run at precision int8"):
        OpenVinoRunner(fp32_onnx, precision="int8")


def test_recognizer_loads_openvino_engines_from_a_checkpoint(ckpt, faces, reference):
    with Recognizer.load(ckpt, engine="openvino") as rec:
        assert rec.name == "openvino" and rec.precision == "fp32"
        assert rec.info()["weights"] == str(ckpt)
        assert np.abs(rec.predict(*faces) - reference).max() <= FP32_TOL
    with Recognizer.load(ckpt, engine="openvino-int8") as rec:
        assert rec.precision == "int8"
        assert rec.predict(faces[0][0], faces[1][0]).shape == (1, 3)


def test_a_damaged_file_is_refused_with_its_name(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not an onnx graph")
    with pytest.raises(EngineError, match="broken.onnx: OpenVINO cannot read this file"):
        OpenVinoRunner(bad)
    with pytest.raises(FileNotFoundError, match="no such ONNX file"):
        OpenVinoRunner(tmp_path / "missing.onnx")


def test_front_ends_pass_runtime_to_the_engine_loader():
    """run_live.py / the web demo: --runtime picks the engine that runs the weights."""
    from engines.recognizer import load_engine
    from realtime.frontends.options import build_parser
    from realtime.frontends.websession import WebConfig

    args = build_parser().parse_args(["--video", "x.mp4", "--runtime", "openvino"])
    cfg = WebConfig.from_args(args)
    assert args.runtime == cfg.runtime == "openvino"
    rec, note = load_engine(cfg.engine, cfg.device, engine=cfg.runtime)
    try:
        assert not note and rec.name == "openvino" and rec.precision == "fp32"
    finally:
        rec.close()
