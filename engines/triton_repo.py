"""A model repository for the standard Triton Inference Server (onnxruntime or tensorrt backend).

    python -m engines.serve --engine CKPT.safetensors --model-repository model_repository   # ONNX, CPU
    python -m engines.serve --engine moext.onnx --device cuda --model-repository repo        # ONNX, GPU
    python -m engines.serve --engine moext-fp16.plan --model-repository repo                 # TensorRT
    tritonserver --model-repository=$PWD/model_repository    # e.g. in NVIDIA's tritonserver container

writes ``OUT/MODEL/config.pbtxt`` and ``OUT/MODEL/1/model.onnx`` (or ``1/model.plan``).
The config (protobuf text format, Triton's ModelConfig) declares the engine file's own
inputs and outputs, read from the file (ONNX graph inputs/outputs, or the plan's metadata
JSON): onset, apex TYPE_FP32 [3, S, S] (RGB 0..255, normalised inside) -> probs TYPE_FP32
[C], with max_batch_size, dynamic_batching (preferred batch sizes and the queue delay),
instance_group (KIND_CPU for ONNX Runtime on the CPU, KIND_GPU for a plan or --device
cuda) and the parameter "moext.info": the model information (engines/serving) that the
client engine ``triton://HOST:PORT/MODEL`` checks (classes, checkpoint hash, contract).
A plan runs only on the TensorRT version and GPU it was built for (its metadata says
which): the Triton container must carry that TensorRT version.
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import onnx

from engines.export import check_onnx_file
from engines.runners import EngineError, ModelInfo, info_from_props
from engines.runners.tensorrt_runner import model_info_from_metadata, read_plan_metadata
from engines.serving import DEFAULT_MODEL, INFO_PARAMETER, INPUT_NAMES, OUTPUT_NAME, info_json

ONNX_TYPES = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.FLOAT16: "TYPE_FP16",
              onnx.TensorProto.UINT8: "TYPE_UINT8", onnx.TensorProto.INT8: "TYPE_INT8",
              onnx.TensorProto.INT32: "TYPE_INT32", onnx.TensorProto.INT64: "TYPE_INT64"}
PREFERRED = (8, 16, 32, 64, 128, 256)


def preferred_batch_sizes(max_batch: int) -> list[int]:
    """Powers of two from 8 up to max_batch (the CUDA runner's captured sizes; Triton forms
    the largest of them it can within the queue delay)."""
    return [b for b in PREFERRED if b <= max_batch] or [max_batch]


Tensors = list[tuple[str, str, list[int]]]  # (name, Triton TYPE_x, dims after the batch)


def onnx_io(proto: onnx.ModelProto, where: str = "model") -> tuple[Tensors, Tensors]:
    """(inputs, outputs) of an ONNX graph as [(name, TYPE_x, dims without the batch)].

    The first dim of every tensor is the batch; a symbolic dim elsewhere becomes -1."""
    def one(v) -> tuple[str, str, list[int]]:
        t = v.type.tensor_type
        if t.elem_type not in ONNX_TYPES:
            raise EngineError(f"{where}: tensor {v.name!r} has ONNX element type {t.elem_type}, which this writer "
                              "does not map to a Triton type")
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        return v.name, ONNX_TYPES[t.elem_type], dims[1:]

    inits = {i.name for i in proto.graph.initializer}
    return [one(v) for v in proto.graph.input if v.name not in inits], [one(v) for v in proto.graph.output]


def _quote(s: str) -> str:
    """A protobuf text-format string literal."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def config_pbtxt(*, name: str, backend: str, max_batch: int, inputs, outputs, queue_delay_us: int, instances: int,
                 kind: str, info: str) -> str:
    """Triton's ModelConfig in protobuf text format (pure; parsed back in tests/test_serve.py)."""
    def tensors(key: str, items) -> str:
        body = ",\n".join(f"  {{\n    name: {_quote(n)}\n    data_type: {t}\n"
                          f"    dims: [ {', '.join(map(str, d))} ]\n  }}" for n, t, d in items)
        return f"{key} [\n{body}\n]\n"

    sizes = ", ".join(map(str, preferred_batch_sizes(max_batch)))
    return (f"# MoExt recogniser for the standard Triton Inference Server (written by engines.triton_repo).\n"
            f"# Client: --engine triton://HOST:8000/{name} (checks the moext.info parameter below).\n"
            f"name: {_quote(name)}\n"
            f"backend: {_quote(backend)}\n"
            f"max_batch_size: {int(max_batch)}\n"
            + tensors("input", inputs) + tensors("output", outputs) +
            f"dynamic_batching {{\n  preferred_batch_size: [ {sizes} ]\n"
            f"  max_queue_delay_microseconds: {int(queue_delay_us)}\n}}\n"
            f"instance_group [\n  {{\n    count: {int(instances)}\n    kind: {kind}\n  }}\n]\n"
            f"parameters {{\n  key: {_quote(INFO_PARAMETER)}\n"
            f"  value: {{\n    string_value: {_quote(info)}\n  }}\n}}\n")


