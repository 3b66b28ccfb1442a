"""Event exports that researchers' tools read directly.

- ELAN (``write_eaf``): one ``.eaf`` per recording (EAF 3.0, the format ELAN 4.9+ writes):
  a tier per face and kind ("face 0 micro", "face 0 macro"), one annotation per event
  whose value is its label ("unlabelled" with --engine none), times in milliseconds from
  the onset frame's start to the end of the offset frame, the recording linked as the
  media file (absolute ``MEDIA_URL`` and a ``RELATIVE_MEDIA_URL`` from the .eaf's folder),
  the subject as each tier's participant. Written with the standard library; read back
  in the tests with pympi-ling (``pympi.Elan.Eaf``).
- MEGC spotting submission (``MegcWriter``): the CSV of the MEGC 2022 spotting task (ACM
  Multimedia 2022 grand challenge, unseen CAS(ME)^3 and SAMM Challenge long videos):
  ``vid,pred_onset,pred_offset,type`` with type ``me`` (micro) or ``mae`` (macro), frame
  numbers in the dataset's numbering (``first_frame_number``: the first image's number for
  a folder of frames, 1-based for a video file; realtime.evaluate reads the CAS(ME)^2 and
  SAMM workbooks with the same convention), onset and offset inclusive. MEGC asked for
  one file per dataset: split by the ``vid`` prefix if needed.
- Intervals (``IntervalWriter``): a plain CSV, one row per event, with the column names of
  BORIS's own tabular "aggregated events" export (Observation id, Media file, FPS, Subject,
  Behavior, Modifiers, Behavior type, Start (s), Stop (s), Duration (s)) then ours
  (Session, Face, Kind, Label, Confidence, Apex (s), onset / apex / offset frames).
  Behavior is the kind (micro / macro), Modifiers the label. Spreadsheets open it as is.

All writers take ``core.events.Event`` records (or their dicts) of one recording at a
time, so a batch streams them without holding the whole study in memory.
"""
from __future__ import annotations

import csv
import datetime as _dt
import os
import re
from pathlib import Path
from typing import IO, Iterable
from xml.etree import ElementTree as ET

from core.events import Event
from realtime.stages.sources import IMAGE_EXTENSIONS, natural_key

UNLABELLED = "unlabelled"
MEGC_EDITION = "MEGC 2022 spotting task (CAS(ME)^3 / SAMM Challenge unseen test sets)"
MEGC_COLUMNS = ("vid", "pred_onset", "pred_offset", "type")
MEGC_TYPES = {"micro": "me", "macro": "mae"}
INTERVAL_COLUMNS = ("Observation id", "Media file", "FPS", "Subject", "Behavior", "Modifiers", "Behavior type",
                    "Start (s)", "Stop (s)", "Duration (s)", "Session", "Face", "Kind", "Label", "Confidence",
                    "Apex (s)", "Onset frame", "Apex frame", "Offset frame")
_MIME = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mpg": "video/mpeg", ".mpeg": "video/mpeg",
         ".wav": "audio/x-wav"}


def _as_event(e) -> Event:
    return e if isinstance(e, Event) else Event.from_dict(e)


def interval_ms(e: Event) -> tuple[int, int]:
    """(start, end) in ms: the onset frame's start to the end of the offset frame."""
    start = int(round(e.onset_t * 1000.0))
    end = int(round((e.offset_t + 1.0 / e.fps) * 1000.0))
    return start, max(end, start + 1)


def confidence(e: Event) -> float | None:
    return float(e.probs[e.label]) if e.label and e.label in e.probs else None


# ------------------------------------------------------------------------------------- ELAN

