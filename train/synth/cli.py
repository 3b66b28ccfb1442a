"""The command line of the generator: ``python -m train.synth identities|clip|clips|sequences|pairs|strip``.
(``clip`` and ``clips`` take ``--faces 2|3`` for several people side by side: train.synth.multiface.)

Owns the argument parser of each subcommand (names, flags, defaults and help), the
examples shown by --help, the clips.csv manifests of ``clips`` (standard and hard set) and
how errors reach the user (``error: ...`` and a non-zero exit). Every file it writes is
made by the generator modules (clips, hard, sequences, pairs, strip).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from core.events import TRUTH_KINDS
from core.face import NoFaceError
from train.synth.clips import write_clip
from train.synth.config import HARD_FPS, HARD_SECONDS, HARD_TYPES, SETS
from train.synth.hard import write_hard_clip
from train.synth.identities import IDENTITIES, identities_for
from train.synth.multiface import FACE_COUNTS, default_size, pick_identities, write_multi_clip
from train.synth.output import CODECS, write_csv
from train.synth.pairs import make_pairs
from train.synth.rig import CLASS_AUS
from train.synth.sequences import write_sequences
from train.synth.strip import make_strip
from train.synth.timing import MODES, _frames

DESCRIPTION = "Synthetic micro-expressions from real faces: labelled clips and aligned training pairs."


EXAMPLES = """examples:
  python -m train.synth identities
  python -m train.synth clip --identity sample_video --fps 200 --seconds 10 --out clips/demo.avi
  python -m train.synth clip --events distractors --fps 30 --out clips/distractors.mp4
  python -m train.synth clips --split eval --n 12 --distractor-only 2 --fps 200 --out clips/eval200
  python -m train.synth clips --split eval --n 12 --fps 30 --out clips/eval30
  python -m train.synth clips --set hard --split eval --n 12 --distractor-only 2 --fps 30 --seed 0 --out clips/hard30
  python -m train.synth clip --set hard --type talking --fps 60 --seconds 10 --out clips/talking.avi
  python -m train.synth clip --faces 2 --fps 30 --seconds 12 --out clips/two_faces.avi
  python -m train.synth clips --faces 2 --split eval --n 4 --fps 200 --seed 5 --out clips/faces200
  python -m train.synth sequences --n 20 --fps 200 --seed 0 --out clips/seq200
  python -m train.synth pairs --split train --n-per-class 600 --macro-per-class 300 --out cache/synth
  python -m train.synth strip --identity sample_video --out docs/synth_strip.png

