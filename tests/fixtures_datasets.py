"""Small fixture trees that mimic each release's layout (DATASETS.md), built at test time.

Frames are cut from the bundled real face clip (core/assets/single_face.mp4):
detectors find no face in drawn images. Spreadsheets are generated with the releases'
real column names and include the awkward rows the loaders must report: a missing apex
("/" or -1), a notes block above the SAMM header, a missing frame file, an unknown label
and a non-numeric cell. Each builder returns a Fixture whose ``rows`` names the
spreadsheet rows (as a spreadsheet program numbers them) of the awkward cases.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from core import assets


@dataclass
class Fixture:
    root: Path
    rows: dict[str, int] = field(default_factory=dict)    # awkward case -> spreadsheet row
    sheet: Path | None = None


@lru_cache(maxsize=4)
def video_frames(name: str = "single_face.mp4", size: tuple[int, int] | None = None) -> tuple[np.ndarray, ...]:
    """All frames of a bundled clip as BGR uint8 (optionally resized to (w, h))."""
    cap = cv2.VideoCapture(str(assets.path(name)))
    out = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        out.append(cv2.resize(f, size, interpolation=cv2.INTER_AREA) if size else f)
    cap.release()
    if not out:
        raise RuntimeError(f"could not decode {name}")
    return tuple(out)


def window(n: int, start: int) -> list[np.ndarray]:
    frames = video_frames()
    return [frames[(start + i) % len(frames)] for i in range(n)]


def write_frames(folder: Path, numbers, frames, name=lambda n: f"img{n}.jpg", transform=None) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, f in zip(numbers, frames):
        p = folder / name(n)
        img = transform(f) if transform else f
        if not cv2.imwrite(str(p), img):
            raise RuntimeError(f"cannot write {p}")
        paths.append(p)
    return paths


def write_xlsx(path: Path, rows: list[list], sheet_title: str = "Sheet1", extra_sheets: dict | None = None) -> Path:
    """Rows written from spreadsheet row 1; None leaves a cell empty."""
    import openpyxl

    wb = openpyxl.Workbook()
    for title, content in [(sheet_title, rows)] + list((extra_sheets or {}).items()):
        ws = wb.active if title == sheet_title else wb.create_sheet(title)
        ws.title = title
        for r, row in enumerate(content, start=1):
            for c, v in enumerate(row, start=1):
                if v is not None:
                    ws.cell(row=r, column=c, value=v)
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)
    return path


def _face_crop(f: np.ndarray) -> np.ndarray:
    """A tight face crop like the releases' aligned variants (the face is at ~200..390, 100..305)."""
    return f[60:330, 170:420]


# ----------------------------------------------------------------------------- CASME II

CASME2_HEADER = ["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Action Units", "Estimated Emotion"]


def make_casme2(root: Path) -> Fixture:
    """CASME2-RAW/subXX/EPxx/img<N>.jpg + Cropped/.../reg_img<N>.jpg + the coding sheet.

    Kept (7): happiness 2, disgust 1, repression 1, surprise 1, others 1, fear 1 (left out
    by the 5-class protocol). Dropped (3): missing onset file, unknown label, non-numeric onset."""
    root = Path(root)
    # (subject cell, clip, onset, apex, offset, AU, emotion, frames on disk)
    table = [
        ("01", "EP02_01f", 46, 52, 55, "12", "happiness", range(46, 56)),
        ("01", "EP03_02", 100, "/", 109, "4", "disgust", range(100, 110)),       # apex "/"
        ("01", "EP04_01", 10, 14, 19, "14", "repression", range(10, 20)),
        (2, "EP01_01", 200, 205, 209, "1+2", "surprise", range(200, 210)),
        (2, "EP05_03", 30, 33, 39, "4", "fear", range(30, 40)),
        (2, "EP06_01", 50, 55, 59, "12", "others", range(50, 60)),
        (5, "EP07_01", 60, 64, 69, "4", "disgust", range(61, 70)),                # onset file missing
        (5, "EP08_01", 70, 74, 79, "9", "angry", range(70, 80)),                  # unknown label
        (5, "EP09_01", "8O", 84, 89, "9", "happiness", range(80, 90)),            # non-numeric onset
        (5, "EP10_01", 90, 99, 95, "12", "happiness", range(90, 100)),            # apex after offset
    ]
    rows = [CASME2_HEADER]
    for k, (subj, clip, on, apex, off, au, emo, disk) in enumerate(table):
        rows.append([subj, clip, on, apex, off, au, emo])
        sub = f"sub{int(subj):02d}"
        frames = window(len(disk), start=5 * k)
        write_frames(root / "CASME2-RAW" / sub / clip, disk, frames)
        write_frames(root / "Cropped" / sub / clip, disk, frames, name=lambda n: f"reg_img{n}.jpg",
                     transform=_face_crop)
    sheet = write_xlsx(root / "CASME2-coding-20140508.xlsx", rows)
    return Fixture(root, {"apex_slash": 3, "missing_frame": 8, "unknown_label": 9, "non_numeric": 10,
                          "apex_outside": 11}, sheet)


