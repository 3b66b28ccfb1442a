"""SMIC-HS (100 fps, 16 subjects): HS/sN/micro/<class>/<clip>/, the class read from the
folder, no annotation sheet.

Owns ``load_smic``: each clip runs onset..offset, and as SMIC has no apex annotation the
middle frame is the apex (the paper's rule); folders outside micro/ are counted, not read.
"""
from __future__ import annotations

import re
from pathlib import Path

from core.protocols import PROTOCOLS, UnknownLabelError, _norm, map_label
from train.datasets.frames import FrameIndex, middle_frame, natural_key
from train.datasets.layout import _display, find_frames_base
from train.datasets.records import LoadReport, Sample
from train.datasets.rows import _finish, label_table


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
