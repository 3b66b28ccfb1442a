"""The MEGC 2019 composite (CDE): CASME II + SAMM + SMIC-HS mapped to 3 classes.

Owns ``load_composite`` (the three releases found under one folder or given one by one,
each loaded by its own loader under the composite protocol, their reports merged) and
``composite_count_differences`` (how the result differs from the published counts).
"""
from __future__ import annotations

import re
import warnings
from collections import Counter
from pathlib import Path
from typing import Mapping, Sequence

from core.protocols import COMPOSITE_COUNTS, PROTOCOLS
from train.datasets.casme2 import load_casme2
from train.datasets.layout import _walk_dirs
from train.datasets.records import DatasetError, LoadReport, Sample
from train.datasets.samm import load_samm
from train.datasets.smic import load_smic

COMPOSITE_PARTS = ("casme2", "samm", "smic")
_PART_NAMES = {"casme2": ("casme2", "casmeii"), "samm": ("samm",), "smic": ("smic",)}


def _composite_roots(root: str | Path | Mapping[str, str | Path]) -> dict[str, Path]:
    if isinstance(root, Mapping):
        roots = {k: Path(v) for k, v in root.items()}
        missing = [k for k in COMPOSITE_PARTS if k not in roots]
        if missing:
            raise DatasetError(f"composite: no root given for {', '.join(missing)}; pass e.g. "
                               "--root casme2=PATH --root samm=PATH --root smic=PATH")
        return roots
    root = Path(root)
    out = {}
    for d, depth in _walk_dirs(root, 2):
        if depth == 0:
            continue
        key = re.sub(r"[^a-z0-9]", "", d.name.lower())
        for part, names in _PART_NAMES.items():
            if part not in out and any(key.startswith(n) for n in names):
                out[part] = d
    missing = [k for k in COMPOSITE_PARTS if k not in out]
    if missing:
        raise DatasetError(f"{root}: no folder for {', '.join(missing)} (looked for folders named CASME2*, "
                           "SAMM*, SMIC* two levels down); pass --root casme2=PATH --root samm=PATH --root smic=PATH")
    return out


def composite_count_differences(samples: Sequence[Sample]) -> dict[str, list[str]]:
    """Per source dataset: how the labelled composite samples differ from the published
    MEGC 2019 counts (COMPOSITE_COUNTS); empty lists where they agree."""
    out = {}
    for ds, expected in COMPOSITE_COUNTS.items():
        mine = [s for s in samples if s.dataset == ds and s.kind == "micro" and s.label is not None]
        got = Counter(s.label for s in mine)
        got["samples"], got["subjects"] = len(mine), len({s.subject for s in mine})
        out[ds] = [f"{k} {got[k]} (published {v}, {got[k] - v:+d})" for k, v in expected.items() if got[k] != v]
    return out


def load_composite(root: str | Path | Mapping[str, str | Path], protocol: str = "composite", *,
                   check_counts: bool | str = "auto", strict: bool = False,
                   options: Mapping[str, Mapping] | None = None) -> tuple[list[Sample], LoadReport]:
    """MEGC 2019 composite (CDE): CASME II + SAMM + SMIC-HS in 3 classes, 442 samples / 68
    subjects in the challenge's list. ``root``: a folder holding the three releases (named
    CASME2*, SAMM*, SMIC*) or a mapping {"casme2": path, "samm": path, "smic": path}.

    check_counts: compare with the published per-dataset counts (True), skip (False), or
    "auto": check a dataset when it has at least the published number of subjects (a full
    release). Differences are warned about and listed in the report; the challenge
    published its own sample list, so small differences are expected."""
    if protocol != "composite":
        raise DatasetError(f"the composite is defined in 3 classes: protocol must be 'composite', not {protocol!r}")
    roots = _composite_roots(root)
    options = options or {}
    report = LoadReport("composite", protocol, PROTOCOLS[protocol], strict)
    loaders = {"casme2": load_casme2, "samm": load_samm, "smic": load_smic}
    samples: list[Sample] = []
    for part in COMPOSITE_PARTS:
        s, r = loaders[part](roots[part], "composite", strict=strict, **dict(options.get(part, {})))
        samples += s
        report.parts[part] = r
        report.rows += r.rows
        report.problems += r.problems
        report.notes += [f"{part}: {n}" for n in r.notes]
    diffs = composite_count_differences(samples)
    for ds, lines in diffs.items():
        n_subj = len({s.subject for s in samples if s.dataset == ds and s.label is not None})
        full = n_subj >= COMPOSITE_COUNTS[ds]["subjects"]
        if check_counts is True or (check_counts == "auto" and full):
            if lines:
                msg = f"{ds}: " + "; ".join(lines)
                report.count_check.append(msg)
                warnings.warn(f"composite counts differ from MEGC 2019's published list: {msg}", stacklevel=2)
            else:
                report.count_check.append(f"{ds}: matches the published counts")
        elif check_counts == "auto":
            report.count_check.append(f"{ds}: not checked ({n_subj} labelled subjects < "
                                      f"{COMPOSITE_COUNTS[ds]['subjects']} published: a partial release)")
    return samples, report.finalize(samples)