Each clip is written with its ground truth beside it (clip.avi -> clip.gt.jsonl, one JSON
object per event: onset_frame, apex_frame, offset_frame, kind, label, fps, onset_t, apex_t,
offset_t, au, source; hard clips and sequences add amplitude, in 224-crop px).
--set standard (default): kinds micro|macro|blink; the first 1 s is neutral and events are
>= 1 s apart. --set hard (20 s by default, a webcam's look): kinds micro|macro|blink|wink|
gaze|speech|head|light; no neutral start, talking with MEs in its pauses, macro-expressions
held >= 1 s, nods / turns, gaze shifts, winks, a lighting sweep in every other clip, MEs from
tiny to clear; --distractor-only K makes the last K clips talking-only and lighting-only in
turn (no expression). Micro or macro is core.events.expression_kind's "megc" rule.
sequences: DIR/seq_000/img0001.jpg ... (run_live.py --images DIR/seq_000 --fps 200), one ME
each with its onset in the first 300 ms, DIR/seq_000.gt.jsonl (frame 0 = img0001.jpg) and
DIR/sequences.csv.
--faces 2|3 (standard set): several real faces side by side (one 640x480 panel each, soft
seams, one camera), each with its own events (at least a macro-expression, a blink and two
MEs) and head drift; every ground-truth line adds face_box = [x, y, width, height] of its
face at the apex (frame pixels, the tracker's box convention). Scored per face by
python -m realtime.evaluate.
"""


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 640x480, got {text!r}") from None
    return w, h


def _cmd_identities(args) -> None:
    for name, ident in IDENTITIES.items():
        print(f"{name:14s} person={ident.person:14s} split={ident.split:5s} {ident.source}")
    print("classes (action units): " + "; ".join(f"{k}: {v}" for k, v in CLASS_AUS.items()))


def _seconds(args) -> float:
    if args.seconds is not None:
        return args.seconds
    return HARD_SECONDS if args.set == "hard" else 10.0


def _check_faces(args) -> None:
    """--faces > 1: the standard set's mixed events only; the frame defaults to one 640x480
    panel per face."""
    if args.faces == 1:
        args.size = args.size or (640, 480)
        return
    if args.set != "standard" or args.events != "mixed" or getattr(args, "distractor_only", 0):
        raise SystemExit(f"--faces {args.faces}: multi-face clips are standard-set clips with mixed events (each face "
                         "holds a macro-expression, a blink and MEs); drop --set hard, --events and --distractor-only")
    args.size = args.size or default_size(args.faces)


def _cmd_clip(args) -> None:
    t0, c0 = time.perf_counter(), time.process_time()
    _check_faces(args)
    seconds = _seconds(args)
    if args.faces > 1:
        names = identities_for(args.identities) if args.identities else pick_identities(args.faces)
        if len(names) != args.faces:
            raise SystemExit(f"--identities names {len(names)} faces but --faces is {args.faces}")
        video, gt, truths = write_multi_clip(args.out, names, args.fps, seconds, args.size, args.seed)
    elif args.set == "hard":
        video, gt, truths, _ = write_hard_clip(args.out, args.identity, args.fps, seconds, args.type, args.size,
                                               args.seed)
    else:
        video, gt, truths = write_clip(args.out, args.identity, args.fps, seconds, args.events, args.size,
                                       args.seed)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = _frames(seconds, args.fps)
    print(f"wrote {video} ({n} frames, {args.size[0]}x{args.size[1]} at {args.fps:g} fps) and {gt} "
          f"in {dt:.1f} s wall, {cpu:.1f} s CPU ({n / dt:.0f} frames/s)")
    for t in truths:
        box = f" face {t.face_box}" if t.face_box is not None else ""
        print(f"  {t.kind:5s} {t.label or '-':8s} {t.au:16s} frames {t.onset_frame}-{t.apex_frame}-{t.offset_frame} "
              f"({(t.offset_frame - t.onset_frame) / t.fps * 1000:.0f} ms){box}")


HARD_COLUMNS = ("video", "ground_truth", "identity", "person", "split", "fps", "seconds", "seed", "set",
                "clip_type", "start") + tuple(f"n_{k}" for k in TRUTH_KINDS) + ("me_amplitude_min",
                                                                                  "me_amplitude_max")


def _cmd_clips_hard(args, names: list[str], out: Path) -> None:
    """The hard set: clip i is identity names[i % len], seed args.seed * 10007 + i; the last
    --distractor-only clips are talking-only, lighting-only, talking-only, ...; the others
    are "hard" clips, every other one (odd i) with a lighting sweep."""
    seconds = _seconds(args)
    first_distractor = args.n - args.distractor_only
    manifest = []
    for i in tqdm(range(args.n), desc="hard clips", unit="clip"):
        identity = names[i % len(names)]
        clip_type = ("talking", "lighting")[(i - first_distractor) % 2] if i >= first_distractor else "hard"
        seed = args.seed * 10007 + i
        video, gt, truths, info = write_hard_clip(out / f"clip_{i:03d}{args.ext}", identity, args.fps, seconds,
                                                  clip_type, args.size, seed,
                                                  light=(i % 2 == 1) if clip_type == "hard" else None)
        kinds = [t.kind for t in truths]
        me = [t.amplitude for t in truths if t.kind == "micro"]
        row = {"video": video.name, "ground_truth": gt.name, "identity": identity,
               "person": IDENTITIES[identity].person, "split": IDENTITIES[identity].split, "fps": args.fps,
               "seconds": seconds, "seed": seed, "set": "hard", "clip_type": clip_type, "start": info["start"]}
        row.update({f"n_{k}": kinds.count(k) for k in TRUTH_KINDS})
        row.update({"me_amplitude_min": min(me) if me else "", "me_amplitude_max": max(me) if me else ""})
        manifest.append(row)
    write_csv(out / "clips.csv", manifest, HARD_COLUMNS)
    print(f"wrote {args.n} hard clips and {out / 'clips.csv'}")


MULTI_COLUMNS = ("video", "ground_truth", "faces", "identities", "persons", "split", "fps", "seconds", "seed",
                 "width", "height", "n_micro", "n_macro", "n_blink")


def _cmd_clips_multi(args, out: Path) -> None:
    """Multi-face clips: clip i shows pick_identities(faces, split or names, start=i) left to
    right (different people first), seed args.seed * 10007 + i."""
    seconds = _seconds(args)
    manifest = []
    for i in tqdm(range(args.n), desc=f"{args.faces}-face clips", unit="clip"):
        names = pick_identities(args.faces, args.identities or args.split, start=i)
        seed = args.seed * 10007 + i
        video, gt, truths = write_multi_clip(out / f"clip_{i:03d}{args.ext}", names, args.fps, seconds, args.size,
                                             seed)
        kinds = [t.kind for t in truths]
        manifest.append({"video": video.name, "ground_truth": gt.name, "faces": args.faces,
                         "identities": "+".join(names), "persons": "+".join(IDENTITIES[n].person for n in names),
                         "split": "+".join(sorted({IDENTITIES[n].split for n in names})), "fps": args.fps,
                         "seconds": seconds, "seed": seed, "width": args.size[0], "height": args.size[1],
                         "n_micro": kinds.count("micro"), "n_macro": kinds.count("macro"),
                         "n_blink": kinds.count("blink")})
    write_csv(out / "clips.csv", manifest, MULTI_COLUMNS)
    print(f"wrote {args.n} clips of {args.faces} faces and {out / 'clips.csv'}")


def _cmd_clips(args) -> None:
    names = identities_for(args.identities or args.split)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not 0 <= args.distractor_only <= args.n:
        raise SystemExit(f"--distractor-only must be between 0 and --n ({args.n}), got {args.distractor_only}")
    _check_faces(args)
    if args.faces > 1:
        _cmd_clips_multi(args, out)
        return
    if args.set == "hard":
        _cmd_clips_hard(args, names, out)
        return
    args.seconds = _seconds(args)
    manifest = []
    for i in tqdm(range(args.n), desc="clips", unit="clip"):
        identity = names[i % len(names)]
        mode = "distractors" if i >= args.n - args.distractor_only else args.events
        video, gt, truths = write_clip(out / f"clip_{i:03d}{args.ext}", identity, args.fps, args.seconds, mode,
                                       args.size, args.seed * 10007 + i)
        kinds = [t.kind for t in truths]
        manifest.append({"video": video.name, "ground_truth": gt.name, "identity": identity,
                         "person": IDENTITIES[identity].person, "split": IDENTITIES[identity].split,
                         "fps": args.fps, "seconds": args.seconds, "seed": args.seed * 10007 + i, "events": mode,
                         "n_micro": kinds.count("micro"), "n_macro": kinds.count("macro"),
                         "n_blink": kinds.count("blink")})
    write_csv(out / "clips.csv", manifest, list(manifest[0]) if manifest else ["video"])
    print(f"wrote {args.n} clips and {out / 'clips.csv'}")


def _cmd_sequences(args) -> None:
    t0 = time.perf_counter()
    rows = write_sequences(args.out, args.n, args.fps, args.seed, args.identities or args.split, args.size)
    frames = sum(r["frames"] for r in rows)
    print(f"wrote {len(rows)} sequences ({frames} frames) and {Path(args.out) / 'sequences.csv'} "
          f"in {time.perf_counter() - t0:.1f} s")


def _cmd_pairs(args) -> None:
    macro = args.n_per_class // 2 if args.macro_per_class is None else args.macro_per_class
    t0 = time.perf_counter()
    rows = make_pairs(args.identities or args.split, args.n_per_class, args.seed, args.out, macro_per_class=macro,
                      align=args.align)
    print(f"wrote {len(rows)} pairs to {args.out} in {time.perf_counter() - t0:.1f} s")


def _cmd_strip(args) -> None:
    print(f"wrote {make_strip(args.out, args.identity, args.seed, args.amplitude)}")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m train.synth", description=DESCRIPTION,
                                 epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    sp = sub.add_parser("identities", help="list the face stills, their person, split and licence")
    sp.set_defaults(func=_cmd_identities)

    def clip_args(p, out_default):
        p.add_argument("--set", default="standard", choices=SETS,
                       help="standard: 1 s neutral start, large MEs, macro + blink distractors; hard: what real "
                            "footage does (talking, nods / turns, gaze, winks, light sweeps, tiny MEs, a webcam)")
        p.add_argument("--fps", type=float, default=200.0,
                       help="frame rate (default 200; the hard set is made and tested for "
                            f"{', '.join(f'{f:g}' for f in HARD_FPS)})")
        p.add_argument("--seconds", type=float, default=None, help="clip length (default 10; hard set 20)")
        p.add_argument("--size", type=_size, default=None,
                       help="frame size WxH (default 640x480; with --faces N, N*640x480)")
        p.add_argument("--faces", type=int, default=1, choices=(1,) + FACE_COUNTS,
                       help="people side by side in the frame, each with their own events; ground truth per face "
                            "(face_box). Standard set, mixed events (default 1)")
        p.add_argument("--events", default="mixed", choices=MODES,
                       help="standard set: mixed: micro + macro + blink; micro only; distractors: macro + blink; "
                            "none (the hard set ignores it)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--out", default=out_default)

    sp = sub.add_parser("clip", help="one clip + ground truth", epilog=EXAMPLES,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("--identity", default="sample_video", choices=list(IDENTITIES))
    sp.add_argument("--identities", help="--faces N: N comma-separated identity names, left to right (default: "
                                         "evaluation identities, different people first)")
    sp.add_argument("--type", default="hard", choices=HARD_TYPES,
                    help="hard set only: hard (everything), talking (speech + blinks), lighting (light sweeps)")
    clip_args(sp, "clips/synth_clip.avi")
    sp.set_defaults(func=_cmd_clip)

    sp = sub.add_parser("clips", help="a folder of clips + ground truth + clips.csv", epilog=EXAMPLES,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("--split", default="eval", choices=("train", "eval", "all"))
    sp.add_argument("--identities", help="comma-separated identity names (overrides --split)")
    sp.add_argument("--n", type=int, default=10, help="number of clips (identities are cycled)")
    sp.add_argument("--distractor-only", type=int, default=0,
                    help="how many of the clips hold only distractors (standard: macro + blink; hard: "
                         "talking-only and lighting-only in turn)")
    sp.add_argument("--ext", default=".avi", choices=tuple(CODECS), help=".avi = MJPG, .mp4 = mp4v")
    clip_args(sp, "clips/synth")
    sp.set_defaults(func=_cmd_clips)

    sp = sub.add_parser("sequences", help="dataset-style (CASME II) folders of JPEG frames, one ME each",
                        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("--split", default="eval", choices=("train", "eval", "all"))
    sp.add_argument("--identities", help="comma-separated identity names (overrides --split)")
    sp.add_argument("--n", type=int, default=10, help="number of sequences (identities are cycled)")
    sp.add_argument("--fps", type=float, default=200.0, help="frame rate (default 200)")
    sp.add_argument("--size", type=_size, default=(640, 480), help="frame size WxH (default 640x480)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--out", default="clips/sequences")
    sp.set_defaults(func=_cmd_sequences)

    sp = sub.add_parser("pairs", help="aligned onset/apex crops in the crop-cache format", epilog=EXAMPLES,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("--split", default="train", choices=("train", "eval", "all"))
    sp.add_argument("--identities", help="comma-separated identity names (overrides --split)")
    sp.add_argument("--n-per-class", type=int, default=500, help="micro pairs per class (default 500)")
    sp.add_argument("--macro-per-class", type=int, default=None,
                    help="macro pseudo-apex pairs per class (default: half of --n-per-class)")
    sp.add_argument("--align", default="carry", choices=("carry", "detect"),
                    help="carry: still landmarks moved by the known pose (fast); detect: dlib on every onset")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--out", default="cache/synth")
    sp.set_defaults(func=_cmd_pairs)

    sp = sub.add_parser("strip", help="PNG of onset / apex / difference / flow per class")
    sp.add_argument("--identity", default="sample_video", choices=list(IDENTITIES))
    sp.add_argument("--amplitude", type=float, default=3.0, help="apex displacement, px at jaw width 160")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--out", default="docs/synth_strip.png")
    sp.set_defaults(func=_cmd_strip)

    args = ap.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, NoFaceError, OSError) as e:
        raise SystemExit(f"error: {e}") from None
