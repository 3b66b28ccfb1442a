"""Dataset loaders: read each micro-expression release as it ships (DATASETS.md).

    samples, report = load_dataset("casme2", "/data/CASME2")
    print(report)                      # counts per class and subject, every problem

Supported layouts (the root may be the release folder or any folder above it; the loader
searches a few levels down for the frame tree and the spreadsheet):

    casme2     CASME2-RAW/sub01/EP02_01f/img46.jpg (or CASME2_RAW_selected/...), optional
               Cropped/sub01/EP02_01f/reg_img46.jpg (variant="cropped");
               CASME2-coding-20140508.xlsx: Subject, Filename, OnsetFrame, ApexFrame,
               OffsetFrame, Action Units, Estimated Emotion.
    samm       SAMM/006/006_1_2/006_05562.jpg (greyscale); SAMM_Micro_FACS_Codes_v2.xlsx
               with a notes block above the header row: Subject, Filename, Inducement Code,
               Onset Frame, Apex Frame, Offset Frame, Duration, Type, Action Units, Notes,
               Estimated Emotion.
    smic       SMIC/HS/s1/micro/negative/s1_ne_01/image302424.bmp (reg_ prefixed aligned
               frames accepted); the class is the folder; no apex: the middle frame.
    casme3     CAS(ME)^3 part A: <base>/spNO.1/a/color/0.jpg (or without color/);
               cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx (Subject, Filename, Onset, Apex,
               Offset, AU, Objective class, emotion) and the macro-expression sheet
               cas(me)3_part_A_MaE_label_JpgIndex_v2*.xlsx (sub, seq, onset, apex,
               offset, emotion). Clips hold several events: a sample is "<clip>_<onset>".
    composite  MEGC 2019 CDE: CASME II + SAMM + SMIC-HS mapped to 3 classes
               (train/protocols.py COMPOSITE_FROM); subjects keep their dataset prefix.
    folder     Your own data: ROOT/<subject>/<clip>/<frames> + a CSV with columns
               subject, clip, onset, apex, offset, label (optional: kind = micro|macro).
               onset/apex/offset are the numbers at the end of the frame file names
               (img46.jpg -> 46, frame_0007.png -> 7) when every frame file name ends in a
               number, otherwise 0-based positions in the naturally sorted file list
               (frame_ref="index" forces positions, "number" forces numbers). A blank apex
               means the middle frame, a blank offset the last frame, a blank label an
               unlabelled clip (pre-training only).

Decisions (and how the paper's practice maps onto the releases):
- A missing apex ("/" or -1, as some CASME II and SAMM rows have) is replaced by the
  middle frame of onset..offset (the frame nearest (onset + offset) / 2, the earlier on a
  tie), the same rule as SMIC-HS, which has no apex at all; every such row is reported.
- Macro-expressions use the 5th frame after onset as a pseudo-apex (MOEXT.md, "Data for
  each phase"), capped at the offset: ``Sample.pseudo_apex``.
- A label that the protocol leaves out (CASME II fear/sadness, CAS(ME)^3 others...) keeps
  its sample with ``label=None``: it is still used, label-free, for pre-training, and the
  report counts it. A label the protocol does not know at all drops the row (reported).
- An apex outside onset..offset, or a missing offset frame file, keeps the sample and is
  reported as a warning; a missing onset/apex frame file, a missing clip folder or an
  unparsable onset/apex/offset cell drops the row (reported as an error).
- Nothing is dropped silently: ``LoadReport`` lists every problem with file, row (as a
  spreadsheet program numbers it) and column, and counts dropped rows by reason.
  ``strict=True`` raises ``DatasetError`` on the first error or warning instead.
- Greyscale frames (SAMM) get three equal channels with realtime.face.ensure_bgr, the
  same function the live path uses (``read_frame``).
"""
from __future__ import annotations

import argparse
import bisect
import io
import math
import os
import re
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

from realtime.face import ensure_bgr
from train.protocols import (
    CASME2_TO_5,
    CASME3_TO_3,
    COMPOSITE_COUNTS,
    COMPOSITE_FROM,
    PROTOCOLS,
    SAMM_TO_5,
    UnknownLabelError,
    _norm,
    map_label,
)

DATASETS = ("casme2", "samm", "smic", "casme3", "composite", "folder")
DATASET_TITLES = {
    "casme2": "CASME II", "samm": "SAMM", "smic": "SMIC-HS", "casme3": "CAS(ME)^3 part A",
    "composite": "MEGC 2019 composite (CASME II + SAMM + SMIC-HS)", "folder": "folder of clips",
}
ALIASES = {
    "casme2": "casme2", "casmeii": "casme2", "casme_ii": "casme2",
    "samm": "samm",
    "smic": "smic", "smichs": "smic", "smic_hs": "smic", "smic-hs": "smic",
    "casme3": "casme3", "cas(me)3": "casme3", "cas(me)^3": "casme3", "casme^3": "casme3",
    "composite": "composite", "cde": "composite", "megc2019": "composite", "3db": "composite",
    "folder": "folder", "custom": "folder", "csv": "folder",
}
# The protocol each dataset is loaded under unless told otherwise (None: labels as written).
DEFAULT_PROTOCOL = {
    "casme2": "casme2", "samm": "samm", "smic": "composite", "casme3": "casme3",
    "composite": "composite", "folder": None,
}
# (dataset, protocol) -> raw label map (train/protocols.py holds the facts).
LABEL_TABLES: dict[tuple[str, str], dict[str, str | None]] = {
    ("casme2", "casme2"): CASME2_TO_5,
    ("casme2", "composite"): COMPOSITE_FROM["casme2"],
    ("samm", "samm"): SAMM_TO_5,
    ("samm", "composite"): COMPOSITE_FROM["samm"],
    ("smic", "composite"): COMPOSITE_FROM["smic"],
    ("casme3", "casme3"): CASME3_TO_3,
    ("casme3", "composite"): COMPOSITE_FROM["casme3"],
}
KINDS = ("micro", "macro")
PSEUDO_APEX_STEP = 5          # macro-expressions: the 5th frame after onset (paper)
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
SHEET_EXTS = {".xlsx", ".xlsm", ".xls", ".csv"}
# Cells that mean "not annotated" in the releases ("/" in CASME II, -1 in SAMM).
MISSING_MARKERS = {"", "/", "-", "--", "n/a", "na", "nan", "none", "null", "?"}
# Header names of each field (lower-case, letters and digits only), most specific first.
FIELD_ALIASES = {
    "subject": ("subject", "sub", "participant"),
    "filename": ("filename", "clip", "seq", "sequence"),
    "onset": ("onsetframe", "onset"),
    "apex": ("apexframe", "apex"),
    "offset": ("offsetframe", "offset"),
    "emotion": ("estimatedemotion", "emotion", "label"),
    "type": ("type", "kind"),
}


class DatasetError(ValueError):
    """A release that cannot be read (layout, spreadsheet), or a problem in strict mode."""


class FrameReadError(FileNotFoundError):
    """A frame file that is missing or that OpenCV cannot decode."""


# ----------------------------------------------------------------------------- frames

_TRAILING_NUMBER = re.compile(r"(\d+)(?!.*\d)")


def trailing_number(name: str) -> int | None:
    """The last run of digits in a file name's stem: img46 -> 46, 006_05562 -> 5562."""
    m = _TRAILING_NUMBER.search(Path(name).stem)
    return int(m.group(1)) if m else None


def natural_key(name: str) -> tuple:
    """Sort key that orders frame2 before frame10."""
    return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name))


