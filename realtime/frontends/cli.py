"""Command line of the live recogniser (``python run_live.py`` / ``moext-live``).

One loop for every source: read a frame, ``Pipeline.process`` it, hand the result to the
sinks (window, annotated video, signal CSV, event log, console), print a summary at the
end, and, when the input has a ground truth (--ground-truth, or <stem>.gt.jsonl beside the
video), each true event hit or missed and the false alarms (realtime.scoring.compare_to_truth).
``--gradio`` starts the web demo and ``--bench`` the latency benchmark instead; both run the
same Pipeline.

Exit status: 0 finished (faults, if any, are in the summary); 2 an input, option or
output that cannot be used (the message says which and what to do); 3 the source was
lost mid-run (camera stalled with --on-stall exit, or retries used up); 130 interrupted.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys

EXAMPLES = """\
examples:
  python run_live.py --camera 0                      # webcam, window with the overlay (q quits, c recalibrates)
  python run_live.py --camera 0 --width 640 --height 480 --camera-fps 120 --events out/events.jsonl
  python run_live.py --sample --headless --record out/annotated.mp4 --events out/events.jsonl --signal out/signal.csv
  python run_live.py --sample smile --headless       # the real bundled clip: a man talking, ending in a broad smile
  python run_live.py --video clip.mp4 --headless --ground-truth clip.gt.jsonl   # + true events hit / missed
  python run_live.py --video highspeed.avi --fps 200 --headless --events out/events.jsonl
  python run_live.py --images CASME2-RAW/sub01/EP02_01f --fps 200 --headless --signal out/signal.csv
  python run_live.py --video clip.mp4 --engine runs/demo/best.safetensors --tracker dlib --device cpu
  python run_live.py --gradio --port 7860 [--share --auth user:password]
  python run_live.py --bench --video clip.avi --fps 200    # same as python -m realtime.bench clip.avi --fps 200
  python run_live.py --batch study/ --out results/ --jobs 2 # every recording of a study = python -m realtime.batch

