"""Your own data: ROOT/<subject>/<clip>/<frames> and a CSV of subject, clip, onset, apex,
offset, label (and optionally kind).

Owns ``load_folder``, including how onset/apex/offset refer to frames (the numbers ending
the file names, or 0-based positions in the sorted list: ``frame_ref``).
"""
from __future__ import annotations

import re
from pathlib import Path

from core.protocols import PROTOCOLS
from train.datasets.frames import FrameIndex, image_files, trailing_number
from train.datasets.layout import _display
from train.datasets.records import KINDS, DatasetError, LoadReport, Sample
from train.datasets.rows import _annotated_sample, _finish, _RowContext, label_table
from train.datasets.sheets import cell_text, read_sheet


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
