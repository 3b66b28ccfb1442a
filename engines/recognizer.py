"""The recogniser: one small interface over every engine (engines/runners/).

    rec = Recognizer.load("auto")                  # demo weights, best engine here
    rec = Recognizer.load("runs/x/best.safetensors", device="cpu")
    rec = Recognizer.load("moext-int8.onnx")        # ONNX Runtime
    rec = Recognizer.load("moext-fp16.plan")        # TensorRT
    rec = Recognizer.load("triton://host:8000/moext")  # a server (python -m engines.serve)
    probs = rec.predict(onset_rgb, apex_rgb)        # (N, 224, 224, 3) uint8 each -> (N, C)
    rec.classes, rec.name, rec.precision, rec.device, rec.info()

What ``load`` picks for a checkpoint (.safetensors) with engine="best":
- an NVIDIA GPU (torch.cuda.is_available()): the CUDA runner (fp16, CUDA graphs);
- otherwise ONNX Runtime on an ONNX export made once and cached in the user's cache dir
  under the checkpoint's hash;
- eager PyTorch if neither can run.
Each step that cannot run is skipped with the reason logged (logging, engines.recognizer)
and kept in ``info()["fallbacks"]``. Engine files load on their own runtime: .onnx on
ONNX Runtime, .plan/.engine on TensorRT (no fallback: the file is what was asked for).

A ``triton://HOST:PORT/MODEL`` spec is a client engine (engines/runners/triton_runner.py):
batches go to an inference server, after the same checks of classes, input contract and
weights hash as a local engine file.

Threads: one Recognizer may be shared by many threads (each web-demo session calls it from
its own worker). Every runner is safe for that: ONNX Runtime and eager PyTorch are
reentrant, the CUDA-graph and TensorRT runners serialise calls with a lock
(engines/runners/exclusive.py), the Triton client keeps one HTTP client per thread.

Inputs follow core/contract.py: aligned 224x224 uint8 RGB crops; anything else raises
InputContractError. Corrupt or mismatched files raise EngineError (or
train.checkpoint.CheckpointError for checkpoints) saying what to rebuild.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path
from typing import Callable

import numpy as np

from core.contract import InputContractError, check_pairs
from core.files import file_sha256
from core.machine import no_nvidia_driver
from engines.runners import BUILD_HINT, EngineError, Runner, cached_onnx_path
from engines.runners.onnxruntime_runner import OrtRunner
from engines.runners.triton_runner import TritonRunner
from engines.serving import is_triton_spec

# torch (and what needs it: the torch, CUDA and TensorRT runners, the ONNX export) is
# imported where it is used: a checkpoint whose ONNX export is cached runs on ONNX Runtime
# or OpenVINO without it, which keeps 230-270 MB of resident memory
# out of every front end (README, "Latency benchmark").

log = logging.getLogger(__name__)

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
DEMO_WEIGHTS = ASSETS_DIR / "moext_demo.safetensors"
CHECKPOINT_ENGINES = ("best", "cuda", "onnx", "onnx-int8", "openvino", "openvino-bf16", "openvino-int8", "torch")
ENGINE_SUFFIXES = {".safetensors": "checkpoint", ".onnx": "onnx", ".plan": "tensorrt", ".engine": "tensorrt"}


class DemoWeightsMissingError(FileNotFoundError):
    """spec="auto" but engines/assets/moext_demo.safetensors is not there."""


def _cuda_available() -> bool:
    """An NVIDIA GPU that torch can use. On Linux without the NVIDIA driver loaded the
    answer is no without importing torch."""
    if no_nvidia_driver():
        return False
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def engine_order(engine: str, device: str, cuda: bool) -> list[str]:
    """Runners to try, best first, for a checkpoint on ``device`` (pure; cuda = GPU present)."""
    if engine not in CHECKPOINT_ENGINES:
        raise ValueError(f"engine must be one of {CHECKPOINT_ENGINES}, got {engine!r}")
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:index]', got {device!r}")
    if engine != "best":
        return [engine]
    if device.startswith("cuda"):
        return ["cuda", "torch"]
    if device == "auto" and cuda:
        return ["cuda", "onnx", "torch"]
    return ["onnx", "torch"]


class Recognizer:
    """Micro-expression classifier over aligned onset/apex pairs, on one engine."""

    def __init__(self, runner: Runner, fallbacks: list[str] | None = None) -> None:
        self.runner = runner
        self.fallbacks = list(fallbacks or [])

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, spec: str | Path = "auto", device: str = "auto", *, engine: str = "best",
             threads: int | None = None, expect_hash: str | None = None, compile: bool = False,
             calib: str | Path | None = None, spin: bool = True) -> "Recognizer":
        """Load weights or an engine file.

        spec: "auto" (the demo weights), a .safetensors checkpoint, a .onnx graph, a
        TensorRT .plan/.engine or a server "triton://HOST:PORT/MODEL" (engines.serve).
        device: "auto", "cpu" or "cuda[:i]" (a server picks its own). engine
        (checkpoints only): "best" or one of cuda, onnx, onnx-int8 (quantised here on
        ``calib`` or the bundled video), openvino, openvino-bf16, openvino-int8 (the
        ``openvino`` extra), torch. threads: CPU threads (default: physical cores).
        expect_hash: refuse an engine file built from other weights. compile: let the
        CUDA runner use torch.compile (persistent cache). spin: ONNX Runtime's threads
        spin-wait for work (faster alone, but they burn the cores a frame loop needs)."""
        if is_triton_spec(spec):
            if device != "auto":
                log.info("%s: the server picks its own device; device=%r is ignored", spec, device)
            return cls(TritonRunner(str(spec), expect_hash=expect_hash))
        if str(spec) == "auto":
            if not DEMO_WEIGHTS.is_file():
                raise DemoWeightsMissingError(
                    f"the demo weights {DEMO_WEIGHTS} are missing. They are produced by the demo training "
                    "recipe in train/ (README, 'Demo weights') and ship with the repository; restore the file "
                    "(git checkout engines/assets/moext_demo.safetensors, or reinstall the package) or pass the "
                    "path of your own checkpoint or engine file")
            path = DEMO_WEIGHTS
        else:
            path = Path(spec)
        kind = ENGINE_SUFFIXES.get(path.suffix.lower())
        if kind is None:
            raise ValueError(f"{path}: unknown file type {path.suffix!r}; give a checkpoint (.safetensors), an ONNX "
                             "graph (.onnx), a TensorRT plan (.plan/.engine) or 'auto'")
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file (a {kind} was expected)")
        if kind == "onnx":

            if device.startswith("cuda"):
                log.warning("%s: ONNX files run on the CPU (ONNX Runtime); for the GPU load the checkpoint or a "
                            "TensorRT plan", path)
            runner = OrtRunner(path, threads=threads, spin=spin)
            _check_hash(runner, expect_hash, "onnx")
            return cls(runner)
        if kind == "tensorrt":
            from engines.runners.tensorrt_runner import TensorRTRunner

            return cls(TensorRTRunner(path, device="cuda" if device == "auto" else device, expect_hash=expect_hash))
        return cls._from_checkpoint(path, device, engine, threads=threads, compile=compile, calib=calib, spin=spin)

    @classmethod
    def _from_checkpoint(cls, path: Path, device: str, engine: str, *, threads, compile, calib,
                         spin: bool = True) -> "Recognizer":

        order = engine_order(engine, device, _cuda_available())
        cached = _from_cached_export(path, order[0], threads=threads, spin=spin)
        if cached is not None:
            return cls(cached)
        from engines.export import load_checkpoint_graph

        graph, info = load_checkpoint_graph(path)  # a corrupt checkpoint raises CheckpointError here
        fallbacks = []
        for i, name in enumerate(order):
            try:
                runner = _make_runner(name, graph, info, device, threads=threads, compile=compile, calib=calib,
                                      spin=spin)
            except Exception as e:
                if i == len(order) - 1:
                    raise
                reason = f"{name} engine unavailable ({type(e).__name__}: {e}); falling back to {order[i + 1]}"
                log.warning("%s: %s", path, reason)
                fallbacks.append(reason)
                continue
            return cls(runner, fallbacks)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ inference
    @property
    def classes(self) -> tuple[str, ...]:
        return self.runner.model.classes

    @property
    def name(self) -> str:
        return self.runner.name

    @property
    def precision(self) -> str:
        return self.runner.precision

    @property
    def device(self) -> str:
        return self.runner.device

    def predict(self, onset: np.ndarray, apex: np.ndarray) -> np.ndarray:
        """Aligned onset/apex crops, (N, 224, 224, 3) or (224, 224, 3) uint8 RGB each ->
        (N, C) float32 probabilities in the order of ``classes``."""
        if self.runner is None:
            raise RuntimeError("this Recognizer was closed; load a new one")
        onset, apex = check_pairs(onset, apex, self.runner.model.input_size)
        step = self.runner.max_batch
        if step is None or len(onset) <= step:
            probs = self.runner.run(onset, apex)
        else:
            probs = np.concatenate([self.runner.run(onset[i:i + step], apex[i:i + step])
                                    for i in range(0, len(onset), step)])
        return np.ascontiguousarray(probs, dtype=np.float32)

    def predict_dicts(self, onset: np.ndarray, apex: np.ndarray) -> list[dict[str, float]]:
        """Like predict, one {class name: probability} dict per pair."""
        return [dict(zip(self.classes, map(float, row))) for row in self.predict(onset, apex)]

    def info(self) -> dict:
        m = self.runner.model
        return {"engine": self.name, "precision": self.precision, "device": self.device, "classes": list(m.classes),
                "width": m.width, "params": m.params, "checkpoint_hash": m.checkpoint_hash, "weights": m.weights,
                "input_size": m.input_size, "fallbacks": list(self.fallbacks), **self.runner.describe()}

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()
        self.runner = None

    def __enter__(self) -> "Recognizer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.runner is None:
            return "Recognizer(closed)"
        return f"Recognizer(engine={self.name!r}, precision={self.precision!r}, device={self.device!r}, classes={self.classes})"


def _check_hash(runner: Runner, expect_hash: str | None, engine: str) -> None:
    if expect_hash is not None and runner.model.checkpoint_hash != expect_hash:
        where = runner.model.weights
        raise EngineError(f"{where} was built from other weights (checkpoint hash {runner.model.checkpoint_hash[:16]}..., "
                          f"expected {expect_hash[:16]}...); rebuild it from the right checkpoint: "
                          f"{BUILD_HINT.format(engine=engine, out=where)}")


def _from_cached_export(path: Path, name: str, *, threads, spin: bool) -> Runner | None:
    """The first-choice runner straight from the checkpoint's cached fp32 ONNX export
    (ONNX Runtime, OpenVINO fp32 / bf16), without torch; None when there is no such export
    yet, or it cannot be read (the caller then loads the checkpoint and exports it)."""
    if name not in ("onnx", "openvino", "openvino-bf16"):
        return None
    digest = file_sha256(path)
    onnx_path = cached_onnx_path(digest, "fp32")
    if not onnx_path.is_file():
        return None
    try:
        if name == "onnx":
            runner = OrtRunner(onnx_path, threads=threads, spin=spin)
        else:
            from engines.runners.openvino_runner import OpenVinoRunner

            runner = OpenVinoRunner(onnx_path, precision="fp32" if name == "openvino" else "bf16", threads=threads)
    except Exception:        # damaged, or the runtime fails: the full path rebuilds it or falls back
        return None
    if runner.model.checkpoint_hash != digest:
        runner.close()
        return None
    runner.model = dataclasses.replace(runner.model, weights=str(path))  # the checkpoint, not the cache file
    return runner


def _make_runner(name: str, graph, info, device: str, *, threads, compile, calib, spin: bool = True) -> Runner:
    """Build one runner for an already loaded checkpoint graph."""
    if name == "torch":
        from engines.runners.torch_runner import TorchRunner

        dev = "cpu" if device == "auto" else device
        return TorchRunner(graph, info, device=dev, threads=threads)
    if name == "cuda":
        from engines.runners.cuda_runner import CudaRunner

        # A copy: the runner casts to fp16 in place, and a fallback needs the fp32 graph.
        return CudaRunner(copy.deepcopy(graph), info, device="cuda" if device == "auto" else device, compile=compile)
    if name in ("onnx", "onnx-int8"):
        return _cached_export_runner(graph, info, "int8" if name == "onnx-int8" else "fp32", calib,
                                     lambda path: OrtRunner(path, threads=threads, spin=spin))
    if name.startswith("openvino"):
        from engines.runners.openvino_runner import OpenVinoRunner

        precision = {"openvino": "fp32", "openvino-bf16": "bf16", "openvino-int8": "int8"}[name]
        return _cached_export_runner(graph, info, "int8" if precision == "int8" else "fp32", calib,
                                     lambda path: OpenVinoRunner(path, precision=precision, threads=threads))
    raise ValueError(f"unknown engine {name!r}")


def _cached_export_runner(graph, info, export: str, calib, make: Callable[[Path], Runner]) -> Runner:
    """``make(path)`` (ONNX Runtime or OpenVINO) on the checkpoint's ``export`` ("fp32" or
    "int8") in the user's cache dir (made once per checkpoint hash; a damaged cache file is
    rebuilt once)."""
    from engines.export import cached_export

    for attempt in range(2):
        path = cached_export(graph, info, export, calib=calib)
        try:
            runner = make(path)
        except EngineError:
            if attempt:
                raise
            log.warning("%s: cached ONNX export unreadable; rebuilding it", path)
            path.unlink(missing_ok=True)
            continue
        if runner.model.checkpoint_hash != info.checkpoint_hash:  # a cache file from other weights: never use it
            path.unlink(missing_ok=True)
            raise EngineError(f"{path}: cached export does not match {info.weights}; it was removed, load again")
        runner.model = dataclasses.replace(runner.model, weights=info.weights)  # the checkpoint, not the cache file
        return runner
    raise AssertionError("unreachable")


__all__ = ["DEMO_WEIGHTS", "DemoWeightsMissingError", "EngineError", "InputContractError", "Recognizer", "engine_order",
           "load_engine"]


def load_engine(spec: str | Path | None, device: str = "auto", **load_kw) -> tuple["Recognizer | None", str]:
    """Which engine for this spec on this device: the one answer every front end uses
    (run_live.py, the web demo, realtime.evaluate, realtime.batch, realtime.bench, the soak).

    Returns (recognizer, note). ``None``/"none": (None, "spotting only ..."): events are found
    and carry no label. "auto" with the demo weights missing: (None, why), so spotting still
    runs, and the note says how to get labels. Anything else is ``Recognizer.load(spec,
    device, **load_kw)``, whose errors (a missing or corrupt file, wrong weights) propagate.
    The front ends run the engine beside a frame loop on the same cores, so ONNX Runtime's
    threads do not spin-wait here (``spin=False`` unless given; README, "Latency benchmark")."""
    load_kw.setdefault("spin", False)
    if spec is None or str(spec).strip().lower() in ("", "none"):
        return None, "spotting only (--engine none): events carry no label"
    try:
        return Recognizer.load(spec, device=device, **load_kw), ""
    except DemoWeightsMissingError as e:
        if str(spec) != "auto":
            raise
        return None, (f"{e}\nrunning spotting only: events are found but carry no label. "
                      "Pass --engine PATH to label them")
