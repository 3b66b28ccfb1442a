"""CASME II (200 fps, 26 subjects): frames under CASME2-RAW (or the release's Cropped/ tree)
and the CASME2-coding-*.xlsx sheet.

Owns ``load_casme2`` and how the sheet names a subject (``casme2_subject``: 1 -> sub01).
"""
from __future__ import annotations

import re
from pathlib import Path

from core.protocols import PROTOCOLS
from train.datasets.layout import _display, _pick_sheet, find_frames_base, find_sheets
from train.datasets.records import DatasetError, LoadReport, Sample
from train.datasets.rows import (
    _dir_or_none,
    _finish,
    _FrameCache,
    _RowContext,
    _sheet_samples,
    label_table,
)
from train.datasets.sheets import read_sheet


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
