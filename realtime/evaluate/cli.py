"""Score the live spotter (and recogniser) on long videos with interval ground truth.

    python -m realtime.evaluate clips/eval200
    python -m realtime.evaluate clips/eval30 --kind all --out report.json
    python -m realtime.evaluate /data/CAS(ME)^2 --layout casme2 --engine none
    python -m realtime.evaluate /data/SAMM_longvideos --annotations SAMM_LongVideos_V3_Release.xlsx

Every video runs through ``realtime.pipeline.Pipeline``, the object run_live.py, the demo
and the benchmark drive (face tracker, smoothed alignment, motion signal, online spotter,
recogniser), frame by frame at the video's true rate: the figures are those of the live
path, not of an offline copy. The videos go through the batch runner (``realtime.batch``,
the per-recording function and outputs of ``python -m realtime.batch``; ``--jobs N`` runs
N at a time, ``--work DIR`` keeps each video's event log and signal for a later run to
reuse), and are scored from what it wrote: evaluation and production share one path. Detections are the pipeline's final events; they are
scored the MEGC way (realtime/scoring.py: hit at IoU >= 0.5, F1 = 2TP / (2TP + FP + FN))
per video and pooled, with the apex error (median, share within 10 ms) and, when an
engine runs, the label accuracy over hits.

Ground-truth layouts (``--layout``, "auto" picks by what DIR holds):

- synth: the generator's clips (python -m train.synth clips ...): VIDEO (.avi/.mp4/...)
  with VIDEO_STEM.gt.jsonl beside it (realtime.events.GroundTruth records; frames count
  from 0 and fps is the clip's true rate). An image folder NAME/ with NAME.gt.jsonl
  beside it works the same way.
- casme2: CAS(ME)^2. The workbook (``CAS(ME)^2code_final*.xlsx``) has no header row; its
  first sheet lists participant, video name (e.g. "anger1_1"), onset, apex, offset, AUs,
  emotion, type ("micro-expression" / "macro-expression"); the sheets "naming rule1"
  (subject folder, e.g. 15, <- participant) and "naming rule2" (code, e.g. 0401, <-
  expression name, e.g. "anger1") give the file name prefix "15_0401". Videos are found
  under DIR by that prefix: rawvideo/s15/15_0401girlcrashing.avi, or image folders
  rawpic/s15/15_0401girlcrashing/img1.jpg. 30 fps. An offset of 0 means "not coded":
  the apex is used (as MEGC does); an apex of 0 means no apex.
- samm: SAMM long videos. The workbook (``SAMM_LongVideos_*.xlsx``) has a block of notes
  above the header row Subject, Filename (e.g. 006_1_2), Inducement Code, Onset, Apex,
  Offset, Duration, Type ("Micro - 1/2", "Macro"), Action Units, Notes. The video is the
  image folder named by the Filename's first two parts (SAMM_longvideos/006_1/). 200 fps.
  An apex of -1 means no apex.

Frame numbers in the workbooks are the numbers in the image file names (1-based in both
releases): for an image folder, index = number - (number of its first image); for a
video file, index = number - 1. Header rows with other spellings are accepted (Onset /
OnsetFrame / onset_frame ...); a workbook whose columns cannot be found is refused with
the columns it has.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from realtime.scoring import SCORE_KINDS, Interval, SpotScore, pool, score_intervals

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".pgm", ".ppm", ".webp")
LAYOUTS = ("auto", "synth", "casme2", "samm")
LAYOUT_FPS = {"casme2": 30.0, "samm": 200.0}
GT_SUFFIX = ".gt.jsonl"


class AnnotationError(ValueError):
    """A ground-truth file or workbook that cannot be read; the message says what to fix."""


@dataclass
class VideoCase:
    """One video to evaluate: a file or an image folder, and its true intervals."""

    name: str
    path: Path
    truth: list[Interval]
    fps: float | None = None          # the true rate if the ground truth knows it
    layout: str = "synth"


# ----------------------------------------------------------------------------- the generator's clips

def ground_truth_path(video: Path) -> Path:
    """clip.avi -> clip.gt.jsonl (train.synth writes it beside the clip)."""
    return video.with_name(video.stem + GT_SUFFIX) if video.suffix else video.with_name(video.name + GT_SUFFIX)


def find_synth_cases(root: Path) -> list[VideoCase]:
    """Every video file or image folder under ``root`` with a .gt.jsonl beside it."""
    from realtime.events import EventFormatError, read_ground_truth

    cases = []
    for gt in sorted(root.rglob("*" + GT_SUFFIX)):
        stem = gt.name[: -len(GT_SUFFIX)]
        videos = [p for p in gt.parent.iterdir() if p.is_file() and p.stem == stem
                  and p.suffix.lower() in VIDEO_EXTENSIONS]
        folder = gt.parent / stem
        if videos:
            video = sorted(videos)[0]
        elif folder.is_dir():
            video = folder
        else:
            raise AnnotationError(f"{gt}: no video {stem}.<{'|'.join(e[1:] for e in VIDEO_EXTENSIONS)}> "
                                  f"or image folder {stem}/ beside it; move the ground truth next to its clip")
        try:
            truths = read_ground_truth(gt)
        except EventFormatError as e:
            raise AnnotationError(f"{gt}: {e}") from None
        fps = {float(t.fps) for t in truths if t.fps}
        if len(fps) > 1:
            raise AnnotationError(f"{gt}: records disagree on fps ({sorted(fps)}); one clip has one frame rate")
        cases.append(VideoCase(
            name=str(video.relative_to(root)), path=video, layout="synth", fps=fps.pop() if fps else None,
            truth=[Interval(t.onset_frame, t.offset_frame, t.apex_frame, t.kind, t.label) for t in truths]))
    return cases


# ----------------------------------------------------------------------------- workbooks

_COLUMN_NAMES = {
    "subject": ("subject", "participant", "sub", "subject_id"),
    "video": ("filename", "video", "video_name", "videoname", "clip", "clip_name", "file"),
    "onset": ("onset", "onsetframe", "onset_frame", "onset frame"),
    "apex": ("apex", "apexframe", "apex_frame", "apex frame"),
    "offset": ("offset", "offsetframe", "offset_frame", "offset frame"),
    "type": ("type", "expression_type", "expression type", "kind"),
    "emotion": ("emotion", "estimated emotion", "estimated_emotion", "objective class", "label"),
}


def _norm(s) -> str:
    return re.sub(r"\s+", " ", str(s).strip().lower())


def find_header(rows: list[list], needed: Sequence[str] = ("onset", "offset"), search: int = 30) -> int | None:
    """Index of the first row (of the first ``search``) naming every ``needed`` column."""
    for i, row in enumerate(rows[:search]):
        cells = {_norm(c) for c in row if c is not None}
        if all(any(n in cells for n in _COLUMN_NAMES[k]) for k in needed):
            return i
    return None


def map_columns(header: list) -> dict[str, int]:
    """Column index of each known field present in a header row (first match wins)."""
    cells = [_norm(c) if c is not None else "" for c in header]
    out = {}
    for key, names in _COLUMN_NAMES.items():
        for j, c in enumerate(cells):
            if c in names:
                out[key] = j
                break
    return out


def kind_of(raw) -> str | None:
    """"micro-expression", "Micro - 1/2", "ME" -> micro; "macro-expression", "Macro", "MaE" -> macro."""
    s = _norm(raw)
    if s.startswith("micro") or s in ("me", "micro"):
        return "micro"
    if s.startswith("macro") or s in ("mae", "macro"):
        return "macro"
    return None


def _frame_number(raw, *, where: str, missing=(None,)) -> int | None:
    """A frame number cell -> int, or None where the release marks it missing."""
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return None
    if isinstance(raw, str):
        s = raw.strip()
        if s in ("", "/", "-", "n/a", "na"):
            return None
        try:
            raw = float(s)
        except ValueError:
            raise AnnotationError(f"{where}: frame number {raw!r} is not a number; fix the cell") from None
    v = int(round(float(raw)))
    return None if v in missing else v


def _read_sheets(path: Path) -> dict[str, list[list]]:
    """All sheets of a workbook (or one CSV) as lists of rows of raw cell values."""
    if not path.is_file():
        raise AnnotationError(f"{path}: annotation file not found; pass --annotations PATH")
    if path.suffix.lower() == ".csv":
        import csv

        with open(path, newline="", encoding="utf-8-sig") as fh:
            # an empty cell is None, as in a workbook
            return {path.stem: [[None if c.strip() == "" else c for c in row] for row in csv.reader(fh)]}
    try:
        import pandas as pd

        book = pd.read_excel(path, sheet_name=None, header=None, dtype=object)
    except Exception as e:   # openpyxl/xlrd raise many types for a bad file
        raise AnnotationError(f"{path}: cannot read the workbook ({type(e).__name__}: {e}); "
                              "save it as .xlsx (or .csv) and try again") from None
    return {name: [[None if (isinstance(v, float) and math.isnan(v)) else v for v in row]
                   for row in df.itertuples(index=False, name=None)] for name, df in book.items()}


@dataclass
class AnnotatedInterval:
    """One workbook row: which video (key), the interval in the release's frame numbers."""

    key: str
    onset: int
    apex: int | None
    offset: int
    kind: str
    label: str | None = None
    row: int = 0                       # spreadsheet row number (1-based), for messages


