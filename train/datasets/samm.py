"""SAMM (200 fps greyscale, 32 subjects): frames under SAMM/<subject>/<clip>/ and the
SAMM_Micro_FACS_Codes sheet with its notes block above the header.

Owns ``load_samm`` and how the sheet names a subject (``samm_subject``: 6 -> 006).
"""
from __future__ import annotations

import re
from pathlib import Path

from core.protocols import PROTOCOLS
from train.datasets.layout import _display, _pick_sheet, find_frames_base, find_sheets
from train.datasets.records import LoadReport, Sample
from train.datasets.rows import (
    _dir_or_none,
    _finish,
    _FrameCache,
    _RowContext,
    _sheet_samples,
    label_table,
)
from train.datasets.sheets import read_sheet


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
