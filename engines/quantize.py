"""Static int8 quantisation: Q/DQ ONNX graphs for ONNX Runtime (CPU) and TensorRT INT8.

ONNX Runtime's static quantiser calibrates activation ranges on real inputs and writes
explicit QuantizeLinear/DequantizeLinear pairs (QDQ format); weights are int8, symmetric,
per output channel; calibration is MinMax on ALIGNED face crops, the distribution the
engine sees live: pairs from a crop cache (CONTRACTS.md format: index.csv + PNGs) or,
when none is given, onset/apex pairs cut from the bundled sample video and aligned with
core.face.FaceAligner (transform from the onset frame, applied to the apex).

The two consumers need two settings of the same quantiser (``target``):
- "tensorrt": int8 activations with zero point 0 (symmetric) and float biases. TensorRT's
  explicit quantisation accepts only such Q/DQ pairs (its ONNX parser rejects the int32
  bias DequantizeLinear nodes ONNX Runtime writes by default: "only activation types
  allowed as input to this layer"). STACK.md: TensorRT 11 builds INT8 only from Q/DQ.
- "cpu": uint8 asymmetric activations, int8 weights and int32 biases: the u8s8 integer
  kernels ONNX Runtime fuses Q/DQ into on x86. The symmetric int8 graph runs in ONNX
  Runtime too, but measured no faster than fp32 there (engines/bench.py, README).

A low-precision CPU engine (int8 here, bf16/int8 in OpenVINO) is kept only if it agrees
with fp32 (``LOW_PRECISION_MAX_ABS_DIFF``, 0.02, on the probabilities of held-out face
pairs) and is faster; ``parity_report`` measures both.

Why the demo weights' int8 engine is refused (measured on 24 held-out pairs of
real face crops from core/assets/single_face.mp4, calibrated on 24 others): the network
classifies the DIFFERENCE between the onset's and the apex's features, and its first
BatchNorm on that difference (the motion extractor's) divides it by its small running std,
so rounding anywhere upstream is amplified. Quantising a single convolution of the trunk
(the first, or a middle one) with everything else fp32 already moves the probabilities by
0.10-0.15; the full graph by 0.32 (top-1 agreement 79 %). Keeping in fp32 the motion path
(everything after the feature subtraction), the two fully connected layers and the softmax,
the first or the last 6-20 convolutions, or calibrating by percentile instead of min/max,
all stay at 0.29-0.38; per-channel weights are already used. bf16 fails too (OpenVINO, README
"Engines"). The network is as sensitive to the camera: half a grey level of independent noise
on each frame (8-bit, ``noise_spread``, printed by engines.bench) moves the fp32 probabilities
by up to 0.13 on the same pairs, so the 0.02 gate asks for more stability than these weights
have against their own input's noise; fine-tuning them for it was tried and did not get there
(README "Engines").
"""
from __future__ import annotations

import csv
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnx

from core.contract import INPUT_SIZE, bgr_to_rgb, to_nchw_float
from engines.runners import EngineError
from core.face import FaceAligner, NoFaceError
from core import assets
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

log = logging.getLogger(__name__)

# A low-precision engine must stay within this max |p - p_fp32| on held-out face pairs.
LOW_PRECISION_MAX_ABS_DIFF = 0.02


