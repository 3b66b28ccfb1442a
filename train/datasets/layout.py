"""Finding a release's parts on disk: the folder of subject folders and the annotation sheets.

Owns the breadth-first folder walk every loader uses (``_walk_dirs``), ``find_frames_base``
(the folder holding the subject folders, wherever the release was unpacked),
``find_sheets`` / ``_pick_sheet`` (which spreadsheet is the annotation file) and how paths
are named in messages (``_display``: relative to the root given).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator, Sequence

from train.datasets.frames import natural_key
from train.datasets.records import DatasetError
from train.datasets.sheets import SHEET_EXTS


def _walk_dirs(root: Path, max_depth: int, skip: re.Pattern | None = None) -> Iterator[tuple[Path, int]]:
    """Folders under root (root included), breadth first, not entering folders whose name
    matches ``skip`` (subject folders: their contents are frames)."""
    level = [root]
    for depth in range(max_depth + 1):
        nxt = []
        for d in level:
            yield d, depth
            if depth == max_depth:
                continue
            try:
                entries = sorted(os.scandir(d), key=lambda e: e.name)
            except (PermissionError, FileNotFoundError, NotADirectoryError):
                continue
            for e in entries:
                if e.is_dir() and not e.name.startswith(".") and not (skip and skip.fullmatch(e.name)):
                    nxt.append(Path(e.path))
        level = nxt


def find_frames_base(root: Path, subject_pattern: str, *, prefer: Sequence[str] = (),
                     avoid: Sequence[str] = (), max_depth: int = 5, what: str = "frame") -> Path:
    """The folder (root or below) holding the subject folders (names matching the pattern).

    Among several, prefer paths containing a ``prefer`` word, then those without an
    ``avoid`` word, then the one with the most subject folders, then the shallowest."""
    pat = re.compile(subject_pattern, re.IGNORECASE)
    best = None
    for d, depth in _walk_dirs(root, max_depth, skip=pat):
        try:
            n = sum(1 for e in os.scandir(d) if e.is_dir() and pat.fullmatch(e.name))
        except OSError:
            continue
        if not n:
            continue
        rel = str(d.relative_to(root)).lower()
        score = (any(w in rel for w in prefer), not any(w in rel for w in avoid), n, -depth)
        if best is None or score > best[0]:
            best = (score, d)
    if best is None:
        raise DatasetError(f"{root}: found no {what} folder holding subject folders named like "
                           f"{subject_pattern!r} (searched {max_depth} levels down); pass the release folder")
    return best[1]


def find_sheets(root: Path, max_depth: int = 4, skip: str | None = None) -> list[Path]:
    pat = re.compile(skip, re.IGNORECASE) if skip else None
    out = []
    for d, _ in _walk_dirs(root, max_depth, skip=pat):
        try:
            for e in os.scandir(d):
                if (e.is_file() and Path(e.name).suffix.lower() in SHEET_EXTS
                        and not e.name.startswith(("~$", ".")) and "error" not in e.name.lower()):
                    out.append(Path(e.path))
        except OSError:
            continue
    return sorted(out)


def _pick_sheet(root: Path, candidates: list[Path], preferences: Sequence[Sequence[str]], what: str,
                flag: str = "--sheet") -> Path:
    """The first candidate whose name holds all words of the first matching preference
    (.xlsx and later versions first), or the only candidate."""
    for words in preferences:
        named = [p for p in candidates if all(w in p.name.lower() for w in words)]
        if named:
            return sorted(named, key=lambda p: (p.suffix.lower() == ".xlsx", natural_key(p.name)))[-1]
    if len(candidates) == 1:
        return candidates[0]
    listed = ", ".join(str(p.relative_to(root)) for p in candidates) or "none"
    raise DatasetError(f"{root}: cannot tell which spreadsheet is the {what} (candidates: {listed}); "
                       f"pass it with {flag}")


def _display(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
