"""Reading annotation spreadsheets as the releases ship them (.xlsx, old .xls, ragged CSV).

Owns the header names each field may have (``FIELD_ALIASES``), the cells that mean "not
annotated" (MISSING_MARKERS), ``cell_text`` and ``parse_frame_number`` (one cell), and
``read_sheet``: a table whose header row is found below any notes block (SAMM), its
columns matched by name and its rows numbered as a spreadsheet program shows them.
"""
from __future__ import annotations

import csv
import importlib.util
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from train.datasets.records import DatasetError

SHEET_EXTS = {".xlsx", ".xlsm", ".xls", ".csv"}
# Cells that mean "not annotated" in the releases ("/" in CASME II, -1 in SAMM).
MISSING_MARKERS = {"", "/", "-", "--", "n/a", "na", "nan", "none", "null", "?"}


# Header names of each field (lower-case, letters and digits only), most specific first.
FIELD_ALIASES = {
    "subject": ("subject", "sub", "participant"),
    "filename": ("filename", "clip", "seq", "sequence"),
    "onset": ("onsetframe", "onset"),
    "apex": ("apexframe", "apex"),
    "offset": ("offsetframe", "offset"),
    "emotion": ("estimatedemotion", "emotion", "label"),
    "type": ("type", "kind"),
}


def cell_text(value) -> str:
    """A spreadsheet cell as text: blank for empty cells, 6 (not 6.0) for whole floats."""
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if value.is_integer():
            return str(int(value))
    return str(value).strip()


def parse_frame_number(value) -> int | None:
    """A frame-number cell -> int; None when not annotated ("/", blank, -1).

    Raises ValueError for anything else (text, fractions, negative numbers)."""
    text = cell_text(value)
    if text.lower() in MISSING_MARKERS:
        return None
    try:
        x = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a frame number") from None
    if not math.isfinite(x) or not x.is_integer():
        raise ValueError(f"{text!r} is not a whole frame number")
    n = int(x)
    if n == -1:
        return None
    if n < 0:
        raise ValueError(f"{text!r} is a negative frame number")
    return n


def _header_key(value) -> str:
    return re.sub(r"[^a-z0-9]", "", cell_text(value).lower())


@dataclass
class Sheet:
    """An annotation table: the matched columns and its data rows with the row numbers a
    spreadsheet program shows (1-based, counting the notes and header rows)."""

    path: Path
    label: str                      # how messages name it: file [sheet]
    header_row: int
    columns: dict[str, str]         # field -> header text as written
    rows: list[tuple[int, dict[str, object]]]


def _read_tables(path: Path) -> dict[str | None, "object"]:
    ext = path.suffix.lower()
    if ext == ".csv":
        last: Exception | None = None
        # The csv module, not pandas.read_csv: annotation CSVs exported from spreadsheets
        # have ragged rows (a notes block above the header), which pandas rejects.
        raw = path.read_bytes()
        for enc in ("utf-8-sig", "cp1252", "latin-1"):
            try:
                text = raw.decode(enc)
                break
            except UnicodeDecodeError as e:
                last = e
        else:  # latin-1 decodes every byte string, so this is unreachable in practice
            raise DatasetError(f"{path}: cannot decode the CSV ({last}); save it as UTF-8")
        if "\x00" in text:
            raise DatasetError(f"{path}: not a text CSV (it contains NUL bytes); "
                               "save the sheet again as CSV or .xlsx")
        try:
            rows = list(csv.reader(io.StringIO(text, newline="")))
        except csv.Error as e:
            raise DatasetError(f"{path}: malformed CSV ({e}); save the sheet again as CSV") from None
        if not any(any(c.strip() for c in r) for r in rows):
            raise DatasetError(f"{path}: the CSV file is empty")
        width = max(len(r) for r in rows)
        return {None: pd.DataFrame([r + [""] * (width - len(r)) for r in rows], dtype=object)}
    if ext in (".xlsx", ".xlsm"):
        return _read_workbook(path, "openpyxl")
    if ext == ".xls":
        with open(path, "rb") as fh:
            is_zip = fh.read(2) == b"PK"             # an .xlsx workbook saved under .xls
        if is_zip:
            return _read_workbook(path, "openpyxl")
        if importlib.util.find_spec("xlrd") is None:
            raise DatasetError(f"{path}: reading old .xls workbooks needs the xlrd package "
                               "(pip install xlrd), or save the sheet as .xlsx or .csv")
        return _read_workbook(path, "xlrd")
    raise DatasetError(f"{path}: not a spreadsheet (expected .xlsx, .xls or .csv)")


def _read_workbook(path: Path, engine: str) -> dict[str | None, "object"]:
    try:
        return pd.read_excel(path, sheet_name=None, header=None, dtype=object, engine=engine)
    except Exception as e:  # zipfile.BadZipFile, openpyxl/xlrd errors: any damage to the file
        raise DatasetError(f"{path}: cannot read the workbook ({type(e).__name__}: {e}); "
                           "open it in a spreadsheet program and save it again as .xlsx or .csv") from None


def read_sheet(path: str | Path, fields: Sequence[str], required: Sequence[str],
               display: str | None = None, header_search_rows: int = 60) -> Sheet:
    """Read an annotation table, finding the header row as the first row that names both a
    subject and a file/clip column (SAMM has a block of notes above it).

    ``fields`` are keys of FIELD_ALIASES; a missing required column raises DatasetError
    naming the file, header row and the names it looked for."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: annotation file not found")
    tables = _read_tables(path)
    name = display or path.name
    for sheet_name, df in tables.items():
        values = df.values.tolist()
        for i, row in enumerate(values[:header_search_rows]):
            keys = [_header_key(v) for v in row]
            if not (set(keys) & set(FIELD_ALIASES["subject"]) and set(keys) & set(FIELD_ALIASES["filename"])):
                continue
            label = name if len(tables) == 1 or sheet_name is None else f"{name} [sheet {sheet_name!r}]"
            cols: dict[str, int] = {}
            for f in fields:
                for alias in FIELD_ALIASES[f]:
                    if alias in keys:
                        cols[f] = keys.index(alias)
                        break
            missing = [f for f in required if f not in cols]
            if missing:
                found = ", ".join(repr(cell_text(v)) for v in row if cell_text(v))
                wanted = "; ".join(f"{f}: one of {', '.join(FIELD_ALIASES[f])}" for f in missing)
                raise DatasetError(f"{label}: header row {i + 1} lacks required column(s) ({wanted}); "
                                   f"found {found}. Rename the column or pass the right file")
            rows = []
            for j in range(i + 1, len(values)):
                cells = {f: values[j][c] for f, c in cols.items()}
                if all(cell_text(v) == "" for v in values[j]):
                    continue
                rows.append((j + 1, cells))
            return Sheet(path, label, i + 1, {f: cell_text(row[c]) for f, c in cols.items()}, rows)
    raise DatasetError(f"{name}: no header row with a subject column ({', '.join(FIELD_ALIASES['subject'])}) "
                       f"and a file column ({', '.join(FIELD_ALIASES['filename'])}) in the first "
                       f"{header_search_rows} rows of any sheet; is this the annotation file?")
