"""Parameter counts of the MoExt network and the CPU forward time of the recognition network.

Prints, for each width, the parameters of the recognition network (trunk + shape branch +
motion extractor + classifier, MOEXT.md) and of the whole pre-training model; then times
the recognition network (train.moext.RecognitionGraph: normalisation + network + softmax,
eager PyTorch fp32, inference mode) on one onset/apex pair at full width, after warm-up,
and reports p50 / p95 with the machine's description. These are the README's numbers.

examples:
  python scripts/model_info.py
  python scripts/model_info.py --runs 100 --threads 1 --json out/model_info.json
  python scripts/model_info.py --widths 1.0 0.5 --no-timing
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

try:
    import train  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from core.machine import describe
from core.stats import percentiles
from engines.bench import random_classifier
from train.moext import MoExtConfig, RecognitionGraph, param_breakdown


def time_forward(width: float, runs: int, warmup: int, seed: int = 0) -> dict:
    """ms per call of RecognitionGraph on one (onset, apex) pair of 224x224 crops."""
    graph = RecognitionGraph(random_classifier(width, seed)[0]).eval()
    onset = torch.randint(0, 256, (1, 3, 224, 224)).float()
    apex = torch.randint(0, 256, (1, 3, 224, 224)).float()
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            t0 = time.perf_counter()
            graph(onset, apex)
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1000.0)
    s = percentiles(times, (50, 95))
    return {
        "width": width, "runs": runs, "warmup": warmup,
        "p50_ms": round(s["p50"], 2), "p95_ms": round(s["p95"], 2),
        "min_ms": round(min(times), 2), "max_ms": round(s["max"], 2),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="examples:" + __doc__.split("examples:", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", type=float, nargs="+", default=[1.0, 0.5, 0.25], help="widths to count (default 1.0 0.5 0.25)")
    p.add_argument("--runs", type=int, default=30, help="timed forward passes (default 30)")
    p.add_argument("--warmup", type=int, default=5, help="untimed passes first (default 5)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's own choice)")
    p.add_argument("--no-timing", action="store_true", help="only count parameters")
    p.add_argument("--json", type=Path, default=None, help="also write everything to this JSON file")
    a = p.parse_args(argv)
    if a.runs < 1 or a.warmup < 0:
        p.error("--runs must be >= 1 and --warmup >= 0")
    if a.threads:
        torch.set_num_threads(a.threads)

    report = {"params": {}, "machine": describe()}
    print("MoExt parameter counts (MOEXT.md; 1x1 kernels in the motion extractor, 3 classes)")
    cols = ("recognition", "trunk", "shape_branch", "motion_extractor", "classifier_fc", "pretrainer")
    print(f"{'width':>6} " + " ".join(f"{c:>16}" for c in cols))
    for w in a.widths:
        counts = param_breakdown(MoExtConfig(width=w))
        report["params"][str(w)] = counts
        print(f"{w:>6} " + " ".join(f"{counts[c]:>16,d}" for c in cols))
        print(f"{'':>6} " + " ".join(f"{f'({counts[c] / 1e6:.2f} M)':>16}" for c in cols))
    print("pretrainer = recognition network without its FC + texture branch + apex reconstructor + projection head")

    if not a.no_timing:
        t = time_forward(1.0, a.runs, a.warmup)
        report["timing"] = t
        m = report["machine"]
        print("\nCPU forward, recognition network (RecognitionGraph, eager fp32), width 1.0, one onset/apex pair:")
        print(f"  p50 {t['p50_ms']} ms   p95 {t['p95_ms']} ms   (min {t['min_ms']}, max {t['max_ms']}; "
              f"{t['runs']} runs after {t['warmup']} warm-up)")
        print(f"  machine: {m['cpu']}, {m['cores_logical']} logical cores, torch {m['torch']} "
              f"with {m['torch_threads']} threads, load average {(m.get('loadavg') or {}).get('1min', '?')}")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
