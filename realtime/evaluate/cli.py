"""Score the live spotter (and recogniser) on long videos with interval ground truth.

    python -m realtime.evaluate clips/eval200
    python -m realtime.evaluate clips/eval30 --kind all --out report.json
    python -m realtime.evaluate /data/CAS(ME)^2 --layout casme2 --engine none
    python -m realtime.evaluate /data/SAMM_longvideos --annotations SAMM_LongVideos_V3_Release.xlsx

Every video runs through ``realtime.stages.pipeline.Pipeline``, the object run_live.py, the demo
and the benchmark drive (face tracker, smoothed alignment, motion signal, online spotter,
recogniser), frame by frame at the video's true rate: the figures are those of the live
path, not of an offline copy. The videos go through the batch runner (``realtime.batch.runner``,
the per-recording function and outputs of ``python -m realtime.batch``; ``--jobs N`` runs
N at a time, ``--work DIR`` keeps each video's event log and signal for a later run to
reuse), and are scored from what it wrote: evaluation and production share one path. Detections are the pipeline's final events; they are
scored the MEGC way (realtime/evaluate/scoring.py: hit at IoU >= 0.5, F1 = 2TP / (2TP + FP + FN))
per video and pooled, with the apex error (median, share within 10 ms) and, when an
engine runs, the label accuracy over hits. A ground truth with ``face_box`` (several faces:
``python -m train.synth clips --faces 2``) is scored per true face, each event counted on
the face its box overlaps (realtime.evaluate.faces); ``--max-faces N`` lets the pipeline
follow N faces.

Ground-truth layouts (``--layout``: synth, casme2, samm; "auto" picks by what DIR holds)
are described in realtime.evaluate.cases.

The work is done by the package's other modules: realtime.evaluate.cases (the videos and
their ground truth: the synth, casme2 and samm layouts), realtime.evaluate.runs (running
them and scoring), realtime.evaluate.sensitivity (recall by amplitude band, the plot) and
realtime.evaluate.scoring (MEGC interval scoring); this module is the command.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Sequence

from engines.recognizer import load_engine
from realtime.batch.discovery import BatchError
from realtime.batch.job import EngineLoadError
from realtime.evaluate.cases import LAYOUTS, AnnotationError, find_cases
from realtime.evaluate.runs import MODES, evaluate_cases, fmt_score, parse_overrides
from realtime.evaluate.scoring import SCORE_KINDS
from realtime.evaluate.sensitivity import plot_sensitivity
from realtime.stages.multitrack import MAX_FACES
from realtime.stages.sources import SourceError

EXAMPLES = """examples:
  python -m train.synth clips --split eval --n 12 --distractor-only 2 --fps 200 --out clips/eval200
  python -m realtime.evaluate clips/eval200
  python -m realtime.evaluate clips/eval30 --kind all --out eval30.json
  python -m realtime.evaluate "/data/CAS(ME)^2" --layout casme2 --engine none
  python -m realtime.evaluate /data/SAMM_longvideos --layout samm --annotations /data/SAMM_LongVideos_V3_Release.xlsx
  python -m train.synth clips --faces 2 --split eval --n 4 --fps 200 --seed 5 --out clips/faces200
  python -m realtime.evaluate clips/faces200 --engine none --max-faces 2 --out faces200.json