@dataclass
class Annotations:
    intervals: list[AnnotatedInterval]
    skipped: dict[str, int] = field(default_factory=dict)   # why -> rows


def _casme2_prefixes(sheets: dict[str, list[list]]) -> tuple[dict, dict]:
    """(participant -> subject folder number, expression name -> 4-digit code) from the
    "naming rule1" / "naming rule2" sheets (empty when absent)."""
    subjects, codes = {}, {}
    for name, rows in sheets.items():
        n = _norm(name).replace(" ", "")
        if n == "namingrule1":
            for r in rows:
                if len(r) >= 3 and r[1] is not None and r[2] is not None:
                    try:
                        subjects[int(float(r[2]))] = re.sub(r"^s", "", str(r[1]).strip(), flags=re.I)
                    except ValueError:
                        continue
        elif n == "namingrule2":
            for r in rows:
                if len(r) >= 2 and r[0] is not None and r[1] is not None:
                    code = str(r[0]).strip()
                    if re.fullmatch(r"\d+(\.0)?", code):
                        code = f"{int(float(code)):04d}"
                    codes[_norm(r[1])] = code
    return subjects, codes


def _add_interval(ann: "Annotations", key: str, onset, apex, offset, kind: str, emotion, row: int) -> None:
    """One annotated row: an uncoded offset is the apex (MEGC); a row without a usable
    onset/offset span is counted in ``ann.skipped`` instead."""
    if offset is None:
        offset = apex
    if onset is None or offset is None or offset < onset:
        ann.skipped["unusable onset/offset"] = ann.skipped.get("unusable onset/offset", 0) + 1
        return
    ann.intervals.append(AnnotatedInterval(key, onset, apex, offset, kind,
                                           None if emotion is None else _norm(emotion), row))


