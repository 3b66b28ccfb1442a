"""Which recordings a batch holds (``realtime.batch.discovery``): inputs -> recordings.

Video files, folders (searched recursively: video files, and folders of frames), globs and
CSV manifests (a ``path`` column and optional ``subject``, ``session``, ``fps`` and
``recording`` columns; relative paths taken from the manifest's folder) become
``Recording`` records with unique ids, subject and session (from the manifest, or from the
id with ``--subject-pattern``'s named groups) and the true frame rate where one is known.
It owns the video file extensions a batch (and ``realtime.evaluate``) looks for, and
``BatchError``, the error for an input, option or output folder that cannot be used.
Nothing here opens a video.
"""
from __future__ import annotations

import csv
import glob
import hashlib
import math
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from realtime.stages.sources import IMAGE_EXTENSIONS

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg")


class BatchError(ValueError):
    """An input, option or output folder that cannot be used; the message says what to do."""


@dataclass
class Recording:
    """One recording of the batch: an id, where it is, who and when, its true rate."""

    rid: str
    path: Path
    subject: str = ""
    session: str = ""
    fps: float | None = None
    problem: str | None = None      # known unusable before any analysis (manifest row naming no file)


def _is_video(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS


def _holds_images(d: Path) -> bool:
    try:
        return any(c.suffix.lower() in IMAGE_EXTENSIONS and c.is_file() for c in d.iterdir())
    except OSError:
        return False


def _walk(root: Path, skip: Sequence[Path] = ()) -> list[Path]:
    """Video files and folders of frames under ``root`` (hidden folders and ``skip`` not
    entered); a folder of frames is one recording, not searched further."""
    skip_r = {s.resolve() for s in skip}
    out: list[Path] = []
    if _holds_images(root):
        return [root]
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            children = sorted(d.iterdir())
        except OSError:
            continue
        for c in children:
            if c.name.startswith("."):
                continue
            if c.is_dir():
                if c.resolve() in skip_r:
                    continue
                if _holds_images(c):
                    out.append(c)
                else:
                    stack.append(c)
            elif c.suffix.lower() in VIDEO_EXTENSIONS:
                out.append(c)
    return sorted(out)


_MANIFEST_NAMES = {
    "path": ("path", "file", "video", "filename", "recording_path", "media"),
    "subject": ("subject", "participant", "subject_id"),
    "session": ("session", "session_id", "visit"),
    "fps": ("fps", "true_fps", "frame_rate", "framerate", "true fps"),
    "recording": ("recording", "recording_id", "id"),
}


def read_manifest(path: Path) -> list[Recording]:
    """A CSV manifest -> recordings (see the module docstring). Rows naming a file that
    does not exist are kept, with the problem, so that the batch lists them as failed."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as e:
        raise BatchError(f"manifest {path}: cannot be read ({e}); give a UTF-8 CSV file") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise BatchError(f"manifest {path}: is empty; it needs a header row with a 'path' column and one row per "
                         "recording")
    header = [c.strip().lower() for c in rows[0]]
    cols = {}
    for key, names in _MANIFEST_NAMES.items():
        for j, c in enumerate(header):
            if c in names:
                cols[key] = j
                break
    if "path" not in cols:
        raise BatchError(f"manifest {path}: no 'path' column in its header {rows[0]}; the columns are path "
                         "(required), subject, session, fps (true frame rate), recording (an id)")
    if len(rows) == 1:
        raise BatchError(f"manifest {path}: has a header but no recording rows")
    base = path.resolve().parent
    out = []
    for n, row in enumerate(rows[1:], 2):
        cell = lambda k: row[cols[k]].strip() if k in cols and cols[k] < len(row) else ""  # noqa: E731
        raw = cell("path")
        if not raw:
            raise BatchError(f"manifest {path} row {n}: the path cell is empty; fill it or delete the row")
        fps = None
        if cell("fps"):
            try:
                fps = float(cell("fps"))
            except ValueError:
                fps = math.nan
            if not (math.isfinite(fps) and fps > 0):
                raise BatchError(f"manifest {path} row {n}: fps {cell('fps')!r} is not a positive frame rate; "
                                 "write the true rate (e.g. 200) or leave the cell empty to use the file header")
        p = Path(raw).expanduser()
        p = p if p.is_absolute() else base / p
        rid = cell("recording") or Path(raw).as_posix()
        problem = None
        if not p.exists():
            problem = f"manifest {path.name} row {n}: {raw} does not exist (check the path; relative paths are " \
                      f"taken from the manifest's folder {base})"
        elif p.is_dir() and not _holds_images(p):
            problem = f"manifest {path.name} row {n}: {raw} is a folder without images; give a video file or a " \
                      "folder of frames"
        out.append(Recording(rid, p.resolve() if p.exists() else p, cell("subject"), cell("session"), fps, problem))
    return out


def collect(inputs: Sequence[str], *, fps: float | None = None, subject_pattern: str | None = None,
            skip: Sequence[Path] = ()) -> list[Recording]:
    """Files, folders, globs and CSV manifests -> recordings with unique ids (see the
    module docstring). BatchError for an input that names nothing usable."""
    if not inputs:
        raise BatchError("no INPUTS: give video files, folders, globs (quoted) or a CSV manifest")
    pattern = None
    if subject_pattern:
        try:
            pattern = re.compile(subject_pattern)
        except re.error as e:
            raise BatchError(f"--subject-pattern {subject_pattern!r} is not a regular expression ({e})") from None
        if not ({"subject", "session"} & set(pattern.groupindex)):
            raise BatchError(f"--subject-pattern {subject_pattern!r} has no (?P<subject>...) or (?P<session>...) "
                             "group; name the groups that hold them")
    recs: list[Recording] = []

    def add_path(p: Path, root: Path | None) -> None:
        rid = p.relative_to(root).as_posix() if root is not None and p != root else p.name
        recs.append(Recording(rid, p.resolve()))

    for raw in inputs:
        p = Path(raw).expanduser()
        if p.is_file() and p.suffix.lower() == ".csv":
            recs.extend(read_manifest(p))
        elif p.is_file():
            if p.suffix.lower() not in VIDEO_EXTENSIONS:
                raise BatchError(f"input {raw}: not a video ({', '.join(VIDEO_EXTENSIONS)}), a folder or a .csv "
                                 "manifest")
            add_path(p, None)
        elif p.is_dir():
            found = _walk(p, skip)
            if not found:
                raise BatchError(f"input {raw}: no video file ({', '.join(VIDEO_EXTENSIONS)}) or folder of frames "
                                 "under it; point at the folder that holds the recordings")
            for f in found:
                add_path(f, p if f != p else None)
        elif glob.has_magic(raw):
            matches = sorted(Path(m) for m in glob.glob(os.path.expanduser(raw), recursive=True))
            usable = [m for m in matches if _is_video(m) or (m.is_dir() and _holds_images(m))]
            if not usable:
                raise BatchError(f"input {raw}: the pattern matches no video file or folder of frames "
                                 f"({len(matches)} match(es) in all); quote it so the shell leaves it to us")
            for m in usable:
                add_path(m, None)
        else:
            raise BatchError(f"input {raw}: no such file or folder (and not a glob pattern); check the path")
    for r in recs:
        if r.fps is None and fps is not None:
            r.fps = fps
        if pattern is not None:
            m = pattern.search(r.rid)
            if m:
                g = m.groupdict()
                r.subject = r.subject or (g.get("subject") or "")
                r.session = r.session or (g.get("session") or "")
    # one recording per file (a file named twice is analysed once)
    seen: dict[Path, Recording] = {}
    for r in recs:
        seen.setdefault(r.path, r)
    recs = list(seen.values())
    # unique ids: a short hash of the full path where two share one
    count = Counter(r.rid for r in recs)
    for r in recs:
        if count[r.rid] > 1:
            r.rid = f"{r.rid}#{hashlib.sha256(str(r.path).encode()).hexdigest()[:6]}"
    return recs