Scores: a detection is a hit when its IoU with a true interval of the same kind is >= 0.5
(each true interval matched once); F1 = 2TP / (2TP + FP + FN), pooled by summing counts
over videos. Apex error = detected - true apex of each hit, in ms.
Several faces (ground truth with face_box): each event goes to the true face whose box its
face_box overlaps most (else the nearest within 1.5 face widths; else none: a false
positive); each face is scored on its own events, the video's scores pool its faces, and
the JSON adds per-face scores ("faces" per video and pooled, "unassigned").
"""


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m realtime.evaluate",
                                 description="Spot (and recognise) expressions in long videos through the live "
                                             "pipeline and score them against interval ground truth (MEGC F1 at "
                                             "IoU >= 0.5, apex error, label accuracy).",
                                 epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", help="folder with the videos (or image folders) and their ground truth")
    ap.add_argument("--layout", choices=LAYOUTS, default="auto",
                    help="ground-truth layout: synth (VIDEO + VIDEO.gt.jsonl), casme2, samm (default: auto)")
    ap.add_argument("--annotations", help="the CAS(ME)^2 / SAMM workbook (default: searched under DIR)")
    ap.add_argument("--fps", type=float, default=None,
                    help="true frame rate of every video (default: the ground truth's, else 30 for CAS(ME)^2, "
                         "200 for SAMM, else the file header)")
    ap.add_argument("--engine", default="auto",
                    help="recogniser: auto (demo weights), a .safetensors/.onnx/.plan path, or none (default auto)")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--tracker", default="fast", choices=("fast", "dlib", "mediapipe"))
    ap.add_argument("--max-faces", type=int, default=MAX_FACES, metavar="N",
                    help=f"faces the pipeline follows at once (default {MAX_FACES}, as run_live.py); multi-face "
                         "clips need N >= their faces")
    ap.add_argument("--motion-hz", type=float, default=0.0, metavar="HZ",
                    help="motion samples per second of video, at most (default 0: every frame, the live path's); "
                         "100 = every 2nd frame at 200 fps")
    ap.add_argument("--kind", default="micro", choices=SCORE_KINDS,
                    help="which intervals the headline figures are for (all kinds go to the JSON)")
    ap.add_argument("--iou", type=float, default=0.5, help="IoU for a hit (default 0.5, MEGC)")
    ap.add_argument("--mode", default="recording", choices=MODES + ("both",),
                    help="recording: the noise model warmed up on a look-ahead, as run_live.py reads files; "
                         "causal: as a camera sees it; both: each, reported side by side (default recording)")
    ap.add_argument("--rule", default="megc", choices=("megc", "casme"),
                    help="micro/macro rule of the spotter and of the generator's ground truth (default megc: "
                         "onset -> offset <= 500 ms; casme: also a short onset phase)")
    ap.add_argument("--spotter", action="append", default=[], metavar="NAME=VALUE",
                    help="override a realtime.stages.spotter.SpotterConfig setting (repeatable), e.g. --spotter "
                         "open_ratio=5: for tuning on the generator's TRAINING identities, never on test clips")
    ap.add_argument("--plot", metavar="PNG", help="write the sensitivity curve (recall by amplitude band) here")
    ap.add_argument("--limit", type=int, default=None, help="evaluate only the first N videos")
    ap.add_argument("--jobs", type=int, default=1, metavar="N",
                    help="videos in N worker processes (the batch runner, python -m realtime.batch; default 1: in this "
                         "process)")
    ap.add_argument("--work", metavar="DIR",
                    help="keep each video's event log, signal and result here (the batch runner's output folder; a "
                         "later evaluation with the same settings reuses them); default: a temporary folder")
    ap.add_argument("--out", help="write the JSON report here")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)

    if args.fps is not None and not (math.isfinite(args.fps) and args.fps > 0):
        ap.error(f"--fps must be a positive frame rate, got {args.fps}")
    if not 0 < args.iou <= 1:
        ap.error(f"--iou must be in (0, 1], got {args.iou}")
    if args.jobs < 1:
        ap.error(f"--jobs must be at least 1, got {args.jobs}")
    if args.max_faces < 1:
        ap.error(f"--max-faces must be at least 1, got {args.max_faces}")
    try:
        cases, notes = find_cases(args.dir, args.layout, args.annotations)
    except AnnotationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.limit:
        cases = cases[: args.limit]
    for k in ("skipped_rows", "videos_not_found"):
        if notes.get(k):
            print(f"note: {k.replace('_', ' ')}: {notes[k]}", file=sys.stderr)
    try:
        recognizer, note = load_engine(args.engine, args.device)
    except Exception as e:
        print(f"error: could not load the recogniser {args.engine!r}: {e}", file=sys.stderr)
        return 2
    if recognizer is None and str(args.engine).lower() != "none":   # "auto" without the demo weights
        print(f"warning: {note}\n         scoring spotting only (pass --engine none to silence this)",
              file=sys.stderr)
    print(f"{len(cases)} video(s), layout {notes['layout']}, engine "
          f"{getattr(recognizer, 'name', None) or 'none'}, tracker {args.tracker}, IoU >= {args.iou}")
    try:
        overrides = parse_overrides(args.spotter)
    except ValueError as e:
        ap.error(str(e))
    overrides["rule"] = args.rule
    modes = MODES if args.mode == "both" else (args.mode,)
    reports = {}
    try:
        for mode in modes:
            if len(modes) > 1:
                print(f"== mode {mode}")
            reports[mode] = evaluate_cases(cases, fps=args.fps, recognizer=recognizer, tracker=args.tracker,
                                           iou=args.iou, spotter=overrides, progress=not args.quiet,
                                           mode=mode, engine=args.engine if recognizer is not None else "none",
                                           jobs=args.jobs, max_faces=args.max_faces,
                                           motion_hz=args.motion_hz or None,
                                           work=None if args.work is None else Path(args.work) / mode)
    except (SourceError, BatchError, EngineLoadError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if recognizer is not None:
            recognizer.close()
    for mode, report in reports.items():
        report.update({"layout": notes["layout"], "dir": str(args.dir), "engine": args.engine,
                       "tracker": args.tracker, "max_faces": args.max_faces, "kind": args.kind, "notes": notes})
        p = report["pooled"][args.kind]
        print(f"\n[{mode}] pooled {args.kind} over {len(cases)} video(s): F1 {fmt_score(p['f1'])}  "
              f"precision {fmt_score(p['precision'])}  recall {fmt_score(p['recall'])}  "
              f"(TP {p['tp']} FP {p['fp']} FN {p['fn']})")
        if p["apex_error_ms_median"] is not None:
            print(f"apex error: median {p['apex_error_ms_median']:.1f} ms, within {p['apex_within_ms']:g} ms: "
                  f"{p['apex_within_share']:.0%} of hits")
        if p["label_accuracy"] is not None:
            print(f"label accuracy over {p['labelled_hits']} hits: {p['label_accuracy']:.3f}")
        if "faces" in report:
            fp = report["faces"]["pooled"][args.kind]
            un = report["faces"]["unassigned"]
            print(f"per face: {report['faces']['faces']} true faces in {report['faces']['videos']} video(s), "
                  f"{args.kind} F1 pooled over faces {fmt_score(fp['f1'])} (TP {fp['tp']} FP {fp['fp']} FN {fp['fn']}; "
                  f"events on no true face: {un['micro']} micro, {un['macro']} macro)")
        if report["sensitivity"]:
            print("micro recall by amplitude (peak / calm level): " + ", ".join(
                f"{b} {r['hits']}/{r['n']}" for b, r in report["sensitivity"].items()))
    report = reports[modes[0]] if len(modes) == 1 else {"modes": reports}
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2), encoding="utf-8")
        print(f"wrote {out}")
    if args.plot:
        print(f"wrote {plot_sensitivity(reports, args.plot)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