def load_casme2_annotations(path: str | Path) -> Annotations:
    """CAS(ME)^2 workbook -> intervals keyed "15_0401" (subject folder _ expression code).

    Without the naming sheets the key is "<participant>_<expression name>" (e.g.
    "1_anger1"), and videos are matched on that instead."""
    path = Path(path)
    sheets = _read_sheets(path)
    first = next(iter(sheets.values()))
    subjects, codes = _casme2_prefixes(sheets)
    h = find_header(first)
    if h is None:   # the release's layout: no header, fixed column order
        cols = {"subject": 0, "video": 1, "onset": 2, "apex": 3, "offset": 4, "emotion": 6, "type": 7}
        start = 0
    else:
        cols = map_columns(first[h])
        start = h + 1
    missing = [k for k in ("subject", "video", "onset", "offset", "type") if k not in cols]
    if missing:
        raise AnnotationError(f"{path}: no column for {missing} in the header row {first[h]}; "
                              "expected Subject, Filename, Onset, Apex, Offset, Type (or the CAS(ME)^2 order)")
    ann = Annotations([])
    for i, row in enumerate(first[start:], start + 1):
        where = f"{path.name} row {i}"
        cell = lambda k: row[cols[k]] if k in cols and cols[k] < len(row) else None  # noqa: E731
        if cell("video") is None or cell("onset") is None:
            if any(v is not None for v in row):
                ann.skipped["no video name or onset"] = ann.skipped.get("no video name or onset", 0) + 1
            continue
        kind = kind_of(cell("type"))
        if kind is None:
            ann.skipped[f"type {cell('type')!r}"] = ann.skipped.get(f"type {cell('type')!r}", 0) + 1
            continue
        try:
            participant = int(float(cell("subject")))
        except (TypeError, ValueError):
            raise AnnotationError(f"{where}: participant {cell('subject')!r} is not a number") from None
        expression = str(cell("video")).strip().split("_")[0]
        if subjects and codes:
            if participant not in subjects or _norm(expression) not in codes:
                raise AnnotationError(f"{where}: participant {participant} / expression {expression!r} not in the "
                                      "'naming rule1' / 'naming rule2' sheets; check the workbook")
            key = f"{subjects[participant]}_{codes[_norm(expression)]}"
        else:
            key = f"{participant}_{expression}"
        onset = _frame_number(cell("onset"), where=where, missing=(None, 0))
        apex = _frame_number(cell("apex"), where=where, missing=(None, 0))
        offset = _frame_number(cell("offset"), where=where, missing=(None, 0))
        _add_interval(ann, key, onset, apex, offset, kind, cell("emotion"), i)
    return ann


def load_samm_annotations(path: str | Path) -> Annotations:
    """SAMM long-videos workbook -> intervals keyed "006_1" (the video of Filename 006_1_2)."""
    path = Path(path)
    sheets = _read_sheets(path)
    first = next(iter(sheets.values()))
    h = find_header(first, ("video", "onset", "offset"))
    if h is None:
        raise AnnotationError(f"{path}: no header row with Filename, Onset and Offset in its first 30 rows; "
                              "is this the SAMM long-videos workbook?")
    cols = map_columns(first[h])
    if "type" not in cols:
        raise AnnotationError(f"{path}: no Type column in the header row {first[h]}; it says micro or macro")
    ann = Annotations([])
    for i, row in enumerate(first[h + 1:], h + 2):
        where = f"{path.name} row {i}"
        cell = lambda k: row[cols[k]] if k in cols and cols[k] < len(row) else None  # noqa: E731
        if cell("video") is None or cell("onset") is None:
            continue
        kind = kind_of(cell("type"))
        if kind is None:
            ann.skipped[f"type {cell('type')!r}"] = ann.skipped.get(f"type {cell('type')!r}", 0) + 1
            continue
        parts = str(cell("video")).strip().split("_")
        key = "_".join(parts[:2]) if len(parts) >= 2 else parts[0]
        onset = _frame_number(cell("onset"), where=where, missing=(None, -1))
        apex = _frame_number(cell("apex"), where=where, missing=(None, -1, 0))
        offset = _frame_number(cell("offset"), where=where, missing=(None, -1, 0))
        _add_interval(ann, key, onset, apex, offset, kind, cell("emotion"), i)
    return ann


def _trailing_number(name: str) -> int | None:
    m = re.search(r"(\d+)(?!.*\d)", name)
    return int(m.group(1)) if m else None


def _images(folder: Path) -> list[Path]:
    from realtime.sources import natural_key

    return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS),
                  key=lambda p: natural_key(p.name))


