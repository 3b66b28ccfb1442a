"""The row logic every spreadsheet-based loader shares: one annotation row -> one Sample.

Owns the raw-label map of a dataset under a protocol (``label_table``), ``_RowContext``
(what a loader tells the shared code: its sheet, report, label map and how to find a
clip's frames), ``_annotated_sample`` (every check of one row, each problem reported and
the row dropped or kept as the package docstring's decisions say), unique sample names,
the per-clip frame cache and ``_finish`` (sort, classes, counts).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from core.protocols import PROTOCOLS, UnknownLabelError, _norm, map_label
from train.datasets.frames import (
    FrameIndex,
    middle_frame,
    natural_key,
    pseudo_apex_frame,
)
from train.datasets.records import LABEL_TABLES, DatasetError, LoadReport, Sample
from train.datasets.sheets import Sheet, cell_text, parse_frame_number


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
