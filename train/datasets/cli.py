"""The dataset options of every command line that loads a dataset, and ``python -m train.datasets``.

Owns ``add_dataset_args`` / ``dataset_from_args`` (--dataset, --root, --protocol and the
per-dataset options, shared with train.cache) and ``main``: load a release and print
what was read, counts and every problem.
"""
from __future__ import annotations

import argparse
from typing import Sequence

from core.protocols import PROTOCOLS
from train.datasets.loaders import canonical_name, load_dataset
from train.datasets.records import (
    DATASETS,
    DEFAULT_PROTOCOL,
    DatasetError,
    LoadReport,
    Sample,
)


def add_dataset_args(p: argparse.ArgumentParser) -> None:
    """The dataset options shared by every CLI that loads a dataset."""
    p.add_argument("--dataset", required=True, help=f"one of {', '.join(DATASETS)}")
    p.add_argument("--root", required=True, action="append",
                   help="release folder; for the composite either one folder holding CASME2*/SAMM*/SMIC* "
                        "or three times NAME=PATH (casme2=..., samm=..., smic=...)")
    p.add_argument("--protocol", default="default",
                   help=f"class set ({', '.join(PROTOCOLS)}); default per dataset: "
                        + ", ".join(f"{k} -> {v}" for k, v in DEFAULT_PROTOCOL.items()))
    p.add_argument("--sheet", help="annotation spreadsheet (default: found under --root)")
    p.add_argument("--macro-sheet", help="CAS(ME)^3 macro-expression sheet (default: found under --root)")
    p.add_argument("--no-macro", action="store_true", help="CAS(ME)^3: micro-expressions only")
    p.add_argument("--variant", choices=("raw", "cropped"), default="raw", help="CASME II frame tree")
    p.add_argument("--prefer-reg", action="store_true", help="SMIC-HS: use reg_ frames where both exist")
    p.add_argument("--csv", help="folder format: the annotation CSV (default: ROOT/labels.csv or the only .csv)")
    p.add_argument("--name", default="custom", help="folder format: dataset name / subject prefix")
    p.add_argument("--frame-ref", choices=("auto", "number", "index"), default="auto",
                   help="folder format: onset/apex/offset are file-name numbers or sorted positions")
    p.add_argument("--strict", action="store_true", help="stop at the first problem instead of reporting it")


def dataset_from_args(args: argparse.Namespace) -> tuple[list[Sample], LoadReport]:
    ds = canonical_name(args.dataset)
    protocol = None if args.protocol in ("none", "None") else args.protocol
    roots = args.root
    if ds == "composite" and any("=" in r for r in roots):
        root = dict(r.split("=", 1) for r in roots)
    elif len(roots) != 1:
        raise DatasetError("give --root once (several only as NAME=PATH for the composite)")
    else:
        root = roots[0]
    opts: dict = {}
    if ds == "casme2":
        opts = {"sheet": args.sheet, "variant": args.variant}
    elif ds == "samm":
        opts = {"sheet": args.sheet}
    elif ds == "smic":
        opts = {"prefer_reg": args.prefer_reg}
    elif ds == "casme3":
        opts = {"sheet": args.sheet, "macro_sheet": args.macro_sheet, "macro": not args.no_macro}
    elif ds == "composite":
        opts = {"options": {"casme2": {"variant": args.variant}, "smic": {"prefer_reg": args.prefer_reg}}}
    elif ds == "folder":
        opts = {"csv": args.csv, "name": args.name, "frame_ref": args.frame_ref}
    return load_dataset(ds, root, protocol, strict=args.strict, **opts)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m train.datasets",
        description="Load a micro-expression release and print what was read: counts per class and "
                    "subject, and every problem with file, row and column.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  python -m train.datasets --dataset casme2 --root /data/CASME2\n"
               "  python -m train.datasets --dataset samm --root /data/SAMM --strict\n"
               "  python -m train.datasets --dataset composite --root casme2=/data/CASME2 "
               "--root samm=/data/SAMM --root smic=/data/SMIC\n"
               "  python -m train.datasets --dataset folder --root my_clips --csv my_clips/labels.csv")
    add_dataset_args(p)
    p.add_argument("--all-problems", action="store_true", help="list every problem, not the first 40")
    args = p.parse_args(argv)
    try:
        _, report = dataset_from_args(args)
    except DatasetError as e:
        p.exit(2, f"error: {e}\n")
    print(report.format(max_problems=10**9 if args.all_problems else 40))
    return 0