def first_frame_number(video: Path) -> int:
    """The release frame number of stream index 0: the first image's number, or 1 for files."""
    if video.is_dir():
        imgs = _images(video)
        n = _trailing_number(imgs[0].stem) if imgs else None
        return 1 if n is None else n
    return 1


def _find_videos(root: Path, layout: str) -> list[Path]:
    """Candidate videos: files with a video extension, and folders holding images."""
    out = [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS]
    for d in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        try:
            if any(c.suffix.lower() in IMAGE_EXTENSIONS for c in d.iterdir()):
                out.append(d)
        except OSError:
            continue
    return sorted(out)


def _video_for(key: str, videos: list[Path], layout: str) -> Path | None:
    """The video whose name is the key or starts with it (then a non-digit)."""
    pat = re.compile(re.escape(key.lower()) + r"(?!\d)")
    hits = [v for v in videos if pat.match(v.stem.lower() if v.is_file() else v.name.lower())]
    if not hits:
        return None
    files = [v for v in hits if v.is_file()]      # prefer the original video to frame folders
    return sorted(files or hits, key=lambda p: (len(p.parts), str(p)))[0]


def find_annotated_cases(root: Path, layout: str, annotations: Path | None = None) -> tuple[list[VideoCase], dict]:
    """CAS(ME)^2 / SAMM cases: annotations + the videos under ``root``.

    Returns (cases, notes) where notes counts skipped rows and unmatched videos."""
    if annotations is None:
        pattern = {"casme2": "CAS(ME)*code*", "samm": "SAMM_LongVideos*"}[layout]
        found = sorted(p for p in root.rglob(pattern) if p.suffix.lower() in (".xlsx", ".xls", ".csv"))
        if not found:
            raise AnnotationError(f"{root}: no {pattern}.xlsx found; pass the workbook with --annotations PATH")
        annotations = found[0]
    ann = (load_casme2_annotations if layout == "casme2" else load_samm_annotations)(annotations)
    if not ann.intervals:
        raise AnnotationError(f"{annotations}: no usable micro/macro rows (skipped: {ann.skipped})")
    videos = _find_videos(root, layout)
    by_key: dict[str, list[AnnotatedInterval]] = {}
    for a in ann.intervals:
        by_key.setdefault(a.key, []).append(a)
    cases, unmatched = [], []
    for key, rows in sorted(by_key.items()):
        video = _video_for(key, videos, layout)
        if video is None:
            unmatched.append(key)
            continue
        base = first_frame_number(video)
        truth = [Interval(a.onset - base, a.offset - base, None if a.apex is None else a.apex - base, a.kind, a.label)
                 for a in rows]
        cases.append(VideoCase(name=str(video.relative_to(root)), path=video, truth=truth,
                               fps=LAYOUT_FPS[layout], layout=layout))
    notes = {"annotations": str(annotations), "skipped_rows": ann.skipped, "videos_not_found": unmatched}
    if not cases:
        raise AnnotationError(f"{root}: none of the {len(by_key)} annotated videos was found (e.g. {unmatched[:3]}); "
                              "point DIR at the folder holding the videos or image folders")
    return cases, notes


def detect_layout(root: Path) -> str:
    if any(root.rglob("*" + GT_SUFFIX)):
        return "synth"
    if any(root.rglob("CAS(ME)*code*.xls*")):
        return "casme2"
    if any(root.rglob("SAMM_LongVideos*.xls*")):
        return "samm"
    raise AnnotationError(f"{root}: no ground truth found (*{GT_SUFFIX}, CAS(ME)^2code_final.xlsx or "
                          "SAMM_LongVideos_*.xlsx); pass --layout and --annotations")


def find_cases(root: str | Path, layout: str = "auto", annotations: str | Path | None = None
               ) -> tuple[list[VideoCase], dict]:
    root = Path(root)
    if not root.exists():
        raise AnnotationError(f"{root}: no such folder; pass the folder that holds the videos")
    if root.is_file():
        raise AnnotationError(f"{root}: is a file; pass the FOLDER that holds the videos (and their ground truth)")
    if layout not in LAYOUTS:
        raise AnnotationError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if layout == "auto":
        layout = "casme2" if annotations and "cas" in Path(annotations).name.lower() else (
            "samm" if annotations and "samm" in Path(annotations).name.lower() else detect_layout(root))
    if layout == "synth":
        cases = find_synth_cases(root)
        if not cases:
            raise AnnotationError(f"{root}: no *{GT_SUFFIX} ground truth found; write clips with "
                                  "python -m train.synth clips --out DIR")
        return cases, {"layout": "synth"}
    cases, notes = find_annotated_cases(root, layout, Path(annotations) if annotations else None)
    notes["layout"] = layout
    return cases, notes


# ----------------------------------------------------------------------------- running the live path

@dataclass
class VideoRun:
    """What the live path found in one video."""

    detections: list[Interval]
    events: list[dict]
    frames: int
    face_share: float
    fps: float
    wall_s: float
    end_reason: str | None = None
    regions: dict[str, list[float]] = field(default_factory=dict)   # per frame (nan: no face)
    faults: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)


MODES = ("recording", "causal")
BANDS = (0.0, 5.0, 10.0, 20.0, 50.0, math.inf)
"""Amplitude bands of the sensitivity table: a true ME's peak motion in multiples of its
clip's calm level (measure_ratios)."""


