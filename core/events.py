"""The event record (REALTIME.md): one JSON object per line, one definition for everyone.

Field names are fixed: add, never rename. The generator's ground truth uses the same
names for onset/apex/offset frames, kind and label (see GroundTruth).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, Iterable, Iterator

SCHEMA_VERSION = 2   # 2 added face_box (schema-1 records, without it, still read)
KINDS = ("micro", "macro")

# Micro or macro: ONE rule for the spotter, the generator's ground truth and scoring.
MICRO_MAX_MS = 500.0       # "megc": micro when onset -> offset <= 500 ms (MEGC long-video
                           # spotting and SAMM; CASME II's total-duration criterion too)
CASME_RISE_MAX_MS = 250.0  # "casme": also micro when onset -> apex <= 250 ms (CASME / CASME II
                           # kept longer samples whose onset phase was short) ...
MACRO_MIN_MS = 1000.0      # ... but an expression lasting 1 s or more is macro under every rule
ME_RULES = ("megc", "casme")


def expression_kind(onset_t: float, apex_t: float, offset_t: float, rule: str = "megc",
                    fps: float | None = None) -> str:
    """"micro" or "macro" for an expression with these onset / apex / offset times (seconds).

    rule "megc" (default): micro when offset - onset <= 500 ms. rule "casme": micro also
    when onset -> apex <= 250 ms and offset - onset < 1 s. With ``fps`` (a spotter's
    measured interval), one frame of tolerance is allowed on the 500 ms: at 30 fps one frame
    is 33 ms, and a detected offset can land one frame after the annotated one."""
    if rule not in ME_RULES:
        raise ValueError(f"micro/macro rule must be one of {ME_RULES}, got {rule!r}")
    total_ms = (offset_t - onset_t) * 1000.0
    rise_ms = (apex_t - onset_t) * 1000.0
    slack = 1000.0 / fps if fps else 0.0
    if total_ms <= MICRO_MAX_MS + slack + 1e-6:
        return "micro"
    if rule == "casme" and rise_ms <= CASME_RISE_MAX_MS + 1e-6 and total_ms < MACRO_MIN_MS - 1e-6:
        return "micro"
    return "macro"


class EventFormatError(ValueError):
    """A line of an events / ground-truth file that is not a valid record."""


@dataclass
class Event:
    """One spotted (and, once recognised, labelled) expression.

    Times ``*_t`` are seconds from the start of the source (frame index / fps for files,
    capture clock for cameras). ``decided_t`` is when the (provisional) label became
    available, ``finalised_t`` when micro/macro became certain (at the offset, or 500 ms
    after onset). ``latency_ms`` holds at least ``decision`` = ``wait`` + ``compute``
    (apex captured -> label available) and ``final`` (apex captured -> kind final).
    ``face_id`` says which tracked face the event belongs to (ids are per stream, stable
    while the face is followed); ``face_box`` (schema 2) is that face's box at the apex,
    [x, y, width, height] in source pixels (integers), or None where no box is known.
    """

    source: str
    fps: float
    onset_frame: int
    apex_frame: int
    offset_frame: int
    onset_t: float
    apex_t: float
    offset_t: float
    kind: str
    label: str | None = None
    probs: dict[str, float] = field(default_factory=dict)
    peak_motion: float = 0.0
    decided_t: float | None = None
    finalised_t: float | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    face_id: int | None = None
    face_box: list[int] | None = None
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise EventFormatError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if not (self.onset_frame <= self.apex_frame <= self.offset_frame):
            raise EventFormatError(
                f"frames must satisfy onset <= apex <= offset, got "
                f"{self.onset_frame}, {self.apex_frame}, {self.offset_frame}"
            )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["schema"] = self.schema
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_dict(cls, d: dict, *, where: str = "") -> "Event":
        return _from_dict(cls, d, where)


TRUTH_KINDS = KINDS + ("blink", "wink", "gaze", "speech", "head", "light")
"""Kinds of ground-truth interval: expressions (micro, macro; micro iff expression_kind says
so) and distractors the spotter must NOT report: blink, wink (one eye), gaze (eyes shift
sideways), speech (a talking segment), head (a nod or a turn), light (a lighting sweep)."""


@dataclass
class GroundTruth:
    """A true interval written by the generator beside a clip (same field names as Event).

    ``amplitude`` (optional, added after schema 1; written only when set, so older files
    read and write back unchanged): for face motion, the apex displacement of the strongest
    point in pixels of the 224 aligned crop; for kind "light", the peak relative brightness
    change (0.2 = 20 %).
    ``face_box`` (optional, like ``amplitude``): [x, y, width, height] of the face the
    interval belongs to, in source pixels at the apex, for clips with several faces;
    scoring matches events to truths by the overlap of their face boxes."""

    onset_frame: int
    apex_frame: int
    offset_frame: int
    kind: str
    label: str | None
    fps: float
    onset_t: float = 0.0
    apex_t: float = 0.0
    offset_t: float = 0.0
    au: str = ""
    source: str = ""
    amplitude: float = 0.0
    face_box: list[int] | None = None

    def __post_init__(self) -> None:
        if self.kind not in TRUTH_KINDS:
            raise EventFormatError(f"kind must be one of {TRUTH_KINDS}, got {self.kind!r}")
        try:
            ok = _is_number(self.amplitude) and self.amplitude >= 0
        except OverflowError:           # an integer too large for a float
            ok = False
        if not ok:
            raise EventFormatError(f"amplitude must be a finite number >= 0, got {self.amplitude!r:.60}")

    def to_dict(self) -> dict:
        d = asdict(self)
        if not self.amplitude:          # optional field: absent when unset (older files unchanged)
            d.pop("amplitude")
        if self.face_box is None:       # likewise: single-face clips' files stay as they were
            d.pop("face_box")
        return d

    @classmethod
    def from_dict(cls, d: dict, *, where: str = "") -> "GroundTruth":
        return _from_dict(cls, d, where)


def _from_dict(cls, d: dict, where: str):
    if not isinstance(d, dict):
        raise EventFormatError(f"{where}: expected a JSON object, got {type(d).__name__}")
    names = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    missing = required - d.keys()
    if missing:
        raise EventFormatError(f"{where}: missing field(s) {sorted(missing)}")
    values = {k: v for k, v in d.items() if k in names}
    for k, v in values.items():
        problem = _type_problem(k, v)
        if problem:
            raise EventFormatError(f"{where}: field {k!r} {problem}, got {v!r:.60}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise EventFormatError(f"{where}: {e}") from None


_INT_FIELDS = {"onset_frame", "apex_frame", "offset_frame", "schema"}
_TIME_FIELDS = {"onset_t", "apex_t", "offset_t", "peak_motion"}
_OPT_TIME_FIELDS = {"decided_t", "finalised_t"}
_STR_FIELDS = {"source", "kind", "au"}
_NUMBER_MAPS = {"probs", "latency_ms"}


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _type_problem(name: str, v) -> str | None:
    """Why ``v`` is not a valid value of field ``name`` (None when it is)."""
    if name in _INT_FIELDS:
        return None if isinstance(v, int) and not isinstance(v, bool) else "must be an integer"
    if name == "fps":
        return None if _is_number(v) and v > 0 else "must be a positive number"
    if name in _TIME_FIELDS:
        return None if _is_number(v) else "must be a finite number"
    if name in _OPT_TIME_FIELDS:
        return None if v is None or _is_number(v) else "must be a finite number or null"
    if name in _STR_FIELDS:
        return None if isinstance(v, str) else "must be a string"
    if name == "label":
        return None if v is None or isinstance(v, str) else "must be a string or null"
    if name == "face_id":
        return None if v is None or (isinstance(v, int) and not isinstance(v, bool)) else "must be an integer or null"
    if name == "face_box":
        ok = v is None or (isinstance(v, list) and len(v) == 4
                           and all(isinstance(x, int) and not isinstance(x, bool) for x in v) and v[2] >= 0 and v[3] >= 0)
        return None if ok else "must be [x, y, width, height] (integers, width and height >= 0) or null"
    if name in _NUMBER_MAPS:
        ok = isinstance(v, dict) and all(isinstance(k, str) and _is_number(x) for k, x in v.items())
        return None if ok else "must map names to finite numbers"
    return None


class EventWriter:
    """Append events to a JSON-lines file, flushed (and fsynced) line by line.

    A crash or kill loses at most the event being written.
    """

    def __init__(self, path: str | os.PathLike, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] | None = open(self.path, "a", encoding="utf-8")
        self._fsync = fsync
        self.count = 0

    def write(self, event: Event) -> None:
        if self._fh is None:
            raise RuntimeError(f"{self.path}: writer is closed")
        self._fh.write(event.to_json() + "\n")
        self._fh.flush()
        if self._fsync:
            os.fsync(self._fh.fileno())
        self.count += 1

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "EventWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _iter_json_lines(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise EventFormatError(f"{path}:{n}: not UTF-8 text; is this an events file?") from None
            if not line:
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as e:
                raise EventFormatError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            except (ValueError, RecursionError) as e:  # int digit limit, nesting depth
                raise EventFormatError(f"{path}:{n}: not a valid event record ({type(e).__name__})") from None


def read_events(path: str | os.PathLike) -> list[Event]:
    return [Event.from_dict(d, where=f"{path}:{n}") for n, d in _iter_json_lines(path)]


def read_ground_truth(path: str | os.PathLike) -> list[GroundTruth]:
    return [GroundTruth.from_dict(d, where=f"{path}:{n}") for n, d in _iter_json_lines(path)]


def write_ground_truth(path: str | os.PathLike, truths: Iterable[GroundTruth]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for t in truths:
            fh.write(json.dumps(t.to_dict(), separators=(",", ":")) + "\n")
