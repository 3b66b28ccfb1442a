"""Which videos an evaluation scores, and their ground truth (``realtime.evaluate.cases``).

``find_cases(DIR, layout, annotations)`` -> ``VideoCase`` records (a video file or image
folder, its true intervals in stream frame indices, its true rate where known) for the
layouts below (``--layout``, "auto" picks by what DIR holds). Frame numbers in the
workbooks are the numbers in the image file names (1-based in both releases): for an image
folder, index = number - (number of its first image, realtime.batch.exports.
first_frame_number); for a video file, index = number - 1. Header rows with other
spellings are accepted (Onset / OnsetFrame / onset_frame ...); a workbook whose columns
cannot be found is refused (``AnnotationError``) with the columns it has.

- synth: the generator's clips (python -m train.synth clips ...): VIDEO (.avi/.mp4/...)
  with VIDEO_STEM.gt.jsonl beside it (core.events.GroundTruth records; frames count
  from 0 and fps is the clip's true rate). An image folder NAME/ with NAME.gt.jsonl
  beside it works the same way. Records with ``face_box`` (multi-face clips) keep it on
  their Interval: such videos are scored per face (realtime.evaluate.faces).
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
"""
from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from core.events import EventFormatError, read_ground_truth
from realtime.batch.discovery import VIDEO_EXTENSIONS
from realtime.batch.exports import first_frame_number
from realtime.evaluate.scoring import Interval
from realtime.stages.sources import IMAGE_EXTENSIONS

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
            truth=[Interval(t.onset_frame, t.offset_frame, t.apex_frame, t.kind, t.label,
                            None if t.face_box is None else tuple(t.face_box)) for t in truths]))
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
        with open(path, newline="", encoding="utf-8-sig") as fh:
            # an empty cell is None, as in a workbook
            return {path.stem: [[None if c.strip() == "" else c for c in row] for row in csv.reader(fh)]}
    try:
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