# ----------------------------------------------------------------------------- SAMM

SAMM_HEADER = ["Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame", "Offset Frame",
               "Duration", "Type", "Action Units", "Notes", "Estimated Emotion"]
SAMM_HEADER_ROW = 13


def make_samm(root: Path) -> Fixture:
    """SAMM/006/006_1_2/006_05562.jpg greyscale + SAMM_Micro_FACS_Codes_v2.xlsx with a notes
    block above the header (row 13).

    Kept (7): happiness, anger, contempt, surprise, other 1 each; disgust and fear (apex -1)
    left out by the 5-class protocol. Dropped (2): missing apex file, non-numeric offset."""
    root = Path(root)
    table = [
        (6, "006_1_2", 1, 5562, 5566, 5571, "Happiness", range(5562, 5572)),
        (6, "006_1_3", 1, 1000, 1004, 1009, "Anger", range(1000, 1010)),
        (6, "006_2_1", 2, 2000, 2005, 2009, "Contempt", range(2000, 2010)),
        (7, "007_3_1", 3, 3000, 3004, 3009, "Surprise", range(3000, 3010)),
        (7, "007_5_2", 5, 4000, 4004, 4009, "Other", range(4000, 4010)),
        (7, "007_6_1", 6, 500, 504, 509, "Disgust", range(500, 510)),
        (11, "011_2_1", 2, 600, -1, 609, "Fear", range(600, 610)),                 # apex -1
        (11, "011_3_1", 3, 700, 704, 709, "Anger", [n for n in range(700, 710) if n != 704]),  # apex file missing
        (11, "011_4_1", 4, 800, 804, "8O9", "Sadness", range(800, 810)),           # non-numeric offset
    ]
    notes = [["SAMM: Spontaneous Actions and Micro-Movements"], [],
             ["Micro-movement FACS codes, version 2"],
             ["Frames are numbered per subject: <subject>_<frame>.jpg"],
             ["Duration is in frames at 200 fps"], ["Inducement codes refer to the stimulus list"],
             ["Emotion is estimated from the AUs and the stimulus"], [],
             ["Notes column: comments by the coders"], [], [], []]
    assert len(notes) == SAMM_HEADER_ROW - 1
    rows = notes + [SAMM_HEADER]
    for k, (subj, clip, ind, on, apex, off, emo, disk) in enumerate(table):
        dur = off - on + 1 if isinstance(off, int) else None
        rows.append([subj, clip, ind, on, apex, off, dur, "Micro - 1/2", "R12", None, emo])
        sid = f"{subj:03d}"
        write_frames(root / "SAMM" / sid / clip, disk, window(len(disk), start=4 * k),
                     name=lambda n, sid=sid: f"{sid}_{n:05d}.jpg",
                     transform=lambda f: cv2.cvtColor(f, cv2.COLOR_BGR2GRAY))
    sheet = write_xlsx(root / "SAMM_Micro_FACS_Codes_v2.xlsx", rows, sheet_title="FACS")
    first = SAMM_HEADER_ROW + 1
    return Fixture(root, {"header": SAMM_HEADER_ROW, "apex_minus1": first + 6, "missing_frame": first + 7,
                          "non_numeric": first + 8}, sheet)


# ----------------------------------------------------------------------------- SMIC-HS

def make_smic(root: Path, n_frames: int = 8) -> Fixture:
    """SMIC/HS/sN/micro/<class>/<clip>/image<N>.bmp (BMP, as released; 320x240 face crops).

    Kept (7): negative 3 (one clip with reg_ frames), positive 2, surprise 2. Dropped (2):
    an empty clip folder and an unknown class folder. Also a non_micro clip and a VIS tree
    that must not be read."""
    root = Path(root)
    hs = root / "SMIC" / "HS"
    crop = lambda f: f[60:300, 130:450]    # noqa: E731  (320x240 around the face)
    clips = [
        ("s1", "negative", "s1_ne_01", "image"), ("s1", "positive", "s1_po_01", "image"),
        ("s1", "surprise", "s1_sur_01", "image"),
        ("s2", "negative", "s2_ne_01", "image"), ("s2", "negative", "s2_ne_02", "reg_image"),
        ("s2", "positive", "s2_po_01", "image"), ("s3", "surprise", "s3_sur_01", "image"),
        ("s3", "happy", "s3_ha_01", "image"),                                      # unknown class
    ]
    for k, (s, cls, clip, prefix) in enumerate(clips):
        write_frames(hs / s / "micro" / cls / clip, range(302424, 302424 + n_frames),
                     window(n_frames, start=6 * k), name=lambda n, p=prefix: f"{p}{n}.bmp", transform=crop)
    (hs / "s3" / "micro" / "negative" / "s3_ne_03").mkdir(parents=True)          # empty clip
    write_frames(hs / "s1" / "non_micro" / "negative" / "s1_nne_01", range(1, 3), window(2, 0),
                 name=lambda n: f"image{n}.bmp", transform=crop)
    write_frames(root / "SMIC" / "VIS" / "s1" / "micro" / "negative" / "s1_ne_01", range(1, 3), window(2, 0),
                 name=lambda n: f"image{n}.bmp", transform=crop)
    return Fixture(root)