With no source option, --camera 0 is used. --sample alone plays the bundled micro-expression clip
(generated on a real face; its ground truth lies beside it, so the summary ends with each true event
hit or missed); --sample smile plays the real clip. Any video with a <stem>.gt.jsonl beside it (as
train.synth writes them) is compared the same way. Events (one JSON object per line) carry
onset/apex/offset frames and times, kind (micro/macro), label, probs and latency_ms; see README, "Outputs".
"""

EXIT_OK, EXIT_USAGE, EXIT_SOURCE_LOST, EXIT_INTERRUPTED = 0, 2, 3, 130
log = logging.getLogger("realtime.cli")


def build_parser() -> argparse.ArgumentParser:
    from realtime import assets
    from realtime.face import TRACKER_KINDS

    ap = argparse.ArgumentParser(
        prog="run_live.py",
        description="Real-time micro-expression recognition from a camera, a video or a folder of frames: "
                    "face tracking, onset/apex spotting and recognition of (onset, apex) pairs.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_argument_group("source (one of; default --camera 0)")
    one = src.add_mutually_exclusive_group()
    one.add_argument("--camera", type=int, metavar="INDEX", help="camera index (0 = default camera)")
    one.add_argument("--video", metavar="PATH", help="video file")
    one.add_argument("--images", metavar="DIR", help="folder of frames (sorted by name; needs --fps)")
    one.add_argument("--sample", nargs="?", const=assets.DEFAULT_SAMPLE, choices=tuple(assets.SAMPLES), metavar="NAME",
                     help="a bundled sample clip: micro (default: a micro-expression generated on a real face at "
                          "100 fps, with its ground truth; realtime/assets/micro_sample.mp4) or smile (a real "
                          "30 fps clip of a man talking who ends in a broad smile; realtime/assets/single_face.mp4)")
    src.add_argument("--fps", type=float, metavar="F",
                     help="true frame rate: overrides a video header (high-speed recordings often say 25/30); "
                          "required with --images")
    src.add_argument("--width", type=int, help="camera: requested frame width")
    src.add_argument("--height", type=int, help="camera: requested frame height")
    src.add_argument("--camera-fps", type=float, metavar="F", help="camera: requested frame rate")
    src.add_argument("--realtime", action="store_true",
                     help="play a video at its own rate like a camera (stale frames dropped and counted)")
    src.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    src.add_argument("--on-stall", choices=("retry", "exit"), default="exit",
                     help="camera delivering nothing for --stall-timeout seconds: reopen and retry, or stop "
                          "(default exit)")
    src.add_argument("--stall-timeout", type=float, default=1.0, metavar="S", help="seconds without a frame (default 1)")

    out = ap.add_argument_group("outputs")
    out.add_argument("--headless", action="store_true", help="no window (servers, CI, batch runs)")
    out.add_argument("--record", metavar="OUT.mp4", help="annotated video of every frame (.mp4 mp4v or .avi MJPG)")
    out.add_argument("--events", metavar="OUT.jsonl", help="event log, one JSON object per event, written as they happen")
    out.add_argument("--signal", metavar="OUT.csv", help="per-frame motion signal, one row per frame")
    out.add_argument("--summary-json", metavar="OUT.json", help="the end-of-run summary as JSON")
    out.add_argument("--draw-fps", type=float, default=60.0, metavar="F",
                     help="window only: draw the overlay at most F times per second (default 60; every frame "
                          "is drawn when recording)")
    out.add_argument("--ground-truth", metavar="FILE.gt.jsonl",
                     help="true events of the input (JSON lines as train.synth writes them): the summary ends "
                          "with each one hit or missed, and the false alarms. Default: <video stem>.gt.jsonl "
                          "beside the video, when there is one")
    out.add_argument("--quiet", action="store_true", help="print only warnings and the summary")

    model = ap.add_argument_group("model")
    model.add_argument("--engine", default="auto", metavar="PATH|auto|none",
                       help="weights or engine file (.safetensors, .onnx, .plan); auto = the bundled demo weights "
                            "on the best engine here (default); none = spotting only")
    model.add_argument("--tracker", choices=TRACKER_KINDS, default="fast",
                       help="face tracker: fast (BlazeFace + dlib 68 points, default), dlib (the paper's HOG "
                            "detector), mediapipe (BlazeFace + face mesh)")
    model.add_argument("--landmarks-hz", type=float, default=100.0, metavar="HZ",
                       help="68-point landmarks at most this many times per second of source time (default "
                            "100: every other frame at 200 fps); 0 = every frame")
    model.add_argument("--device", default="auto", help="auto | cpu | cuda[:i] (default auto)")
    model.add_argument("--causal", action="store_true",
                       help="analyse a recording as a camera would (no look-ahead): by default a file or image "
                            "folder is read ahead %(lookahead)s s to learn the person's calm level before its first "
                            "frame is judged" % {"lookahead": "3"})
    model.add_argument("--me-rule", choices=("megc", "casme"), default="megc",
                       help="micro when onset -> offset <= 500 ms (megc, default; SAMM too), or also when the "
                            "onset phase is <= 250 ms and the whole < 1 s (casme: CASME / CASME II)")
    model.add_argument("--calibration", type=float, metavar="S",
                       help="seconds of signal the spotter's noise model starts from before the first event can "
                            "open (a warm start, not a neutral-face gate: the calm level keeps following the face; "
                            "default 0.5)")

    web = ap.add_argument_group("web demo (--gradio)")
    web.add_argument("--gradio", action="store_true", help="start the browser demo instead of a window")
    web.add_argument("--share", action="store_true", help="public share link (needs internet)")
    web.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    web.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    web.add_argument("--auth", metavar="USER:PASS", help="require this login (recommended with --share)")

    many = ap.add_argument_group("many recordings (--batch)")
    many.add_argument("--batch", nargs="+", metavar="INPUTS",
                      help="analyse every recording of a study: video files, folders, globs or a CSV manifest, "
                           "with --out DIR [--jobs N | --ray] and the model options above; the same as python -m "
                           "realtime.batch INPUTS ... (see its --help)")

    bench = ap.add_argument_group("benchmark (--bench)")
    bench.add_argument("--bench", action="store_true",
                       help="run the latency benchmark (python -m realtime.bench) on --video/--sample")
    bench.add_argument("--bench-out", metavar="DIR", help="benchmark report folder")

    ap.add_argument("--log-level", default="INFO", type=str.upper, choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                    metavar="LEVEL", help="debug | info (default) | warning | error; debug also lets through "
                                          "the start-up messages of MediaPipe / TFLite / LiteRT")
    return ap


def display_available() -> tuple[bool, str]:
    """Whether cv2.imshow can open a window here (OpenCV's Qt build aborts without one)."""
    if sys.platform.startswith("linux"):
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                or os.environ.get("QT_QPA_PLATFORM", "").startswith(("offscreen", "vnc", "eglfs", "linuxfb"))):
            return False, "no display available (DISPLAY is not set)"
    return True, ""


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return code


def _load_engine(args):
    """(recognizer or None, note). 'auto' without the demo weights runs spotting only."""
    from realtime.pipeline import load_recognizer

    spec = args.engine
    if str(spec).lower() == "none":
        return None, "spotting only (--engine none): events carry no label"
    try:
        return load_recognizer(spec, args.device), ""
    except FileNotFoundError as e:
        if spec == "auto":
            return None, (f"{e}\nrunning spotting only: events are found but carry no label. "
                          "Pass --engine PATH to label them")
        raise


