"""Latency benchmark of the live path on a recording: ``python -m realtime.bench --help``.

The benchmark runs a video file through ``realtime.stages.pipeline.Pipeline`` -- the object
run_live.py and the Gradio demo drive, not a copy of it (STYLE.md, DeepLabCut-Live's
benchmark_videos) -- with nothing dropped, and saves its timings with a description of
the machine (REALTIME.md, "Latency: say which one"):

- stage latency: time inside each stage per frame (decode, detect, landmarks, align,
  motion, spot, infer, draw) as p50 / p95 / p99 / max, from the pipeline's own counters;
  "infer" is counted on the frames that collected a recognition result (the recogniser
  itself runs in the pipeline's worker thread, off the frame loop);
- throughput: frames / wall time of the whole loop (decode included) with nothing
  dropped, and the real-time factor = throughput / source fps (>= 1 keeps up);
- frame latency: decoded frame in hand (``Frame.captured_at``) -> its ``FrameResult``
  (overlay included when drawn); ``frame_latency_with_decode_ms`` adds the decode;
- decision latency, per spotted event: apex captured -> label ready. For a file the
  capture clock is simulated: frame i is "captured" at i / fps, as a camera at that rate
  would deliver it, so

      wait_ms    = (decided_frame - apex_frame) / fps * 1000   (algorithmic: frames the
                   spotter had to see after the apex before it could confirm it)
      compute_ms = measured wall time from the deciding frame being in hand to the label
                   being back from the recogniser (processing, queue and inference)
      total_ms   = wait_ms + compute_ms

  "provisional" is the first record of an event (label shown once the apex is
  confirmed); "final" is the record whose micro/macro kind is certain (offset reached, or
  500 ms after onset), with its wait measured the same way (decided frame of the final
  spotter update - apex) and its total taken when both the kind and the label are there;
- peak memory (RSS) and CPU time per frame (all threads), the machine (CPU, cores, GPU,
  library versions, load average), the engine and the network (width, parameters).

Drawing runs at display rate by default (at most 60 overlays per wall-clock second:
``PipelineConfig.draw_fps``, what a screen shows); ``--draw-every-frame`` draws each
frame as recording does; ``--no-draw`` skips it. The report says which.

Warm-up: a separate pass over the first ``--warmup`` frames with a throw-away Pipeline
(same models, same recogniser) and a few recogniser calls on a real aligned pair, so
that lazy allocations, model page-in and kernel choice are not in the figures. The
measured pass then runs the whole file from frame 0 with a fresh Pipeline (the spotter
warms its noise model up on the first half second, as it would live: the benchmark measures
the causal path a camera gets, with no look-ahead).

``--compare`` then runs, in the same process on the same decoded frames: the paper's
preprocessing (dlib HOG detection + 68 landmarks on every frame) against each tracker
(per-stage ms and the ratio), and the available engines (ONNX Runtime fp32 / int8,
eager torch fp32, CUDA if there is a GPU) at batch 1 on real aligned pairs, with their
speed against eager torch.

Without VIDEO the input is the 200 fps sample (``realtime.bench.sample``: the bundled
real face animated by the generator with synthetic micro-expressions; its ground truth
lies beside it, so the report also scores the spotter against it).

Outputs in ``--out DIR``: report.json (stable keys: realtime_factor, throughput_fps,
stages, decision_latency_ms, frame_latency_ms, peak_rss_mb, machine, engine, network,
...), report.md (tables for people), stages.png, latency.png, motion.png, and with
``--profile`` profile.txt (cProfile of the measured pass; it slows the run down, so its
figures are for "where does the time go", not for the headline numbers).

This module is the command: the argument parser, ``run`` (the steps in order) and
``main``. The work lives beside it: realtime.bench.measure (configuration, input,
engine, warm-up, the measured pass, events), realtime.bench.reference (the frozen
reference loop), realtime.bench.compare (--compare), realtime.bench.report (report.json,
report.md, plots, headline) and realtime.bench.sample (the default input).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from core.face import TRACKER_KINDS
from engines.recognizer import CHECKPOINT_ENGINES
from realtime.bench.faces import face_cost
from realtime.bench.faces import markdown_rows as faces_markdown
from realtime.bench.measure import (COMPARE_ENGINES, DISPLAY_FPS, BenchConfig, describe_machine, load_engine, measure,
                                    resolve_clip, tracker_models, warm_up)
from realtime.bench.report import (build_report, headline, json_default, markdown, plot_latency, plot_motion,
                                   plot_stages, write_profile)
from realtime.stages.multitrack import MAX_FACES
from realtime.stages.sources import SourceError


EXAMPLES = """\
examples:
  python -m realtime.bench                                   # the 200 fps sample, demo weights, report in bench_report/
  python -m realtime.bench --out docs/bench --compare        # + paper preprocessing and engines side by side
  python -m realtime.bench --width 1.0 --out docs/bench_full # full-width network (random weights: fine for timing)
  python -m realtime.bench highspeed.avi --fps 200 --engine runs/demo/best.safetensors --tracker dlib
  python -m realtime.bench clip.mp4 --engine none --max-frames 1000 --draw-every-frame
  python run_live.py --bench --video clip.avi --fps 200      # the same, from the live command