# ---------------------------------------------------------------- calibration pairs
def cache_pairs(cache_dir: str | Path, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Onset/apex crops from a crop cache (CACHE_DIR/index.csv, PNG paths relative to it,
    BGR on disk) -> two (N, 224, 224, 3) uint8 RGB arrays."""
    cache_dir = Path(cache_dir)
    index = cache_dir / "index.csv"
    if not index.is_file():
        raise FileNotFoundError(f"{cache_dir}: no index.csv, so this is not a crop cache "
                                "(write one with python -m train.cache or python -m train.synth)")
    with open(index, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{index}: no rows; the crop cache is empty")
    if limit:
        step = max(1, len(rows) // limit)
        rows = rows[::step][:limit]
    onsets, apexes = [], []
    for row in rows:
        pair = []
        for key in ("onset_path", "apex_path"):
            p = cache_dir / row[key]
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is None or img.shape[:2] != (INPUT_SIZE, INPUT_SIZE):
                raise ValueError(f"{p}: unreadable or not a {INPUT_SIZE}x{INPUT_SIZE} crop "
                                 f"({None if img is None else img.shape}); rebuild the crop cache")
            pair.append(bgr_to_rgb(img))
        onsets.append(pair[0])
        apexes.append(pair[1])
    return np.stack(onsets), np.stack(apexes)


def video_pairs(video: str | Path | None = None, n_pairs: int = 16, gaps: tuple[int, ...] = (3, 6, 9),
                aligner=None) -> tuple[np.ndarray, np.ndarray]:
    """Aligned onset/apex pairs cut from a face video (default: the bundled sample).

    Pair k takes frame i as onset and frame i + gap as apex (gaps cycle through
    ``gaps``), aligned with the transform of the onset frame, as training and the live
    path do. Returns two (N, 224, 224, 3) uint8 RGB arrays; frames without a face are
    skipped."""

    if video is None:

        video = assets.path(assets.SAMPLE_VIDEO)
    cap = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    if len(frames) <= max(gaps):
        raise ValueError(f"{video}: {len(frames)} frames decoded; need more than {max(gaps)} for onset/apex pairs")
    aligner = aligner or FaceAligner()
    starts = np.linspace(0, len(frames) - 1 - max(gaps), n_pairs).round().astype(int)
    onsets, apexes = [], []
    for k, i in enumerate(starts):
        gap = gaps[k % len(gaps)]
        try:
            (onset, apex), _ = aligner.align_sample([frames[i], frames[i + gap]], where=f"{video} frame {i}")
        except NoFaceError:
            continue
        onsets.append(bgr_to_rgb(onset))
        apexes.append(bgr_to_rgb(apex))
    if not onsets:
        raise ValueError(f"{video}: no face found in any sampled frame; calibrate on a face video or a crop cache")
    return np.stack(onsets), np.stack(apexes)


class PairReader:
    """onnxruntime CalibrationDataReader over onset/apex uint8 RGB pairs (one pair per batch)."""

    def __init__(self, onset: np.ndarray, apex: np.ndarray) -> None:
        self.onset, self.apex = onset, apex
        self.i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.onset):
            return None
        i = self.i
        self.i += 1
        return {"onset": to_nchw_float(self.onset[i:i + 1]), "apex": to_nchw_float(self.apex[i:i + 1])}

    def rewind(self) -> None:
        self.i = 0


# ---------------------------------------------------------------- quantisation
TARGETS = ("cpu", "tensorrt")


def quantize_qdq(fp32_onnx: str | Path, out: str | Path, onset: np.ndarray, apex: np.ndarray,
                 target: str = "cpu") -> Path:
    """Write the int8 Q/DQ graph of ``fp32_onnx`` calibrated on the given pairs, for
    ``target`` "cpu" (ONNX Runtime) or "tensorrt" (see the module docstring).

    The fp32 graph's moext.* metadata is carried over with precision "int8" and the
    calibration settings."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")

    class _Reader(PairReader, CalibrationDataReader):
        pass

    fp32_onnx, out = Path(fp32_onnx), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    src = onnx.load(str(fp32_onnx))
    props = {p.key: p.value for p in src.metadata_props}
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        # Shape inference + graph clean-up first, as ONNX Runtime recommends before quantising.
        quant_pre_process(str(fp32_onnx), str(pre), skip_symbolic_shape=True)
        qdq = Path(tmp) / "qdq.onnx"
        head = _float_head(onnx.load(str(pre)))
        if target == "tensorrt":
            activations = QuantType.QInt8
            extra = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}
        else:
            activations = QuantType.QUInt8
            extra = {"ActivationSymmetric": False, "WeightSymmetric": True}
        quantize_static(
            str(pre), str(qdq), _Reader(onset, apex),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=activations, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, extra_options=extra, nodes_to_exclude=head,
        )
        model = onnx.load(str(qdq))
    props.update({"moext.precision": "int8", "moext.calibration": json.dumps(
        {"pairs": int(len(onset)), "method": "minmax", "format": "QDQ", "target": target, "per_channel": True,
         "activations": "int8 symmetric" if target == "tensorrt" else "uint8 asymmetric", "weights": "int8 symmetric",
         "bias": "float" if target == "tensorrt" else "int32", "float_nodes": head})})
    del model.metadata_props[:]
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    model.producer_name = "moext-live engines.quantize"
    onnx.checker.check_model(model)
    fd, tmp_out = tempfile.mkstemp(suffix=".onnx.tmp", dir=out.parent)
    os.close(fd)
    try:
        onnx.save_model(model, tmp_out)
        os.replace(tmp_out, out)
    finally:
        if os.path.exists(tmp_out):
            os.remove(tmp_out)
    return out


