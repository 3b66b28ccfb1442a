"""The inference server (python -m engines.serve), its client engine and the model repository.

A module fixture starts the real server (PyTriton's bundled tritonserver, ONNX Runtime on
the CPU, the demo weights' ONNX export) on free loopback ports, as a user would, and stops
it at the end. Against it: the client engine ``triton://`` matches a local engine on real
face crops, concurrent callers each get their own result, Triton's dynamic batcher shows
in the server's statistics, and wrong weights or a model it does not serve are refused.
Without the server: a server that is down, the URL and protocol helpers, the libpython
fix, and the model repository for the standard Triton server (config.pbtxt parsed with
Triton's own ModelConfig schema and matched against the ONNX model).

Needs the serve extra (pip install -e '.[serve]' && pip install --no-deps
nvidia-pytriton==0.7.0, Linux); without it those tests skip with the reason. The server's
stub environment (numpy 1.x, engines/serving/pytriton_env.py) is made once in pytest's
cache folder (pip, PyPI).
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from core.contract import InputContractError
from engines import serve as serve_cli
from engines.export import cached_export, load_checkpoint_graph
from engines.quantize import video_pairs
from engines.recognizer import DEMO_WEIGHTS, Recognizer, load_engine
from engines.runners import EngineError
from engines.runners.torch_runner import TorchRunner
from engines.runners.triton_runner import served_layout
from engines.serving import INFO_PARAMETER, info_from_json, info_json, parse_url, serve_hint
from engines.serving import pytriton_env
from engines.triton_repo import preferred_batch_sizes, write_model_repository
from realtime.bench.loadserver import ServerProcess, free_ports
from test_thread_safety import alone, assert_own_results, hammer

HAS_PYTRITON = importlib.util.find_spec("pytriton") is not None
HAS_CLIENT = importlib.util.find_spec("tritonclient") is not None
needs_server = pytest.mark.skipif(not HAS_PYTRITON or not HAS_CLIENT, reason=(
    "the serve extra is not installed (pip install -e '.[serve]' && pip install --no-deps nvidia-pytriton==0.7.0; "
    "Linux only)"))
needs_client = pytest.mark.skipif(not HAS_CLIENT, reason="tritonclient is not installed (pip install -e '.[serve]')")
FP32_TOL = 1e-4
QUEUE_DELAY_US = 10_000  # long enough that concurrent callers are batched on a busy 2-core machine


# engine caches in the session's folder, never the user's (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("cache_dir")


@pytest.fixture(scope="module")
def demo_onnx(cache_dir) -> Path:
    """The demo weights' fp32 ONNX export (what the server and the local reference run)."""
    return cached_export(*load_checkpoint_graph(DEMO_WEIGHTS), "fp32")


@pytest.fixture(scope="module")
def faces():
    """8 aligned onset/apex pairs from the bundled real-face video."""
    return video_pairs(n_pairs=8)


def _stub_env_dir(request, tmp_path_factory) -> Path:
    cache = getattr(request.config, "cache", None)  # persists across runs where pytest's cache is on
    return (cache.mkdir("moext-triton-stub-env") if cache else tmp_path_factory.mktemp("stub")) / "env"


@pytest.fixture(scope="module")
def server(request, tmp_path_factory, demo_onnx, cache_dir):
    """python -m engines.serve on the demo export, ONNX Runtime CPU, loopback, free ports."""
    if not (HAS_PYTRITON and HAS_CLIENT):
        pytest.skip("the serve extra is not installed (pip install -e '.[serve]' && pip install --no-deps "
                    "nvidia-pytriton==0.7.0; Linux only)")
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    proc = ServerProcess(str(demo_onnx), "cpu", max_batch=16, queue_delay_us=QUEUE_DELAY_US, log_path=log,
                         stub_env=_stub_env_dir(request, tmp_path_factory), env={"MOEXT_CACHE_DIR": str(cache_dir)})
    try:
        proc.start(timeout=240)
    except RuntimeError as e:  # exited early or not ready: the message holds the server's log
        pytest.fail(str(e))
    try:
        yield proc
    finally:
        proc.stop(stop_timeout=60)  # engines.serve stops Triton and its stubs on SIGTERM


