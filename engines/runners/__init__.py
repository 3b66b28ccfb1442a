"""Inference runners: one small class per engine behind one base class.

The pattern is DeepLabCut-Live's (dlclive/core/runner.py): a runner is built ready to
run, turns one batch of inputs into one result, describes itself and closes. The
``Recognizer`` (engines/recognizer.py) validates inputs against core/contract.py and
picks a runner; runners never see anything but valid batches.

Every runner takes ALIGNED onset/apex crops as (N, 224, 224, 3) uint8 RGB numpy arrays
and returns (N, C) float32 softmax probabilities. Inside, each feeds its engine the
graph input fixed by engines/export.py: float32 NCHW RGB in 0..255, normalised inside.

| runner | module | engine file | device |
| --- | --- | --- | --- |
| TorchRunner | torch_runner.py | .safetensors (eager PyTorch, the reference) | cpu / cuda |
| OrtRunner | onnxruntime_runner.py | .onnx (fp32, or int8 Q/DQ) | cpu |
| CudaRunner | cuda_runner.py | .safetensors (fp16, channels-last, CUDA graphs) | cuda |
| TensorRTRunner | tensorrt_runner.py | .plan / .engine + .json metadata | cuda |
"""
from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import platformdirs

from core.contract import INPUT_SIZE, NORM_MEAN, NORM_STD

# The one command that rebuilds any engine file, quoted in every refusal.
BUILD_HINT = "python -m engines.build CHECKPOINT --engine {engine} --out {out}"


class EngineError(RuntimeError):
    """An engine file that is corrupt, was built for other weights, another TensorRT
    version or another GPU, or cannot run here. The message says what to rebuild."""


class EngineUnavailableError(EngineError):
    """The engine's library or device is missing on this machine (the Recognizer falls
    back to the next engine when it picks one itself)."""


@dataclass(frozen=True)
class ModelInfo:
    """What every engine carries about the network it runs (one record for all files:
    ONNX metadata_props, the TensorRT metadata JSON, the checkpoint's config)."""

    classes: tuple[str, ...]
    width: float
    checkpoint_hash: str
    input_size: int = INPUT_SIZE
    mean: tuple[float, ...] = NORM_MEAN
    std: tuple[float, ...] = NORM_STD
    params: int = 0
    weights: str = ""  # the checkpoint (or engine) file this came from
    extra: dict = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["classes"] = list(self.classes)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d


class Runner(ABC):
    """One inference engine, built ready to run.

    Subclasses set ``name`` (engine kind), ``precision`` (fp32/fp16/int8), ``device``
    (cpu/cuda[:i]), ``model`` (ModelInfo) and ``max_batch`` (None = any size)."""

    name: str = "runner"
    precision: str = "fp32"
    device: str = "cpu"
    max_batch: int | None = None
    model: ModelInfo

    @abstractmethod
    def run(self, onset: np.ndarray, apex: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 RGB onset and apex crops -> (N, C) float32 probabilities."""

    def close(self) -> None:
        """Release the engine (sessions, GPU memory); the runner is unusable afterwards."""

    def describe(self) -> dict:
        """Engine-specific facts for Recognizer.info() (threads, providers, batch sizes...)."""
        return {}

    @property
    def classes(self) -> tuple[str, ...]:
        return self.model.classes


def user_cache_dir(*parts: str) -> Path:
    """The project's folder in the user's cache dir (created), never the source tree.

    MOEXT_CACHE_DIR overrides it; otherwise platformdirs' user cache dir: XDG_CACHE_HOME or
    ~/.cache on Linux, ~/Library/Caches on macOS and %LOCALAPPDATA% on Windows."""
    env = os.environ.get("MOEXT_CACHE_DIR")
    base = Path(env) if env else Path(platformdirs.user_cache_dir("moext-live", appauthor=False))
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def cached_onnx_path(checkpoint_hash: str, variant: str = "fp32") -> Path:
    """Where ``engines.export.cached_export`` keeps a checkpoint's ONNX export (``variant``
    "fp32", "fp16" or "int8-TAG"), keyed by the checkpoint file's sha256."""
    return user_cache_dir("onnx") / f"moext-{checkpoint_hash[:24]}-{variant}.onnx"


def info_from_props(props: dict[str, str], where: str = "engine") -> ModelInfo:
    """ModelInfo from ONNX metadata_props; refuses a graph without them."""
    need = ("moext.classes", "moext.width", "moext.checkpoint_hash", "moext.input_size", "moext.mean", "moext.std")
    missing = [k for k in need if k not in props]
    if missing:
        raise EngineError(f"{where}: metadata {missing} missing, so this is not a graph written by engines.export "
                          f"(or it was edited); rebuild it with {BUILD_HINT.format(engine='onnx', out=where)}")
    try:
        return ModelInfo(
            classes=tuple(json.loads(props["moext.classes"])),
            width=float(props["moext.width"]),
            checkpoint_hash=props["moext.checkpoint_hash"],
            input_size=int(props["moext.input_size"]),
            mean=tuple(json.loads(props["moext.mean"])),
            std=tuple(json.loads(props["moext.std"])),
            params=int(props.get("moext.params", "0") or 0),
            weights=where,
        )
    except (ValueError, TypeError) as e:
        raise EngineError(f"{where}: unreadable moext.* metadata ({e}); rebuild it with "
                          f"{BUILD_HINT.format(engine='onnx', out=where)}") from None



__all__ = [
    "BUILD_HINT",
    "EngineError",
    "EngineUnavailableError",
    "ModelInfo",
    "Runner",
    "cached_onnx_path",
    "info_from_props",
    "user_cache_dir",
]
