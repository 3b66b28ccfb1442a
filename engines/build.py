"""Turn a checkpoint into an engine: ``python -m engines.build --help``.

| --engine | writes | precision | runs on |
| --- | --- | --- | --- |
| onnx | one .onnx file | fp32 (default) or fp16 | ONNX Runtime (CPU); fp16 is also TensorRT 11's FP16 input |
| onnx-int8 | a Q/DQ .onnx, only if it keeps parity and is faster | int8 | ONNX Runtime (CPU); with --qdq-target tensorrt, TensorRT INT8 input |
| tensorrt | .plan + .plan.json metadata | fp16 (default), fp32, int8 | TensorRT on the GPU it was built on |
| cuda | nothing to keep (see below) | fp16 | PyTorch CUDA graphs |

The CUDA engine is built from the checkpoint each time it loads (seconds); building it
here checks that it captures on this GPU, prints its parity and latency, and with
--compile fills torch.compile's persistent cache so later loads start warm.

Every built engine is checked against eager PyTorch fp32 on aligned face pairs from the
bundled sample video (max |dp|; tolerances in the README) unless --no-verify.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from engines.quantize import video_pairs
from engines.export import export_onnx, load_checkpoint_graph
from engines.quantize import median_latency_ms
from engines.runners.torch_runner import TorchRunner
from engines.quantize import calibration_pairs, parity_report, quantize_qdq, split_pairs
from engines.runners.onnxruntime_runner import OrtRunner
from engines.tensorrt_build import build_plan
from engines.runners.tensorrt_runner import TensorRTRunner
import copy
from engines.runners.cuda_runner import CudaRunner
from engines.runners import EngineError

log = logging.getLogger("engines.build")

DEFAULT_PRECISION = {"onnx": "fp32", "onnx-int8": "int8", "tensorrt": "fp16", "cuda": "fp16"}
ALLOWED_PRECISION = {"onnx": ("fp32", "fp16"), "onnx-int8": ("int8",), "tensorrt": ("fp32", "fp16", "int8"),
                     "cuda": ("fp16",)}
SUFFIX = {"onnx": ".onnx", "onnx-int8": ".onnx", "tensorrt": ".plan", "cuda": ""}
# Parity tolerances against eager fp32 (max abs difference of probabilities).
TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}


def default_out(checkpoint: Path, engine: str, precision: str) -> Path:
    return checkpoint.with_name(f"{checkpoint.stem}-{precision}{SUFFIX[engine]}")


def _face_pairs(n: int = 8):

    return video_pairs(n_pairs=n)


def _verify(runner, reference, onset, apex, precision: str) -> float:
    diff = float(np.abs(runner.run(onset, apex) - reference.run(onset, apex)).max())
    tol = TOLERANCE.get(precision)
    verdict = "" if tol is None else (" (within %g)" % tol if diff <= tol else " (EXCEEDS %g)" % tol)
    print(f"parity vs eager fp32 on {len(onset)} face pairs: max |dp| = {diff:.2e}{verdict}")
    return diff


def build(a: argparse.Namespace) -> int:

    precision = a.precision or DEFAULT_PRECISION[a.engine]
    if precision not in ALLOWED_PRECISION[a.engine]:
        print(f"error: --engine {a.engine} supports --precision {'/'.join(ALLOWED_PRECISION[a.engine])}, "
              f"not {precision}", file=sys.stderr)
        return 2
    out = a.out or default_out(a.checkpoint, a.engine, precision)
    t0 = time.perf_counter()

    if a.engine == "tensorrt":

        build_plan(a.checkpoint, out, precision=precision, max_batch=a.max_batch, opt_batch=a.opt_batch,
                   calib=a.calib, workspace_gb=a.workspace_gb, keep_onnx=a.keep_onnx)
        print(f"wrote {out} and {out.name}.json in {time.perf_counter() - t0:.0f} s")

        runner = TensorRTRunner(out)
        onset, apex = _face_pairs()
        if not a.no_verify:
            graph, info = load_checkpoint_graph(a.checkpoint)
            _verify(runner, TorchRunner(graph, info, device="cuda"), onset, apex, precision)
        print(f"latency: {median_latency_ms(runner, onset, apex, 50):.2f} ms per pair at batch 1 (median of 50)")
        return 0

    graph, info = load_checkpoint_graph(a.checkpoint)
    reference = TorchRunner(graph, info)

    if a.engine == "cuda":


        runner = CudaRunner(copy.deepcopy(graph), info, compile=a.compile)
        print(f"CUDA engine ready in {time.perf_counter() - t0:.1f} s (batch sizes {list(runner.batch_sizes)}"
              f"{', torch.compile cache filled' if a.compile else ''}); nothing to write: load the checkpoint "
              "with Recognizer.load(CHECKPOINT, device='cuda')")
        onset, apex = _face_pairs()
        if not a.no_verify:
            _verify(runner, TorchRunner(graph, info, device="cuda"), onset, apex, precision)
        print(f"latency: {median_latency_ms(runner, onset, apex, 50):.2f} ms per pair at batch 1 (median of 50)")
        return 0

    if a.engine == "onnx":
        export_onnx(graph, info, out, precision=precision)
        print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {precision}) in {time.perf_counter() - t0:.1f} s")
        if not a.no_verify:

            onset, apex = _face_pairs()
            _verify(OrtRunner(out), reference, onset, apex, precision)
        return 0

    # onnx-int8: quantise, then keep only if it holds parity and is faster than fp32.

    onset, apex = calibration_pairs(a.calib)
    (c_on, c_ap), (h_on, h_ap) = split_pairs(onset, apex)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(graph, info, Path(tmp) / "fp32.onnx")
        int8 = quantize_qdq(fp32, Path(tmp) / "int8.onnx", c_on, c_ap, target=a.qdq_target)
        report = parity_report(OrtRunner(fp32), OrtRunner(int8), h_on, h_ap)
        print(report.summary() + (" [TensorRT-style graph: timed on the CPU for information]"
                                  if a.qdq_target == "tensorrt" else ""))
        # The TensorRT-style graph is written whenever it keeps parity: its speed on this CPU is not the point.
        keep = report.keep if a.qdq_target == "cpu" else report.within_tolerance
        if keep or a.force:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(int8.read_bytes())
            print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s"
                  + ("" if keep else " (--force: written although not kept by the rule above)"))
            return 0
    print(f"{out} NOT written: use the fp32 ONNX engine (--engine onnx) on this machine, "
          "or --force to write the int8 graph anyway (e.g. as TensorRT INT8 input)", file=sys.stderr)
    return 3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m engines.build",
        description=__doc__,
        epilog="""examples:
  # CPU engine (ONNX Runtime), the default on machines without an NVIDIA GPU
  python -m engines.build engines/assets/moext_demo.safetensors --engine onnx --out moext.onnx
  # int8 ONNX Runtime engine calibrated on a crop cache (kept only if accurate and faster)
  python -m engines.build ckpt.safetensors --engine onnx-int8 --calib out/cache --out moext-int8.onnx
  # TensorRT FP16 plan for batches 1..64 (needs TensorRT and the GPU it will run on)
  python -m engines.build ckpt.safetensors --engine tensorrt --precision fp16 --max-batch 64 --out moext.plan
  # check the CUDA-graph engine on this GPU and fill the torch.compile cache
  python -m engines.build ckpt.safetensors --engine cuda --compile""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", type=Path, help="MoExt checkpoint (.safetensors, train.checkpoint format)")
    p.add_argument("--engine", choices=list(DEFAULT_PRECISION), default="onnx")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], default=None,
                   help="default: fp32 for onnx, int8 for onnx-int8, fp16 for tensorrt and cuda")
    p.add_argument("--max-batch", type=int, default=64, help="largest batch a TensorRT plan accepts (default 64)")
    p.add_argument("--opt-batch", type=int, default=1, help="batch TensorRT tunes for (default 1, the live path)")
    p.add_argument("--out", type=Path, default=None, help="output file (default: next to the checkpoint)")
    p.add_argument("--calib", type=Path, default=None,
                   help="int8 calibration crops: a crop cache dir (index.csv) or a face video "
                        "(default: the bundled sample video, aligned)")
    p.add_argument("--workspace-gb", type=float, default=4.0, help="TensorRT builder workspace (GiB)")
    p.add_argument("--keep-onnx", action="store_true", help="TensorRT: keep the ONNX graph the plan was built from")
    p.add_argument("--compile", action="store_true", help="cuda: use torch.compile (persistent cache)")
    p.add_argument("--qdq-target", choices=["cpu", "tensorrt"], default="cpu",
                   help="onnx-int8: Q/DQ settings for ONNX Runtime on the CPU (u8s8, default) or for TensorRT INT8 "
                        "elsewhere (symmetric int8, float bias)")
    p.add_argument("--force", action="store_true", help="onnx-int8: write the graph even if it is not kept")
    p.add_argument("--no-verify", action="store_true", help="skip the parity check against eager fp32")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not a.checkpoint.is_file():
        p.error(f"{a.checkpoint}: no such checkpoint")

    try:
        return build(a)
    except EngineError as e:  # includes EngineUnavailableError (no TensorRT / no GPU)
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
