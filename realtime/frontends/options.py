"""The command line of run_live.py (``moext-live``): every option, its help and the examples.

One definition shared by the front ends that take these options: the live loop
(``realtime.frontends.cli``) and the browser demo when started on its own
(``python -m realtime.frontends.webapp``), so that a flag means the same in both.
"""
from __future__ import annotations

import argparse

from core import assets
from core.face import TRACKER_KINDS
from engines.recognizer import CHECKPOINT_ENGINES
from realtime.stages.multitrack import MAX_FACES
from realtime.stages.tracker import LANDMARKS_HZ

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


def build_parser() -> argparse.ArgumentParser:
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
                          "100 fps, with its ground truth; core/assets/micro_sample.mp4) or smile (a real "
                          "30 fps clip of a man talking who ends in a broad smile; core/assets/single_face.mp4)")
    src.add_argument("--fps", type=float, metavar="F",
                     help="true frame rate: overrides a video header (high-speed recordings often say 25/30); "
                          "required with --images")
    src.add_argument("--width", type=int, help="camera: requested frame width")
    src.add_argument("--height", type=int, help="camera: requested frame height")
    src.add_argument("--camera-fps", type=float, metavar="F", help="camera: requested frame rate")
    src.add_argument("--realtime", action="store_true",
                     help="play a video at its own rate like a camera (stale frames dropped and counted)")
    src.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    src.add_argument("--track-process", action="store_true",
                     help="a recording (video or frames): decode and track it in a second process ahead of the "
                          "frame loop (realtime.stages.trackproc; same results, about 280 MB more memory; pays "
                          "on more than two cores); cameras and --realtime are always tracked in the loop")
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
    model.add_argument("--engine", default="auto", metavar="PATH|URL|auto|none",
                       help="weights or engine file (.safetensors, .onnx, .plan), or a server (triton://HOST:PORT/MODEL, python -m engines.serve); auto = the bundled demo weights "
                            "on the best engine here (default); none = spotting only")
    model.add_argument("--runtime", choices=CHECKPOINT_ENGINES, default="best",
                       help="for weights (.safetensors, auto): the engine that runs them (default best: the GPU's "
                            "CUDA graphs, else ONNX Runtime fp32); openvino-bf16 / openvino-int8 need the openvino "
                            "extra and are fast on CPUs with AMX or AVX-512 (check parity with python -m "
                            "engines.bench first)")
    model.add_argument("--tracker", choices=TRACKER_KINDS, default="fast",
                       help="face tracker: fast (BlazeFace + dlib 68 points, default), dlib (the paper's HOG "
                            "detector), mediapipe (BlazeFace + face mesh)")
    model.add_argument("--max-faces", type=int, default=MAX_FACES, metavar="N",
                       help=f"follow every face in the frame, up to N, each with its own spotter (default "
                            f"{MAX_FACES}); 1 = one subject, the largest face")
    model.add_argument("--landmarks-hz", type=float, default=LANDMARKS_HZ, metavar="HZ",
                       help=f"68-point landmarks at most this many times per second of source time (default "
                            f"{LANDMARKS_HZ:g}: every 4th frame at 200 fps); 0 = every frame")
    model.add_argument("--motion-hz", type=float, default=0.0, metavar="HZ",
                       help="motion samples (flow + spotter) at most this many times per second of source time "
                            "(default 0: every frame); 100 measures a 200 fps stream on every 2nd frame: ~1 ms less "
                            "CPU per frame, at a price in spotting (README, \"Latency benchmark\")")
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
