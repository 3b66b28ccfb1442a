"""The one entry point: ``load_dataset(name, root, protocol)`` for every supported dataset.

Owns the dataset name's canonical form (``canonical_name``, aliases included), the default
protocol of each dataset and which loader reads it.
"""
from __future__ import annotations

from core.protocols import PROTOCOLS
from train.datasets.casme2 import load_casme2
from train.datasets.casme3 import load_casme3
from train.datasets.composite import load_composite
from train.datasets.folder import load_folder
from train.datasets.records import (
    ALIASES,
    DATASETS,
    DEFAULT_PROTOCOL,
    LABEL_TABLES,
    DatasetError,
    LoadReport,
    Sample,
)
from train.datasets.samm import load_samm
from train.datasets.smic import load_smic


def canonical_name(name: str) -> str:
    key = name.strip().lower().replace(" ", "")
    if key not in ALIASES:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return ALIASES[key]


def load_dataset(dataset: str, root, protocol: str | None = "default", *, strict: bool = False,
                 **options) -> tuple[list[Sample], LoadReport]:
    """Load any supported dataset: (samples, report); ``print(report)`` shows the counts.

    protocol "default" uses DEFAULT_PROTOCOL[dataset]; options go to the loader (sheet=,
    variant=, macro_sheet=, csv=, frame_ref=, name=, check_counts=, prefer_reg=...)."""
    ds = canonical_name(dataset)
    if protocol == "default":
        protocol = DEFAULT_PROTOCOL[ds]
    if protocol is not None and protocol not in PROTOCOLS:
        raise DatasetError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    loader = {"casme2": load_casme2, "samm": load_samm, "smic": load_smic, "casme3": load_casme3,
              "composite": load_composite, "folder": load_folder}[ds]
    if ds == "folder":
        return loader(root, protocol, strict=strict, **options)
    if protocol is None:
        raise DatasetError(f"{ds} needs a protocol; choose one of "
                           f"{', '.join(p for d, p in LABEL_TABLES if d == ds)}")
    return loader(root, protocol, strict=strict, **options)