def _check_io(inputs, outputs, info: ModelInfo, where: str) -> None:
    s, c = info.input_size, len(info.classes)
    names = sorted(n for n, _, _ in inputs)
    if names != sorted(INPUT_NAMES) or [n for n, _, _ in outputs] != [OUTPUT_NAME]:
        raise EngineError(f"{where}: inputs {names}, outputs {[n for n, _, _ in outputs]}; "
                          "expected onset, apex -> probs")
    for n, t, d in inputs:
        if t != "TYPE_FP32" or d != [3, s, s]:
            raise EngineError(f"{where}: input {n!r} is {t} {d}, expected TYPE_FP32 [3, {s}, {s}]")
    (_, t, d), = outputs
    if t != "TYPE_FP32" or d not in ([c], [-1]):
        raise EngineError(f"{where}: output probs is {t} {d}, expected TYPE_FP32 [{c}]")


def write_model_repository(out: str | Path, engine_file: str | Path, *, name: str = DEFAULT_MODEL, max_batch: int = 64,
                           queue_delay_us: int = 2000, instances: int = 1, device: str = "auto") -> Path:
    """Write OUT/NAME/{config.pbtxt, 1/model.onnx or 1/model.plan} for ``engine_file`` (.onnx or
    .plan/.engine with its metadata JSON). Returns the model folder."""
    engine_file = Path(engine_file)
    folder = Path(out) / name
    if engine_file.suffix.lower() == ".onnx":
        proto = check_onnx_file(engine_file)
        props = {p.key: p.value for p in proto.metadata_props}
        info = info_from_props(props, where=str(engine_file))
        inputs, outputs = onnx_io(proto, str(engine_file))
        outputs = [(n, t, [len(info.classes)] if d == [-1] else d) for n, t, d in outputs]
        backend, target = "onnxruntime", "model.onnx"
        kind = "KIND_GPU" if device.startswith("cuda") else "KIND_CPU"
        precision, runs_on = props.get("moext.precision", "fp32"), ("cuda" if kind == "KIND_GPU" else "cpu")
        weights = props.get("moext.weights") or engine_file.name  # the checkpoint it was exported from
    elif engine_file.suffix.lower() in (".plan", ".engine"):
        meta = read_plan_metadata(engine_file)
        info = model_info_from_metadata(meta, str(engine_file))
        s = info.input_size
        inputs = [(n, "TYPE_FP32", [3, s, s]) for n in INPUT_NAMES]
        outputs = [(OUTPUT_NAME, "TYPE_FP32", [len(info.classes)])]
        if max_batch > int(meta["max_batch"]):
            raise EngineError(f"{engine_file}: the plan was built for batches up to {meta['max_batch']}; pass "
                              f"--max-batch {meta['max_batch']} or rebuild it with a larger --max-batch")
        backend, target, kind, precision, runs_on = "tensorrt", "model.plan", "KIND_GPU", meta["precision"], "cuda"
        weights = engine_file.name
    else:
        raise EngineError(f"{engine_file}: a model repository holds an ONNX graph (.onnx) or a TensorRT plan "
                          "(.plan/.engine); export one first (python -m engines.build ...)")
    _check_io(inputs, outputs, info, str(engine_file))
    info = dataclasses.replace(info, weights=weights)
    text = config_pbtxt(name=name, backend=backend, max_batch=max_batch, inputs=inputs, outputs=outputs,
                        queue_delay_us=queue_delay_us, instances=instances, kind=kind,
                        info=info_json(info, precision=precision, engine=backend, device=runs_on, max_batch=max_batch))
    (folder / "1").mkdir(parents=True, exist_ok=True)
    for stale in ("model.onnx", "model.plan"):  # a repository rewritten for the other backend
        (folder / "1" / stale).unlink(missing_ok=True)
    shutil.copyfile(engine_file, folder / "1" / target)
    (folder / "config.pbtxt").write_text(text, encoding="utf-8")
    return folder
