"""Command line of the live recogniser (``python run_live.py`` / ``moext-live``).

One loop for every source: read a frame, ``Pipeline.process`` it, hand the result to the
sinks (window, annotated video, signal CSV, event log, console), print a summary at the
end, and, when the input has a ground truth (--ground-truth, or <stem>.gt.jsonl beside the
video), each true event hit or missed and the false alarms (realtime.evaluate.scoring.compare_to_truth).
``--gradio`` starts the web demo and ``--bench`` the latency benchmark instead; both run the
same Pipeline.

Exit status: 0 finished (faults, if any, are in the summary); 2 an input, option or
output that cannot be used (the message says which and what to do); 3 the source was
lost mid-run (camera stalled with --on-stall exit, or retries used up); 130 interrupted.
"""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import threading
from pathlib import Path

import cv2
from tqdm import tqdm

from core import assets
from core.events import EventFormatError, read_ground_truth
from engines.recognizer import load_engine
from realtime.batch import cli as batch_cli
from realtime.bench import cli as bench_cli
from realtime.evaluate.scoring import compare_to_truth
from realtime.frontends.options import build_parser
from realtime.stages.recording import RecordingSettings, drive, make_pipeline
from realtime.stages.sinks import (
    AnnotatedVideoWriter, ConsolePrinter, EventList, EventLog, SignalCSV, SinkError, print_summary,
)
from realtime.stages.sources import SourceError, open_source
from train.synth import ground_truth_path

EXIT_OK, EXIT_USAGE, EXIT_SOURCE_LOST, EXIT_INTERRUPTED = 0, 2, 3, 130
log = logging.getLogger("realtime.frontends.cli")


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


def _bench(args) -> int:
    argv = []
    if args.sample or args.video:
        argv.append(str(assets.sample_path(args.sample)) if args.sample else args.video)
    elif args.camera is not None or args.images:
        return _fail("--bench runs on a recording: give --video PATH (or --sample, or nothing for the bench's "
                     "own 200 fps sample)")
    if args.fps:
        argv += ["--fps", str(args.fps)]
    argv += ["--engine", args.engine, "--runtime", args.runtime, "--tracker", args.tracker]
    if args.bench_out:
        argv += ["--out", args.bench_out]
    return int(bench_cli.main(argv) or 0)


def _gradio(args) -> int:
    if args.auth is not None and ":" not in args.auth:
        return _fail(f"--auth must be USER:PASSWORD, got {args.auth!r}")
    try:
        from realtime.frontends import webapp  # imports gradio (heavy: seconds): only --gradio pays for it
    except ModuleNotFoundError as e:
        if e.name and e.name.endswith("webapp"):
            return _fail("the web demo (realtime/frontends/webapp.py) is not part of this installation; "
                         "use the window (python run_live.py --camera 0) instead")
        raise
    return int(webapp.launch(args) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--batch" in argv:   # many recordings: the batch runner takes the rest of the command line
        i = argv.index("--batch")
        return batch_cli.main(argv[:i] + argv[i + 1:])
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
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    if args.max_frames is not None and args.max_frames <= 0:
        return _fail(f"--max-frames must be positive, got {args.max_frames}")
    if args.fps is not None and args.fps <= 0:
        return _fail(f"--fps must be a positive frame rate, got {args.fps}")
    if not (args.landmarks_hz >= 0 and math.isfinite(args.landmarks_hz)):
        return _fail(f"--landmarks-hz must be 0 (every frame) or a positive rate, got {args.landmarks_hz}")
    if not (args.motion_hz >= 0 and math.isfinite(args.motion_hz)):
        return _fail(f"--motion-hz must be 0 (every frame) or a positive rate, got {args.motion_hz}")
    if args.max_faces < 1:
        return _fail(f"--max-faces must be 1 or more (1: one subject, the largest face), got {args.max_faces}")
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
            recognizer, note = load_engine(args.engine, args.device, engine=args.runtime)
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
    if option:
        path = Path(option)
        if not path.is_file():
            raise ValueError(f"--ground-truth {option}: no such file")
    elif video:
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
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _loop(args, source, pipe, sinks, window: bool):
    """The frame loop (realtime.stages.recording.drive) with the window's keys and the progress
    bar; returns (exit code, the run's summary)."""
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
                        close_timeout=3.0 if source.live else 60.0, track_process=args.track_process)
    finally:
        bar.close()
    if outcome.interrupted:
        return EXIT_INTERRUPTED, outcome.summary
    return (outcome.stop if outcome.stop is not None else EXIT_OK), outcome.summary