def recording_settings(tracker: str = "fast", spotter: dict | None = None, motion: dict | None = None,
                       mode: str = "recording", engine: str = "none"):
    """The realtime.recording settings of an evaluation run (``mode`` "recording": read
    ahead, as run_live.py and the batch read files; "causal": as a camera sees it)."""
    from realtime.recording import RecordingSettings

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return RecordingSettings(engine=engine, tracker=tracker, spotter=dict(spotter or {}), motion=dict(motion or {}),
                             causal=mode == "causal")


def _engine_id(recognizer, engine: str | None) -> str | None:
    """The key part naming a recogniser passed in already loaded (None: the batch
    fingerprints ``engine`` itself)."""
    if recognizer is None or engine not in (None, "preloaded"):
        return None
    import hashlib

    try:
        info = recognizer.info()
    except Exception:
        info = {"name": getattr(recognizer, "name", type(recognizer).__name__)}
    return "preloaded:" + hashlib.sha256(json.dumps(info, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_videos(videos: Sequence[tuple[str, Path, float | None]], settings, work: str | Path | None = None, *,
               recognizer=None, jobs: int = 1, progress: bool = True) -> list[VideoRun]:
    """Run videos (name, file or image folder, true fps or None) through the batch runner
    (realtime.batch: the per-recording function, outputs and resume of ``python -m
    realtime.batch``) and read each one's events and per-frame signal back. ``work``: the
    batch's output folder (kept: a second evaluation there reuses unchanged runs); None: a
    temporary one. A video that could not be analysed at all raises SourceError; one that
    decoded only part-way is scored on what was read (``VideoRun.end_reason`` says so)."""
    import shutil
    import tempfile

    from realtime import batch
    from realtime.sources import SourceError

    if jobs > 1 and recognizer is not None and settings.engine in ("none", "preloaded"):
        raise ValueError("several processes load the recogniser themselves: give its spec (settings.engine)")
    tmp = None
    if work is None:
        work = tmp = tempfile.mkdtemp(prefix="moext-eval-")
    try:
        recs = [batch.Recording(rid=name, path=Path(path).resolve(), fps=fps) for name, path, fps in videos]
        run = batch.run_recordings(recs, settings, work, jobs=jobs, recognizer=recognizer if jobs <= 1 else None,
                                   engine_id=_engine_id(recognizer, settings.engine), progress=progress)
        out = []
        for rec in recs:
            res = run.rows[rec.rid]
            if res["status"] != "done" and not (res.get("partial_outputs") and res.get("frames")):
                raise SourceError(f"{rec.rid}: {res.get('error')}")
            folder = run.folder(rec.rid)
            out.append(_video_run(folder, json.loads((folder / "result.json").read_text(encoding="utf-8"))))
        return out
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _video_run(folder: Path, res: dict) -> VideoRun:
    """A VideoRun from a batch recording's folder: events.jsonl, signal.csv, result.json."""
    import csv

    from realtime.events import read_events

    events = read_events(folder / "events.jsonl") if (folder / "events.jsonl").is_file() else []
    frames = int(res.get("frames") or 0)
    regions: dict[str, list[float]] = {n: [] for n in REGION_NAMES}
    signal = folder / "signal.csv"
    if signal.is_file():
        with open(signal, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                for n in REGION_NAMES:
                    v = row.get(n)
                    regions[n].append(float(v) if v not in (None, "") else math.nan)
    for n in REGION_NAMES:
        if len(regions[n]) < frames:
            regions[n] += [math.nan] * (frames - len(regions[n]))
    dets = [Interval(e.onset_frame, e.offset_frame, e.apex_frame, e.kind, e.label) for e in events]
    return VideoRun(dets, [e.to_dict() for e in events], frames, float(res.get("face_share") or 0.0),
                    float(res.get("fps") or 0.0), float(res.get("wall_s") or 0.0), res.get("end_reason"), regions,
                    dict(res.get("faults") or {}), dict(res.get("rejected") or {}))


def spot_video(path: Path, fps: float | None, recognizer=None, tracker: str = "fast",
               spotter: dict | None = None, motion: dict | None = None, progress: bool = True,
               mode: str = "recording") -> VideoRun:
    """Run one video (file or image folder) through the batch runner's per-recording
    function (realtime.batch.run_job: the Pipeline of run_live.py, nothing dropped) and
    return its final events as intervals. ``mode`` "recording": the noise model is warmed
    up on a look-ahead, as run_live.py does for files; "causal": as a camera sees it
    (what the latency benchmark measures). SourceError when it cannot be read."""
    settings = recording_settings(tracker, spotter, motion, mode, "preloaded" if recognizer is not None else "none")
    path = Path(path)
    return run_videos([(path.name, path, fps)], settings, recognizer=recognizer, progress=progress)[0]


REGION_NAMES = ("brows", "nose", "mouth")


def measure_ratios(regions: dict[str, list[float]], truth: Sequence[Interval], fps: float,
                   margin_s: float = 0.3) -> list[float | None]:
    """Each true micro-expression's amplitude in multiples of its clip's calm level: the
    largest, over the expression regions, of (peak motion inside the interval) / (median
    motion on calm frames: none within ``margin_s`` of any true event). None when a region
    has no calm frame or the interval no face."""
    import numpy as np

    if not regions or not truth:
        return [None for _ in truth]
    a = np.asarray([regions[n] for n in REGION_NAMES], dtype=np.float64)     # (R, frames)
    n = a.shape[1]
    busy = np.zeros(n, bool)
    pad = int(round(margin_s * fps))
    for t in truth:
        busy[max(0, t.onset - pad):min(n, t.offset + pad + 1)] = True
    calm = a[:, ~busy]
    out: list[float | None] = []
    for t in truth:
        if t.kind != "micro":
            out.append(None)
            continue
        seg = a[:, max(0, t.onset):min(n, t.offset + 1)]
        ok = np.isfinite(seg).any(1) & (np.isfinite(calm).sum(1) > 0 if calm.size else False)
        if not np.any(ok):
            out.append(None)
            continue
        level = np.nanmedian(calm[ok], axis=1)
        out.append(float(np.max(np.nanmax(seg[ok], axis=1) / np.maximum(level, 1e-6))))
    return out


def band_of(ratio: float) -> str:
    for lo, hi in zip(BANDS[:-1], BANDS[1:]):
        if lo <= ratio < hi:
            return f"{lo:g}-{hi:g}x" if math.isfinite(hi) else f">={lo:g}x"
    return "?"


def sensitivity(videos: list[dict]) -> dict[str, dict]:
    """Recall of true micro-expressions by amplitude band, pooled over videos."""
    table: dict[str, dict] = {}
    for v in videos:
        for ratio, hit in v.get("micro_truth_ratios", []):
            if ratio is None:
                continue
            row = table.setdefault(band_of(ratio), {"n": 0, "hits": 0})
            row["n"] += 1
            row["hits"] += int(hit)
    order = [band_of(lo) for lo in BANDS[:-1]]
    return {b: dict(table[b], recall=round(table[b]["hits"] / table[b]["n"], 4)) for b in order if b in table}


def relabel_truth(truth: list[Interval], fps: float, rule: str) -> list[Interval]:
    """The generator's micro/macro ground truth under ``rule`` (realtime.events.expression_kind),
    so that scores compare like with like; other kinds (blink, speech...) are unchanged."""
    from realtime.events import expression_kind

    out = []
    for t in truth:
        if t.kind in ("micro", "macro"):
            apex = t.apex if t.apex is not None else t.onset
            kind = expression_kind(t.onset / fps, apex / fps, t.offset / fps, rule)
            t = Interval(t.onset, t.offset, t.apex, kind, t.label)
        out.append(t)
    return out


def load_engine(spec: str, device: str = "auto"):
    """A Recognizer for ``spec`` ("none" -> None). "auto" without demo weights -> None, with
    a warning, so spotting is still scored."""
    if spec is None or spec.lower() == "none":
        return None
    from engines.recognizer import DemoWeightsMissingError, Recognizer

    try:
        return Recognizer.load(spec, device=device)
    except DemoWeightsMissingError as e:
        if spec != "auto":
            raise
        print(f"warning: {e}\n         scoring spotting only (pass --engine none to silence this)", file=sys.stderr)
        return None


def evaluate_cases(cases: list[VideoCase], *, fps: float | None = None, recognizer=None, tracker: str = "fast",
                   iou: float = 0.5, spotter: dict | None = None, motion: dict | None = None,
                   progress: bool = True, log=print, mode: str = "recording", engine: str | None = None,
                   jobs: int = 1, work: str | Path | None = None) -> dict:
    """Run and score every case; returns the JSON-ready report (per video and pooled, and
    the recall of true micro-expressions by amplitude band). The generator's ground truth
    is judged micro or macro under the spotter's rule (``spotter["rule"]``, default megc).

    The videos go through the batch runner (run_videos: realtime.batch, as ``python -m
    realtime.batch`` runs a study): ``jobs`` worker processes (1: in this process, with
    ``recognizer``), ``work`` its output folder (each video's event log, signal and
    result; a later evaluation there reuses unchanged runs). ``engine``: the recogniser's
    spec (needed with ``jobs`` > 1, where each worker loads it)."""
    from realtime.scoring import match_intervals
    from realtime.spotter import SpotterConfig

    rule = (spotter or {}).get("rule", SpotterConfig.rule)
    pooled: dict[str, list[SpotScore]] = {k: [] for k in SCORE_KINDS}
    videos = []
    spec = engine if engine is not None else ("preloaded" if recognizer is not None else "none")
    settings = recording_settings(tracker, spotter, motion, mode, spec)
    runs = run_videos([(case.name, case.path, fps or case.fps) for case in cases], settings, work,
                      recognizer=recognizer, jobs=jobs, progress=progress)
    for case, run in zip(cases, runs):
        truth = relabel_truth(case.truth, run.fps, rule) if case.layout == "synth" else case.truth
        kinds = sorted({t.kind for t in truth if t.kind})
        entry = {"video": case.name, "layout": case.layout, "fps": run.fps, "frames": run.frames,
                 "face_share": round(run.face_share, 4), "wall_s": round(run.wall_s, 2),
                 "realtime_factor": round(run.frames / run.wall_s / run.fps, 3) if run.wall_s > 0 else None,
                 "end_reason": run.end_reason, "faults": run.faults, "rejected": run.rejected,
                 "truth": {k: sum(t.kind == k for t in truth) for k in ["micro", "macro"] + kinds},
                 "detected": {k: sum(d.kind == k for d in run.detections) for k in ("micro", "macro")},
                 "scores": {}, "events": run.events}
        for k in SCORE_KINDS:
            s = score_intervals(run.detections, truth, run.fps, k, iou)
            pooled[k].append(s)
            entry["scores"][k] = s.summary()
        micro_truth = [t for t in truth if t.kind == "micro"]
        hit = set(j for _, j, _ in match_intervals([d for d in run.detections if d.kind == "micro"],
                                                   micro_truth, iou).pairs)
        ratios = measure_ratios(run.regions, micro_truth, run.fps)
        entry["micro_truth_ratios"] = [(None if r is None else round(r, 2), j in hit) for j, r in enumerate(ratios)]
        videos.append(entry)
        if log:
            log(_row(case.name, entry["scores"]))
    return {"iou_threshold": iou, "mode": mode, "rule": rule, "videos": videos,
            "pooled": {k: pool(v).summary() for k, v in pooled.items()},
            "sensitivity": sensitivity(videos)}


def parse_overrides(items: Sequence[str]) -> dict:
    """["open_ratio=5", "rule=casme"] -> {"open_ratio": 5.0, "rule": "casme"}, checked
    against SpotterConfig's fields (numbers stay numbers, the rest strings)."""
    import dataclasses

    from realtime.spotter import SpotterConfig

    fields = {f.name: f for f in dataclasses.fields(SpotterConfig)}
    out: dict = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in fields:
            raise ValueError(f"--spotter {item!r}: give NAME=VALUE with NAME one of {sorted(fields)}")
        default = getattr(SpotterConfig, name)
        try:
            out[name] = type(default)(value) if isinstance(default, (int, float)) else value
        except ValueError:
            raise ValueError(f"--spotter {item!r}: {name} takes a number") from None
    return out


def plot_sensitivity(reports: dict[str, dict], path: str | Path) -> Path:
    """Recall of true micro-expressions by amplitude band, one line per mode: the
    sensitivity curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    for mode, rep in reports.items():
        table = rep["sensitivity"]
        bands = list(table)
        ax.plot(range(len(bands)), [table[b]["recall"] for b in bands], marker="o", label=mode)
        for i, b in enumerate(bands):
            ax.annotate(f"n={table[b]['n']}", (i, table[b]["recall"]), textcoords="offset points", xytext=(0, 6),
                        fontsize=7, ha="center")
        ax.set_xticks(range(len(bands)), bands)
    ax.set_ylim(0, 1.1)
    ax.set_xlabel("micro-expression peak / calm level of its clip")
    ax.set_ylabel("recall (IoU >= 0.5)")
    ax.grid(True, lw=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fmt(x, pct=False) -> str:
    if x is None:
        return "-"
    return f"{x:.3f}"


def _row(name: str, scores: dict, kinds: Sequence[str] = ("micro", "macro", "all")) -> str:
    parts = []
    for k in kinds:
        s = scores[k]
        parts.append(f"{k}: F1 {_fmt(s['f1'])} P {_fmt(s['precision'])} R {_fmt(s['recall'])} "
                     f"(TP {s['tp']} FP {s['fp']} FN {s['fn']})")
    s = scores["micro"]
    apex = (f"apex |err| median {s['apex_error_ms_median']:.1f} ms, within 10 ms {s['apex_within_share']:.0%}"
            if s["apex_error_ms_median"] is not None else "apex -")
    label = f", label acc {s['label_accuracy']:.3f}" if s["label_accuracy"] is not None else ""
    return f"{name:32s} " + " | ".join(parts) + f" | micro {apex}{label}"


# ----------------------------------------------------------------------------- command line

EXAMPLES = """examples:
  python -m train.synth clips --split eval --n 12 --distractor-only 2 --fps 200 --out clips/eval200
  python -m realtime.evaluate clips/eval200
  python -m realtime.evaluate clips/eval30 --kind all --out eval30.json
  python -m realtime.evaluate "/data/CAS(ME)^2" --layout casme2 --engine none
  python -m realtime.evaluate /data/SAMM_longvideos --layout samm --annotations /data/SAMM_LongVideos_V3_Release.xlsx

Scores: a detection is a hit when its IoU with a true interval of the same kind is >= 0.5
(each true interval matched once); F1 = 2TP / (2TP + FP + FN), pooled by summing counts
over videos. Apex error = detected - true apex of each hit, in ms.
"""


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m realtime.evaluate",
                                 description="Spot (and recognise) expressions in long videos through the live "
                                             "pipeline and score them against interval ground truth (MEGC F1 at "
                                             "IoU >= 0.5, apex error, label accuracy).",
                                 epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", help="folder with the videos (or image folders) and their ground truth")
    ap.add_argument("--layout", choices=LAYOUTS, default="auto",
                    help="ground-truth layout: synth (VIDEO + VIDEO.gt.jsonl), casme2, samm (default: auto)")
    ap.add_argument("--annotations", help="the CAS(ME)^2 / SAMM workbook (default: searched under DIR)")
    ap.add_argument("--fps", type=float, default=None,
                    help="true frame rate of every video (default: the ground truth's, else 30 for CAS(ME)^2, "
                         "200 for SAMM, else the file header)")
    ap.add_argument("--engine", default="auto",
                    help="recogniser: auto (demo weights), a .safetensors/.onnx/.plan path, or none (default auto)")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--tracker", default="fast", choices=("fast", "dlib", "mediapipe"))
    ap.add_argument("--kind", default="micro", choices=SCORE_KINDS,
                    help="which intervals the headline figures are for (all kinds go to the JSON)")
    ap.add_argument("--iou", type=float, default=0.5, help="IoU for a hit (default 0.5, MEGC)")
    ap.add_argument("--mode", default="recording", choices=MODES + ("both",),
                    help="recording: the noise model warmed up on a look-ahead, as run_live.py reads files; "
                         "causal: as a camera sees it; both: each, reported side by side (default recording)")
    ap.add_argument("--rule", default="megc", choices=("megc", "casme"),
                    help="micro/macro rule of the spotter and of the generator's ground truth (default megc: "
                         "onset -> offset <= 500 ms; casme: also a short onset phase)")
    ap.add_argument("--spotter", action="append", default=[], metavar="NAME=VALUE",
                    help="override a realtime.spotter.SpotterConfig setting (repeatable), e.g. --spotter "
                         "open_ratio=5: for tuning on the generator's TRAINING identities, never on test clips")
    ap.add_argument("--plot", metavar="PNG", help="write the sensitivity curve (recall by amplitude band) here")
    ap.add_argument("--limit", type=int, default=None, help="evaluate only the first N videos")
    ap.add_argument("--jobs", type=int, default=1, metavar="N",
                    help="videos in N worker processes (the batch runner, realtime.batch; default 1: in this process)")
    ap.add_argument("--work", metavar="DIR",
                    help="keep each video's event log, signal and result here (the batch runner's output folder; a "
                         "later evaluation with the same settings reuses them); default: a temporary folder")
    ap.add_argument("--out", help="write the JSON report here")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)

    if args.fps is not None and not (math.isfinite(args.fps) and args.fps > 0):
        ap.error(f"--fps must be a positive frame rate, got {args.fps}")
    if not 0 < args.iou <= 1:
        ap.error(f"--iou must be in (0, 1], got {args.iou}")
    if args.jobs < 1:
        ap.error(f"--jobs must be at least 1, got {args.jobs}")
    try:
        cases, notes = find_cases(args.dir, args.layout, args.annotations)
    except AnnotationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.limit:
        cases = cases[: args.limit]
    for k in ("skipped_rows", "videos_not_found"):
        if notes.get(k):
            print(f"note: {k.replace('_', ' ')}: {notes[k]}", file=sys.stderr)
    try:
        recognizer = load_engine(args.engine, args.device)
    except Exception as e:
        print(f"error: could not load the recogniser {args.engine!r}: {e}", file=sys.stderr)
        return 2
    print(f"{len(cases)} video(s), layout {notes['layout']}, engine "
          f"{getattr(recognizer, 'name', None) or 'none'}, tracker {args.tracker}, IoU >= {args.iou}")
    from realtime.batch import BatchError, EngineLoadError
    from realtime.sources import SourceError

    try:
        overrides = parse_overrides(args.spotter)
    except ValueError as e:
        ap.error(str(e))
    overrides["rule"] = args.rule
    modes = MODES if args.mode == "both" else (args.mode,)
    reports = {}
    try:
        for mode in modes:
            if len(modes) > 1:
                print(f"== mode {mode}")
            reports[mode] = evaluate_cases(cases, fps=args.fps, recognizer=recognizer, tracker=args.tracker,
                                           iou=args.iou, spotter=overrides, progress=not args.quiet,
                                           mode=mode, engine=args.engine if recognizer is not None else "none",
                                           jobs=args.jobs,
                                           work=None if args.work is None else Path(args.work) / mode)
    except (SourceError, BatchError, EngineLoadError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if recognizer is not None:
            recognizer.close()
    for mode, report in reports.items():
        report.update({"layout": notes["layout"], "dir": str(args.dir), "engine": args.engine,
                       "tracker": args.tracker, "kind": args.kind, "notes": notes})
        p = report["pooled"][args.kind]
        print(f"\n[{mode}] pooled {args.kind} over {len(cases)} video(s): F1 {_fmt(p['f1'])}  "
              f"precision {_fmt(p['precision'])}  recall {_fmt(p['recall'])}  (TP {p['tp']} FP {p['fp']} FN {p['fn']})")
        if p["apex_error_ms_median"] is not None:
            print(f"apex error: median {p['apex_error_ms_median']:.1f} ms, within {p['apex_within_ms']:g} ms: "
                  f"{p['apex_within_share']:.0%} of hits")
        if p["label_accuracy"] is not None:
            print(f"label accuracy over {p['labelled_hits']} hits: {p['label_accuracy']:.3f}")
        if report["sensitivity"]:
            print("micro recall by amplitude (peak / calm level): " + ", ".join(
                f"{b} {r['hits']}/{r['n']}" for b, r in report["sensitivity"].items()))
    report = reports[modes[0]] if len(modes) == 1 else {"modes": reports}
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2), encoding="utf-8")
        print(f"wrote {out}")
    if args.plot:
        print(f"wrote {plot_sensitivity(reports, args.plot)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
