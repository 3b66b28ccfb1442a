"""The README's overlay screenshot, from a real run: one annotated frame saved shortly
after the first event appeared (its label on screen, the bump in the curve).

    python -m train.synth clip --fps 200 --seconds 4 --events micro --out clips/shot.avi
    python -m realtime.frontends.snapshot clips/shot.avi --out docs/overlay.png
    python -m train.synth clip --faces 2 --fps 200 --seconds 10 --seed 5 --out clips/two.avi
    python -m realtime.frontends.snapshot clips/two.avi --faces 2 --out docs/overlay_faces.png

A front end like run_live.py: it opens the source, loads the engine
(``engines.recognizer.load_engine``), runs the same ``Pipeline`` and writes the overlay
that ``realtime.stages.overlay`` drew for that frame.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import cv2

from engines.recognizer import load_engine
from realtime.stages.pipeline import Pipeline, PipelineConfig
from realtime.stages.sources import open_source

log = logging.getLogger("realtime.frontends.snapshot")


def snapshot(video, out, *, fps: float | None = None, engine: str = "auto", device: str = "auto",
             after_ms: float = 120.0, tracker: str = "fast", faces: int = 1) -> dict:
    """Run ``video`` through the live pipeline and save the annotated frame ``after_ms``
    after the first event appeared (its label on screen, the bump in the curve); with
    ``faces`` N > 1, after events of N different faces appeared (each face's label on it).

    Returns what was saved: frame index, event, engine. Raises RuntimeError if no event."""
    recognizer, note = load_engine(engine, device)
    if recognizer is None and engine == "auto":   # demo weights missing: spotting only, say so
        log.warning(note)
    with open_source(video=video, fps=fps) as src:
        pipe = Pipeline.for_source(src, PipelineConfig(tracker=tracker, engine="none" if recognizer is None else engine),
                                   recognizer=recognizer)
        first_t, saved, labelled = None, None, set()
        for frame in src:
            r = pipe.process(frame)
            labelled |= {e.face_id for e in r.new_events}
            if first_t is None and len(labelled) >= faces:
                first_t = r.t
            if first_t is not None and r.t - first_t >= after_ms / 1000.0 and r.overlay is not None:
                out = Path(out)
                out.parent.mkdir(parents=True, exist_ok=True)
                if not cv2.imwrite(str(out), r.overlay):
                    raise RuntimeError(f"{out}: could not write the image; use a .png path in a writable folder")
                saved = {"frame": r.index, "t": r.t, "event": pipe.last_event.to_dict(), "engine": pipe.engine_info()}
                break
        pipe.close(wait=False)
    if saved is None:
        raise RuntimeError(f"{video}: no event was spotted{f' on {faces} faces' if faces > 1 else ''}, so there is "
                           "nothing to show; use a clip with an expression after the first second "
                           "(python -m train.synth clip ...)")
    return saved


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description="Save one annotated frame of a real run, shortly after the first event (the README's "
                    "overlay screenshot).",
        epilog="examples:\n  python -m train.synth clip --fps 200 --seconds 4 --events micro --out clips/shot.avi\n"
               "  python -m realtime.frontends.snapshot clips/shot.avi --out docs/overlay.png\n"
               "  python -m realtime.frontends.snapshot clips/two.avi --faces 2 --out docs/overlay_faces.png",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video")
    ap.add_argument("--out", default="docs/overlay.png")
    ap.add_argument("--fps", type=float, help="true frame rate if the header is wrong")
    ap.add_argument("--engine", default="auto", help="auto | checkpoint/engine path | none")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--after-ms", type=float, default=120.0, help="source time after the first event (default 120)")
    ap.add_argument("--faces", type=int, default=1, metavar="N",
                    help="wait for events on N different faces (default 1)")
    args = ap.parse_args(argv)
    info = snapshot(args.video, args.out, fps=args.fps, engine=args.engine, device=args.device,
                    after_ms=args.after_ms, faces=args.faces)
    e = info["event"]
    print(f"wrote {args.out}: frame {info['frame']}, event {e['kind']} {e['label']} "
          f"(frames {e['onset_frame']}-{e['apex_frame']}-{e['offset_frame']}), engine {info['engine'].get('engine')}")
    print(json.dumps(info["engine"], default=str)[:400])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
