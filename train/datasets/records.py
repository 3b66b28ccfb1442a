"""What a loader returns: the supported datasets, their samples and the load report.

Owns the dataset names, titles, aliases and default protocols, the (dataset, protocol) ->
label map table (the maps themselves live in core.protocols), ``DatasetError``,
``Sample`` (one annotated expression: where its frames are and which frames matter), and
``Problem`` / ``LoadReport`` (counts per class and subject and every problem met, with
file, row and column).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from core.protocols import CASME2_TO_5, CASME3_TO_3, COMPOSITE_FROM, SAMM_TO_5
from train.datasets.frames import PSEUDO_APEX_STEP, FrameIndex, natural_key, pseudo_apex_frame, read_frame

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


# (dataset, protocol) -> raw label map (core/protocols.py holds the facts).
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


class DatasetError(ValueError):
    """A release that cannot be read (layout, spreadsheet), or a problem in strict mode."""


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
        """The paper's pseudo-apex of a macro-expression: the 5th frame counting the onset as
        the 1st (onset + PSEUDO_APEX_STEP frames on disk), at most the offset."""
        return pseudo_apex_frame(self.frames.numbers, self.onset, self.offset)

    def training_pair(self, pseudo_apex_step: int = PSEUDO_APEX_STEP) -> tuple[int, int]:
        """(onset, apex) frame numbers of the training pair: the annotated apex for a
        micro-expression, the frame ``pseudo_apex_step`` frames after the onset (capped at
        the offset) for a macro-expression (train.cache passes CacheSettings.pseudo_apex_step)."""
        if self.kind == "micro":
            return (self.onset, self.apex)
        return (self.onset, pseudo_apex_frame(self.frames.numbers, self.onset, self.offset, pseudo_apex_step))

    @property
    def pair(self) -> tuple[int, int]:
        """``training_pair()`` with the paper's step (onset + 4 for a macro-expression)."""
        return self.training_pair()


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