def _float_head(model: onnx.ModelProto) -> list[str]:
    """The final Softmax and the layer feeding it: kept in float, so the probabilities
    and logits are not rounded to 1/255 steps (an int8 step of the output alone would use
    a fifth of the 0.02 gate; the layer is a tiny share of the compute)."""
    producers = {out: n for n in model.graph.node for out in n.output}
    names = []
    for n in model.graph.node:
        if n.op_type == "Softmax":
            names.append(n.name)
            if n.input[0] in producers:
                names.append(producers[n.input[0]].name)
    return names


# ---------------------------------------------------------------- keep or drop
@dataclass
class ParityReport:
    max_abs_diff: float  # max |p_int8 - p_fp32| over pairs and classes
    top1_agreement: float  # share of pairs with the same argmax
    fp32_ms: float  # median latency of one pair, batch 1
    int8_ms: float
    pairs: int

    @property
    def within_tolerance(self) -> bool:
        return self.max_abs_diff <= LOW_PRECISION_MAX_ABS_DIFF

    @property
    def faster(self) -> bool:
        return self.int8_ms < self.fp32_ms

    @property
    def keep(self) -> bool:
        return self.within_tolerance and self.faster

    def summary(self) -> str:
        verdict = "kept" if self.keep else "NOT kept"
        return (f"int8 vs fp32 on {self.pairs} face pairs: max |dp| {self.max_abs_diff:.4f} "
                f"(tolerance {LOW_PRECISION_MAX_ABS_DIFF}), top-1 agreement {self.top1_agreement:.0%}; "
                f"latency {self.int8_ms:.1f} ms vs {self.fp32_ms:.1f} ms per pair -> {verdict}")


def median_latency_ms(runner, onset: np.ndarray, apex: np.ndarray, repeats: int = 10) -> float:
    runner.run(onset[:1], apex[:1])  # warm-up
    times = []
    for k in range(repeats):
        i = k % len(onset)
        t = time.perf_counter()
        runner.run(onset[i:i + 1], apex[i:i + 1])
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


def parity_report(fp32_runner, int8_runner, onset: np.ndarray, apex: np.ndarray, repeats: int = 10) -> ParityReport:
    """Compare an int8 runner with its fp32 runner on face pairs: accuracy and speed."""
    p32 = fp32_runner.run(onset, apex)
    p8 = int8_runner.run(onset, apex)
    return ParityReport(
        max_abs_diff=float(np.abs(p8 - p32).max()),
        top1_agreement=float((p8.argmax(1) == p32.argmax(1)).mean()),
        fp32_ms=median_latency_ms(fp32_runner, onset, apex, repeats),
        int8_ms=median_latency_ms(int8_runner, onset, apex, repeats),
        pairs=int(len(onset)),
    )


def noise_spread(runner, onset: np.ndarray, apex: np.ndarray, sigma: float = 0.5, seed: int = 0) -> float:
    """max |p(noisy pair) - p(pair)| of ``runner`` when independent Gaussian noise of ``sigma``
    grey levels is added to the onset and to the apex (rounded back to 8 bits, as a camera's
    frames are): how far the network's own probabilities move under sensor noise, the scale
    against which a low-precision engine's |dp| can be read."""
    rng = np.random.default_rng(seed)

    def noisy(x: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(x + rng.normal(0.0, sigma, x.shape)), 0, 255).astype(np.uint8)

    return float(np.abs(runner.run(noisy(onset), noisy(apex)) - runner.run(onset, apex)).max())


def calibration_pairs(calib: str | Path | None, limit: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Calibration crops: a crop cache dir, a video file, or (None) the bundled sample video."""
    if calib is None:
        return video_pairs(n_pairs=min(limit, 24))
    calib = Path(calib)
    if calib.is_dir():
        return cache_pairs(calib, limit)
    if calib.is_file():
        return video_pairs(calib, n_pairs=min(limit, 24))
    raise FileNotFoundError(f"{calib}: give a crop cache folder (with index.csv) or a face video for calibration")


def split_pairs(onset: np.ndarray, apex: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Alternate pairs into (calibration, held-out) so parity is measured on unseen crops."""
    if len(onset) < 2:
        raise EngineError("need at least 2 calibration pairs (one to calibrate, one to check parity)")
    return (onset[0::2], apex[0::2]), (onset[1::2], apex[1::2])