def image_files(folder: Path) -> list[str]:
    """Image file names in ``folder``, naturally sorted ([] if it is not a folder)."""
    try:
        names = [e.name for e in os.scandir(folder) if e.is_file() and not e.name.startswith(".")
                 and Path(e.name).suffix.lower() in IMAGE_EXTS]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(names, key=natural_key)


@dataclass(eq=False)
class FrameIndex:
    """The frames of one clip folder: frame number -> file name.

    Shared by every sample cut from the same clip (CAS(ME)^3 clips hold many events)."""

    dir: Path
    names: dict[int, str]

    @cached_property
    def numbers(self) -> list[int]:
        return sorted(self.names)

    def __contains__(self, n: int) -> bool:
        return n in self.names

    def __len__(self) -> int:
        return len(self.names)

    def path(self, n: int) -> Path:
        try:
            return self.dir / self.names[n]
        except KeyError:
            lo, hi = (self.numbers[0], self.numbers[-1]) if self.names else (None, None)
            raise FrameReadError(
                f"{self.dir}: no frame number {n} (this clip has {len(self.names)} frames, "
                f"numbers {lo}..{hi})"
            ) from None

    @classmethod
    def by_number(cls, folder: Path, prefer_reg: bool = False) -> "FrameIndex":
        """Index frames by the number that ends their file name.

        When a folder holds both img46.jpg and reg_img46.jpg, ``prefer_reg`` chooses."""
        names: dict[int, str] = {}
        for name in image_files(folder):
            n = trailing_number(name)
            if n is None:
                continue
            if n in names:
                is_reg = name.lower().startswith("reg")
                if is_reg != prefer_reg:
                    continue
            names[n] = name
        return cls(folder, names)

    @classmethod
    def by_position(cls, folder: Path) -> "FrameIndex":
        """Index frames by their 0-based position in the naturally sorted file list."""
        return cls(folder, dict(enumerate(image_files(folder))))


