"""Choose the spotter's apex confirmation level (SpotterConfig.apex_drop) on TRAINING identities.

The provisional label is shown once the spotter confirms the apex: when the motion value
has fallen to ``apex_drop`` of its rise (or ``apex_wait_ms`` after the peak). A higher
level confirms sooner (lower decision latency) but risks taking a wobble near the top for
the apex. This script runs the live pipeline (``realtime.evaluate``, no recogniser) over
synthetic clips of the generator's TRAINING identities at 200 and 30 fps for each
candidate level and keeps the one with the lowest p95 wait (apex -> confirmation) whose
micro-expression F1 is within ``--max-f1-loss`` of the baseline level's (``--baseline``,
0.75: the default before this tuning) and whose median apex error stays within
``--max-apex-ms``, at both rates. The evaluation identities (the
README's spotting table) are never looked at here.

Writes OUT/apex_tuning.json (every candidate's figures and the choice).

example:
  python scripts/tune_apex.py --work /tmp/tune --out docs/eval
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

try:
    import realtime  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RATES = ((200.0, 10.0), (30.0, 20.0))   # (fps, seconds per clip)


def make_clips(work: Path, n: int, seed: int) -> dict[float, Path]:
    from train import synth

    out = {}
    for fps, seconds in RATES:
        d = work / f"train{int(fps)}"
        if not any(d.glob("*.gt.jsonl")):
            synth.main(["clips", "--split", "train", "--n", str(n), "--distractor-only", "1", "--fps", str(fps),
                        "--seconds", str(seconds), "--seed", str(seed), "--out", str(d)])
        out[fps] = d
    return out


def measure(folder: Path, apex_drop: float) -> dict:
    from realtime.evaluate import evaluate_cases, find_cases

    cases, _ = find_cases(folder, "synth")
    rep = evaluate_cases(cases, spotter={"apex_drop": apex_drop}, progress=False, log=None)
    micro = rep["pooled"]["micro"]
    waits = [e["latency_ms"]["wait"] for v in rep["videos"] for e in v["events"] if e["kind"] == "micro"]
    waits.sort()
    p95 = waits[min(len(waits) - 1, int(round(0.95 * (len(waits) - 1))))] if waits else None
    return {"apex_drop": apex_drop, "micro_f1": micro.get("f1"), "tp": micro.get("tp"), "fp": micro.get("fp"),
            "fn": micro.get("fn"), "apex_error_median_ms": micro.get("apex_error_ms_median"),
            "apex_within_10ms": micro.get("apex_within_share"),
            "wait_p50_ms": statistics.median(waits) if waits else None, "wait_p95_ms": p95, "events": len(waits)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/moext-tune", help="where the training-identity clips are written")
    ap.add_argument("--out", default="docs/eval", help="folder for apex_tuning.json")
    ap.add_argument("--levels", default="0.75,0.8,0.85,0.9", help="candidate apex_drop values")
    ap.add_argument("--n", type=int, default=8, help="clips per rate")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--baseline", type=float, default=0.75,
                    help="the level the others are compared with (0.75: the default before this tuning)")
    ap.add_argument("--max-f1-loss", type=float, default=0.02)
    ap.add_argument("--max-apex-ms", type=float, default=10.0)
    a = ap.parse_args(argv)

    default = a.baseline
    levels = sorted({float(x) for x in a.levels.split(",")} | {default})
    clips = make_clips(Path(a.work), a.n, a.seed)
    t0 = time.perf_counter()
    rows = {}
    for fps, folder in clips.items():
        rows[fps] = []
        for lv in levels:
            r = measure(folder, lv)
            rows[fps].append(r)
            print(f"{fps:5.0f} fps  apex_drop {lv:.2f}: micro F1 {r['micro_f1']}  ({r['tp']}/{r['fp']}/{r['fn']})  "
                  f"apex error median {r['apex_error_median_ms']} ms  wait p50 {r['wait_p50_ms']} / "
                  f"p95 {r['wait_p95_ms']} ms", flush=True)

    def ok(lv: float) -> bool:
        for fps, rs in rows.items():
            base = next(r for r in rs if r["apex_drop"] == default)
            r = next(r for r in rs if r["apex_drop"] == lv)
            if (r["micro_f1"] or 0) < (base["micro_f1"] or 0) - a.max_f1_loss:
                return False
            if r["apex_error_median_ms"] is None or abs(r["apex_error_median_ms"]) > a.max_apex_ms:
                return False
        return True

    fast = max(clips)
    allowed = [lv for lv in levels if ok(lv)]
    choice = min(allowed, key=lambda lv: next(r["wait_p95_ms"] for r in rows[fast] if r["apex_drop"] == lv),
                 default=default)
    report = {"command": "python scripts/tune_apex.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "identities": "training split of train.synth (never the evaluation identities)",
              "rule": f"lowest p95 wait at {fast:.0f} fps among levels with micro F1 >= default's - "
                      f"{a.max_f1_loss} and |median apex error| <= {a.max_apex_ms} ms at every rate",
              "baseline": default, "choice": choice,
              "rates": {f"{fps:.0f}": rs for fps, rs in rows.items()}, "wall_s": round(time.perf_counter() - t0, 1)}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "apex_tuning.json").write_text(json.dumps(report, indent=2))
    print(f"choice: apex_drop {choice} (was {default}); wrote {out / 'apex_tuning.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
