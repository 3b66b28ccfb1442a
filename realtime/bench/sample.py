"""The benchmark's default input: a 200 fps, 640x480 clip with known micro-expressions.

No high-speed recording of a labelled micro-expression can ship with the project
(DATASETS.md: the ME datasets are licence-gated), so the benchmark's default input is
made by the generator (train.synth, REALTIME.md "Test media"): the bundled real face
(core/assets/single_face.mp4, identity "sample_video") animated at 200 fps with
synthetic micro-expressions, head drift, flicker, camera noise and JPEG artefacts, and
its ground truth written beside it (``clip.gt.jsonl``).

The clip holds 33 micro-expressions (``MIN_SAMPLE_EVENTS`` at least, tested), so the
decision latency's p95 is a percentile and not the largest of a handful: 60 s of MJPG
video (about 200 MB), too large to ship, so it is generated deterministically on first
use (a minute or two of CPU time) into the user's cache dir
(``$MOEXT_CACHE_DIR``, else ``$XDG_CACHE_HOME/moext-live`` or ``~/.cache/moext-live``,
see ``engines.runners.user_cache_dir``) and reused afterwards. The file name carries a
digest of the generator's source and of the settings, so a changed generator makes a
new clip instead of silently reusing an old one.

    python -m realtime.bench.sample            # make it (if needed) and print its path
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
from tqdm import tqdm

from core.events import write_ground_truth
from engines.runners import user_cache_dir
from train import synth
from train.synth import CODECS, ground_truth_path, make_clip


@dataclass(frozen=True)
class SampleSpec:
    """What the generator is asked for (every field goes into the cache key)."""

    identity: str = "sample_video"    # the bundled real face (train.synth identities)
    fps: float = 200.0
    seconds: float = 60.0             # long enough for >= MIN_SAMPLE_EVENTS events (33 with these settings)
    events: str = "micro"             # micro-expressions only (train.synth.MODES): the events whose
                                      # decision latency the benchmark reports
    size: tuple[int, int] = (640, 480)
    seed: int = 0

    def stem(self) -> str:
        return (f"bench_{self.identity}_{self.fps:g}fps_{self.seconds:g}s_{self.size[0]}x{self.size[1]}"
                f"_{self.events}_seed{self.seed}")


DEFAULT_SAMPLE = SampleSpec()
MIN_SAMPLE_EVENTS = 30   # events the default clip must hold for a meaningful p95


def generator_digest() -> str:
    """Digest of the generator's source: a changed generator gives a new cache file."""
    h = hashlib.sha1()
    for f in sorted(Path(synth.__file__).parent.glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:10]


def sample_paths(spec: SampleSpec = DEFAULT_SAMPLE, folder: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """(video, ground truth) paths of ``spec`` in ``folder`` (default: the user's cache)."""
    folder = Path(folder) if folder is not None else user_cache_dir("bench")
    key = hashlib.sha1(json.dumps(asdict(spec), sort_keys=True).encode()).hexdigest()[:8]
    video = folder / f"{spec.stem()}_{generator_digest()}{key}.avi"
    return video, ground_truth_path(video)


def ensure_sample(spec: SampleSpec = DEFAULT_SAMPLE, folder: str | os.PathLike | None = None,
                  progress: bool | None = None) -> tuple[Path, Path]:
    """The sample clip and its ground truth, generated first if not cached.

    Written to temporary names and renamed when complete, so an interrupted run or two
    runs at once never leave a half-written clip under the final name. ``progress``:
    show a bar (None: only on a terminal)."""
    video, gt = sample_paths(spec, folder)
    if video.is_file() and gt.is_file():
        return video, gt
    video.parent.mkdir(parents=True, exist_ok=True)
    frames, truths = make_clip(spec.identity, spec.fps, spec.seconds, spec.events, spec.size, spec.seed,
                               source=video.name)
    tmp_video = video.with_name(f".{video.stem}.{os.getpid()}.tmp.avi")
    tmp_gt = gt.with_name(f".{gt.name}.{os.getpid()}.tmp")
    writer = cv2.VideoWriter(str(tmp_video), cv2.VideoWriter_fourcc(*CODECS[".avi"]), float(spec.fps), spec.size)
    if not writer.isOpened():
        raise RuntimeError(f"{tmp_video}: OpenCV could not open an MJPG writer here; pass a video of your own "
                           "to the benchmark (python -m realtime.bench VIDEO --fps F)")
    n = round(spec.seconds * spec.fps)
    try:
        for frame in tqdm(frames, total=n, desc=f"generating the {spec.fps:g} fps sample (once)", unit="frame",
                          disable=None if progress is None else not progress, leave=False):
            writer.write(frame)
        writer.release()
        write_ground_truth(tmp_gt, truths)
        os.replace(tmp_gt, gt)
        os.replace(tmp_video, video)   # last: the video's presence means "complete"
    finally:
        writer.release()
        for p in (tmp_video, tmp_gt):
            if p.exists():
                p.unlink()
    return video, gt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m realtime.bench.sample",
                                 description="Make (once) and print the benchmark's default 200 fps sample clip.",
                                 epilog="example:\n  python -m realtime.bench.sample --folder /tmp/samples",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", help="where to keep it (default: the user's cache dir)")
    a = ap.parse_args(argv)
    video, gt = ensure_sample(folder=a.folder)
    print(video)
    print(gt)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