# ------------------------------------------------------------------ against the real server
@needs_server
def test_client_engine_matches_the_local_engine_on_real_faces(server, demo_onnx, faces):
    local = Recognizer.load(demo_onnx)
    reference = TorchRunner(*load_checkpoint_graph(DEMO_WEIGHTS))
    with Recognizer.load(server.url) as rec:
        assert (rec.name, rec.precision, rec.device) == ("triton", "fp32", "cpu")
        assert rec.classes == local.classes
        info = rec.info()
        assert info["checkpoint_hash"] == local.info()["checkpoint_hash"] and info["width"] == local.info()["width"]
        assert info["server_engine"] == "onnxruntime" and info["input_layout"] == "nhwc_uint8"
        p = rec.predict(*faces)
        assert p.shape == (8, len(rec.classes)) and p.dtype == np.float32
        assert np.abs(p - local.predict(*faces)).max() <= FP32_TOL
        assert np.abs(p - reference.run(*faces)).max() <= FP32_TOL
        assert np.abs(rec.predict(faces[0][0], faces[1][0]) - p[:1]).max() <= FP32_TOL  # one (224, 224, 3) pair
        with pytest.raises(InputContractError):  # the contract is checked here, before anything is sent
            rec.predict(faces[0].astype(np.float32), faces[1])
    local.close()


@needs_server
def test_front_ends_load_the_server_through_load_engine(server):
    rec, note = load_engine(server.url, "auto")
    assert rec is not None and note == "" and rec.name == "triton"
    rec.close()


@needs_server
def test_concurrent_callers_each_get_their_own_result(server, demo_onnx, faces):
    """8 threads share one client engine (a client per thread inside), each on its own pair."""
    expected = alone(Recognizer.load(demo_onnx).predict, *faces)
    with Recognizer.load(server.url) as rec:
        assert_own_results(hammer(rec.predict, *faces), expected, FP32_TOL)


@needs_server
def test_dynamic_batching_shows_in_the_server_statistics(server, faces):
    """Concurrent single-pair requests are merged: fewer model executions than inferences."""
    before = server.stats()
    with Recognizer.load(server.url) as rec:
        hammer(rec.predict, *faces, rounds=4)  # 8 threads x (1 + 2 + 1 + 2 pairs)
    after = server.stats()
    inferences = int(after["inference_count"]) - int(before["inference_count"])
    executions = int(after["execution_count"]) - int(before["execution_count"])
    assert inferences == 8 * 6
    assert 0 < executions < inferences, (executions, inferences)
    assert max(int(b["batch_size"]) for b in after["batch_stats"]) > 2  # batches of several requests


@needs_server
def test_wrong_weights_are_refused_naming_both_hashes(server, demo_onnx):
    served = Recognizer.load(demo_onnx).info()["checkpoint_hash"]
    with pytest.raises(EngineError) as e:
        Recognizer.load(server.url, expect_hash="ab" * 32)
    msg = str(e.value)
    assert "serves other weights" in msg and served[:16] in msg and "abababab" in msg
    assert "python -m engines.serve" in msg and server.url in msg
    Recognizer.load(server.url, expect_hash=served).close()  # the right hash loads


@needs_server
def test_a_model_the_server_does_not_serve_is_refused(server):
    url = server.url.rsplit("/", 1)[0] + "/other"
    with pytest.raises(EngineError, match="does not serve a ready model 'other'"):
        Recognizer.load(url)


# ------------------------------------------------------------------ without a server
@needs_client
def test_a_server_that_is_down_is_a_clear_error():
    (port,) = free_ports(1)
    url = f"triton://127.0.0.1:{port}/moext"
    with pytest.raises(EngineError) as e:
        load_engine(url)
    msg = str(e.value)
    assert f"no Triton server answers at {url}" in msg and "python -m engines.serve" in msg and str(port) in msg


