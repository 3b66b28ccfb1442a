"""Choose when the spotter confirms an apex (SpotterConfig.apex_drop, apex_wait_ms) on TRAINING identities.

The provisional label is shown once the spotter confirms the apex: when the motion value
has fallen to ``apex_drop`` of its rise, or ``apex_wait_ms`` after the peak (an apex that
is held). Confirming sooner lowers the decision latency but risks taking a wobble near
the top for the apex (a later, higher peak still moves it and the pair is labelled
again). This script runs the live pipeline (``realtime.evaluate.runs``, no recogniser) over
synthetic clips of the generator's TRAINING identities at 200 and 30 fps for every
candidate (apex_drop, apex_wait_ms) and keeps the one with the lowest p95 wait (apex ->
confirmation) at 200 fps whose micro-expression F1 is within ``--max-f1-loss`` of the
baseline's (``--baseline``, 0.75 and 150 ms: the defaults before tuning) and whose median
apex error stays within ``--max-apex-ms``, at both rates. The evaluation identities (the
README's spotting table) are never looked at here.

Writes OUT/apex_tuning.json (every candidate's figures and the choice).

example:
  python scripts/tune_apex.py --levels 0.75,0.85,0.9 --waits 150,100,70 --jobs 2 --work /tmp/tune --out docs/eval
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

try:
    import realtime  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.stats import percentiles  # noqa: E402  (after the checkout is on the path)
from realtime.evaluate.cases import find_cases  # noqa: E402
from realtime.evaluate.runs import evaluate_cases  # noqa: E402
from train import synth  # noqa: E402

RATES = ((200.0, 10.0), (30.0, 20.0))   # (fps, seconds per clip)


def make_clips(work: Path, n: int, seed: int) -> dict[float, Path]:
    out = {}
    for fps, seconds in RATES:
        d = work / f"train{int(fps)}"
        if not any(d.glob("*.gt.jsonl")):
            synth.main(["clips", "--split", "train", "--n", str(n), "--distractor-only", "1", "--fps", str(fps),
                        "--seconds", str(seconds), "--seed", str(seed), "--out", str(d)])
        out[fps] = d
    return out


def measure(folder: Path, apex_drop: float, apex_wait_ms: float) -> dict:
    cases, _ = find_cases(folder, "synth")
    rep = evaluate_cases(cases, spotter={"apex_drop": apex_drop, "apex_wait_ms": apex_wait_ms},
                         progress=False, log=None)
    micro = rep["pooled"]["micro"]
    waits = [e["latency_ms"]["wait"] for v in rep["videos"] for e in v["events"] if e["kind"] == "micro"]
    wait = percentiles(waits)
    return {"apex_drop": apex_drop, "apex_wait_ms": apex_wait_ms, "micro_f1": micro.get("f1"),
            "tp": micro.get("tp"), "fp": micro.get("fp"), "fn": micro.get("fn"),
            "apex_error_median_ms": micro.get("apex_error_ms_median"),
            "apex_within_10ms": micro.get("apex_within_share"),
            "wait_p50_ms": wait.get("p50"), "wait_p95_ms": wait.get("p95"), "events": len(waits)}


def _task(args: tuple) -> tuple:
    fps, folder, drop, wait = args
    return fps, measure(Path(folder), drop, wait)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/moext-tune", help="where the training-identity clips are written")
    ap.add_argument("--out", default="docs/eval", help="folder for apex_tuning.json")
    ap.add_argument("--levels", default="0.75,0.8,0.85,0.9", help="candidate apex_drop values")
    ap.add_argument("--waits", default="150", help="candidate apex_wait_ms values (ms after the peak)")
    ap.add_argument("--n", type=int, default=8, help="clips per rate")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--baseline", default="0.75,150",
                    help="apex_drop,apex_wait_ms the others are compared with (0.75,150: the defaults before tuning)")
    ap.add_argument("--max-f1-loss", type=float, default=0.02)
    ap.add_argument("--max-apex-ms", type=float, default=10.0)
    ap.add_argument("--jobs", type=int, default=1, help="evaluations run at once (each is deterministic)")
    a = ap.parse_args(argv)

    base = tuple(float(x) for x in a.baseline.split(","))
    if len(base) != 2:
        ap.error("--baseline is apex_drop,apex_wait_ms, e.g. 0.75,150")
    cands = sorted({(float(d), float(w)) for d in a.levels.split(",") for w in a.waits.split(",")} | {base})
    clips = make_clips(Path(a.work), a.n, a.seed)
    t0 = time.perf_counter()
    tasks = [(fps, str(folder), d, w) for fps, folder in clips.items() for d, w in cands]
    rows: dict[float, list[dict]] = {fps: [] for fps in clips}
    if a.jobs > 1:
        with ProcessPoolExecutor(a.jobs) as pool:
            results = list(pool.map(_task, tasks))
    else:
        results = [_task(t) for t in tasks]
    for fps, r in results:
        rows[fps].append(r)
        print(f"{fps:5.0f} fps  apex_drop {r['apex_drop']:.2f} apex_wait {r['apex_wait_ms']:.0f} ms: micro F1 "
              f"{r['micro_f1']}  ({r['tp']}/{r['fp']}/{r['fn']})  apex error median {r['apex_error_median_ms']} ms"
              f"  wait p50 {r['wait_p50_ms']} / p95 {r['wait_p95_ms']} ms", flush=True)

    def row(fps: float, c: tuple) -> dict:
        return next(r for r in rows[fps] if (r["apex_drop"], r["apex_wait_ms"]) == c)

    def ok(c: tuple) -> bool:
        for fps in rows:
            b, r = row(fps, base), row(fps, c)
            if (r["micro_f1"] or 0) < (b["micro_f1"] or 0) - a.max_f1_loss:
                return False
            if r["apex_error_median_ms"] is None or abs(r["apex_error_median_ms"]) > a.max_apex_ms:
                return False
        return True

    fast = max(clips)
    allowed = [c for c in cands if ok(c)]
    choice = min(allowed, key=lambda c: (row(fast, c)["wait_p95_ms"], row(fast, c)["wait_p50_ms"]), default=base)
    report = {"command": "python scripts/tune_apex.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "identities": "training split of train.synth (never the evaluation identities)",
              "rule": f"lowest p95 (then p50) wait at {fast:.0f} fps among candidates with micro F1 >= the "
                      f"baseline's - {a.max_f1_loss} and |median apex error| <= {a.max_apex_ms} ms at every rate",
              "baseline": {"apex_drop": base[0], "apex_wait_ms": base[1]},
              "choice": {"apex_drop": choice[0], "apex_wait_ms": choice[1]},
              "rates": {f"{fps:.0f}": rs for fps, rs in rows.items()}, "wall_s": round(time.perf_counter() - t0, 1)}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "apex_tuning.json").write_text(json.dumps(report, indent=2))
    print(f"choice: apex_drop {choice[0]}, apex_wait_ms {choice[1]:g} (baseline {base[0]}, {base[1]:g}); "
          f"wrote {out / 'apex_tuning.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
