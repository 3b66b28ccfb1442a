"""ONNX Runtime on the CPU: the default engine on machines without an NVIDIA GPU.

Runs the graph written by engines/export.py (fp32) or engines/quantize.py (int8 Q/DQ).
Session settings that matter on small CPUs (measured with engines/bench.py): graph
optimisation level ALL (fuses Conv+BN+ReLU, folds Q/DQ into integer kernels), one
intra-op thread per physical core, no inter-op parallelism (the graph is a chain).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from core.contract import to_nchw_float
from core.machine import physical_cores
from engines.runners import BUILD_HINT, EngineError, Runner, info_from_props
import onnxruntime as ort

INPUT_NAMES = ("onset", "apex")
OUTPUT_NAME = "probs"


def check_io(inputs: list[tuple[str, list]], outputs: list[tuple[str, list]], size: int, where: str) -> None:
    """Refuse a graph whose inputs/outputs are not (onset, apex) (N, 3, size, size) -> probs (N, C).

    ``inputs``/``outputs`` are (name, shape) with symbolic dims as strings or None."""
    names = [n for n, _ in inputs]
    hint = BUILD_HINT.format(engine="onnx", out=where)
    if sorted(names) != sorted(INPUT_NAMES):
        raise EngineError(f"{where}: inputs are {names}, expected {list(INPUT_NAMES)}: not a MoExt recognition "
                          f"graph; rebuild it with {hint}")
    for name, shape in inputs:
        if len(shape) != 4 or list(shape[1:]) != [3, size, size]:
            raise EngineError(f"{where}: input {name!r} has shape {shape}, expected (N, 3, {size}, {size}); "
                              f"rebuild it with {hint}")
    if [n for n, _ in outputs] != [OUTPUT_NAME]:
        raise EngineError(f"{where}: outputs are {[n for n, _ in outputs]}, expected ['probs']; rebuild it with {hint}")


class OrtRunner(Runner):
    """An ONNX Runtime InferenceSession over a MoExt ONNX graph."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, *, threads: int | None = None, providers: list[str] | None = None,
                 spin: bool = True) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX file; build one with "
                                    f"{BUILD_HINT.format(engine='onnx', out=path)}")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.intra_op_num_threads = threads or physical_cores()
        opts.inter_op_num_threads = 1
        # Spinning threads answer faster but burn a core while they wait (engines.bench --no-spin: off).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        opts.log_severity_level = 3
        self.providers = providers or ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=self.providers)
        except Exception as e:  # onnxruntime raises its own pybind exception types
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise EngineError(f"{path}: ONNX Runtime cannot load this file ({first[:300]}); it is corrupt or not an "
                              f"ONNX model: rebuild it with {BUILD_HINT.format(engine='onnx', out=path)}") from None
        self.path = path
        self.threads = opts.intra_op_num_threads
        props = self.session.get_modelmeta().custom_metadata_map
        self.model = info_from_props(props, where=str(path))
        check_io([(i.name, i.shape) for i in self.session.get_inputs()],
                 [(o.name, o.shape) for o in self.session.get_outputs()], self.model.input_size, str(path))
        self.precision = props.get("moext.precision", "fp32")
        self.device = "cpu" if self.session.get_providers()[0] == "CPUExecutionProvider" else "cuda"

    def run(self, onset: np.ndarray, apex: np.ndarray) -> np.ndarray:
        feed = {"onset": to_nchw_float(onset), "apex": to_nchw_float(apex)}  # (N, 3, S, S) float32 0..255
        (probs,) = self.session.run([OUTPUT_NAME], feed)  # (N, C)
        return np.asarray(probs, dtype=np.float32)

    def describe(self) -> dict:

        return {"onnxruntime": ort.__version__, "threads": self.threads, "providers": self.session.get_providers(),
                "file": str(self.path)}

    def close(self) -> None:
        self.session = None
