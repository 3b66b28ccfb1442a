"""Archives: spot and label every recording of a study (``python -m realtime.batch``).

This module is the command: its options, checking them, and the summary it prints. The
work is done by the package's other modules: realtime.batch.discovery (inputs ->
recordings), realtime.batch.job (one recording, its outputs and resume key),
realtime.batch.pool and realtime.batch.ray_runner (where the jobs run),
realtime.batch.runner (the run and manifest.csv), realtime.batch.tables (combined tables,
exports, report).

    python -m realtime.batch study/ --out results/              # every video under study/, all cores
    python -m realtime.batch study.csv --out results/ --jobs 4   # a manifest: path, subject, session, fps
    python -m realtime.batch "study/**/*.avi" --out results/ --ray --ray-address auto

Each recording goes through the live path exactly as ``run_live.py --video FILE`` analyses
a file (``realtime.stages.recording``: the same settings, read-ahead, pipeline, event log and
signal sinks), in worker processes (``--jobs N``) or Ray tasks (``--ray``). The one
per-recording function is ``realtime.batch.job.run_job``; ``python -m realtime.evaluate`` runs its
videos through it too (realtime.evaluate.runs).

Inputs: video files, folders (searched recursively: video files, and folders of frames),
globs, and CSV manifests with a ``path`` column and optional ``subject``, ``session``,
``fps`` (the true frame rate) and ``recording`` (an id) columns; relative paths are taken
from the manifest's folder. A recording's id is its path relative to the folder given (or
its file name); ``--subject-pattern`` fills subject / session from the id with a regular
expression's named groups when there is no manifest.

Outputs under ``--out DIR``:

    recordings/<id>/events.jsonl    the event log (core.events.Event, JSON lines)
    recordings/<id>/signal.csv      the per-frame motion signal (realtime.stages.sinks.SignalCSV)
    recordings/<id>/result.json     status, summary figures, error, the key it was made with
    manifest.csv                    every recording: done / failed / pending, error, key
    events.csv, events.parquet      every event of every done recording, with recording,
                                    subject and session columns
    recordings.csv, recordings.parquet   one row per recording (status, frames, events ...)
    report.md, report.html, plots/  counts per subject, class and kind; failures; throughput
    exports/elan/<id>.eaf           ELAN, a tier per face and kind (realtime.batch.exports)
    exports/megc2022_spotting.csv   MEGC 2022 spotting submission format
    exports/intervals.csv           plain interval table (BORIS-style column names)
    batch.json                      settings, throughput, peak memory of the parent and workers

Resume: a recording's outputs are written in ``.partial/`` and moved into ``recordings/``
in one rename once complete, ``result.json`` last; a recording counts as done only through
that file, and only while its key (the settings, the engine file and the input file's
size and first / last MiB) is unchanged. A second run skips those; failed recordings are
retried with ``--retry-failed``; ``--force`` redoes all. A run killed at any point leaves
nothing a later run would trust (leftovers in ``.partial/`` are removed next time).

Failures: a recording that cannot be opened, decodes only part-way (truncated), crashes
its worker or raises is listed with its error in manifest.csv, recordings.csv and the
report, and the batch goes on. A truncated recording's outputs up to where decoding
stopped stay in its folder but are left out of the combined tables.

Exit status: 0 every recording done; 1 the batch finished but some recordings failed
(listed); 2 bad input or options (the message says which and what to do), or an engine
that cannot be loaded; 130 interrupted (run the same command again to finish).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Sequence

from core.face import TRACKER_KINDS
from realtime.batch.discovery import BatchError, collect
from realtime.batch.job import EngineLoadError, engine_fingerprint
from realtime.batch.pool import quiet_native
from realtime.batch.ray_runner import ray_available
from realtime.batch.runner import BatchRun, output_lock, run_recordings
from realtime.batch.tables import EXPORTS, TIMING_COLUMNS, compare_outputs, write_outputs
from realtime.stages.multitrack import MAX_FACES
from realtime.stages.recording import RecordingSettings
from realtime.stages.tracker import LANDMARKS_HZ

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

EXAMPLES = """\
examples:
  python -m realtime.batch study/ --out results/                  # every video (and frame folder) under study/
  python -m realtime.batch study.csv --out results/ --jobs 4      # manifest: path,subject,session,fps
  python -m realtime.batch "study/**/*.avi" --fps 200 --out results/ --engine none
  python -m realtime.batch study/ --out results/ --subject-pattern "(?P<subject>sub\\d+)/(?P<session>ses\\d+)"
  python -m realtime.batch study/ --out results/ --ray                    # a local Ray runtime
  python -m realtime.batch study/ --out results/ --ray --ray-address auto # the Ray cluster this node is in
  python -m realtime.batch study/ --out results/ --retry-failed            # again: retry the failed ones only
  python -m realtime.batch --compare results_a/ results_b/                 # same tables apart from timing?
  python run_live.py --batch study/ --out results/ --jobs 2                # the same, from the front door