def test_urls_and_hints():
    assert parse_url("triton://gpu-box:9000/moext_fp16") == ("gpu-box", 9000, "moext_fp16")
    assert parse_url("triton://localhost") == ("localhost", 8000, "moext")
    assert parse_url("TRITON://10.0.0.2:8000/") == ("10.0.0.2", 8000, "moext")
    for bad in ("http://localhost:8000/moext", "triton://:8000/m", "triton://h:port/m", "triton://h:1/a/b"):
        with pytest.raises(ValueError):
            parse_url(bad)
    assert serve_hint(9000, "x") == ("python -m engines.serve --engine CHECKPOINT_OR_ENGINE --http-port 9000 "
                                     "--model-name x")


def test_client_refuses_models_that_do_not_fit_the_contract():
    meta = {"inputs": [{"name": n, "datatype": "UINT8", "shape": [-1, 224, 224, 3]} for n in ("onset", "apex")],
            "outputs": [{"name": "probs", "datatype": "FP32", "shape": [-1, 3]}]}
    assert served_layout(meta, {"max_batch_size": 8}, 3, 224, "u") == "nhwc_uint8"
    fp32 = {**meta, "inputs": [{"name": n, "datatype": "FP32", "shape": [-1, 3, 224, 224]} for n in ("onset", "apex")]}
    assert served_layout(fp32, {"max_batch_size": 8}, 3, 224, "u") == "nchw_fp32"
    with pytest.raises(EngineError, match="lists 5 classes"):
        served_layout(meta, {"max_batch_size": 8}, 5, 224, "u")
    with pytest.raises(EngineError, match="input 'onset'"):
        served_layout(meta, {"max_batch_size": 8}, 3, 112, "u")
    with pytest.raises(EngineError, match="not a MoExt recogniser"):
        served_layout({**meta, "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 3]}]},
                      {"max_batch_size": 8}, 3, 224, "u")
    with pytest.raises(EngineError, match="without batching"):
        served_layout(meta, {"max_batch_size": 0}, 3, 224, "u")


def test_the_libpython_fix_puts_this_interpreters_library_first(monkeypatch, caplog):
    libdir = pytriton_env.libpython_dir()
    if libdir is not None:
        env = {"LD_LIBRARY_PATH": f"/other/lib:{libdir}"}
        assert pytriton_env.fix_libpython(env) == libdir
        assert env["LD_LIBRARY_PATH"] == f"{libdir}:/other/lib"  # first, once
    monkeypatch.setattr(pytriton_env, "libpython_dir", lambda: None)
    env = {"LD_LIBRARY_PATH": "/other/lib"}
    assert pytriton_env.fix_libpython(env) is None and env == {"LD_LIBRARY_PATH": "/other/lib"}
    assert "--enable-shared" in caplog.text and "/usr/bin/python" in caplog.text


# ------------------------------------------------------------------ the model repository
def _parse_config(path: Path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2  # Triton's own ModelConfig schema (the serve extra)

    return text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())


def _onnx_tensors(values) -> dict[str, tuple[str, list[int]]]:
    """{name: (Triton type, dims after the batch)} of ONNX graph inputs or outputs."""
    names = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.UINT8: "TYPE_UINT8"}
    return {v.name: (names[v.type.tensor_type.elem_type], [d.dim_value or -1 for d in v.type.tensor_type.shape.dim][1:])
            for v in values}


