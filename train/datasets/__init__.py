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
               (core/protocols.py COMPOSITE_FROM); subjects keep their dataset prefix.
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
- Macro-expressions use the paper's pseudo-apex, "the 5th frame" of the sample counting the
  onset as the 1st, i.e. onset + 4 frames on disk (MOEXT.md, "Data for each phase"), capped
  at the offset: ``Sample.pseudo_apex``; ``Sample.training_pair(step)`` takes another step
  (train.cache passes ``CacheSettings.pseudo_apex_step``, part of the cache key).
- A label that the protocol leaves out (CASME II fear/sadness, CAS(ME)^3 others...) keeps
  its sample with ``label=None``: it is still used, label-free, for pre-training, and the
  report counts it. A label the protocol does not know at all drops the row (reported).
- An apex outside onset..offset, or a missing offset frame file, keeps the sample and is
  reported as a warning; a missing onset/apex frame file, a missing clip folder or an
  unparsable onset/apex/offset cell drops the row (reported as an error).
- Nothing is dropped silently: ``LoadReport`` lists every problem with file, row (as a
  spreadsheet program numbers it) and column, and counts dropped rows by reason.
  ``strict=True`` raises ``DatasetError`` on the first error or warning instead.
- Greyscale frames (SAMM) get three equal channels with core.face.ensure_bgr, the
  same function the live path uses (``read_frame``).

The package, one module per responsibility: ``records`` (dataset names, Sample,
LoadReport, DatasetError), ``frames`` (frame files and FrameIndex), ``sheets`` (reading
annotation spreadsheets), ``layout`` (finding a release's folders and sheets), ``rows``
(the row logic the sheet-based loaders share), one module per dataset (``casme2``,
``samm``, ``smic``, ``casme3``, ``composite``, ``folder``), ``loaders`` (``load_dataset``)
and ``cli`` (the shared dataset options and ``python -m train.datasets``). This
``__init__`` only re-exports their public API, so ``from train.datasets import
load_dataset`` and ``datasets.read_sheet`` keep working.
"""
from __future__ import annotations

from train.datasets.casme2 import casme2_subject, load_casme2
from train.datasets.casme3 import casme3_subject, load_casme3
from train.datasets.cli import add_dataset_args, dataset_from_args, main
from train.datasets.composite import (
    COMPOSITE_PARTS,
    composite_count_differences,
    load_composite,
)
from train.datasets.folder import load_folder
from train.datasets.frames import (
    IMAGE_EXTS,
    PSEUDO_APEX_STEP,
    FrameIndex,
    FrameReadError,
    image_files,
    middle_frame,
    natural_key,
    pseudo_apex_frame,
    read_frame,
    trailing_number,
)
from train.datasets.layout import find_frames_base, find_sheets
from train.datasets.loaders import canonical_name, load_dataset
from train.datasets.records import (
    ALIASES,
    DATASET_TITLES,
    DATASETS,
    DEFAULT_PROTOCOL,
    KINDS,
    LABEL_TABLES,
    DatasetError,
    LoadReport,
    Problem,
    Sample,
)
from train.datasets.rows import label_table
from train.datasets.samm import load_samm, samm_subject
from train.datasets.sheets import (
    FIELD_ALIASES,
    MISSING_MARKERS,
    SHEET_EXTS,
    Sheet,
    cell_text,
    parse_frame_number,
    read_sheet,
)
from train.datasets.smic import load_smic

__all__ = [
    "ALIASES", "COMPOSITE_PARTS", "DATASETS", "DATASET_TITLES", "DEFAULT_PROTOCOL", "FIELD_ALIASES",
    "IMAGE_EXTS", "KINDS", "LABEL_TABLES", "MISSING_MARKERS", "PSEUDO_APEX_STEP", "SHEET_EXTS",
    "DatasetError", "FrameIndex", "FrameReadError", "LoadReport", "Problem", "Sample", "Sheet",
    "add_dataset_args", "canonical_name", "casme2_subject", "casme3_subject", "cell_text",
    "composite_count_differences", "dataset_from_args", "find_frames_base", "find_sheets", "image_files",
    "label_table", "load_casme2", "load_casme3", "load_composite", "load_dataset", "load_folder", "load_samm",
    "load_smic", "main", "middle_frame", "natural_key", "parse_frame_number", "pseudo_apex_frame",
    "read_frame", "read_sheet", "samm_subject", "trailing_number",
]