def write_eaf(path: str | os.PathLike, events: Iterable, *, media: str | os.PathLike | None = None,
              subject: str = "", author: str = "moext-live", faces: Iterable[int] = ()) -> Path:
    """Write one recording's events as an ELAN file (see the module docstring). ``media``:
    the recording (a video file is linked; a folder of frames is named in a property, ELAN
    cannot play one). Every face with an event gets a micro and a macro tier; ``faces``
    adds faces without events (face 0 when there is no event at all, so that the file is
    ready for manual coding)."""
    path = Path(path)
    events = [_as_event(e) for e in events]
    root = ET.Element("ANNOTATION_DOCUMENT", {
        "AUTHOR": author, "DATE": _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds"),
        "FORMAT": "3.0", "VERSION": "3.0",
        "xmlns:xsi": "http://www.w3.org/2001/XMLSchema-instance",
        "xsi:noNamespaceSchemaLocation": "http://www.mpi.nl/tools/elan/EAFv3.0.xsd"})
    header = ET.SubElement(root, "HEADER", {"MEDIA_FILE": "", "TIME_UNITS": "milliseconds"})
    if media is not None:
        m = Path(media).resolve()
        if m.is_dir():
            ET.SubElement(header, "PROPERTY", {"NAME": "frames_folder"}).text = str(m)
        else:
            rel = os.path.relpath(m, path.resolve().parent)
            ET.SubElement(header, "MEDIA_DESCRIPTOR", {
                "MEDIA_URL": m.as_uri(), "MIME_TYPE": _MIME.get(m.suffix.lower(), "video/*"),
                "RELATIVE_MEDIA_URL": Path(rel).as_posix() if rel.startswith("..") else "./" + Path(rel).as_posix()})
    order = ET.SubElement(root, "TIME_ORDER")
    face_ids = {int(f) for f in faces} | {e.face_id if e.face_id is not None else 0 for e in events}
    by_tier: dict[tuple[int, str], list[Event]] = {(f, k): [] for f in (face_ids or {0}) for k in ("micro", "macro")}
    for e in events:
        by_tier[(e.face_id if e.face_id is not None else 0, e.kind)].append(e)
    slot = ann = 0
    for (face, kind) in sorted(by_tier, key=lambda k: (k[0], ("micro", "macro").index(k[1]))):
        tier = ET.SubElement(root, "TIER", {"LINGUISTIC_TYPE_REF": "expression", "PARTICIPANT": subject,
                                            "TIER_ID": f"face {face} {kind}"})
        for e in sorted(by_tier[(face, kind)], key=lambda e: e.onset_frame):
            start, end = interval_ms(e)
            ids = []
            for t in (start, end):
                slot += 1
                ids.append(f"ts{slot}")
                ET.SubElement(order, "TIME_SLOT", {"TIME_SLOT_ID": f"ts{slot}", "TIME_VALUE": str(t)})
            ann += 1
            a = ET.SubElement(ET.SubElement(tier, "ANNOTATION"), "ALIGNABLE_ANNOTATION", {
                "ANNOTATION_ID": f"a{ann}", "TIME_SLOT_REF1": ids[0], "TIME_SLOT_REF2": ids[1]})
            ET.SubElement(a, "ANNOTATION_VALUE").text = e.label or UNLABELLED
    ET.SubElement(header, "PROPERTY", {"NAME": "lastUsedAnnotationId"}).text = str(ann)
    ET.SubElement(root, "LINGUISTIC_TYPE", {"GRAPHIC_REFERENCES": "false", "LINGUISTIC_TYPE_ID": "expression",
                                            "TIME_ALIGNABLE": "true"})
    ET.SubElement(root, "LOCALE", {"COUNTRY_CODE": "US", "LANGUAGE_CODE": "en"})
    for stereotype, text in (
            ("Time_Subdivision", "Time subdivision of parent annotation's time interval, no time gaps allowed "
                                 "within this interval"),
            ("Symbolic_Subdivision", "Symbolic subdivision of a parent annotation. Annotations refering to the "
                                     "same parent are ordered"),
            ("Symbolic_Association", "1-1 association with a parent annotation"),
            ("Included_In", "Time alignable annotations within the parent annotation's time interval, gaps are "
                            "allowed")):
        ET.SubElement(root, "CONSTRAINT", {"DESCRIPTION": text, "STEREOTYPE": stereotype})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    ET.ElementTree(root).write(tmp, encoding="UTF-8", xml_declaration=True)
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------------------------- MEGC

def first_frame_number(media: str | os.PathLike) -> int:
    """The dataset number of stream frame 0: the first image's number (the last number in
    its name) in a folder of frames, 1 for a video file: the numbering of the CAS(ME)^2 and
    SAMM releases (the MEGC submission here, and realtime.evaluate's workbooks)."""
    media = Path(media)
    if media.is_dir():
        imgs = sorted((p for p in media.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS),
                      key=lambda p: natural_key(p.name))
        m = re.search(r"(\d+)(?!.*\d)", imgs[0].stem) if imgs else None
        return int(m.group(1)) if m else 1
    return 1


class MegcWriter:
    """Rows of the MEGC 2022 spotting submission (see the module docstring)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] = open(self.path, "w", newline="", encoding="utf-8")
        self._w = csv.writer(self._fh)
        self._w.writerow(MEGC_COLUMNS)
        self.rows = 0

    def add(self, vid: str, events: Iterable, *, base: int = 1) -> None:
        for e in sorted((_as_event(e) for e in events), key=lambda e: e.onset_frame):
            self._w.writerow([vid, e.onset_frame + base, e.offset_frame + base, MEGC_TYPES[e.kind]])
            self.rows += 1

    def close(self) -> None:
        self._fh.close()


def megc_vid(recording: str, media: str | os.PathLike) -> str:
    """The video id MEGC files use: the recording's name without its extension."""
    p = Path(media)
    return p.name if p.is_dir() else p.stem


# -------------------------------------------------------------------------------- intervals

class IntervalWriter:
    """The plain interval CSV (see the module docstring)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] = open(self.path, "w", newline="", encoding="utf-8")
        self._w = csv.writer(self._fh)
        self._w.writerow(INTERVAL_COLUMNS)
        self.rows = 0

    def add(self, recording: str, events: Iterable, *, media: str = "", subject: str = "", session: str = "") -> None:
        for e in sorted((_as_event(e) for e in events), key=lambda e: e.onset_frame):
            start, end = interval_ms(e)
            conf = confidence(e)
            self._w.writerow([recording, media, f"{e.fps:g}", subject, e.kind, e.label or "", "STATE",
                              f"{start / 1000:.3f}", f"{end / 1000:.3f}", f"{(end - start) / 1000:.3f}", session,
                              "" if e.face_id is None else e.face_id, e.kind, e.label or UNLABELLED,
                              "" if conf is None else f"{conf:.4f}", f"{e.apex_t:.3f}",
                              e.onset_frame, e.apex_frame, e.offset_frame])
            self.rows += 1

    def close(self) -> None:
        self._fh.close()


__all__ = ["INTERVAL_COLUMNS", "IntervalWriter", "MEGC_COLUMNS", "MEGC_EDITION", "MegcWriter", "UNLABELLED",
           "first_frame_number", "interval_ms", "megc_vid", "write_eaf"]
