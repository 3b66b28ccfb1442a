"""Dataset-style sequences (CASME II): short folders of JPEG frames holding one ME each.

Owns ``make_sequence`` (0.3-2 s seen by a clean high-speed camera, HardConfig.sequence_camera,
with ONE micro-expression whose onset lies in the first 300 ms) and ``write_sequences``
(DIR/seq_000/img0001.jpg ..., DIR/seq_000.gt.jsonl with frame 0 = img0001.jpg, and
DIR/sequences.csv).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from core.events import GroundTruth, write_ground_truth
from train.synth.camera import _check_size
from train.synth.config import SEQ_ONSET_S, SEQ_SECONDS, HardConfig
from train.synth.identities import IDENTITIES, identities_for
from train.synth.output import write_csv
from train.synth.timing import _frames
from train.synth.track_render import _render_tracks
from train.synth.tracks import _log_uniform, face_scale, micro_track


def make_sequence(identity: str = "sample_video", fps: float = 200.0, seed: int = 0,
                  size: tuple[int, int] = (640, 480), config: HardConfig | None = None,
                  source: str = "") -> tuple[Iterator[np.ndarray], list[GroundTruth], int]:
    """A dataset-style sequence (CASME II): 0.3-2 s at a high-speed camera's look
    (HardConfig.sequence_camera) holding ONE micro-expression whose onset lies within the
    first 300 ms (about a third of them at 30-100 ms), amplitude log-uniform in
    HardConfig.sequence_amplitude. Frames are counted from 0 = the first image.
    Returns (lazy frames, ground truth, number of frames)."""
    hc = config or HardConfig()
    size = _check_size(size)
    rng = np.random.default_rng([seed, 21])
    sc = face_scale(identity)
    onset_s = float(rng.uniform(0.03, 0.1)) if rng.random() < 0.35 else float(rng.uniform(0.1, SEQ_ONSET_S))
    onset = min(max(1, _frames(onset_s, fps)), math.floor(SEQ_ONSET_S * fps))
    tr = micro_track(onset, fps, rng, hc, sc, amplitude=_log_uniform(rng, hc.sequence_amplitude),
                     camera=hc.sequence_camera)
    n = tr.offset_frame + 1 + _frames(float(rng.uniform(0.0, 1.2)), fps)
    n = min(max(n, math.ceil(SEQ_SECONDS[0] * fps), tr.offset_frame + 1), math.floor(SEQ_SECONDS[1] * fps))
    frames = _render_tracks(identity, [tr], n, fps, size, [seed, 22], hc.sequence_camera, 0.0,
                            hc.sequence_breathing_px, hc.sequence_jitter_px)
    return frames, [tr.truth(fps, source)], n


def write_sequences(out_dir: str | Path, n: int, fps: float = 200.0, seed: int = 0,
                    identities: str | Sequence[str] = "eval", size: tuple[int, int] = (640, 480),
                    config: HardConfig | None = None, quality: int = 95) -> list[dict]:
    """Write ``n`` sequences: out_dir/seq_000/img0001.jpg ... (read in order by
    ``run_live.py --images out_dir/seq_000 --fps 200``), out_dir/seq_000.gt.jsonl (frames
    from 0 = img0001.jpg) and out_dir/sequences.csv. Returns the manifest rows."""
    names = identities_for(identities)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        identity = names[i % len(names)]
        name = f"seq_{i:03d}"
        folder = out / name
        folder.mkdir(exist_ok=True)
        for old in folder.glob("img*.jpg"):          # a shorter rewrite must not leave stale frames
            old.unlink()
        s = seed * 10007 + i
        frames, truths, n_frames = make_sequence(identity, fps, s, size, config, source=name)
        for k, frame in enumerate(frames):
            p = folder / f"img{k + 1:04d}.jpg"
            if not cv2.imwrite(str(p), frame, [cv2.IMWRITE_JPEG_QUALITY, int(quality)]):
                raise OSError(f"{p}: could not write the frame; check the folder is writable and has space")
        gt = out / f"{name}.gt.jsonl"
        write_ground_truth(gt, truths)
        t = truths[0]
        rows.append({"folder": name, "ground_truth": gt.name, "identity": identity,
                     "person": IDENTITIES[identity].person, "split": IDENTITIES[identity].split, "fps": fps,
                     "frames": n_frames, "seconds": round(n_frames / fps, 4), "seed": s, "label": t.label,
                     "au": t.au, "onset_frame": t.onset_frame, "apex_frame": t.apex_frame,
                     "offset_frame": t.offset_frame, "onset_ms": round(t.onset_t * 1000, 1),
                     "amplitude": t.amplitude})
    write_csv(out / "sequences.csv", rows, list(rows[0]) if rows else ["folder"])
    return rows