@needs_client
def test_model_repository_config_parses_and_matches_the_onnx_model(tmp_path, demo_onnx, cache_dir):
    from google.protobuf.json_format import MessageToDict
    from tritonclient.grpc import model_config_pb2

    out = tmp_path / "repo"
    assert serve_cli.main(["--engine", "auto", "--model-repository", str(out), "--max-batch", "32",
                           "--instances", "2", "--queue-delay-us", "500"]) == 0
    folder = out / "moext"
    assert (folder / "1" / "model.onnx").read_bytes() == demo_onnx.read_bytes()  # the checkpoint's cached export
    cfg = _parse_config(folder / "config.pbtxt")
    assert (cfg.name, cfg.backend, cfg.max_batch_size) == ("moext", "onnxruntime", 32)
    graph = onnx.load(str(folder / "1" / "model.onnx")).graph
    want_in, want_out = _onnx_tensors(graph.input), _onnx_tensors(graph.output)
    dtype = model_config_pb2.DataType.Name
    assert {i.name: (dtype(i.data_type), list(i.dims)) for i in cfg.input} == want_in
    assert {o.name: (dtype(o.data_type), list(o.dims)) for o in cfg.output} == want_out
    assert want_in["onset"] == ("TYPE_FP32", [3, 224, 224]) and want_out["probs"] == ("TYPE_FP32", [3])
    assert cfg.HasField("dynamic_batching") and cfg.dynamic_batching.max_queue_delay_microseconds == 500
    assert list(cfg.dynamic_batching.preferred_batch_size) == [8, 16, 32]
    (group,) = cfg.instance_group
    assert group.count == 2 and model_config_pb2.ModelInstanceGroup.Kind.Name(group.kind) == "KIND_CPU"
    # the client reads the model information from the config, as Triton serves it (JSON)
    served = MessageToDict(cfg, preserving_proto_field_name=True)
    info, doc = info_from_json(served["parameters"][INFO_PARAMETER]["string_value"], "repo")
    props = {p.key: p.value for p in onnx.load(str(demo_onnx)).metadata_props}
    assert info.checkpoint_hash == props["moext.checkpoint_hash"]
    assert list(info.classes) == json.loads(props["moext.classes"])
    assert doc["weights"] == "moext_demo.safetensors" and doc["engine"] == "onnxruntime" and doc["max_batch"] == 32
    def as_metadata(tensors):  # as Triton's metadata endpoint describes them
        return [{"name": t.name, "datatype": dtype(t.data_type)[5:], "shape": [-1, *t.dims]} for t in tensors]

    meta = {"inputs": as_metadata(cfg.input), "outputs": as_metadata(cfg.output)}
    assert served_layout(meta, {"max_batch_size": cfg.max_batch_size}, len(info.classes), info.input_size, "repo") \
        == "nchw_fp32"


@needs_client
def test_model_repository_for_a_tensorrt_plan(tmp_path, demo_onnx):
    """A plan goes to the tensorrt backend on the GPU, with dims from its metadata (no TensorRT needed)."""
    from engines.runners import info_from_props
    from engines.tensorrt_build import build_recipe, plan_metadata
    from tritonclient.grpc import model_config_pb2

    info = info_from_props({p.key: p.value for p in onnx.load(str(demo_onnx)).metadata_props})
    plan = tmp_path / "moext-fp16.plan"
    plan.write_bytes(b"not a real plan: the writer only copies it")
    meta = plan_metadata(info, precision="fp16", max_batch=16, opt_batch=1, tensorrt_version="10.9.0",
                         gpu_name="NVIDIA H200", compute_capability="9.0", recipe=build_recipe("fp16", {"FP16"}))
    plan.with_name(plan.name + ".json").write_text(json.dumps(meta))
    folder = write_model_repository(tmp_path / "repo", plan, name="moext_trt", max_batch=16)
    cfg = _parse_config(folder / "config.pbtxt")
    assert (cfg.name, cfg.backend, cfg.max_batch_size) == ("moext_trt", "tensorrt", 16)
    assert (folder / "1" / "model.plan").read_bytes() == plan.read_bytes()
    assert {i.name: list(i.dims) for i in cfg.input} == {"onset": [3, 224, 224], "apex": [3, 224, 224]}
    assert model_config_pb2.ModelInstanceGroup.Kind.Name(cfg.instance_group[0].kind) == "KIND_GPU"
    assert json.loads(cfg.parameters[INFO_PARAMETER].string_value)["precision"] == "fp16"
    with pytest.raises(EngineError, match="batches up to 16"):
        write_model_repository(tmp_path / "repo", plan, max_batch=64)


def test_preferred_batch_sizes_and_info_round_trip(demo_onnx):
    assert preferred_batch_sizes(64) == [8, 16, 32, 64] and preferred_batch_sizes(4) == [4]
    rec = Recognizer.load(demo_onnx)
    text = info_json(rec.runner.model, precision="fp32", engine="onnxruntime", device="cpu", max_batch=8)
    info, doc = info_from_json(text, "x")
    assert info.classes == rec.classes and info.checkpoint_hash == rec.info()["checkpoint_hash"]
    with pytest.raises(EngineError, match="unreadable"):
        info_from_json('{"classes": 1}', "x")
