#!/usr/bin/env python
"""A generated study for the archive demonstration (README, "Archives"): N recordings of
the generator's evaluation identities at mixed frame rates, spread over subjects and
sessions, plus one corrupt file (random bytes) and one truncated one (a valid .avi cut in
half), and the manifest (path, subject, session, fps) that python -m realtime.batch reads.

    python scripts/make_archive_demo.py --out /tmp/archive --n 40 --seconds 3

Recording i is subject sub{i % subjects + 1:02d}, session ses{i // subjects % 2 + 1}, at
--fps[i % len(fps)]; the last two are the corrupt and the truncated one. Deterministic
from --seed.
"""
from __future__ import annotations

import argparse
import csv
import os
import random
import sys
from pathlib import Path

from tqdm import tqdm

from train.synth import eval_identities, write_clip

EXAMPLES = """examples:
  python scripts/make_archive_demo.py --out /tmp/archive                    # 40 recordings, 3 s, 30 / 60 fps
  python scripts/make_archive_demo.py --out /tmp/small --n 6 --fps 30 --seconds 2
  python -m realtime.batch /tmp/archive/study.csv --out /tmp/archive/out --jobs 2
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=EXAMPLES,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for the recordings and study.csv")
    ap.add_argument("--n", type=int, default=40, help="recordings in all, the corrupt and truncated included "
                                                      "(default 40)")
    ap.add_argument("--fps", default="30,60", help="comma-separated frame rates, used in turn (default 30,60)")
    ap.add_argument("--seconds", type=float, default=3.0, help="length of each recording (default 3)")
    ap.add_argument("--subjects", type=int, default=8, help="subjects (default 8)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.n < 3:
        ap.error("--n must be at least 3 (one good recording, the corrupt and the truncated one)")
    try:
        rates = [float(x) for x in args.fps.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--fps {args.fps!r}: give numbers, e.g. 30,60")
    if not rates or min(rates) <= 0 or args.seconds <= 0 or args.subjects < 1:
        ap.error("--fps, --seconds and --subjects must be positive")

    out = Path(args.out)
    (out / "recordings").mkdir(parents=True, exist_ok=True)
    people = eval_identities()
    rng = random.Random(args.seed)
    rows = []
    good = args.n - 2
    for i in tqdm(range(good), desc="recordings", unit="clip", file=sys.stderr):
        fps = rates[i % len(rates)]
        subject = f"sub{i % args.subjects + 1:02d}"
        session = f"ses{i // args.subjects % 2 + 1}"
        path = out / "recordings" / f"{subject}_{session}_{i:03d}.avi"
        write_clip(path, identity=people[i % len(people)], fps=fps, seconds=args.seconds,
                   events=rng.choice(["mixed", "micro", "micro", "distractors"]), seed=args.seed * 1000 + i)
        rows.append((path, subject, session, fps))
    corrupt = out / "recordings" / "sub01_ses2_corrupt.avi"
    corrupt.write_bytes(random.Random(args.seed).randbytes(64_000))
    donor = rows[0][0].read_bytes()
    truncated = out / "recordings" / "sub02_ses2_truncated.avi"
    truncated.write_bytes(donor[: len(donor) // 2])
    rows += [(corrupt, "sub01", "ses2", rates[0]), (truncated, "sub02", "ses2", rows[0][3])]
    with open(out / "study.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "subject", "session", "fps"])
        for path, subject, session, fps in rows:
            w.writerow([os.path.relpath(path, out), subject, session, f"{fps:g}"])
    print(f"wrote {len(rows)} recordings ({good} good at {', '.join(f'{r:g}' for r in rates)} fps, 1 corrupt, "
          f"1 truncated) and {out / 'study.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
