"""CAS(ME)^3 part A (30 fps): long clips holding many micro- and macro-expressions each.

Owns ``load_casme3``: the ME and MaE label sheets (found by name or given), frames under
<base>/spNO.N/<clip>/color/ or without color/, one sample per annotated event
("<clip>_<onset>"), and how the sheets name a subject (``casme3_subject``).
"""
from __future__ import annotations

import re
from pathlib import Path

from core.protocols import PROTOCOLS
from train.datasets.frames import PSEUDO_APEX_STEP, image_files, natural_key
from train.datasets.layout import _display, find_frames_base, find_sheets
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
    report.notes.append(f"frames from {base}; macro pseudo-apex = onset + {PSEUDO_APEX_STEP} (the "
                        f"{PSEUDO_APEX_STEP + 1}th frame counting the onset as the 1st, as the paper)")
    return _finish("casme3", samples, report)