def read_frame(path: str | Path) -> np.ndarray:
    """Read one frame as BGR uint8 (H, W, 3); greyscale gets three equal channels
    (realtime.face.ensure_bgr, the same call the live path makes)."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        what = "missing" if not Path(path).is_file() else "not an image OpenCV can decode"
        raise FrameReadError(f"{path}: frame file {what}; check the dataset copy is complete")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise FrameReadError(f"{path}: unsupported pixel type {img.dtype}; expected 8-bit frames")
    return ensure_bgr(img)


def middle_frame(numbers: Sequence[int], onset: int, offset: int) -> int:
    """The existing frame nearest (onset + offset) / 2, the earlier one on a tie."""
    inside = [n for n in numbers if onset <= n <= offset] or list(numbers)
    target = (onset + offset) / 2
    return min(inside, key=lambda n: (abs(n - target), n))


def pseudo_apex_frame(numbers: Sequence[int], onset: int, offset: int, step: int = PSEUDO_APEX_STEP) -> int:
    """The ``step``-th frame after onset (in the frames on disk), at most the offset."""
    i = bisect.bisect_left(numbers, onset)
    last = bisect.bisect_right(numbers, offset) - 1
    return numbers[max(i, min(i + step, last, len(numbers) - 1))]


# ----------------------------------------------------------------------------- samples

@dataclass
class Sample:
    """One annotated expression: where its frames are and which frames matter.

    ``subject`` is globally unique ("casme2/sub01"); ``sample`` is unique within a subject
    and kind; ``clip`` is the frame folder's name. Frame numbers are those of the release
    (the numbers in the file names), ``frame_path(n)`` finds any of them."""

    dataset: str
    subject: str
    sample: str
    clip: str
    kind: str                      # "micro" | "macro"
    raw_label: str                 # as the release writes it
    label: str | None              # class under the protocol; None = left out by it
    onset: int
    apex: int
    offset: int
    frames: FrameIndex = field(repr=False, compare=False)
    apex_imputed: bool = False     # apex not annotated: middle frame used
    source_file: str = ""          # where the sample was read: annotation file or clip folder
    source_row: int | None = None  # spreadsheet row number, as a spreadsheet program shows it

    @property
    def source(self) -> str:
        return self.source_file + (f", row {self.source_row}" if self.source_row is not None else "")

    @property
    def frames_dir(self) -> Path:
        return self.frames.dir

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.dataset, self.subject, self.sample, self.kind)

    def frame_path(self, n: int) -> Path:
        return self.frames.path(n)

    def read_frame(self, n: int) -> np.ndarray:
        """BGR uint8 (H, W, 3), greyscale made three-channel."""
        return read_frame(self.frame_path(n))

    @property
    def pseudo_apex(self) -> int:
        """The 5th frame after onset (paper's pseudo-apex of a macro-expression)."""
        return pseudo_apex_frame(self.frames.numbers, self.onset, self.offset)

    @property
    def pair(self) -> tuple[int, int]:
        """(onset, apex) frame numbers of the training pair: the annotated apex for a
        micro-expression, the pseudo-apex for a macro-expression."""
        return (self.onset, self.apex if self.kind == "micro" else self.pseudo_apex)


# ----------------------------------------------------------------------------- report

@dataclass(frozen=True)
class Problem:
    """Something the loader could not use as written. severity: "error" (row dropped),
    "warning" (row kept), "note" (a documented substitution, e.g. a missing apex)."""

    severity: str
    reason: str                    # short category: "missing frame file", "unknown label", ...
    message: str
    file: str = ""
    row: int | None = None
    column: str = ""

    def __str__(self) -> str:
        where = self.file
        if self.row is not None:
            where += f", row {self.row}"
        if self.column:
            where += f", column {self.column!r}"
        return f"{where}: {self.message}" if where else self.message


@dataclass
class LoadReport:
    """What a loader read: counts per class and subject, and every problem met."""

    dataset: str
    protocol: str | None
    classes: tuple[str, ...] = ()
    strict: bool = False
    rows: int = 0                                   # annotation rows / clip folders read
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    count_check: list[str] = field(default_factory=list)   # composite: published counts
    parts: dict[str, "LoadReport"] = field(default_factory=dict)
    n_samples: int = 0
    kind_counts: Counter = field(default_factory=Counter)
    class_counts: Counter = field(default_factory=Counter)          # labelled micro samples
    left_out: Counter = field(default_factory=Counter)              # raw label -> n (label None)
    subject_counts: dict[str, Counter] = field(default_factory=dict)

    def add(self, severity: str, reason: str, message: str, file: str = "",
            row: int | None = None, column: str = "") -> Problem:
        p = Problem(severity, reason, message, file, row, column)
        if self.strict and severity in ("error", "warning"):
            raise DatasetError(f"{p} (strict mode: fix the release or drop --strict)")
        self.problems.append(p)
        return p

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def dropped(self) -> Counter:
        """Rows not turned into samples, by reason."""
        return Counter(p.reason for p in self.errors)

    def finalize(self, samples: Sequence[Sample]) -> "LoadReport":
        self.n_samples = len(samples)
        self.kind_counts = Counter(s.kind for s in samples)
        self.class_counts = Counter(s.label for s in samples if s.kind == "micro" and s.label is not None)
        self.left_out = Counter(s.raw_label for s in samples if s.kind == "micro" and s.label is None)
        table: dict[str, Counter] = defaultdict(Counter)
        for s in samples:
            col = "macro" if s.kind == "macro" else (s.label if s.label is not None else "left out")
            table[s.subject][col] += 1
        self.subject_counts = {k: table[k] for k in sorted(table, key=natural_key)}
        return self

    def format(self, max_problems: int = 40) -> str:
        title = DATASET_TITLES.get(self.dataset, self.dataset)
        proto = self.protocol or "labels as written"
        out = [f"{title}: protocol {proto}; classes {', '.join(self.classes) or '-'}"]
        kinds = ", ".join(f"{k} {self.kind_counts[k]}" for k in KINDS if self.kind_counts[k])
        dropped = self.dropped
        out.append(f"  read {self.rows} rows/clips -> {self.n_samples} samples ({kinds or 'none'}); "
                   f"dropped {sum(dropped.values())}"
                   + (": " + ", ".join(f"{r} {n}" for r, n in dropped.most_common()) if dropped else ""))
        out.append("  micro-expressions per class: "
                   + ", ".join(f"{c} {self.class_counts[c]}" for c in self.classes))
        if self.left_out:
            out.append("  left out by the protocol (kept for pre-training, label None): "
                       + ", ".join(f"{r or '(blank)'} {n}" for r, n in sorted(self.left_out.items())))
        cols = list(self.classes) + [c for c in ("left out", "macro")
                                     if any(c in v for v in self.subject_counts.values())]
        if self.subject_counts:
            w = max(12, *(len(s) for s in self.subject_counts)) + 2
            widths = [max(6, len(c) + 1) for c in cols]
            out.append("  per subject:")
            out.append("    " + "subject".ljust(w) + "".join(c.rjust(cw) for c, cw in zip(cols, widths))
                       + "total".rjust(7))
            for subj, cnt in self.subject_counts.items():
                out.append("    " + subj.ljust(w) + "".join(str(cnt[c]).rjust(cw) for c, cw in zip(cols, widths))
                           + str(sum(cnt.values())).rjust(7))
        for name, part in self.parts.items():
            d = part.dropped
            out.append(f"  {name}: {part.n_samples} samples, dropped {sum(d.values())}"
                       + (" (" + ", ".join(f"{r} {n}" for r, n in d.most_common()) + ")" if d else ""))
        for line in self.notes:
            out.append(f"  note: {line}")
        if self.count_check:
            out.append("  composite count check (published MEGC 2019 counts, DATASETS.md):")
            out += [f"    {line}" for line in self.count_check]
        if self.problems:
            sev = Counter(p.severity for p in self.problems)
            out.append(f"  problems: {sev['error']} errors (row dropped), {sev['warning']} warnings "
                       f"(kept), {sev['note']} notes")
            for p in self.problems[:max_problems]:
                out.append(f"    {p.severity:7s} {p}")
            if len(self.problems) > max_problems:
                out.append(f"    ... and {len(self.problems) - max_problems} more "
                           "(LoadReport.problems holds them all)")
        return "\n".join(out)

    __str__ = format


# ----------------------------------------------------------------------------- spreadsheets

def cell_text(value) -> str:
    """A spreadsheet cell as text: blank for empty cells, 6 (not 6.0) for whole floats."""
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if value.is_integer():
            return str(int(value))
    return str(value).strip()


def parse_frame_number(value) -> int | None:
    """A frame-number cell -> int; None when not annotated ("/", blank, -1).

    Raises ValueError for anything else (text, fractions, negative numbers)."""
    text = cell_text(value)
    if text.lower() in MISSING_MARKERS:
        return None
    try:
        x = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a frame number") from None
    if not math.isfinite(x) or not x.is_integer():
        raise ValueError(f"{text!r} is not a whole frame number")
    n = int(x)
    if n == -1:
        return None
    if n < 0:
        raise ValueError(f"{text!r} is a negative frame number")
    return n


def _header_key(value) -> str:
    return re.sub(r"[^a-z0-9]", "", cell_text(value).lower())


@dataclass
class Sheet:
    """An annotation table: the matched columns and its data rows with the row numbers a
    spreadsheet program shows (1-based, counting the notes and header rows)."""

    path: Path
    label: str                      # how messages name it: file [sheet]
    header_row: int
    columns: dict[str, str]         # field -> header text as written
    rows: list[tuple[int, dict[str, object]]]


def _read_tables(path: Path) -> dict[str | None, "object"]:
    import pandas as pd

    ext = path.suffix.lower()
    if ext == ".csv":
        last: Exception | None = None
        # The csv module, not pandas.read_csv: annotation CSVs exported from spreadsheets
        # have ragged rows (a notes block above the header), which pandas rejects.
        import csv

        raw = path.read_bytes()
        for enc in ("utf-8-sig", "cp1252", "latin-1"):
            try:
                text = raw.decode(enc)
                break
            except UnicodeDecodeError as e:
                last = e
        else:  # latin-1 decodes every byte string, so this is unreachable in practice
            raise DatasetError(f"{path}: cannot decode the CSV ({last}); save it as UTF-8")
        if "\x00" in text:
            raise DatasetError(f"{path}: not a text CSV (it contains NUL bytes); "
                               "save the sheet again as CSV or .xlsx")
        try:
            rows = list(csv.reader(io.StringIO(text, newline="")))
        except csv.Error as e:
            raise DatasetError(f"{path}: malformed CSV ({e}); save the sheet again as CSV") from None
        if not any(any(c.strip() for c in r) for r in rows):
            raise DatasetError(f"{path}: the CSV file is empty")
        width = max(len(r) for r in rows)
        return {None: pd.DataFrame([r + [""] * (width - len(r)) for r in rows], dtype=object)}
    if ext in (".xlsx", ".xlsm"):
        return _read_workbook(path, "openpyxl")
    if ext == ".xls":
        import importlib.util

        with open(path, "rb") as fh:
            is_zip = fh.read(2) == b"PK"             # an .xlsx workbook saved under .xls
        if is_zip:
            return _read_workbook(path, "openpyxl")
        if importlib.util.find_spec("xlrd") is None:
            raise DatasetError(f"{path}: reading old .xls workbooks needs the xlrd package "
                               "(pip install xlrd), or save the sheet as .xlsx or .csv")
        return _read_workbook(path, "xlrd")
    raise DatasetError(f"{path}: not a spreadsheet (expected .xlsx, .xls or .csv)")


def _read_workbook(path: Path, engine: str) -> dict[str | None, "object"]:
    import pandas as pd

    try:
        return pd.read_excel(path, sheet_name=None, header=None, dtype=object, engine=engine)
    except Exception as e:  # zipfile.BadZipFile, openpyxl/xlrd errors: any damage to the file
        raise DatasetError(f"{path}: cannot read the workbook ({type(e).__name__}: {e}); "
                           "open it in a spreadsheet program and save it again as .xlsx or .csv") from None


def read_sheet(path: str | Path, fields: Sequence[str], required: Sequence[str],
               display: str | None = None, header_search_rows: int = 60) -> Sheet:
    """Read an annotation table, finding the header row as the first row that names both a
    subject and a file/clip column (SAMM has a block of notes above it).

    ``fields`` are keys of FIELD_ALIASES; a missing required column raises DatasetError
    naming the file, header row and the names it looked for."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: annotation file not found")
    tables = _read_tables(path)
    name = display or path.name
    for sheet_name, df in tables.items():
        values = df.values.tolist()
        for i, row in enumerate(values[:header_search_rows]):
            keys = [_header_key(v) for v in row]
            if not (set(keys) & set(FIELD_ALIASES["subject"]) and set(keys) & set(FIELD_ALIASES["filename"])):
                continue
            label = name if len(tables) == 1 or sheet_name is None else f"{name} [sheet {sheet_name!r}]"
            cols: dict[str, int] = {}
            for f in fields:
                for alias in FIELD_ALIASES[f]:
                    if alias in keys:
                        cols[f] = keys.index(alias)
                        break
            missing = [f for f in required if f not in cols]
            if missing:
                found = ", ".join(repr(cell_text(v)) for v in row if cell_text(v))
                wanted = "; ".join(f"{f}: one of {', '.join(FIELD_ALIASES[f])}" for f in missing)
                raise DatasetError(f"{label}: header row {i + 1} lacks required column(s) ({wanted}); "
                                   f"found {found}. Rename the column or pass the right file")
            rows = []
            for j in range(i + 1, len(values)):
                cells = {f: values[j][c] for f, c in cols.items()}
                if all(cell_text(v) == "" for v in values[j]):
                    continue
                rows.append((j + 1, cells))
            return Sheet(path, label, i + 1, {f: cell_text(row[c]) for f, c in cols.items()}, rows)
    raise DatasetError(f"{name}: no header row with a subject column ({', '.join(FIELD_ALIASES['subject'])}) "
                       f"and a file column ({', '.join(FIELD_ALIASES['filename'])}) in the first "
                       f"{header_search_rows} rows of any sheet; is this the annotation file?")


# ----------------------------------------------------------------------------- finding files

def _walk_dirs(root: Path, max_depth: int, skip: re.Pattern | None = None) -> Iterator[tuple[Path, int]]:
    """Folders under root (root included), breadth first, not entering folders whose name
    matches ``skip`` (subject folders: their contents are frames)."""
    level = [root]
    for depth in range(max_depth + 1):
        nxt = []
        for d in level:
            yield d, depth
            if depth == max_depth:
                continue
            try:
                entries = sorted(os.scandir(d), key=lambda e: e.name)
            except (PermissionError, FileNotFoundError, NotADirectoryError):
                continue
            for e in entries:
                if e.is_dir() and not e.name.startswith(".") and not (skip and skip.fullmatch(e.name)):
                    nxt.append(Path(e.path))
        level = nxt


def find_frames_base(root: Path, subject_pattern: str, *, prefer: Sequence[str] = (),
                     avoid: Sequence[str] = (), max_depth: int = 5, what: str = "frame") -> Path:
    """The folder (root or below) holding the subject folders (names matching the pattern).

    Among several, prefer paths containing a ``prefer`` word, then those without an
    ``avoid`` word, then the one with the most subject folders, then the shallowest."""
    pat = re.compile(subject_pattern, re.IGNORECASE)
    best = None
    for d, depth in _walk_dirs(root, max_depth, skip=pat):
        try:
            n = sum(1 for e in os.scandir(d) if e.is_dir() and pat.fullmatch(e.name))
        except OSError:
            continue
        if not n:
            continue
        rel = str(d.relative_to(root)).lower()
        score = (any(w in rel for w in prefer), not any(w in rel for w in avoid), n, -depth)
        if best is None or score > best[0]:
            best = (score, d)
    if best is None:
        raise DatasetError(f"{root}: found no {what} folder holding subject folders named like "
                           f"{subject_pattern!r} (searched {max_depth} levels down); pass the release folder")
    return best[1]


def find_sheets(root: Path, max_depth: int = 4, skip: str | None = None) -> list[Path]:
    pat = re.compile(skip, re.IGNORECASE) if skip else None
    out = []
    for d, _ in _walk_dirs(root, max_depth, skip=pat):
        try:
            for e in os.scandir(d):
                if (e.is_file() and Path(e.name).suffix.lower() in SHEET_EXTS
                        and not e.name.startswith(("~$", ".")) and "error" not in e.name.lower()):
                    out.append(Path(e.path))
        except OSError:
            continue
    return sorted(out)


def _pick_sheet(root: Path, candidates: list[Path], preferences: Sequence[Sequence[str]], what: str,
                flag: str = "--sheet") -> Path:
    """The first candidate whose name holds all words of the first matching preference
    (.xlsx and later versions first), or the only candidate."""
    for words in preferences:
        named = [p for p in candidates if all(w in p.name.lower() for w in words)]
        if named:
            return sorted(named, key=lambda p: (p.suffix.lower() == ".xlsx", natural_key(p.name)))[-1]
    if len(candidates) == 1:
        return candidates[0]
    listed = ", ".join(str(p.relative_to(root)) for p in candidates) or "none"
    raise DatasetError(f"{root}: cannot tell which spreadsheet is the {what} (candidates: {listed}); "
                       f"pass it with {flag}")


def _display(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


# ----------------------------------------------------------------------------- labels

def label_table(dataset: str, protocol: str | None) -> dict[str, str | None] | None:
    """The raw-label map of ``dataset`` under ``protocol`` (None: keep labels as written)."""
    if dataset == "folder":
        if protocol is None:
            return None
        if protocol not in PROTOCOLS:
            raise DatasetError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
        return {c: c for c in PROTOCOLS[protocol]}
    try:
        return LABEL_TABLES[(dataset, protocol)]
    except KeyError:
        ok = ", ".join(p for d, p in LABEL_TABLES if d == dataset)
        raise DatasetError(f"protocol {protocol!r} is not defined for {dataset}; choose one of: {ok}") from None


def _classes(dataset: str, protocol: str | None, samples: Sequence[Sample] = ()) -> tuple[str, ...]:
    if protocol is not None:
        return PROTOCOLS[protocol]
    return tuple(sorted({s.label for s in samples if s.label is not None}))


# ----------------------------------------------------------------------------- shared row logic

@dataclass
class _RowContext:
    dataset: str
    sheet: Sheet
    report: LoadReport
    table: dict[str, str | None] | None
    frames_of: Callable[[str, str], FrameIndex | None]    # (subject folder, clip) -> frames
    subject_folder: Callable[[str], str | None]           # cell text -> folder name
    kind: str = "micro"
    sample_name: Callable[[str, int], str] = lambda clip, onset: clip
    frame_ref_hint: str = ""
    frames_base: Path | None = None                       # where clip folders are looked for


def _map(ctx: _RowContext, raw: str, row: int, column: str) -> tuple[bool, str | None]:
    """(ok, label). Unknown labels drop micro rows; macro rows (used label-free) keep them."""
    if ctx.table is None:
        return True, (_norm(raw) or None)
    try:
        return True, map_label(raw, ctx.table)
    except UnknownLabelError as e:
        if ctx.kind == "macro":
            ctx.report.add("warning", "unknown label", f"{e}; kept without a label (macro-expressions "
                           "are used label-free for pre-training)", ctx.sheet.label, row, column)
            return True, None
        ctx.report.add("error", "unknown label", f"{e}; fix the cell or extend the protocol's map",
                       ctx.sheet.label, row, column)
        return False, None


def _annotated_sample(ctx: _RowContext, row: int, cells: dict[str, object]) -> Sample | None:
    """Turn one annotation row into a Sample, reporting (and dropping on) problems."""
    rep, sh, cols = ctx.report, ctx.sheet, ctx.sheet.columns

    def col(f: str) -> str:
        return cols.get(f, f)

    subj_text = cell_text(cells.get("subject"))
    subj = ctx.subject_folder(subj_text) if subj_text else None
    if subj is None:
        rep.add("error", "unparsable cell", f"subject {subj_text!r} is not a subject id", sh.label, row, col("subject"))
        return None
    clip = cell_text(cells.get("filename"))
    if not clip:
        rep.add("error", "unparsable cell", "blank file name", sh.label, row, col("filename"))
        return None
    nums: dict[str, int | None] = {}
    for f in ("onset", "apex", "offset"):
        try:
            nums[f] = parse_frame_number(cells.get(f)) if f in cols else None
        except ValueError as e:
            rep.add("error", "unparsable cell", f"{e}{ctx.frame_ref_hint}", sh.label, row, col(f))
            return None
    if nums["onset"] is None:
        rep.add("error", "unparsable cell", "onset frame is not annotated", sh.label, row, col("onset"))
        return None
    kind = ctx.kind
    if "type" in cols and "macro" in cell_text(cells.get("type")).lower():
        kind = "macro"
    raw = cell_text(cells.get("emotion"))
    ok, label = _map(ctx, raw, row, col("emotion"))
    if not ok:
        return None

    frames = ctx.frames_of(subj, clip)
    if frames is None or not len(frames):
        where = frames.dir if frames is not None else (ctx.frames_base or Path(".")) / subj / clip
        why = "holds no image files" if frames is not None else "not found"
        rep.add("error", "missing clip folder", f"frame folder {where} {why}", sh.label, row, col("filename"))
        return None
    onset = nums["onset"]
    if onset not in frames:
        rep.add("error", "missing frame file",
                f"onset frame {onset}: no such frame file in {frames.dir} "
                f"(frames there: {frames.numbers[0]}..{frames.numbers[-1]}){ctx.frame_ref_hint}",
                sh.label, row, col("onset"))
        return None
    offset = nums["offset"]
    if offset is None:
        offset = frames.numbers[-1]
        rep.add("note", "offset not annotated", f"offset not annotated: the clip's last frame {offset} is used",
                sh.label, row, col("offset"))
    if offset < onset:
        rep.add("error", "onset after offset", f"offset {offset} is before onset {onset}", sh.label, row, col("offset"))
        return None
    apex, imputed = nums["apex"], False
    if apex is None:
        apex, imputed = middle_frame(frames.numbers, onset, offset), True
        rep.add("note", "apex not annotated",
                f"apex not annotated ({cell_text(cells.get('apex')) or 'blank'}): middle frame {apex} "
                f"of {onset}..{offset} used", sh.label, row, col("apex"))
    elif apex not in frames:
        rep.add("error", "missing frame file",
                f"apex frame {apex}: no such frame file in {frames.dir}{ctx.frame_ref_hint}",
                sh.label, row, col("apex"))
        return None
    if not onset <= apex <= offset:
        rep.add("warning", "apex outside onset..offset",
                f"apex {apex} is outside onset..offset {onset}..{offset}; kept as annotated",
                sh.label, row, col("apex"))
    if offset not in frames and nums["offset"] is not None:
        rep.add("warning", "missing frame file",
                f"offset frame {offset}: no such frame file in {frames.dir}; kept (training uses onset "
                "and apex)", sh.label, row, col("offset"))
    if kind == "macro" and pseudo_apex_frame(frames.numbers, onset, offset) == onset:
        rep.add("error", "no frame after onset",
                f"macro-expression has no frame after onset {onset} in {frames.dir} for its pseudo-apex",
                sh.label, row, col("onset"))
        return None
    return Sample(
        dataset=ctx.dataset, subject=f"{ctx.dataset}/{subj}", sample=ctx.sample_name(clip, onset),
        clip=clip, kind=kind, raw_label=raw, label=label, onset=onset, apex=apex, offset=offset,
        frames=frames, apex_imputed=imputed, source_file=sh.label, source_row=row,
    )


def _unique_names(samples: list[Sample], report: LoadReport) -> list[Sample]:
    """Make (subject, sample, kind) unique: rows sharing a clip get "<clip>_<onset>"; true
    duplicates (same clip and onset) are dropped and reported."""
    groups: dict[tuple, list[Sample]] = defaultdict(list)
    for s in samples:
        groups[(s.subject, s.sample, s.kind)].append(s)
    out, seen = [], {}
    for s in samples:
        if len(groups[(s.subject, s.sample, s.kind)]) > 1:
            s.sample = f"{s.clip}_{s.onset}"
        k = (s.subject, s.sample, s.kind)
        if k in seen:
            report.add("error", "duplicate row", f"same subject, clip and onset as {seen[k]}; dropped",
                       s.source_file, s.source_row)
            continue
        seen[k] = s.source
        out.append(s)
    return out


def _sheet_samples(ctx: _RowContext) -> list[Sample]:
    samples = []
    for row, cells in ctx.sheet.rows:
        ctx.report.rows += 1
        s = _annotated_sample(ctx, row, cells)
        if s is not None:
            samples.append(s)
    return samples


class _FrameCache:
    """Index each clip folder once (CAS(ME)^3 events share long clips)."""

    def __init__(self, resolve: Callable[[str, str], Path | None], prefer_reg: bool = False) -> None:
        self.resolve, self.prefer_reg, self._cache = resolve, prefer_reg, {}

    def __call__(self, subj: str, clip: str) -> FrameIndex | None:
        if (subj, clip) not in self._cache:
            d = self.resolve(subj, clip)
            self._cache[(subj, clip)] = None if d is None else FrameIndex.by_number(d, self.prefer_reg)
        return self._cache[(subj, clip)]


def _dir_or_none(p: Path) -> Path | None:
    return p if p.is_dir() else None


def _finish(name: str, samples: list[Sample], report: LoadReport) -> tuple[list[Sample], LoadReport]:
    samples = _unique_names(samples, report)
    samples.sort(key=lambda s: (natural_key(s.subject), natural_key(s.sample), s.kind))
    if not report.classes:
        report.classes = _classes(name, report.protocol, samples)
    return samples, report.finalize(samples)


# ----------------------------------------------------------------------------- CASME II

def casme2_subject(text: str) -> str | None:
    """"1", "01", 1.0 or "sub01" -> "sub01"."""
    m = re.fullmatch(r"(?:sub)?\s*0*(\d+)", text.strip(), re.IGNORECASE)
    return f"sub{int(m.group(1)):02d}" if m else None


def load_casme2(root: str | Path, protocol: str = "casme2", *, sheet: str | Path | None = None,
                variant: str = "raw", strict: bool = False) -> tuple[list[Sample], LoadReport]:
    """CASME II (200 fps, 26 subjects, 255 rows / 247 samples in the sheet).

    variant: "raw" (CASME2-RAW / CASME2_RAW_selected, img<N>.jpg) or "cropped" (the
    release's own aligned Cropped/ tree, reg_img<N>.jpg)."""
    root = Path(root)
    if variant not in ("raw", "cropped"):
        raise DatasetError(f"CASME II variant {variant!r}: choose raw or cropped")
    report = LoadReport("casme2", protocol, PROTOCOLS[protocol] if protocol else (), strict)
    table = label_table("casme2", protocol)
    prefer, avoid = (("crop",), ()) if variant == "cropped" else (("raw",), ("crop",))
    base = find_frames_base(root, r"sub\d+", prefer=prefer, avoid=avoid, what="CASME II frame")
    rel = _display(base, root).lower()
    if variant == "cropped" and "crop" not in rel:
        raise DatasetError(f"{root}: no Cropped/ folder found for variant='cropped'; use variant='raw'")
    if variant == "raw" and "crop" in rel:
        report.notes.append(f"no CASME2-RAW folder found: using the release's cropped frames in {base}")
    sheet_path = Path(sheet) if sheet else _pick_sheet(
        root, find_sheets(root, skip=r"sub\d+"), [("coding",)], "CASME II coding sheet (CASME2-coding-*.xlsx)")
    sh = read_sheet(sheet_path, ["subject", "filename", "onset", "apex", "offset", "emotion"],
                    ["subject", "filename", "onset", "apex", "offset", "emotion"], _display(sheet_path, root))
    ctx = _RowContext("casme2", sh, report, table,
                      _FrameCache(lambda s, c: _dir_or_none(base / s / c), prefer_reg=variant == "cropped"),
                      casme2_subject, frames_base=base)
    report.notes.append(f"frames from {base}, annotations from {sh.label} (header row {sh.header_row})")
    return _finish("casme2", _sheet_samples(ctx), report)


# ----------------------------------------------------------------------------- SAMM

def samm_subject(text: str) -> str | None:
    """6, "6" or "006" -> "006"."""
    m = re.fullmatch(r"0*(\d+)", text.strip())
    return f"{int(m.group(1)):03d}" if m else None


def load_samm(root: str | Path, protocol: str = "samm", *, sheet: str | Path | None = None,
              strict: bool = False) -> tuple[list[Sample], LoadReport]:
    """SAMM (200 fps greyscale, 32 subjects / 159 micro-expressions; 136 in 5 classes)."""
    root = Path(root)
    report = LoadReport("samm", protocol, PROTOCOLS[protocol] if protocol else (), strict)
    table = label_table("samm", protocol)
    base = find_frames_base(root, r"\d{2,3}", what="SAMM frame")
    sheet_path = Path(sheet) if sheet else _pick_sheet(
        root, find_sheets(root, skip=r"\d{2,3}"), [("samm", "micro", "codes"), ("codes",), ("samm",)], "SAMM FACS codes sheet (SAMM_Micro_FACS_Codes_v2.xlsx)")
    sh = read_sheet(sheet_path, ["subject", "filename", "onset", "apex", "offset", "emotion", "type"],
                    ["subject", "filename", "onset", "apex", "offset", "emotion"], _display(sheet_path, root))
    ctx = _RowContext("samm", sh, report, table, _FrameCache(lambda s, c: _dir_or_none(base / s / c)),
                      samm_subject, frames_base=base)
    report.notes.append(f"frames from {base} (greyscale: read_frame gives 3 equal channels), "
                        f"annotations from {sh.label} (header row {sh.header_row})")
    return _finish("samm", _sheet_samples(ctx), report)


# ----------------------------------------------------------------------------- SMIC-HS

def load_smic(root: str | Path, protocol: str = "composite", *, prefer_reg: bool = False,
              strict: bool = False) -> tuple[list[Sample], LoadReport]:
    """SMIC-HS (100 fps, 16 subjects / 164 samples): HS/sN/micro/<class>/<clip>/.

    The clip runs onset..offset; no apex is annotated, so the middle frame is used (paper).
    ``prefer_reg`` picks reg_-prefixed frames where a folder holds both kinds."""
    root = Path(root)
    report = LoadReport("smic", protocol, PROTOCOLS[protocol] if protocol else (), strict)
    table = label_table("smic", protocol)
    base = find_frames_base(root, r"s\d+", prefer=("hs",), avoid=("vis", "nir"), what="SMIC-HS frame")
    if "hs" not in [p.lower() for p in base.relative_to(root).parts] and base.name.lower() != "hs":
        report.notes.append(f"no HS folder found: reading {base} as the high-speed recordings")
    samples, ignored = [], 0
    subj_dirs = sorted((d for d in base.iterdir() if d.is_dir() and re.fullmatch(r"s\d+", d.name, re.I)),
                       key=lambda d: natural_key(d.name))
    for sd in subj_dirs:
        kids = {d.name.lower(): d for d in sd.iterdir() if d.is_dir()}
        micro = kids.get("micro")
        for k, d in kids.items():
            if k != "micro":    # non_micro/<class>/<clip>: not micro-expressions
                ignored += sum(1 for c in d.glob("*/*") if c.is_dir())
        if micro is None:
            report.add("warning", "missing clip folder", f"{_display(sd, root)} has no micro/ folder; subject skipped",
                       _display(sd, root))
            continue
        for cd in sorted((d for d in micro.iterdir() if d.is_dir()), key=lambda d: natural_key(d.name)):
            raw = cd.name
            for clip_dir in sorted((d for d in cd.iterdir() if d.is_dir()), key=lambda d: natural_key(d.name)):
                report.rows += 1
                where = _display(clip_dir, root)
                if table is None:
                    label = _norm(raw)
                else:
                    try:
                        label = map_label(raw, table)
                    except UnknownLabelError as e:
                        report.add("error", "unknown label", f"class folder {raw!r}: {e}", where, None, "class folder")
                        continue
                frames = FrameIndex.by_number(clip_dir, prefer_reg)
                if not len(frames):
                    report.add("error", "empty clip folder", "clip folder holds no numbered image files", where)
                    continue
                onset, offset = frames.numbers[0], frames.numbers[-1]
                samples.append(Sample(
                    dataset="smic", subject=f"smic/{sd.name.lower()}", sample=clip_dir.name, clip=clip_dir.name,
                    kind="micro", raw_label=raw, label=label, onset=onset, offset=offset,
                    apex=middle_frame(frames.numbers, onset, offset), frames=frames, apex_imputed=True,
                    source_file=where))
    report.notes.append(f"frames from {base}; SMIC-HS has no apex annotation: the middle frame of each clip "
                        "is the apex, first/last frames are onset/offset")
    if ignored:
        report.notes.append(f"{ignored} clip folders outside micro/ (e.g. non_micro) are not micro-expressions "
                            "and were not read")
    return _finish("smic", samples, report)


# ----------------------------------------------------------------------------- CAS(ME)^3

def casme3_subject(text: str) -> str | None:
    """"spNO.1", "spNO1" or 1 -> "spNO.1"."""
    m = re.fullmatch(r"(?:sp\s*no\.?)?\s*0*(\d+)", text.strip(), re.IGNORECASE)
    return f"spNO.{int(m.group(1))}" if m else None


def _casme3_sheets(root: Path) -> tuple[Path | None, Path | None]:
    cands = find_sheets(root, max_depth=5, skip=r"sp\s*no\.?\d+")
    micro, macro = [], []
    for p in cands:
        n = p.name.lower()
        if "mae" in n or "macro" in n:
            macro.append(p)
        elif re.search(r"(^|[^a-z])me([^a-z]|$)", n) or "micro" in n:
            micro.append(p)

    def pick(lst):
        return sorted(lst, key=lambda p: ("label" in p.name.lower(), p.suffix.lower() == ".xlsx",
                                          natural_key(p.name)))[-1] if lst else None
    return pick(micro), pick(macro)


def load_casme3(root: str | Path, protocol: str = "casme3", *, sheet: str | Path | None = None,
                macro_sheet: str | Path | None = None, macro: bool = True,
                strict: bool = False) -> tuple[list[Sample], LoadReport]:
    """CAS(ME)^3 part A (30 fps): 943 micro- and 3143 macro-expressions in long clips.

    ``sheet``/``macro_sheet`` override the spreadsheets found under root (names containing
    "ME"/"MaE"); frames are <base>/spNO.N/<clip>/color/<n>.jpg or <base>/spNO.N/<clip>/<n>.jpg."""
    root = Path(root)
    report = LoadReport("casme3", protocol, PROTOCOLS[protocol] if protocol else (), strict)
    table = label_table("casme3", protocol)
    base = find_frames_base(root, r"sp\s*no\.?\d+", max_depth=6, what="CAS(ME)^3 frame")
    found_me, found_mae = _casme3_sheets(root)
    me_path = Path(sheet) if sheet else found_me
    mae_path = Path(macro_sheet) if macro_sheet else found_mae
    if me_path is None:
        raise DatasetError(f"{root}: no CAS(ME)^3 micro-expression sheet found (a spreadsheet with 'ME' in its "
                           "name, e.g. cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx); pass it with --sheet")

    def resolve(subj: str, clip: str) -> Path | None:
        for d in (base / subj / clip / "color", base / subj / clip):
            if d.is_dir() and image_files(d):
                return d
        return _dir_or_none(base / subj / clip)

    frames = _FrameCache(resolve)
    samples = []
    fields = ["subject", "filename", "onset", "apex", "offset", "emotion"]
    for kind, path in (("micro", me_path), ("macro", mae_path if macro else None)):
        if path is None:
            if kind == "macro":
                report.notes.append("no macro-expression sheet found (name containing 'MaE'): micro-expressions "
                                    "only; pass --macro-sheet to add them for pre-training")
            continue
        sh = read_sheet(path, fields, ["subject", "filename", "onset", "apex", "offset"] +
                        (["emotion"] if kind == "micro" else []), _display(path, root))
        if kind == "macro" and "emotion" not in sh.columns:
            report.notes.append(f"{sh.label} has no emotion column: macro-expressions are unlabelled")
        ctx = _RowContext("casme3", sh, report, table, frames, casme3_subject, kind=kind,
                          sample_name=lambda clip, onset: f"{clip}_{onset}", frames_base=base)
        samples += _sheet_samples(ctx)
        report.notes.append(f"{kind} annotations from {sh.label} (header row {sh.header_row})")
    report.notes.append(f"frames from {base}; macro pseudo-apex = the {PSEUDO_APEX_STEP}th frame after onset")
    return _finish("casme3", samples, report)


# ----------------------------------------------------------------------------- composite

COMPOSITE_PARTS = ("casme2", "samm", "smic")
_PART_NAMES = {"casme2": ("casme2", "casmeii"), "samm": ("samm",), "smic": ("smic",)}


def _composite_roots(root: str | Path | Mapping[str, str | Path]) -> dict[str, Path]:
    if isinstance(root, Mapping):
        roots = {k: Path(v) for k, v in root.items()}
        missing = [k for k in COMPOSITE_PARTS if k not in roots]
        if missing:
            raise DatasetError(f"composite: no root given for {', '.join(missing)}; pass e.g. "
                               "--root casme2=PATH --root samm=PATH --root smic=PATH")
        return roots
    root = Path(root)
    out = {}
    for d, depth in _walk_dirs(root, 2):
        if depth == 0:
            continue
        key = re.sub(r"[^a-z0-9]", "", d.name.lower())
        for part, names in _PART_NAMES.items():
            if part not in out and any(key.startswith(n) for n in names):
                out[part] = d
    missing = [k for k in COMPOSITE_PARTS if k not in out]
    if missing:
        raise DatasetError(f"{root}: no folder for {', '.join(missing)} (looked for folders named CASME2*, "
                           "SAMM*, SMIC* two levels down); pass --root casme2=PATH --root samm=PATH --root smic=PATH")
    return out


def composite_count_differences(samples: Sequence[Sample]) -> dict[str, list[str]]:
    """Per source dataset: how the labelled composite samples differ from the published
    MEGC 2019 counts (COMPOSITE_COUNTS); empty lists where they agree."""
    out = {}
    for ds, expected in COMPOSITE_COUNTS.items():
        mine = [s for s in samples if s.dataset == ds and s.kind == "micro" and s.label is not None]
        got = Counter(s.label for s in mine)
        got["samples"], got["subjects"] = len(mine), len({s.subject for s in mine})
        out[ds] = [f"{k} {got[k]} (published {v}, {got[k] - v:+d})" for k, v in expected.items() if got[k] != v]
    return out


def load_composite(root: str | Path | Mapping[str, str | Path], protocol: str = "composite", *,
                   check_counts: bool | str = "auto", strict: bool = False,
                   options: Mapping[str, Mapping] | None = None) -> tuple[list[Sample], LoadReport]:
    """MEGC 2019 composite (CDE): CASME II + SAMM + SMIC-HS in 3 classes, 442 samples / 68
    subjects in the challenge's list. ``root``: a folder holding the three releases (named
    CASME2*, SAMM*, SMIC*) or a mapping {"casme2": path, "samm": path, "smic": path}.

    check_counts: compare with the published per-dataset counts (True), skip (False), or
    "auto": check a dataset when it has at least the published number of subjects (a full
    release). Differences are warned about and listed in the report; the challenge
    published its own sample list, so small differences are expected."""
    if protocol != "composite":
        raise DatasetError(f"the composite is defined in 3 classes: protocol must be 'composite', not {protocol!r}")
    roots = _composite_roots(root)
    options = options or {}
    report = LoadReport("composite", protocol, PROTOCOLS[protocol], strict)
    loaders = {"casme2": load_casme2, "samm": load_samm, "smic": load_smic}
    samples: list[Sample] = []
    for part in COMPOSITE_PARTS:
        s, r = loaders[part](roots[part], "composite", strict=strict, **dict(options.get(part, {})))
        samples += s
        report.parts[part] = r
        report.rows += r.rows
        report.problems += r.problems
        report.notes += [f"{part}: {n}" for n in r.notes]
    diffs = composite_count_differences(samples)
    for ds, lines in diffs.items():
        n_subj = len({s.subject for s in samples if s.dataset == ds and s.label is not None})
        full = n_subj >= COMPOSITE_COUNTS[ds]["subjects"]
        if check_counts is True or (check_counts == "auto" and full):
            if lines:
                msg = f"{ds}: " + "; ".join(lines)
                report.count_check.append(msg)
                warnings.warn(f"composite counts differ from MEGC 2019's published list: {msg}", stacklevel=2)
            else:
                report.count_check.append(f"{ds}: matches the published counts")
        elif check_counts == "auto":
            report.count_check.append(f"{ds}: not checked ({n_subj} labelled subjects < "
                                      f"{COMPOSITE_COUNTS[ds]['subjects']} published: a partial release)")
    return samples, report.finalize(samples)


# ----------------------------------------------------------------------------- folder + CSV

def load_folder(root: str | Path, protocol: str | None = None, *, csv: str | Path | None = None,
                name: str = "custom", frame_ref: str = "auto",
                strict: bool = False) -> tuple[list[Sample], LoadReport]:
    """Your own clips: ROOT/<subject>/<clip>/<frames> and a CSV (default: the only .csv in
    ROOT, or ROOT/labels.csv) with columns subject, clip, onset, apex, offset, label and
    optionally kind (micro|macro). ``name`` becomes the dataset and the subject prefix.

    frame_ref: "number" (the number ending each frame file name), "index" (0-based
    position in the naturally sorted file list) or "auto" (numbers when every frame file of
    every clip named in the CSV ends in a number, else positions; the report says which)."""
    root = Path(root)
    if frame_ref not in ("auto", "number", "index"):
        raise DatasetError(f"frame_ref {frame_ref!r}: choose auto, number or index")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise DatasetError(f"dataset name {name!r}: use letters, digits, '_', '-' or '.'")
    report = LoadReport(name, protocol, PROTOCOLS[protocol] if protocol else (), strict)
    table = label_table("folder", protocol)
    if csv is None:
        csvs = sorted(root.glob("*.csv"))
        if (root / "labels.csv").is_file():
            csv = root / "labels.csv"
        elif len(csvs) == 1:
            csv = csvs[0]
        else:
            raise DatasetError(f"{root}: {'no' if not csvs else 'several'} .csv files at the top; "
                               "pass the annotation file with --csv")
    csv = Path(csv)
    sh = read_sheet(csv, ["subject", "filename", "onset", "apex", "offset", "emotion", "type"],
                    ["subject", "filename", "onset", "apex", "offset", "emotion"], _display(csv, root))

    # Decide numbers vs positions once for the whole dataset, from the clips the CSV names.
    mode = frame_ref
    if mode == "auto":
        clips = {(cell_text(c.get("subject")), cell_text(c.get("filename"))) for _, c in sh.rows}
        names = [n for s, c in clips for n in image_files(root / s / c)]
        mode = "number" if names and all(trailing_number(n) is not None for n in names) else "index"
    report.notes.append(f"onset/apex/offset read as frame {'numbers in the file names' if mode == 'number' else '0-based positions in the sorted file list'} "
                        f"(frame_ref={frame_ref!r})")
    index = FrameIndex.by_number if mode == "number" else FrameIndex.by_position
    cache: dict[tuple[str, str], FrameIndex | None] = {}

    def frames_of(subj: str, clip: str) -> FrameIndex | None:
        if (subj, clip) not in cache:
            d = root / subj / clip
            cache[(subj, clip)] = index(d) if d.is_dir() else None
        return cache[(subj, clip)]

    def subject_folder(text: str) -> str | None:
        return text if text and "/" not in text and "\\" not in text else None

    ctx = _RowContext(name, sh, report, table, frames_of, subject_folder, frames_base=root,
                      frame_ref_hint="" if frame_ref != "auto" else f" (frames read by {mode}; see frame_ref)")
    samples = []
    for row, cells in sh.rows:
        report.rows += 1
        kind_text = cell_text(cells.get("type")).lower() or "micro"
        if kind_text not in KINDS:
            report.add("error", "unparsable cell", f"kind {kind_text!r}: use micro or macro", sh.label, row,
                       sh.columns.get("type", "kind"))
            continue
        ctx.kind = kind_text
        s = _annotated_sample(ctx, row, cells)
        if s is not None:
            samples.append(s)
    return _finish("folder", samples, report)


# ----------------------------------------------------------------------------- entry point

def canonical_name(name: str) -> str:
    key = name.strip().lower().replace(" ", "")
    if key not in ALIASES:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return ALIASES[key]


def load_dataset(dataset: str, root, protocol: str | None = "default", *, strict: bool = False,
                 **options) -> tuple[list[Sample], LoadReport]:
    """Load any supported dataset: (samples, report); ``print(report)`` shows the counts.

    protocol "default" uses DEFAULT_PROTOCOL[dataset]; options go to the loader (sheet=,
    variant=, macro_sheet=, csv=, frame_ref=, name=, check_counts=, prefer_reg=...)."""
    ds = canonical_name(dataset)
    if protocol == "default":
        protocol = DEFAULT_PROTOCOL[ds]
    if protocol is not None and protocol not in PROTOCOLS:
        raise DatasetError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    loader = {"casme2": load_casme2, "samm": load_samm, "smic": load_smic, "casme3": load_casme3,
              "composite": load_composite, "folder": load_folder}[ds]
    if ds == "folder":
        return loader(root, protocol, strict=strict, **options)
    if protocol is None:
        raise DatasetError(f"{ds} needs a protocol; choose one of "
                           f"{', '.join(p for d, p in LABEL_TABLES if d == ds)}")
    return loader(root, protocol, strict=strict, **options)


def add_dataset_args(p: argparse.ArgumentParser) -> None:
    """The dataset options shared by every CLI that loads a dataset."""
    p.add_argument("--dataset", required=True, help=f"one of {', '.join(DATASETS)}")
    p.add_argument("--root", required=True, action="append",
                   help="release folder; for the composite either one folder holding CASME2*/SAMM*/SMIC* "
                        "or three times NAME=PATH (casme2=..., samm=..., smic=...)")
    p.add_argument("--protocol", default="default",
                   help=f"class set ({', '.join(PROTOCOLS)}); default per dataset: "
                        + ", ".join(f"{k} -> {v}" for k, v in DEFAULT_PROTOCOL.items()))
    p.add_argument("--sheet", help="annotation spreadsheet (default: found under --root)")
    p.add_argument("--macro-sheet", help="CAS(ME)^3 macro-expression sheet (default: found under --root)")
    p.add_argument("--no-macro", action="store_true", help="CAS(ME)^3: micro-expressions only")
    p.add_argument("--variant", choices=("raw", "cropped"), default="raw", help="CASME II frame tree")
    p.add_argument("--prefer-reg", action="store_true", help="SMIC-HS: use reg_ frames where both exist")
    p.add_argument("--csv", help="folder format: the annotation CSV (default: ROOT/labels.csv or the only .csv)")
    p.add_argument("--name", default="custom", help="folder format: dataset name / subject prefix")
    p.add_argument("--frame-ref", choices=("auto", "number", "index"), default="auto",
                   help="folder format: onset/apex/offset are file-name numbers or sorted positions")
    p.add_argument("--strict", action="store_true", help="stop at the first problem instead of reporting it")


def dataset_from_args(args: argparse.Namespace) -> tuple[list[Sample], LoadReport]:
    ds = canonical_name(args.dataset)
    protocol = None if args.protocol in ("none", "None") else args.protocol
    roots = args.root
    if ds == "composite" and any("=" in r for r in roots):
        root = dict(r.split("=", 1) for r in roots)
    elif len(roots) != 1:
        raise DatasetError("give --root once (several only as NAME=PATH for the composite)")
    else:
        root = roots[0]
    opts: dict = {}
    if ds == "casme2":
        opts = {"sheet": args.sheet, "variant": args.variant}
    elif ds == "samm":
        opts = {"sheet": args.sheet}
    elif ds == "smic":
        opts = {"prefer_reg": args.prefer_reg}
    elif ds == "casme3":
        opts = {"sheet": args.sheet, "macro_sheet": args.macro_sheet, "macro": not args.no_macro}
    elif ds == "composite":
        opts = {"options": {"casme2": {"variant": args.variant}, "smic": {"prefer_reg": args.prefer_reg}}}
    elif ds == "folder":
        opts = {"csv": args.csv, "name": args.name, "frame_ref": args.frame_ref}
    return load_dataset(ds, root, protocol, strict=args.strict, **opts)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m train.datasets",
        description="Load a micro-expression release and print what was read: counts per class and "
                    "subject, and every problem with file, row and column.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  python -m train.datasets --dataset casme2 --root /data/CASME2\n"
               "  python -m train.datasets --dataset samm --root /data/SAMM --strict\n"
               "  python -m train.datasets --dataset composite --root casme2=/data/CASME2 "
               "--root samm=/data/SAMM --root smic=/data/SMIC\n"
               "  python -m train.datasets --dataset folder --root my_clips --csv my_clips/labels.csv")
    add_dataset_args(p)
    p.add_argument("--all-problems", action="store_true", help="list every problem, not the first 40")
    args = p.parse_args(argv)
    try:
        _, report = dataset_from_args(args)
    except DatasetError as e:
        p.exit(2, f"error: {e}\n")
    print(report.format(max_problems=10**9 if args.all_problems else 40))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