# ----------------------------------------------------------------------------- CAS(ME)^3

def make_casme3(root: Path, clip_len: int = 24) -> Fixture:
    """part_A/data/part_A/spNO.N/<clip>/color/<n>.jpg + the ME sheet (sheet 'label') and the
    MaE sheet (sub, seq, onset, apex, offset, emotion).

    Micro kept (6): positive 1, negative 3, surprise 1, others 1 (left out); dropped 1
    (onset beyond the clip). Macro kept (4), one with an unknown label (kept, unlabelled)."""
    root = Path(root)
    base = root / "part_A" / "data" / "part_A"
    for k, (s, clip) in enumerate([("spNO.1", "a"), ("spNO.1", "b"), ("spNO.2", "a"), ("spNO.3", "c")]):
        write_frames(base / s / clip / "color", range(clip_len), window(clip_len, start=9 * k),
                     name=lambda n: f"{n}.jpg")
        (base / s / clip / "depth").mkdir()
        cv2.imwrite(str(base / s / clip / "depth" / "0.png"), np.zeros((8, 8), np.uint16))
    me = [["Subject", "Filename", "Onset", "Apex", "Offset", "AU", "Objective class", "emotion"],
          ["spNO.1", "a", 2, 5, 8, "12", 1, "happy"],
          ["spNO.1", "a", 12, 14, 17, "4", 2, "disgust"],
          ["spNO.1", "b", 3, 6, 9, "1+2", 5, "surprise"],
          ["spNO.2", "a", 1, 4, 7, "4", 7, "others"],
          ["spNO.2", "a", 10, 13, 16, "15", 6, "sad"],
          ["spNO.3", "c", 30, 33, 36, "4", 3, "fear"],                         # beyond the clip
          ["spNO.3", "c", 4, 7, 10, "4", 3, "Fear"]]
    mae = [["sub", "seq", "onset", "apex", "offset", "emotion"],
           ["spNO.1", "a", 0, 6, 20, "happy"],
           ["spNO.2", "a", 5, 12, 22, "disgust"],
           ["spNO.3", "c", 15, 17, 18, "others"],                                # pseudo-apex capped at 18
           ["spNO.3", "c", 2, 8, 20, "grumpy"]]                                  # unknown label
    ann = root / "part_A" / "annotation"
    write_xlsx(ann / "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx", me, sheet_title="label")
    write_xlsx(ann / "cas(me)3_part_A_MaE_label_JpgIndex_v2_emotion.xlsx", mae)
    return Fixture(root, {"missing_frame": 7, "macro_unknown": 5})


# ----------------------------------------------------------------------------- composite

def make_composite(root: Path) -> Fixture:
    """CASME2/, SAMM/ and SMIC/ side by side. 3-class counts (COMPOSITE_FROM):
    casme2 negative 2, positive 2, surprise 1 (fear, others left out);
    samm negative 4, positive 1, surprise 1 (other left out);
    smic negative 3, positive 2, surprise 2."""
    root = Path(root)
    make_casme2(root / "CASME2")
    make_samm(root / "SAMM")
    make_smic(root / "SMIC")
    return Fixture(root)


# ----------------------------------------------------------------------------- folder + CSV

def make_folder(root: Path, *, numbered: bool = True, no_face: bool = False, n_frames: int = 8) -> Fixture:
    """ROOT/<subject>/<clip>/frames + labels.csv (subject, clip, onset, apex, offset, label, kind).

    numbered: frame_0001.jpg.. (onset etc. are file numbers, from 1) or framea.jpg..
    (onset etc. are 0-based positions). no_face: add carol/noface whose frames come from
    core/assets/no_face.mp4 (its onset has no face)."""
    root = Path(root)
    first = 1 if numbered else 0
    name = (lambda n: f"frame_{n:04d}.jpg") if numbered else (lambda n: f"frame{chr(97 + n)}.jpg")
    clips = [("alice", "clip1", 0, 3, 7, "negative", "micro"),
             ("alice", "clip2", 0, None, 7, "positive", "micro"),                  # blank apex
             ("bob", "clip1", 1, 4, 7, "surprise", "micro"),
             ("bob", "clip2", 0, 2, 5, "negative", "macro")]
    if no_face:
        clips.append(("carol", "noface", 0, 2, 5, "surprise", "micro"))
    rows = [["subject", "clip", "onset", "apex", "offset", "label", "kind"]]
    for k, (s, c, on, apex, off, lab, kind) in enumerate(clips):
        if c == "noface":
            frames = list(video_frames("no_face.mp4", (640, 360))[:n_frames])
        else:
            frames = window(n_frames, start=11 * k)
        write_frames(root / s / c, range(first, first + n_frames), frames, name=name)
        rows.append([s, c, on + first, "" if apex is None else apex + first, off + first, lab, kind])
    with open(root / "labels.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return Fixture(root, {"blank_apex": 3}, root / "labels.csv")