Targets (reported, not enforced): real-time factor >= 2.0 at 200 fps 640x480 on 2 cores
(stretch 3.0); provisional decision latency p95 <= 100 ms (stretch 60 ms).
"""


def run(cfg: BenchConfig, argv: Sequence[str] | None = None, say=print) -> dict:
    """Run the benchmark and write the report folder; returns the report dict."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    clip = resolve_clip(cfg)
    engine = load_engine(cfg)
    try:
        say(f"input: {clip.path} ({'generated sample, ' if clip.sample else ''}"
            f"{'ground truth ' + clip.truth_path.name if clip.truth_path else 'no ground truth'}); "
            f"engine: {engine.spec}; tracker: {cfg.tracker}")
        models = tracker_models(cfg.tracker)
        machine = describe_machine()
        say(f"warm-up: {cfg.warmup} frames ...")
        warm = warm_up(clip, cfg, engine, models)
        say("measuring ...")
        m = measure(clip, cfg, engine, models)
        report = build_report(clip, cfg, engine, warm, m, machine, argv)
        if cfg.compare:
            from realtime.bench.compare import run_compare   # loads torch (eager reference): only here

            report["compare"] = run_compare(clip, cfg, engine, say)
        if cfg.faces_cost:
            say("cost per face: a 3-face clip at 1, 2 and 3 faces followed ...")
            report["faces_cost"] = face_cost(fps=clip.fps or 200.0, tracker=cfg.tracker, work=out)
        if m.profile is not None:
            report["profile"] = write_profile(m.profile, out / "profile.txt").name
        if cfg.plots:
            plots = [plot_stages(report, out / "stages.png"), plot_latency(report, m, out / "latency.png"),
                     plot_motion(report, m, clip.truth, out / "motion.png")]
            report["plots"] = [p.name for p in plots]
        (out / "report.json").write_text(json.dumps(report, indent=2, default=json_default))
        (out / "report.md").write_text(markdown(report) + (
            "\n".join(faces_markdown(report["faces_cost"])) + "\n" if "faces_cost" in report else ""))
    finally:
        if engine.recognizer is not None:
            engine.recognizer.close()
    say(headline(report))
    say(f"wrote {out / 'report.json'}, {out / 'report.md'}"
        + (f" and {len(report['plots'])} plots" if report["plots"] else ""))
    return report


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m realtime.bench",
        description="Latency benchmark: runs a recording through the live pipeline (the one run_live.py uses) "
                    "with nothing dropped and reports per-stage latency, throughput and real-time factor, frame "
                    "latency, decision latency per event, memory and the machine.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video", nargs="?", metavar="VIDEO",
                    help="video file (default: the 200 fps sample with ground truth, generated once into the "
                         "user's cache dir)")
    ap.add_argument("--fps", type=float, metavar="F",
                    help="true frame rate (high-speed files often carry a wrong header); default: the header, "
                         "200 for the sample")
    ap.add_argument("--engine", default="auto", metavar="PATH|URL|auto|none",
                    help="weights or engine file (.safetensors, .onnx, .plan), or a server (triton://HOST:PORT/MODEL, python -m engines.serve); auto = the demo weights on the best "
                         "engine here (default); none = spotting only")
    ap.add_argument("--width", type=float, metavar="W",
                    help="time a random-init network of this width instead (1.0 = the paper's full width; "
                         "latency does not depend on the weights)")
    ap.add_argument("--runtime", choices=CHECKPOINT_ENGINES, default="best",
                    help="the engine that runs the weights (default best: ONNX Runtime fp32 on a CPU); "
                         "e.g. openvino-int8 with --width 1.0")
    ap.add_argument("--motion-hz", type=float, default=0.0, metavar="HZ",
                    help="motion samples per second of video, at most (default 0: every frame, the live path's); "
                         "100 = every 2nd frame at 200 fps")
    ap.add_argument("--tracker", choices=TRACKER_KINDS, default="fast", help="face tracker (default fast)")
    ap.add_argument("--track-process", action="store_true",
                    help="decode and track in a second process ahead of the frame loop (realtime.stages.trackproc, "
                         "run_live.py --track-process); default: in this process, as run_live.py does")
    ap.add_argument("--max-faces", type=int, default=MAX_FACES, metavar="N",
                    help=f"faces the live path follows (default {MAX_FACES}, as run_live.py)")
    ap.add_argument("--spin", action="store_true",
                    help="let ONNX Runtime's threads spin-wait for work, as engines.bench does (the live path's "
                         "default is not to: they would take the cores the frame loop needs)")
    ap.add_argument("--faces-cost", action="store_true",
                    help="also measure what each additional face costs per frame (a generated 3-face clip at 1, 2 "
                         "and 3 faces followed; about 2 minutes more)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda[:i] (default auto)")
    ap.add_argument("--out", default="bench_report", metavar="DIR", help="report folder (default bench_report)")
    ap.add_argument("--warmup", type=int, default=200, metavar="N",
                    help="frames of the separate warm-up pass (default 200; 0 = none)")
    ap.add_argument("--max-frames", type=int, metavar="N", help="measure at most N frames")
    draw = ap.add_mutually_exclusive_group()
    draw.add_argument("--draw-every-frame", action="store_true",
                      help="draw the overlay on every frame (as recording does) instead of at display rate "
                           f"(<= {DISPLAY_FPS:g} per second, the default)")
    draw.add_argument("--no-draw", action="store_true", help="no overlay at all")
    ap.add_argument("--compare", action="store_true",
                    help="also run the paper's preprocessing (dlib HOG + 68 points every frame) against the "
                         "trackers, and the engines against eager torch, on the same frames")
    ap.add_argument("--compare-frames", type=int, default=200, metavar="N",
                    help="decoded frames for --compare (default 200)")
    ap.add_argument("--compare-engines", default=",".join(COMPARE_ENGINES), metavar="LIST",
                    help=f"engines for --compare, from {','.join(COMPARE_ENGINES)} (default all; unavailable ones "
                         "are reported as skipped)")
    ap.add_argument("--compare-repeats", type=int, default=30, metavar="N",
                    help="batch-1 calls per engine (default 30)")
    ap.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    ap.add_argument("--profile", action="store_true",
                    help="cProfile the measured pass into DIR/profile.txt (slows it down: for finding where the "
                         "time goes, not for the headline numbers)")
    ap.add_argument("--quiet", action="store_true", help="print only the headline")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = build_parser()
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    if a.video is not None and not Path(a.video).is_file():
        print(f"error: video {a.video} does not exist: check the path (or give no VIDEO for the 200 fps sample)",
              file=sys.stderr)
        return 2
    try:
        if a.max_faces < 1:
            raise ValueError(f"--max-faces must be 1 or more, got {a.max_faces}")
        cfg = BenchConfig(video=a.video, fps=a.fps, engine=a.engine, width=a.width, tracker=a.tracker,
                          max_faces=a.max_faces, faces_cost=a.faces_cost, spin=a.spin, runtime=a.runtime,
                          motion_hz=a.motion_hz or None, track_process=a.track_process,
                          device=a.device, warmup=a.warmup, max_frames=a.max_frames,
                          draw="every" if a.draw_every_frame else "off" if a.no_draw else "display",
                          compare=a.compare, compare_frames=a.compare_frames,
                          compare_engines=tuple(e.strip() for e in a.compare_engines.split(",") if e.strip()),
                          compare_repeats=a.compare_repeats, out=a.out, plots=not a.no_plots, profile=a.profile,
                          progress=False if a.quiet else None)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.width is not None and a.engine not in ("auto",):
        print(f"error: give --engine {a.engine} or --width {a.width:g}, not both (--width times a random-init "
              "network of that width)", file=sys.stderr)
        return 2
    say = (lambda *x: None) if a.quiet else (lambda *x: print(*x, flush=True))
    try:
        report = run(cfg, argv, say)
    except (SourceError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.quiet:
        print(headline(report))
    return 0