A second run with the same inputs and settings skips every finished recording; --force redoes
all. Outputs: manifest.csv (done / failed / pending), events.csv + .parquet, recordings.csv +
.parquet, report.md / report.html, exports/ (ELAN .eaf, MEGC 2022 spotting CSV, intervals CSV).
With --ray, inputs and --out must be at the same path on every node (shared storage) and the
project installed there (pip install -e ".[batch]"). Exit status: 0 all done, 1 some recordings
failed (listed), 2 bad input, 130 interrupted.
"""


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m realtime.batch",
        description="Spot and label every recording of a study through the live pipeline, on this machine's cores "
                    "or a Ray cluster, with combined tables, a report and ELAN / MEGC / interval exports. "
                    "Resumable: a second run skips what is done.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="*", metavar="INPUTS",
                    help="video files, folders (searched recursively), quoted globs, or CSV manifests "
                         "(columns: path, subject, session, fps, recording)")
    ap.add_argument("--out", metavar="DIR", help="output folder (created; a second run there resumes)")
    ap.add_argument("--fps", type=float, metavar="F",
                    help="true frame rate of every recording without one in its manifest row (high-speed files whose "
                         "header says 25/30; needed for folders of frames)")
    ap.add_argument("--subject-pattern", metavar="REGEX",
                    help="fill subject / session from each recording id (its path under the folder given) with the "
                         "named groups (?P<subject>...) and (?P<session>...)")
    run = ap.add_argument_group("where it runs")
    run.add_argument("--jobs", type=int, default=os.cpu_count() or 1, metavar="N",
                     help="worker processes (default: the machine's cores, %(default)s here); 1 = in this process")
    run.add_argument("--ray", action="store_true", help="spread recordings over a Ray cluster instead")
    run.add_argument("--ray-address", metavar="ADDRESS",
                     help="the cluster (auto, or host:port, or ray://host:10001); default: a local Ray runtime with "
                          "--jobs CPUs. Implies --ray")
    res = ap.add_argument_group("resume")
    res.add_argument("--retry-failed", action="store_true", help="analyse failed recordings again (default: skip them "
                                                                   "while they and the settings are unchanged)")
    res.add_argument("--force", action="store_true", help="redo every recording")
    model = ap.add_argument_group("analysis (as run_live.py)")
    model.add_argument("--engine", default="auto", metavar="PATH|URL|auto|none",
                       help="weights or engine file (.safetensors, .onnx, .plan), or a server (triton://HOST:PORT/MODEL, python -m engines.serve); auto = the demo weights (default); "
                            "none = spotting only")
    model.add_argument("--device", default="auto", help="auto | cpu | cuda[:i] (default auto)")
    model.add_argument("--tracker", choices=TRACKER_KINDS, default="fast", help="face tracker (default fast)")
    model.add_argument("--max-faces", type=int, default=MAX_FACES, metavar="N",
                       help=f"faces followed at once, each with its own spotter (default {MAX_FACES}); 1 = the largest")
    model.add_argument("--landmarks-hz", type=float, default=LANDMARKS_HZ, metavar="HZ",
                       help=f"68-point landmarks at most this often per second of video (default {LANDMARKS_HZ:g}); "
                            "0 = every frame")
    model.add_argument("--motion-hz", type=float, default=0.0, metavar="HZ",
                       help="motion samples at most this often per second of video (default 0: every frame)")
    model.add_argument("--causal", action="store_true", help="no look-ahead: analyse as a camera would")
    model.add_argument("--me-rule", choices=("megc", "casme"), default="megc", help="micro/macro rule (default megc)")
    model.add_argument("--calibration", type=float, metavar="S", help="the spotter's warm start in seconds")
    outs = ap.add_argument_group("outputs")
    outs.add_argument("--exports", default=",".join(EXPORTS), metavar="LIST",
                      help=f"comma-separated: {', '.join(EXPORTS)}, or none (default all)")
    outs.add_argument("--report", choices=("md", "html", "both", "none"), default="both",
                      help="report.md and/or report.html with plots (default both)")
    outs.add_argument("--headless", action="store_true", help=argparse.SUPPRESS)   # run_live.py habit: batches never show a window
    ap.add_argument("--compare", nargs=2, metavar=("OUT_A", "OUT_B"),
                    help="compare two finished batches' events.csv and recordings.csv apart from timing columns, "
                         "and stop")
    ap.add_argument("--quiet", action="store_true", help="no progress bar; only failures and the summary")
    ap.add_argument("--verbose", action="store_true", help="a line per finished recording")
    ap.add_argument("--log-level", default="ERROR", type=str.upper, choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                    help="log level of the pipeline in the workers (default error: problems reach the tables)")
    return ap


def _stop_on_sigterm() -> None:
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _fail(msg: str, code: int = EXIT_USAGE) -> int:
    print(f"error: {msg}", file=sys.stderr, flush=True)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    quiet_native(getattr(logging, args.log_level))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    if args.compare:
        try:
            problems = compare_outputs(*args.compare)
        except BatchError as e:
            return _fail(str(e))
        if problems:
            print("the tables differ (timing columns aside):\n  " + "\n  ".join(problems))
            return EXIT_FAILED
        print(f"events.csv and recordings.csv agree apart from the timing columns ({', '.join(sorted(TIMING_COLUMNS))})")
        return EXIT_OK
    if not args.out:
        return _fail("--out DIR is required: the folder for the results (a second run there resumes)")
    if args.jobs < 1:
        return _fail(f"--jobs must be at least 1, got {args.jobs}")
    if args.fps is not None and not (math.isfinite(args.fps) and args.fps > 0):
        return _fail(f"--fps must be a positive frame rate, got {args.fps}")
    if not (args.landmarks_hz >= 0 and math.isfinite(args.landmarks_hz)):
        return _fail(f"--landmarks-hz must be 0 (every frame) or a positive rate, got {args.landmarks_hz}")
    if not (args.motion_hz >= 0 and math.isfinite(args.motion_hz)):
        return _fail(f"--motion-hz must be 0 (every frame) or a positive rate, got {args.motion_hz}")
    if args.max_faces < 1:
        return _fail(f"--max-faces must be 1 or more (1: one subject, the largest face), got {args.max_faces}")
    exports = tuple(x.strip() for x in args.exports.split(",") if x.strip())
    if exports == ("none",):
        exports = ()
    bad = [x for x in exports if x not in EXPORTS]
    if bad:
        return _fail(f"--exports {args.exports}: unknown {bad}; choose from {', '.join(EXPORTS)} or none")
    use_ray = args.ray or bool(args.ray_address)
    if use_ray:
        ok, why = ray_available()
        if not ok:
            return _fail(f"--ray: {why}")
    out = Path(args.out)
    try:
        recordings = collect(args.inputs, fps=args.fps, subject_pattern=args.subject_pattern, skip=[out])
        settings = RecordingSettings.from_args(args)
        engine_fingerprint(settings.engine)
    except BatchError as e:
        return _fail(str(e))
    _stop_on_sigterm()
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    say(f"{len(recordings)} recording(s) -> {out}; engine {settings.engine}, tracker {settings.tracker}, "
        + ("Ray " + (args.ray_address or "local runtime") if use_ray else f"{args.jobs} process(es)"))
    level = getattr(logging, args.log_level)
    command = "python -m realtime.batch " + " ".join(sys.argv[1:] if argv is None else list(argv))
    if out.exists() and not out.is_dir():
        return _fail(f"--out {out}: is a file; give a folder (it is created if missing)")
    try:
        with output_lock(out):
            run = run_recordings(recordings, settings, out, jobs=args.jobs, ray=use_ray,
                                 ray_address=args.ray_address, force=args.force, retry_failed=args.retry_failed,
                                 progress=not args.quiet, verbose=args.verbose, log_level=level, lock=False)
            paths = write_outputs(run, settings, exports=exports, report=args.report, command=command)
    except (BatchError, EngineLoadError) as e:
        return _fail(str(e))
    except OSError as e:
        return _fail(f"--out {out}: {e}; choose a writable folder")
    except KeyboardInterrupt:
        print(f"interrupted: the finished recordings are kept (manifest: {out / 'manifest.csv'}); run the same "
              "command again to finish the rest", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    summary = json.loads(paths["batch.json"].read_text())
    print_summary(run, summary, paths)
    return EXIT_FAILED if summary["recordings"]["failed"] else EXIT_OK


def print_summary(run: BatchRun, summary: dict, paths: dict) -> None:
    r, t, m = summary["recordings"], summary["this_run"], summary["memory_mb"]
    print(f"recordings {r['total']}: {r['done']} done, {r['failed']} failed, {r['pending']} pending "
          f"({r['analysed_this_run']} analysed now, {r['skipped_unchanged']} unchanged and skipped)")
    if r["analysed_this_run"]:
        ex = run.executor
        how = ex.get("kind", "?") + (f" x{ex['workers']}" if ex.get("workers") else "") + (
            f" ({ex.get('cpus')} CPUs, {ex.get('nodes')} node(s), {ex.get('address')})" if ex.get("kind") == "ray" else "")
        dash = lambda v: "-" if v is None else v  # noqa: E731
        print(f"this run: {t['frames']} frames in {t['wall_s']:.1f} s on {how}: {dash(t['recordings_per_min'])} "
              f"recordings/min, {dash(t['frames_per_s'])} frames/s; peak memory: parent {m['parent_peak_rss']} MB, "
              f"workers up to {dash(m['worker_peak_rss_max'])} MB")
    else:
        print("nothing to analyse: every recording is finished and unchanged (--force redoes them"
              + (", --retry-failed retries the failed ones)" if r["failed"] else ")"))
    for f in summary["failed"]:
        print(f"failed: {f['recording']}: {f['error']}")
    if summary["no_face"]:
        print(f"warning: no face in any frame of {len(summary['no_face'])} done recording(s): "
              + ", ".join(summary["no_face"][:10]) + (" ..." if len(summary["no_face"]) > 10 else ""))
    print("wrote " + ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    raise SystemExit(main())
