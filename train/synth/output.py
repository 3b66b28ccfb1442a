"""Writing what the generators make: a video with its ground truth beside it, and CSV tables.

Owns the video containers and codecs (``CODECS``: .avi = MJPG, .mp4 = mp4v), where a clip's
ground truth lives (``ground_truth_path``: clip.avi -> clip.gt.jsonl), ``write_rendered``:
THE one write path of every clip generator (check the name, create the folder, render,
encode, write the ground truth), the encoder itself (optionally on a second thread) and
``write_csv`` for the manifests and cache tables.
"""
from __future__ import annotations

import csv
import queue
import threading
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np

from core.events import GroundTruth, write_ground_truth
from train.synth.camera import _check_size

CODECS = {".avi": "MJPG", ".mp4": "mp4v"}


def ground_truth_path(video: str | Path) -> Path:
    """clip.avi -> clip.gt.jsonl (the ground truth beside the clip)."""
    video = Path(video)
    return video.with_name(video.stem + ".gt.jsonl")


def write_rendered(path: str | Path, fps: float, size: tuple[int, int],
                   render: Callable[[str], tuple], *, threaded: bool = False
                   ) -> tuple[Path, Path, list[GroundTruth], tuple]:
    """Write one clip and its ground truth beside it (clip.avi -> clip.gt.jsonl): the one
    write path of every clip generator (write_clip, write_hard_clip).

    The file name is checked (.avi = MJPG, .mp4 = mp4v: both round-trip with OpenCV here)
    and its folder created before ``render(source)`` is called with the video's file name
    (the ground truth's ``source``); render returns (frames, truths, *extra). The frames are
    encoded (``threaded``: see _write_video), then the ground truth is written as JSON lines
    (core.events.GroundTruth). Returns (video, ground truth, truths, extra)."""
    path = Path(path)
    if path.suffix.lower() not in CODECS:
        raise ValueError(f"{path}: use a .avi (MJPG) or .mp4 (mp4v) file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    frames, truths, *extra = render(path.name)
    _write_video(path, frames, fps, size, threaded=threaded)
    gt = ground_truth_path(path)
    write_ground_truth(gt, truths)
    return path, gt, truths, tuple(extra)


def _write_video(path: Path, frames: Iterator[np.ndarray], fps: float, size: tuple[int, int],
                 threaded: bool = False) -> None:
    """Encode ``frames`` to ``path``. threaded: encode on a second thread while the next
    frames render (OpenCV releases the GIL in both), about twice as fast on 2 cores."""
    fourcc = CODECS[path.suffix.lower()]      # write_rendered checked the name
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), float(fps), _check_size(size))
    if not writer.isOpened():
        raise RuntimeError(f"{path}: OpenCV could not open a {fourcc} writer; try the other extension (.avi/.mp4)")
    try:
        if not threaded:
            for frame in frames:
                writer.write(frame)
            return
        q: queue.Queue = queue.Queue(maxsize=32)
        failed: list[BaseException] = []

        def encode() -> None:
            while (frame := q.get()) is not None:
                if not failed:
                    try:
                        writer.write(frame)
                    except BaseException as e:   # noqa: BLE001 - handed to the caller below
                        failed.append(e)

        worker = threading.Thread(target=encode, name="synth-writer", daemon=True)
        worker.start()
        try:
            for frame in frames:
                if failed:
                    break
                q.put(frame)
        finally:
            q.put(None)
            worker.join()
        if failed:
            raise failed[0]
    finally:
        writer.release()


def write_csv(path: str | Path, rows: Sequence[dict], columns: Sequence[str]) -> None:
    """A CSV table with a header row: ``columns``, then one line per dict of ``rows``."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(columns))
        w.writeheader()
        w.writerows(rows)