def _bench(args) -> int:
    try:
        from realtime import bench
    except ModuleNotFoundError as e:
        if e.name and e.name.endswith("bench"):
            return _fail("the benchmark (realtime/bench.py) is not part of this installation")
        raise
    argv = []
    if args.sample or args.video:
        from realtime import assets

        argv.append(str(assets.sample_path(args.sample)) if args.sample else args.video)
    elif args.camera is not None or args.images:
        return _fail("--bench runs on a recording: give --video PATH (or --sample, or nothing for the bench's "
                     "own 200 fps sample)")
    if args.fps:
        argv += ["--fps", str(args.fps)]
    argv += ["--engine", args.engine, "--tracker", args.tracker]
    if args.bench_out:
        argv += ["--out", args.bench_out]
    return int(bench.main(argv) or 0)


def _gradio(args) -> int:
    if args.auth is not None and ":" not in args.auth:
        return _fail(f"--auth must be USER:PASSWORD, got {args.auth!r}")
    try:
        from realtime import webapp
    except ModuleNotFoundError as e:
        if e.name and e.name.endswith("webapp"):
            return _fail("the web demo (realtime/webapp.py) is not part of this installation; "
                         "use the window (python run_live.py --camera 0) instead")
        raise
    return int(webapp.launch(args) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--batch" in argv:   # many recordings: the batch runner takes the rest of the command line
        from realtime import batch

        i = argv.index("--batch")
        return batch.main(argv[:i] + argv[i + 1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else getattr(logging, args.log_level),
                        format="%(levelname)s: %(message)s")
    if args.gradio:
        return _gradio(args)
    if args.bench:
        return _bench(args)
    _stop_on_sigterm()
    try:
        return run(args)
    except KeyboardInterrupt:  # before the loop started (outputs are closed by run's finally)
        print("interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED


def run(args) -> int:
    """The live loop for parsed arguments (see build_parser)."""
    from realtime import assets
    from realtime.recording import RecordingSettings, make_pipeline
    from realtime.sinks import (AnnotatedVideoWriter, ConsolePrinter, EventList, EventLog, SignalCSV, SinkError,
                                print_summary)
    from realtime.sources import SourceError, open_source

    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    if args.max_frames is not None and args.max_frames <= 0:
        return _fail(f"--max-frames must be positive, got {args.max_frames}")
    if args.fps is not None and args.fps <= 0:
        return _fail(f"--fps must be a positive frame rate, got {args.fps}")
    if not (args.landmarks_hz >= 0 and math.isfinite(args.landmarks_hz)):
        return _fail(f"--landmarks-hz must be 0 (every frame) or a positive rate, got {args.landmarks_hz}")
    window = not args.headless
    if window:
        ok, why = display_available()
        if not ok:
            return _fail(f"{why}: run with --headless (add --record OUT.mp4 to keep the overlay)")

    video = str(assets.sample_path(args.sample)) if args.sample else args.video
    try:
        truth_file, truths = _ground_truth(args.ground_truth, video)
    except ValueError as e:
        return _fail(str(e))
    camera = args.camera if (args.camera is not None or video or args.images) else 0
    try:
        source = open_source(camera=camera, video=video, images=args.images, fps=args.fps, width=args.width,
                             height=args.height, camera_fps=args.camera_fps, realtime=args.realtime,
                             stall_timeout=args.stall_timeout, on_stall=args.on_stall)
    except SourceError as e:
        return _fail(str(e))

    sinks = []
    try:
        try:
            recognizer, note = _load_engine(args)
        except Exception as e:
            return _fail(f"--engine {args.engine}: {e}")
        if note:
            log.warning(note)
        settings = RecordingSettings.from_args(args)
        pipe = make_pipeline(source, settings, recognizer, draw=window or bool(args.record),
                             draw_fps=None if args.record else args.draw_fps)
        if pipe.primed:
            say(f"read ahead {pipe.primed} frames ({pipe.config.lookahead_s:g} s at most) to learn the calm level")
        try:
            if args.record:
                sinks.append(AnnotatedVideoWriter(args.record, fps=source.fps))
            if args.signal:
                sinks.append(SignalCSV(args.signal))
            if args.events:
                sinks.append(EventLog(args.events))
        except SinkError as e:
            return _fail(str(e))
        if not args.quiet:
            sinks.append(ConsolePrinter())
        found = EventList() if truths is not None else None
        if found is not None:
            sinks.append(found)
        info = pipe.engine_info()
        say(f"source: {source.name} at {source.fps:g} fps{' (live)' if source.live else ''}; tracker {args.tracker}; "
            f"engine {info.get('engine') or 'none'}"
            + (f" {info.get('precision', '')} on {info.get('device', '')}" if recognizer is not None else ""))
        code, summary = _loop(args, source, pipe, sinks, window)
        if source.end_reason and code == EXIT_OK and source.live:
            code = EXIT_SOURCE_LOST
    finally:
        for s in sinks:
            try:
                s.close()
            except Exception as e:  # closing one output must not hide the others
                log.error("closing %s failed: %s", type(s).__name__, e)
        source.close()
        if window:
            try:
                import cv2

                cv2.destroyAllWindows()
            except Exception:
                pass
    print_summary(summary)
    comparison = None
    if truths is not None:
        comparison = _compare(found.events, truths, source.fps, summary, truth_file)
    for s in sinks:
        path = getattr(s, "path", None)
        if path is not None:
            say(f"wrote {path}")
    if args.summary_json:
        import json
        from pathlib import Path

        Path(args.summary_json).parent.mkdir(parents=True, exist_ok=True)
        d = summary.to_dict()
        if comparison is not None:
            d["ground_truth"] = dict(comparison.to_dict(), file=str(truth_file))
        Path(args.summary_json).write_text(json.dumps(d, indent=2))
    return code


def _ground_truth(option: str | None, video: str | None):
    """(file, true events) from --ground-truth, else from <stem>.gt.jsonl beside the video;
    (None, None) when there is none. ValueError for an unusable --ground-truth file (a
    broken file found beside the video is only warned about)."""
    from pathlib import Path

    from realtime.events import EventFormatError, read_ground_truth

    if option:
        path = Path(option)
        if not path.is_file():
            raise ValueError(f"--ground-truth {option}: no such file")
    elif video:
        from train.synth import ground_truth_path

        path = ground_truth_path(video)
        if not path.is_file():
            return None, None
    else:
        return None, None
    try:
        return path, read_ground_truth(path)
    except (OSError, EventFormatError) as e:
        if option:
            raise ValueError(f"--ground-truth {option}: {e}") from None
        log.warning("%s: ground truth beside the video not used: %s", path, e)
        return None, None


def _compare(events, truths, fps: float, summary, truth_file):
    """Print the run against its ground truth (after the summary); returns the comparison."""
    from realtime.scoring import compare_to_truth

    rates = {round(float(t.fps), 3) for t in truths if t.fps}
    if fps and rates and any(abs(r - fps) > 0.01 * fps for r in rates):
        log.warning("%s was written for %s fps but the source runs at %g fps: frame numbers may not line up "
                    "(pass --fps to set the true rate)", truth_file, "/".join(f"{r:g}" for r in sorted(rates)), fps)
    comparison = compare_to_truth(events, truths, fps, until_frame=summary.frames + summary.dropped)
    print(comparison.format(getattr(truth_file, "name", str(truth_file))), flush=True)
    return comparison


def _stop_on_sigterm() -> None:
    """SIGTERM ends the run like Ctrl+C: the outputs are closed properly (an MP4 killed
    before its index is written cannot be played)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _loop(args, source, pipe, sinks, window: bool):
    """The frame loop (realtime.recording.drive) with the window's keys and the progress
    bar; returns (exit code, the run's summary)."""
    import cv2
    from tqdm import tqdm

    from realtime.recording import drive

    title = f"moext-live: {source.name}  (q quit, c recalibrate)"
    total = getattr(source, "header_frames", None)
    if args.max_frames and total:
        total = min(total, args.max_frames)
    bar = tqdm(total=total, unit="frame", disable=True if (args.quiet or source.live or window) else None,
               file=sys.stderr, dynamic_ncols=True)

    def on_result(r):
        bar.update(1)
        if window and r.overlay is not None:
            try:
                cv2.imshow(title, r.overlay)
                key = cv2.waitKey(1) & 0xFF
            except cv2.error as e:
                log.error("the window could not be shown (%s); run with --headless", e)
                return EXIT_USAGE
            if key in (ord("q"), 27):
                return EXIT_OK
            if key == ord("c"):
                pipe.recalibrate()
                log.warning("the spotter learns this face's calm level again")
        return None

    try:
        outcome = drive(source, pipe, sinks, on_result=on_result, max_frames=args.max_frames,
                        close_timeout=3.0 if source.live else 60.0)
    finally:
        bar.close()
    if outcome.interrupted:
        return EXIT_INTERRUPTED, outcome.summary
    return (outcome.stop if outcome.stop is not None else EXIT_OK), outcome.summary
