"""Benchmark every engine this machine can run: ``python -m engines.bench --help``.

For each engine (eager fp32 torch, ONNX Runtime fp32, ONNX Runtime int8, OpenVINO fp32 /
bf16 / int8 if the ``openvino`` extra is installed, the CUDA fp16 graph engine if there is
a GPU, TensorRT if it is installed and a plan is given) it
times ``Recognizer.predict`` -- the path the live loop calls, input checks and layout
conversion included -- on aligned face pairs from the bundled sample video:
- per-pair latency at batch 1 (p50, p99 over --repeats calls);
- throughput at batch --batch (pairs/s from the median call);
- max |p - p_eager_fp32| and top-1 agreement over the face pairs (parity), and whether a
  low-precision engine passes the acceptance gate (engines.quantize.LOW_PRECISION_MAX_ABS_DIFF);
- the speed-up over ONNX Runtime fp32 in the same run;
- the fp32 network's own spread: max |dp| under half a grey level of independent noise on
  each frame (engines.quantize.noise_spread), the scale to read the others' |dp| against.
It prints a markdown table with the machine's description and writes the same as JSON.

By default the network is full width (1.0) with random weights, which is fine for
timing; --checkpoint times real weights (``random_classifier`` / ``random_checkpoint``
here are the one random-init benchmark network; realtime.bench --width loads it too).
CI machines are shared, so the table also has the best call (min) and the process CPU
time per call, and the load average before and after is recorded: a busy neighbour
shows up as p50 >> min, and with --threads 1 the CPU time is close to what an idle
core would take.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from core.machine import describe, load_average
from core.stats import percentiles
from engines.export import export_onnx, load_checkpoint_graph
from engines.quantize import noise_spread, quantize_qdq, video_pairs
from engines.recognizer import Recognizer
from engines.quantize import LOW_PRECISION_MAX_ABS_DIFF
from engines.runners import EngineUnavailableError, ModelInfo, user_cache_dir
from engines.runners.cuda_runner import CudaRunner
from engines.runners.onnxruntime_runner import OrtRunner
from engines.runners.torch_runner import TorchRunner
from train.checkpoint import save_checkpoint
from train.moext import MoExtClassifier, MoExtConfig, RecognitionGraph, count_params

log = logging.getLogger("engines.bench")

NOISE_SIGMA = 0.5  # grey levels of sensor noise for the fp32 network's own spread
ALL_ENGINES = ("torch", "onnx", "onnx-int8", "openvino", "cuda", "tensorrt")


def machine() -> dict:
    """What the numbers were measured on: core.machine.describe() plus the engine runtimes
    (onnxruntime, TensorRT) and the 1-minute load average now."""
    d = describe()
    d["onnxruntime"] = ort.__version__
    d["tensorrt"] = d["libraries"].get("tensorrt")
    load = load_average()
    if load is not None:
        d["loadavg_1min"] = load["1min"]
    return d


def random_classifier(width: float, seed: int = 0) -> tuple[MoExtClassifier, MoExtConfig]:
    """A MoExt classifier of ``width`` with seeded random weights, in eval mode. Latency
    depends on the architecture, not on the weights, so this times the network of that
    width faithfully; its labels mean nothing."""
    torch.manual_seed(seed)
    cfg = MoExtConfig(width=width)
    return MoExtClassifier(cfg).eval(), cfg


def random_checkpoint(width: float, seed: int = 0) -> Path:
    """``random_classifier(width, seed)`` saved as a checkpoint, made once into the user's
    cache dir (what the live-path benchmark, realtime.bench, loads for --width)."""
    path = user_cache_dir("bench") / f"moext-random-w{width:g}-seed{seed}.safetensors"
    if path.is_file():
        return path
    model, cfg = random_classifier(width, seed)
    return save_checkpoint(path, model, cfg, meta={"weights": "random init (latency benchmark only)", "seed": seed})


def time_recognizer(rec, onset: np.ndarray, apex: np.ndarray, repeats: int, batch: int, batch_repeats: int) -> dict:
    """Latency at batch 1 and throughput at ``batch`` of rec.predict on the given pairs."""
    k = len(onset)
    for i in range(3):  # warm-up: lazy allocations, cuDNN/ORT kernel choice
        rec.predict(onset[i % k], apex[i % k])
    lat, cpu = [], []
    for i in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        rec.predict(onset[i % k], apex[i % k])
        lat.append((time.perf_counter() - t) * 1e3)
        cpu.append((time.process_time() - c) * 1e3)
    reps = -(-batch // k)
    big_on, big_ap = np.concatenate([onset] * reps)[:batch], np.concatenate([apex] * reps)[:batch]
    rec.predict(big_on, big_ap)
    big = []
    for _ in range(batch_repeats):
        t = time.perf_counter()
        rec.predict(big_on, big_ap)
        big.append(time.perf_counter() - t)
    lat_s = percentiles(lat, (50, 99))
    return {
        "p50_ms": lat_s["p50"],
        "p99_ms": lat_s["p99"],
        "min_ms": float(np.min(lat)),
        # CPU time of this process per call (all its threads): with one thread, the latency an idle core would give.
        "cpu_ms": percentiles(cpu, (50,))["p50"],
        "batch": batch,
        "pairs_per_s": float(batch / percentiles(big, (50,))["p50"]),
    }


def build_recognizers(graph, info, engines: list[str], tmp: Path, *, threads: int | None, plan: Path | None,
                      calib_pairs, spin: bool, compile: bool):
    """Yield (label, Recognizer or None, note) for each engine asked for."""
    fp32_onnx = None
    for name in engines:
        try:
            if name == "torch":
                yield "eager torch fp32 (cpu)", Recognizer(TorchRunner(copy.deepcopy(graph), info, threads=threads)), ""
                if torch.cuda.is_available():
                    yield "eager torch fp32 (cuda)", Recognizer(TorchRunner(copy.deepcopy(graph), info, "cuda")), ""
            elif name in ("onnx", "onnx-int8"):
                if fp32_onnx is None:
                    fp32_onnx = export_onnx(copy.deepcopy(graph), info, tmp / "fp32.onnx")
                if name == "onnx":
                    yield "onnxruntime fp32", Recognizer(OrtRunner(fp32_onnx, threads=threads, spin=spin)), ""
                else:
                    int8 = quantize_qdq(fp32_onnx, tmp / "int8.onnx", *calib_pairs, target="cpu")
                    yield "onnxruntime int8 (u8s8 Q/DQ)", Recognizer(OrtRunner(int8, threads=threads, spin=spin)), ""
                    # The TensorRT-style graph (symmetric int8 activations, float bias) on the same CPU.
                    sym = quantize_qdq(fp32_onnx, tmp / "int8-trt.onnx", *calib_pairs, target="tensorrt")
                    yield ("onnxruntime int8 (s8s8 Q/DQ, TensorRT input)",
                           Recognizer(OrtRunner(sym, threads=threads, spin=spin)), "")
            elif name == "openvino":
                if importlib.util.find_spec("openvino") is None:
                    yield "openvino", None, "OpenVINO not installed (pip install -e \".[openvino]\")"
                    continue
                from engines.runners.openvino_runner import OpenVinoRunner

                if fp32_onnx is None:
                    fp32_onnx = export_onnx(copy.deepcopy(graph), info, tmp / "fp32.onnx")
                yield "openvino fp32", Recognizer(OpenVinoRunner(fp32_onnx, precision="fp32", threads=threads)), ""
                try:
                    yield "openvino bf16", Recognizer(OpenVinoRunner(fp32_onnx, precision="bf16", threads=threads)), ""
                except EngineUnavailableError as e:
                    yield "openvino bf16", None, str(e)
                int8 = tmp / "int8.onnx"
                if not int8.is_file():
                    quantize_qdq(fp32_onnx, int8, *calib_pairs, target="cpu")
                yield "openvino int8 (u8s8 Q/DQ)", Recognizer(OpenVinoRunner(int8, precision="int8", threads=threads)), ""
            elif name == "cuda":
                if not torch.cuda.is_available():
                    yield "cuda fp16 graphs", None, "no CUDA GPU"
                    continue
                yield "cuda fp16 graphs", Recognizer(CudaRunner(copy.deepcopy(graph), info, compile=compile)), ""
            elif name == "tensorrt":
                if importlib.util.find_spec("tensorrt") is None:   # optional: look, do not import
                    yield "tensorrt", None, "TensorRT not installed"
                    continue
                if plan is None:
                    yield "tensorrt", None, "no --plan given (build one with python -m engines.build --engine tensorrt)"
                    continue
                rec = Recognizer.load(plan)
                yield f"tensorrt {rec.precision}", rec, ""
        except Exception as e:  # report and go on: one broken engine must not hide the others
            yield name, None, f"failed: {type(e).__name__}: {e}"


def markdown(results: list[dict], mach: dict, spread: float | None = None) -> str:
    lines = [
        f"Machine: {mach['cpu']}, {mach['cores_physical']} cores ({mach['cores_logical']} logical), "
        f"GPU: {mach['gpu'] or 'none'}; torch {mach['torch']}, onnxruntime {mach['onnxruntime']}"
        f"{', TensorRT ' + mach['tensorrt'] if mach.get('tensorrt') else ''}; "
        f"load average {mach.get('loadavg_1min', '?')} before, {mach.get('loadavg_after', '?')} after"
        + ("" if spread is None else f"; the fp32 network under {NOISE_SIGMA} grey levels of independent noise "
                                     f"per frame moves by max |dp| {spread:.1e} on the same pairs"),
        "",
        "| engine | precision | device | batch 1 p50 (ms/pair) | batch 1 p99 | batch 1 min | batch 1 CPU ms | "
        "x ORT fp32 (p50) | pairs/s at batch {} | max abs dp vs eager fp32 | top-1 agreement | "
        "gate (<= {}) | note |".format(results[0].get("batch", 64) if results else 64, LOW_PRECISION_MAX_ABS_DIFF),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        if "p50_ms" in r:
            speedup = f"{r['speedup_vs_ort_fp32']:.2f}" if r.get("speedup_vs_ort_fp32") else ""
            gate = "" if r["precision"] == "fp32" else ("pass" if r["within_gate"] else "**fail**")
            lines.append(f"| {r['engine']} | {r['precision']} | {r['device']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                         f"{r['min_ms']:.2f} | {r.get('cpu_ms', float('nan')):.1f} | {speedup} | {r['pairs_per_s']:.1f} | "
                         f"{r['max_abs_diff']:.1e} | {r['top1_agreement']:.0%} | {gate} | {r.get('note', '')} |")
        else:
            lines.append(f"| {r['engine']} | | | | | | | | | | | | {r['note']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m engines.bench",
        description="Time every available engine: per-pair latency at batch 1 and pairs/s at batch 64.",
        epilog="""examples:
  python -m engines.bench                                  # full-width random weights, all engines here
  python -m engines.bench --engines torch,onnx --threads 2 --out bench_cpu.json
  python -m engines.bench --checkpoint engines/assets/moext_demo.safetensors
  python -m engines.bench --engines cuda,tensorrt --plan moext.plan""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", type=Path, default=None, help="real weights (default: random weights)")
    p.add_argument("--width", type=float, default=1.0, help="network width for random weights (default 1.0)")
    p.add_argument("--engines", default=",".join(ALL_ENGINES), help=f"comma list from {','.join(ALL_ENGINES)}")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: physical cores)")
    p.add_argument("--no-spin", action="store_true", help="ONNX Runtime: do not spin idle threads")
    p.add_argument("--compile", action="store_true", help="cuda: torch.compile too (slow first run, cached)")
    p.add_argument("--plan", type=Path, default=None, help="TensorRT plan to time")
    p.add_argument("--repeats", type=int, default=50, help="batch-1 calls per engine (default 50)")
    p.add_argument("--batch", type=int, default=64, help="throughput batch (default 64)")
    p.add_argument("--batch-repeats", type=int, default=3, help="throughput calls per engine (default 3)")
    p.add_argument("--pairs", type=int, default=24,
                   help="face pairs cut from the sample video for timing and parity (default 24)")
    p.add_argument("--out", type=Path, default=Path("bench_engines.json"), help="JSON output")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    engines = [e.strip() for e in a.engines.split(",") if e.strip()]
    unknown = set(engines) - set(ALL_ENGINES)
    if unknown:
        p.error(f"unknown engines {sorted(unknown)}; choose from {ALL_ENGINES}")
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.checkpoint:
        graph, info = load_checkpoint_graph(a.checkpoint)
    else:
        clf, cfg = random_classifier(a.width)
        graph = RecognitionGraph(clf).eval()
        info = ModelInfo(classes=cfg.class_names, width=cfg.width, checkpoint_hash="random-init",
                         input_size=cfg.input_size, mean=cfg.mean, std=cfg.std, params=count_params(clf),
                         weights="(random init)")
    print(f"network: width {info.width}, {info.params / 1e6:.1f} M parameters ({info.weights})", file=sys.stderr)
    onset, apex = video_pairs(n_pairs=a.pairs)
    calib = video_pairs(n_pairs=16, gaps=(2, 5, 8))
    reference = TorchRunner(copy.deepcopy(graph), info)
    p_ref = reference.run(onset, apex)
    mach = machine()
    spread = noise_spread(reference, onset, apex, NOISE_SIGMA)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, rec, note in build_recognizers(graph, info, engines, Path(tmp), threads=a.threads, plan=a.plan,
                                                  calib_pairs=calib, spin=not a.no_spin, compile=a.compile):
            if rec is None:
                print(f"{label}: skipped ({note})", file=sys.stderr)
                results.append({"engine": label, "note": note})
                continue
            print(f"timing {label} ...", file=sys.stderr)
            on_gpu = rec.device.startswith("cuda")
            t = time_recognizer(rec, onset, apex, a.repeats, a.batch, a.batch_repeats * (5 if on_gpu else 1))
            p = rec.predict(onset, apex)
            diff = float(np.abs(p - p_ref).max())
            results.append({"engine": label, "precision": rec.precision, "device": rec.device,
                            "max_abs_diff": diff, "top1_agreement": float((p.argmax(1) == p_ref.argmax(1)).mean()),
                            "within_gate": diff <= LOW_PRECISION_MAX_ABS_DIFF, **t,
                            "info": {k: v for k, v in rec.info().items() if k not in ("classes",)}})
            rec.close()
    ort_fp32 = next((r["p50_ms"] for r in results if r["engine"] == "onnxruntime fp32"), None)
    for r in results:
        if ort_fp32 and "p50_ms" in r:
            r["speedup_vs_ort_fp32"] = ort_fp32 / r["p50_ms"]
    load = load_average()
    if load is not None:
        mach["loadavg_after"] = load["1min"]
    table = markdown(results, mach, spread)
    print(table)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"machine": mach, "network": {"width": info.width, "params": info.params,
                                                              "weights": info.weights,
                                                              f"noise_spread_sigma{NOISE_SIGMA:g}": spread},
                                 "results": results, "markdown": table}, indent=2, default=str))
    print(f"wrote {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
