"""OpenVINO on the CPU: the same ONNX graphs as ONNX Runtime, with bf16 and int8 kernels.

On a CPU with AMX or AVX-512 BF16/VNNI, OpenVINO runs the full-width network several times
faster than ONNX Runtime fp32 (README, "Engines"): in bf16 (precision "bf16": the fp32
graph with OpenVINO's inference-precision hint) or in int8 (the Q/DQ graph written by
engines/quantize.py). Precision "fp32" forces fp32 arithmetic everywhere (OpenVINO would
otherwise pick bf16 by itself on such CPUs).

Low precision is not free: whether a checkpoint's probabilities stay within the gate
(engines.quantize.LOW_PRECISION_MAX_ABS_DIFF) is measured by engines.bench / engines.build
on real face crops, never assumed. Needs the ``openvino`` extra (pip install -e ".[openvino]").
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from core.contract import to_nchw_float
from core.machine import physical_cores
from engines.runners import BUILD_HINT, EngineError, EngineUnavailableError, Runner, info_from_props
from engines.runners.onnxruntime_runner import INPUT_NAMES, OUTPUT_NAME, check_io

PRECISIONS = ("fp32", "bf16", "int8")
_HINT = {"fp32": "f32", "bf16": "bf16"}


def _openvino():
    try:
        import openvino
    except ImportError as e:
        raise EngineUnavailableError(f"OpenVINO is not installed ({e}); pip install -e \".[openvino]\"") from None
    return openvino


class OpenVinoRunner(Runner):
    """An OpenVINO compiled model (CPU) over a MoExt ONNX graph: fp32 or bf16 on the fp32
    export, int8 on a Q/DQ graph."""

    name = "openvino"

    def __init__(self, path: str | Path, *, precision: str = "fp32", threads: int | None = None) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        ov = _openvino()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX file; build one with "
                                    f"{BUILD_HINT.format(engine='onnx', out=path)}")
        core = ov.Core()
        caps = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        if precision == "bf16" and "BF16" not in caps:
            raise EngineUnavailableError(f"this CPU has no bf16 arithmetic (OpenVINO capabilities {caps}); "
                                         "use precision fp32 or int8")
        try:
            model = core.read_model(str(path))
        except Exception as e:  # OpenVINO raises its own RuntimeError subclasses
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise EngineError(f"{path}: OpenVINO cannot read this file ({first[:300]}); it is corrupt or not an ONNX "
                              f"model: rebuild it with {BUILD_HINT.format(engine='onnx', out=path)}") from None
        # The ONNX metadata_props (moext.*) arrive as the model's "framework" runtime info.
        rt = model.get_rt_info()
        props = {k: v.astype(str) for k, v in rt["framework"].items()} if "framework" in rt else {}
        self.model = info_from_props(props, where=str(path))
        graph_precision = props.get("moext.precision", "fp32")
        if (precision == "int8") != (graph_precision == "int8"):
            raise EngineError(f"{path}: a {graph_precision} graph cannot run at precision {precision}; int8 needs the "
                              "Q/DQ graph of engines.quantize, fp32/bf16 the fp32 export")
        check_io([(i.any_name, [d.get_length() if d.is_static else None for d in i.get_partial_shape()])
                  for i in model.inputs],
                 [(o.any_name, [d.get_length() if d.is_static else None for d in o.get_partial_shape()])
                  for o in model.outputs], self.model.input_size, str(path))
        self.threads = threads or physical_cores()
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": self.threads}
        if precision in _HINT:
            config["INFERENCE_PRECISION_HINT"] = _HINT[precision]
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self._lock = threading.Lock()  # one infer request; the serving paths may call from several threads
        self.path = path
        self.precision = precision
        self.device = "cpu"
        self._ov_version = ov.__version__
        self._capabilities = list(caps)

    def run(self, onset: np.ndarray, apex: np.ndarray) -> np.ndarray:
        feed = {INPUT_NAMES[0]: to_nchw_float(onset), INPUT_NAMES[1]: to_nchw_float(apex)}
        with self._lock:
            out = self.request.infer(feed)
            probs = np.array(out[self.compiled.output(OUTPUT_NAME)], dtype=np.float32)  # a copy: the request reuses it
        return probs

    def describe(self) -> dict:
        return {"openvino": self._ov_version, "threads": self.threads, "file": str(self.path),
                "inference_precision": self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
                "cpu_capabilities": self._capabilities}

    def close(self) -> None:
        self.request = None
        self.compiled = None

