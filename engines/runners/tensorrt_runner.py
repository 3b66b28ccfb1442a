"""TensorRT runtime: load a serialized plan built by engines/tensorrt_build.py and run it.

A plan only runs on the TensorRT version and the GPU it was built with, so every plan
has a metadata JSON beside it (``<plan>.json``: TensorRT version, GPU name and compute
capability, precision, input size, normalisation, class names, checkpoint hash, max
batch). ``check_plan_metadata`` (a pure function, tested without TensorRT) refuses a
mismatched plan with the command that rebuilds it, before TensorRT is asked to
deserialize it.

Execution follows the TensorRT >= 10 name-based API: set_input_shape for the batch,
set_tensor_address with torch CUDA tensors as buffers, execute_async_v3 on torch's
current CUDA stream. Inputs are always float32 NCHW 0..255 (FP16 and INT8 plans keep
fp32 inputs/outputs), output float32 (N, C).

The one execution context holds per-launch state (input shapes, tensor addresses), so
run() and close() take the runner's lock (engines/runners/exclusive.py): threads sharing
one recogniser queue, and each gets its own batch's result.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from engines.runners import BUILD_HINT, EngineError, EngineUnavailableError, ModelInfo, Runner
from engines.runners.exclusive import one_call_at_a_time
import torch
from engines.runners.torch_runner import pairs_to_tensor

METADATA_VERSION = 1
REQUIRED_KEYS = ("format", "tensorrt_version", "gpu_name", "compute_capability", "precision", "input_size",
                 "mean", "std", "classes", "checkpoint_hash", "max_batch")


def metadata_path(plan: str | Path) -> Path:
    """model.plan -> model.plan.json"""
    plan = Path(plan)
    return plan.with_name(plan.name + ".json")


def read_plan_metadata(plan: str | Path) -> dict:
    """The metadata JSON beside a plan; EngineError if it is missing or unreadable."""
    mp = metadata_path(plan)
    hint = BUILD_HINT.format(engine="tensorrt", out=plan)
    if not mp.is_file():
        raise EngineError(f"{plan}: its metadata file {mp.name} is missing, so the plan's TensorRT version, GPU and "
                          f"weights are unknown; rebuild it with {hint}")
    try:
        meta = json.loads(mp.read_text())
    except (OSError, ValueError) as e:
        raise EngineError(f"{mp}: unreadable metadata ({e}); rebuild the plan with {hint}") from None
    missing = [k for k in REQUIRED_KEYS if k not in meta] if isinstance(meta, dict) else list(REQUIRED_KEYS)
    if missing:
        raise EngineError(f"{mp}: metadata lacks {missing}; rebuild the plan with {hint}")
    return meta


def check_plan_metadata(meta: dict, *, tensorrt_version: str, gpu_name: str, compute_capability: str,
                        expect_hash: str | None = None, where: str = "plan") -> None:
    """Refuse a plan built for another TensorRT version, GPU or set of weights.

    TensorRT plans are not portable across TensorRT versions or GPU models (the builder
    times kernels on the GPU it runs on). Raises EngineError listing every mismatch and
    the command that rebuilds the plan on this machine."""
    problems = []
    if str(meta.get("format")) != str(METADATA_VERSION):
        problems.append(f"metadata format {meta.get('format')!r} (this code reads {METADATA_VERSION})")
    if meta.get("tensorrt_version") != tensorrt_version:
        problems.append(f"built with TensorRT {meta.get('tensorrt_version')}, installed is {tensorrt_version}")
    if meta.get("compute_capability") != compute_capability or meta.get("gpu_name") != gpu_name:
        problems.append(f"built on {meta.get('gpu_name')} (compute capability {meta.get('compute_capability')}), "
                        f"this GPU is {gpu_name} ({compute_capability})")
    if expect_hash is not None and meta.get("checkpoint_hash") != expect_hash:
        problems.append(f"built from weights with hash {str(meta.get('checkpoint_hash'))[:16]}..., "
                        f"expected {expect_hash[:16]}...")
    if problems:
        hint = BUILD_HINT.format(engine="tensorrt", out=where)
        raise EngineError(f"{where} cannot run here: " + "; ".join(problems) +
                          f". Rebuild it on this machine from its checkpoint: {hint} --precision {meta.get('precision', 'fp16')}")


def model_info_from_metadata(meta: dict, where: str) -> ModelInfo:
    return ModelInfo(classes=tuple(meta["classes"]), width=float(meta.get("width", 0.0)),
                     checkpoint_hash=meta["checkpoint_hash"], input_size=int(meta["input_size"]),
                     mean=tuple(meta["mean"]), std=tuple(meta["std"]), params=int(meta.get("params", 0)), weights=where)


def installed_gpu(device: str = "cuda") -> tuple[str, str]:
    """(GPU name, compute capability "major.minor") of ``device``."""

    major, minor = torch.cuda.get_device_capability(device)
    return torch.cuda.get_device_name(device), f"{major}.{minor}"


class TensorRTRunner(Runner):
    """A deserialized TensorRT engine with one execution context (optimisation profile 0)."""

    name = "tensorrt"

    def __init__(self, plan: str | Path, device: str = "cuda", expect_hash: str | None = None) -> None:
        try:
            import tensorrt as trt
        except ImportError:
            raise EngineUnavailableError("TensorRT is not installed (pip install 'moext-live[tensorrt]' on a machine "
                                         "that reaches NVIDIA's package index); use the cuda or onnx engine") from None

        if not torch.cuda.is_available():
            raise EngineUnavailableError("a TensorRT plan needs an NVIDIA GPU (torch.cuda.is_available() is False)")
        plan = Path(plan)
        if not plan.is_file():
            raise FileNotFoundError(f"{plan}: no such plan; build one with "
                                    f"{BUILD_HINT.format(engine='tensorrt', out=plan)}")
        self.device = str(torch.device(device if device != "auto" else "cuda"))
        meta = read_plan_metadata(plan)
        gpu_name, cc = installed_gpu(self.device)
        check_plan_metadata(meta, tensorrt_version=trt.__version__, gpu_name=gpu_name, compute_capability=cc,
                            expect_hash=expect_hash, where=str(plan))
        self.meta = meta
        self.model = model_info_from_metadata(meta, str(plan))
        self.precision = meta["precision"]
        self.max_batch = int(meta["max_batch"])
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        with torch.cuda.device(self.device):
            self.engine = self.runtime.deserialize_cuda_engine(plan.read_bytes())
            if self.engine is None:
                raise EngineError(f"{plan}: TensorRT could not deserialize the plan (corrupt or truncated file); "
                                  f"rebuild it with {BUILD_HINT.format(engine='tensorrt', out=plan)}")
            self.context = self.engine.create_execution_context()
        names = {self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)}
        if names != {"onset", "apex", "probs"}:
            raise EngineError(f"{plan}: I/O tensors {sorted(names)}, expected onset, apex, probs; rebuild it with "
                              f"{BUILD_HINT.format(engine='tensorrt', out=plan)}")
        self.plan = plan
        self.trt_version = trt.__version__

    @one_call_at_a_time  # one execution context: its shapes and addresses are per-launch state
    def run(self, onset: np.ndarray, apex: np.ndarray) -> np.ndarray:
        n = len(onset)
        with torch.cuda.device(self.device):
            on = pairs_to_tensor(onset, self.device)  # (N, 3, S, S) float32 0..255, contiguous
            ap = pairs_to_tensor(apex, self.device)
            out = torch.empty((n, len(self.model.classes)), dtype=torch.float32, device=self.device)
            for name, t in (("onset", on), ("apex", ap)):
                self.context.set_input_shape(name, tuple(t.shape))
                self.context.set_tensor_address(name, t.data_ptr())
            self.context.set_tensor_address("probs", out.data_ptr())
            stream = torch.cuda.current_stream(self.device)
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise EngineError(f"{self.plan}: TensorRT execution failed for a batch of {n} "
                                  f"(plan max batch {self.max_batch})")
            return out.cpu().numpy()  # synchronises the stream

    def describe(self) -> dict:
        return {"tensorrt": self.trt_version, "gpu": self.meta.get("gpu_name"), "max_batch": self.max_batch,
                "plan": str(self.plan)}

    @one_call_at_a_time  # never free the context under a running launch
    def close(self) -> None:
        self.context = self.engine = self.runtime = None
