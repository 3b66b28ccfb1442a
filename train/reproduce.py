"""Reproduce a table of the paper in one command: crop caches -> pre-training -> LOSO -> our
numbers beside the paper's.

    python -m train.reproduce --table 3 --data-root /data --out runs/paper
    python -m train.reproduce --table 7 --data-root /data --plan        # what it would run, and its cost

Tables (Li et al., arXiv 2407.07345; MOEXT.md "The paper's results"):
    3  CASME II, 5 classes, SDE (LOSO)                 ACC, UF1
    4  SAMM, 5 classes, SDE                            ACC, UF1
    5  CAS(ME)^3 part A, 3 classes                     UF1, UAR
    6  CDE, MEGC 2019 composite, 3 classes             UF1, UAR overall and per dataset
    7  ablations on CDE: full, without pre-training, without macro-expressions, without the
       motion extractor, without L_st (a1 = 0), without L_oa (L_ss here, a2 = 0)

--data-root holds the releases as they ship, one folder each, found by name (case and
punctuation ignored): CASME2 / CASME II, SAMM, SMIC (SMIC-HS), CASME3 / CAS(ME)^3 (part A
inside is fine); ``--root NAME=PATH`` names one elsewhere. Every step is one of the
project's commands, run in this process and printed first (so each can be rerun alone):

    python -m train.cache    --dataset D --root R --out OUT/cache/D           (each dataset used)
    python -m train.pretrain --cache OUT/cache/casme2 --cache OUT/cache/casme3 --out OUT/pretrain/NAME --resume
    python -m train.loso     --cache ... --protocol P --pretrained OUT/pretrain/NAME/pretrained.safetensors
                             --out OUT/runs/RUN

Pre-training is the paper's: once, on CASME II + CAS(ME)^3 part A, micro- and
macro-expressions (test subjects included, labels never read), shared by every run that uses
the same pre-training settings; the ablations that change it (--kinds micro, --a1 0, --a2 0)
get their own. Every step resumes (caches, pre-training per epoch, LOSO per fold), so an
interrupted reproduction continues where it stopped. No epoch or checkpoint is chosen on a
test subject (fixed schedule). The paper's figures live in PAPER below, in one place.

--plan runs nothing heavy: it lists the runs, counts the optimisation steps from the samples
found under --data-root (epochs, batch, repeats), measures the time per step on this machine
with a few real steps at the chosen width (pre-training steps on 2 x views images per pair),
and estimates the disk the caches need (bytes per cached sample x samples).
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import pandas as pd

from train import cache as cache_cli
from train import loso as loso_cli
from train import pretrain as pretrain_cli
from train.datasets import DatasetError, load_dataset
from train.finetune import FinetuneConfig, finetune
from train.pretrain import PretrainConfig, is_finished, pretrain
from train.report import write_json

# ---------------------------------------------------------------------------------------
# the paper's figures (MOEXT.md; its Tables 3-7, MoExt's own rows only): ONE place

PAPER: dict[int, dict[str, dict[str, float]]] = {
    3: {"casme2_sde": {"acc": 0.8179, "uf1": 0.7825}},
    4: {"samm_sde": {"acc": 0.7903, "uf1": 0.7875}},
    5: {"casme3": {"uf1": 0.5457, "uar": 0.5784}},
    # the paper's text says UF1 0.8149 / UAR 0.8115 for the composite: its table and text disagree
    6: {"cde": {"uf1": 0.8301, "uar": 0.8226},
        "cde/smic": {"uf1": 0.7976, "uar": 0.7803},
        "cde/casme2": {"uf1": 0.8992, "uar": 0.8912},
        "cde/samm": {"uf1": 0.8135, "uar": 0.8100}},
    7: {"cde": {"acc": 0.8417, "uf1": 0.8301, "uar": 0.8226},
        "cde_no_pretrain": {"acc": 0.7812, "uf1": 0.7746, "uar": 0.7776},
        "cde_no_macro": {"acc": 0.8023, "uf1": 0.8164, "uar": 0.8020},
        "cde_no_motion_extractor": {"acc": 0.8177, "uf1": 0.8082, "uar": 0.8038},
        "cde_no_lst": {"acc": 0.8233, "uf1": 0.8017, "uar": 0.8045},
        "cde_no_loa": {"acc": 0.8250, "uf1": 0.8111, "uar": 0.8010}},
}
TITLES = {3: "Table 3: CASME II, 5 classes, SDE (LOSO)", 4: "Table 4: SAMM, 5 classes, SDE (LOSO)",
          5: "Table 5: CAS(ME)^3 part A, 3 classes (LOSO)", 6: "Table 6: CDE, MEGC 2019 composite, 3 classes (LOSO)",
          7: "Table 7: ablations on CDE (LOSO)"}

# The paper's pre-training data (MOEXT.md, "Data for each phase").
PRETRAIN_DATASETS = ("casme2", "casme3")
# Pre-training variants: name -> extra train.pretrain flags.
PRETRAININGS = {"paper": (), "micro_only": ("--kinds", "micro"), "a1_0": ("--a1", "0"), "a2_0": ("--a2", "0")}
# Disk per cached sample (two 224x224 PNGs), measured with train.cache on the fixture trees
# (README, "Face-crop cache cost"); a cache already built under --out is measured instead.
BYTES_PER_SAMPLE = {"casme2": 141 * 1024, "samm": 119 * 1024, "smic": 140 * 1024, "casme3": 142 * 1024}
# Folder names under --data-root (lower case, punctuation and spaces removed).
FOLDER_NAMES = {"casme2": ("casme2", "casmeii", "casme2raw"), "samm": ("samm",), "smic": ("smic", "smichs"),
                "casme3": ("casme3", "casme3parta", "casme3a")}


@dataclass(frozen=True)
class Run:
    name: str                          # folder under OUT/runs, key into PAPER
    label: str                         # row label in the printed table
    protocol: str
    datasets: tuple[str, ...]          # LOSO caches
    pretraining: str | None = "paper"  # key of PRETRAININGS, None = --no-pretrain
    flags: tuple[str, ...] = ()        # extra train.loso flags

    @property
    def needs(self) -> tuple[str, ...]:
        extra = PRETRAIN_DATASETS if self.pretraining else ()
        return tuple(dict.fromkeys(self.datasets + extra))


CDE = ("casme2", "samm", "smic")
TABLES: dict[int, list[Run]] = {
    3: [Run("casme2_sde", "CASME II (5 classes)", "casme2", ("casme2",))],
    4: [Run("samm_sde", "SAMM (5 classes)", "samm", ("samm",))],
    5: [Run("casme3", "CAS(ME)^3 (3 classes)", "casme3", ("casme3",))],
    6: [Run("cde", "CDE composite", "composite", CDE)],
    7: [Run("cde", "full", "composite", CDE),
        Run("cde_no_pretrain", "without pre-training", "composite", CDE, None, ("--no-pretrain",)),
        Run("cde_no_macro", "without macro-expressions", "composite", CDE, "micro_only"),
        Run("cde_no_motion_extractor", "without motion extractor", "composite", CDE, "paper",
            ("--no-motion-extractor",)),
        Run("cde_no_lst", "without L_st (a1 = 0)", "composite", CDE, "a1_0"),
        Run("cde_no_loa", "without L_oa (L_ss, a2 = 0)", "composite", CDE, "a2_0")],
}


# ---------------------------------------------------------------------------------------
# data root


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def find_roots(data_root: Path, overrides: Sequence[str] = ()) -> dict[str, Path]:
    """dataset -> release folder: ``--root NAME=PATH`` first, then folders under --data-root
    (and one level below) whose normalised name is one of FOLDER_NAMES."""
    roots: dict[str, Path] = {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--root {item!r}: expected NAME=PATH, e.g. --root casme3=/data/CASME3/part_A")
        name, path = item.split("=", 1)
        name = _norm(name)
        if name not in FOLDER_NAMES:
            raise ValueError(f"--root {item!r}: NAME must be one of {', '.join(FOLDER_NAMES)}")
        roots[name] = Path(path)
    if data_root is None or not Path(data_root).is_dir():
        if not roots:
            raise ValueError(f"--data-root {data_root}: not a folder")
        return roots
    candidates = [p for p in sorted(Path(data_root).iterdir()) if p.is_dir()]
    candidates += [q for p in candidates for q in sorted(p.iterdir()) if q.is_dir()]
    for ds, names in FOLDER_NAMES.items():
        if ds in roots:
            continue
        hit = next((p for p in candidates if _norm(p.name) in names), None)
        if hit is not None:
            roots[ds] = hit
    return roots


# ---------------------------------------------------------------------------------------
# commands


@dataclass
class Step:
    kind: str                 # cache | pretrain | loso
    argv: list[str]
    out: Path
    run: Run | None = None
    name: str = ""

    @property
    def command(self) -> str:
        return f"python -m train.{self.kind} " + " ".join(_quote(a) for a in self.argv)


def _quote(a: str) -> str:
    return a if re.fullmatch(r"[A-Za-z0-9_./=:,+-]+", a) else "'" + a.replace("'", "'\\''") + "'"


@dataclass
class Options:
    out: Path
    width: float = 1.0
    epochs: int = 30
    pretrain_epochs: int = 30
    batch_size: int = 20
    repeats: int = 10
    views: int = 3
    pretrain_max_pairs: int = 0
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    workers: int | None = None
    cache_workers: int = 1
    trunk_weights: str | None = None
    quiet: bool = False
    extra: list[str] = field(default_factory=list)

    def common(self) -> list[str]:
        a = ["--width", f"{self.width:g}", "--batch-size", str(self.batch_size), "--seed", str(self.seed),
             "--device", self.device, "--threads", str(self.threads)]
        if self.workers is not None:
            a += ["--workers", str(self.workers)]
        return a + (["--quiet"] if self.quiet else [])


def cache_dir(opt: Options, ds: str) -> Path:
    return opt.out / "cache" / ds


def pretrain_ckpt(opt: Options, name: str) -> Path:
    return opt.out / "pretrain" / name / "pretrained.safetensors"


def plan_steps(table: int, roots: dict[str, Path], opt: Options) -> list[Step]:
    """The commands that reproduce ``table``, in order (caches, pre-trainings, LOSO runs)."""
    runs = TABLES[table]
    needed = list(dict.fromkeys(d for r in runs for d in r.needs))
    steps = [Step("cache", ["--dataset", d, "--root", str(roots.get(d, f"<{d} not found>")),
                            "--out", str(cache_dir(opt, d)), "--workers", str(opt.cache_workers), "--no-progress"],
                  cache_dir(opt, d), name=d) for d in needed]
    for name in dict.fromkeys(r.pretraining for r in runs if r.pretraining):
        argv = [a for d in PRETRAIN_DATASETS for a in ("--cache", str(cache_dir(opt, d)))]
        argv += ["--out", str(pretrain_ckpt(opt, name).parent), "--resume", "--epochs", str(opt.pretrain_epochs),
                 "--views", str(opt.views), *opt.common(), *PRETRAININGS[name]]
        if opt.pretrain_max_pairs:
            argv += ["--max-pairs", str(opt.pretrain_max_pairs)]
        if opt.trunk_weights:
            argv += ["--trunk-weights", str(opt.trunk_weights)]
        steps.append(Step("pretrain", argv, pretrain_ckpt(opt, name).parent, name=name))
    for r in runs:
        argv = [a for d in r.datasets for a in ("--cache", str(cache_dir(opt, d)))]
        argv += ["--protocol", r.protocol, "--out", str(opt.out / "runs" / r.name), "--epochs", str(opt.epochs),
                 "--repeats", str(opt.repeats), *opt.common(), *r.flags, *opt.extra]
        if r.pretraining:
            argv += ["--pretrained", str(pretrain_ckpt(opt, r.pretraining))]
        elif opt.trunk_weights:
            argv += ["--trunk-weights", str(opt.trunk_weights)]
        steps.append(Step("loso", argv, opt.out / "runs" / r.name, run=r, name=r.name))
    return steps


def execute(step: Step) -> None:
    """Run one step through its module's main() in this process (each resumes by itself)."""
    print(f"\n$ {step.command}", flush=True)
    if step.kind == "cache":
        rc = cache_cli.main(step.argv)
        if rc:
            raise SystemExit(f"error: {step.command} failed (exit {rc}); see its output above")
    elif step.kind == "pretrain":
        if is_finished(step.out):
            print(f"pre-training {step.out} already finished: skipped")
            return
        pretrain_cli.main(step.argv)
    else:
        loso_cli.main(step.argv)


# ---------------------------------------------------------------------------------------
# results


def run_scores(run_dir: Path) -> dict[str, dict[str, float]] | None:
    """{"": overall, "<dataset>": per dataset} of a finished LOSO run, None if unfinished."""
    p = run_dir / "report.json"
    if not p.is_file():
        return None
    m = json.loads(p.read_text())["metrics"]
    out = {"": {k: m["overall"][k] for k in ("uf1", "uar", "acc")}}
    for d, s in m.get("per_dataset", {}).items():
        out[d] = {k: s[k] for k in ("uf1", "uar", "acc")}
    return out


def results_table(table: int, out: Path) -> tuple[list[dict], str]:
    """Rows (ours beside the paper's) and a Markdown table."""
    rows = []
    for r in TABLES[table]:
        scores = run_scores(out / "runs" / r.name) or {}
        keys = [(r.name, "", r.label)]
        if table == 6:
            keys += [(f"{r.name}/{d}", d, f"  {d}") for d in r.datasets]
        for key, part, label in keys:
            ours = scores.get(part)
            paper = PAPER[table].get(key, {})
            rows.append({"row": label.strip(), "run": r.name, "ours": ours, "paper": paper})
    metrics = ("acc", "uf1", "uar")
    head = "| run | " + " | ".join(f"{m.upper()} ours | {m.upper()} paper" for m in metrics) + " |"
    lines = [head, "|" + " --- |" * (1 + 2 * len(metrics))]
    for row in rows:
        cells = []
        for m in metrics:
            ours = f"{row['ours'][m]:.4f}" if row["ours"] else "(not run)"
            paper = f"{row['paper'][m]:.4f}" if m in row["paper"] else "-"
            cells += [ours, paper]
        lines.append(f"| {row['row']} | " + " | ".join(cells) + " |")
    return rows, "\n".join(lines)


# ---------------------------------------------------------------------------------------
# plan: sizes, steps, time per step, disk


def dataset_counts(roots: dict[str, Path], protocols: dict[str, set[str]]) -> tuple[dict, dict]:
    """Per dataset: every sample (what the cache crops) by kind, and per protocol the labelled
    micro samples per subject (what LOSO trains and tests on)."""
    samples, loso = {}, {}
    for ds, root in roots.items():
        wanted = protocols.get(ds)
        if not wanted:
            continue
        for k, protocol in enumerate(sorted(wanted)):
            try:
                found, _ = load_dataset(ds, root, protocol)
            except DatasetError as e:
                raise ValueError(f"{ds} at {root}: {e}") from None
            if k == 0:
                kinds = pd.Series([s.kind for s in found], dtype=object).value_counts().to_dict()
                samples[ds] = {"micro": int(kinds.get("micro", 0)), "macro": int(kinds.get("macro", 0))}
            subj = pd.Series([s.subject for s in found if s.kind == "micro" and s.label is not None], dtype=object)
            loso[(ds, protocol)] = subj.value_counts().to_dict()
    return samples, loso


def steps_per_epoch(n: int, batch: int) -> int:
    """Optimisation steps of one epoch over n items (a last batch of 1 is dropped)."""
    if n <= 0:
        return 0
    b = min(batch, n)
    full, rest = divmod(n, b)
    return full + (1 if rest > 1 else 0)


def count_steps(table: int, samples: dict, loso: dict, opt: Options) -> list[dict]:
    """Optimisation steps of every pre-training and LOSO run of ``table``."""
    out = []
    runs = TABLES[table]
    for name in dict.fromkeys(r.pretraining for r in runs if r.pretraining):
        kinds = ("micro",) if name == "micro_only" else ("micro", "macro")
        n = sum(samples.get(d, {}).get(k, 0) for d in PRETRAIN_DATASETS for k in kinds)
        if opt.pretrain_max_pairs:
            n = min(n, opt.pretrain_max_pairs)
        out.append({"step": f"pretrain/{name}", "kind": "pretrain", "items": n,
                    "steps": opt.pretrain_epochs * steps_per_epoch(n, opt.batch_size),
                    "images_per_step": min(opt.batch_size, max(n, 1)) * 2 * opt.views})
    for r in runs:
        per_subject: dict[str, int] = {}
        for d in r.datasets:
            per_subject.update({f"{s}": c for s, c in loso.get((d, r.protocol), {}).items()})
        total = sum(per_subject.values())
        steps = sum(opt.epochs * steps_per_epoch((total - c) * opt.repeats, opt.batch_size)
                    for c in per_subject.values())
        out.append({"step": f"loso/{r.name}", "kind": "finetune", "items": total, "folds": len(per_subject),
                    "steps": steps, "images_per_step": min(opt.batch_size, max(total, 1)) * 2})
    return out


_TIMING: dict[tuple, dict] = {}


def _toy_cache(root: Path, n: int) -> pd.DataFrame:
    """n random onset/apex crops written as a crop cache (index rows with cache_dir)."""
    rng = np.random.default_rng(0)
    (root / "crops").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        paths = []
        for part in ("onset", "apex"):
            rel = f"crops/{i}_{part}.png"
            cv2.imwrite(str(root / rel), rng.integers(0, 256, (224, 224, 3), dtype=np.uint8))
            paths.append(rel)
        rows.append({"dataset": "timing", "subject": f"timing/s{i % 2}", "sample": f"p{i}", "kind": "micro",
                     "raw_label": ("negative", "positive", "surprise")[i % 3], "onset_frame": 0, "apex_frame": 1,
                     "onset_path": paths[0], "apex_path": paths[1]})
    with open(root / "index.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    df = pd.DataFrame(rows)
    df["cache_dir"] = str(root)
    df["label"] = [i % 3 for i in range(n)]
    return df


def measure_step_times(opt: Options, n_steps: int = 2) -> dict:
    """Seconds per optimisation step of pre-training and of fine-tuning, measured here: the
    real train.pretrain / train.finetune loops (data loading and augmentation included) on
    n_steps batches of random crops, at the chosen width, batch, views and device; the second
    of two epochs is timed (the first pays for start-up)."""
    key = (opt.width, opt.batch_size, opt.views, opt.device, opt.threads, n_steps)
    if key in _TIMING:
        return _TIMING[key]
    b = max(2, opt.batch_size)
    workers = 0 if opt.workers is None else opt.workers
    with tempfile.TemporaryDirectory(prefix="moext_timing_") as tmp:
        rows = _toy_cache(Path(tmp) / "cache", b * n_steps)
        pcfg = PretrainConfig(epochs=2, batch_size=b, views=opt.views, device=opt.device, threads=opt.threads,
                              workers=workers, preload=True, seed=opt.seed)
        pretrain(rows, Path(tmp) / "pre", opt.width, pcfg, quiet=True)
        last = json.loads((Path(tmp) / "pre" / "log.jsonl").read_text().splitlines()[-1])
        t_pre = last["time_s"] / max(1, last.get("steps") or n_steps)
        fcfg = FinetuneConfig(epochs=2, batch_size=b, repeats=1, device=opt.device, threads=opt.threads,
                              workers=workers, seed=opt.seed)
        _, summary = finetune(rows, ("negative", "positive", "surprise"), fcfg, None, opt.width, Path(tmp) / "ft",
                              quiet=True)
        t_ft = summary["history"][-1]["time_s"] / n_steps
    _TIMING[key] = {"pretrain_s_per_step": t_pre, "finetune_s_per_step": t_ft, "batch": b, "steps_timed": n_steps,
                    "width": opt.width, "views": opt.views, "device": summary.get("device", opt.device)}
    return _TIMING[key]


def cache_bytes(opt: Options, ds: str) -> tuple[float, str]:
    """Bytes per cached sample: measured on a cache already under --out, else the README's figure."""
    index = cache_dir(opt, ds) / "index.csv"
    if index.is_file():
        df = pd.read_csv(index, dtype=str)
        if len(df):
            size = sum((cache_dir(opt, ds) / p).stat().st_size for c in ("onset_path", "apex_path")
                       for p in df[c] if (cache_dir(opt, ds) / p).is_file())
            return size / len(df), f"measured on {cache_dir(opt, ds)}"
    return float(BYTES_PER_SAMPLE.get(ds, 140 * 1024)), "README estimate (fixture trees)"


def make_plan(table: int, roots: dict[str, Path], opt: Options, measure_steps: int = 2) -> dict:
    steps = plan_steps(table, roots, opt)
    needed = [s.name for s in steps if s.kind == "cache"]
    missing = [d for d in needed if d not in roots]
    protocols: dict[str, set[str]] = {d: set() for d in needed}
    for r in TABLES[table]:
        for d in r.datasets:
            protocols[d].add(r.protocol)
    for d in needed:
        protocols[d] = protocols[d] or {"default"}
    samples, loso = dataset_counts({d: p for d, p in roots.items() if d in needed}, protocols)
    work = count_steps(table, samples, loso, opt)
    timing = measure_step_times(opt, measure_steps) if measure_steps > 0 else None
    total_s = 0.0
    for w in work:
        if timing:
            w["seconds"] = w["steps"] * timing[f"{w['kind']}_s_per_step"]
            total_s += w["seconds"]
    disk = []
    for d in needed:
        per, how = cache_bytes(opt, d)
        n = sum(samples.get(d, {}).values())
        disk.append({"dataset": d, "samples": n, "bytes_per_sample": round(per), "bytes": round(per * n), "how": how})
    return {"table": table, "title": TITLES[table], "roots": {d: str(p) for d, p in roots.items()},
            "missing": missing, "samples": samples, "commands": [s.command for s in steps], "work": work,
            "timing": timing, "total_seconds": total_s if timing else None, "disk": disk,
            "disk_bytes": sum(x["bytes"] for x in disk)}


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def print_plan(plan: dict) -> None:
    print(f"{plan['title']}: plan")
    for d, p in plan["roots"].items():
        print(f"  found {d}: {p}  ({plan['samples'].get(d, {})} samples)" if d in plan["samples"] else
              f"  found {d}: {p} (not used by this table)")
    if plan["missing"]:
        print(f"  MISSING under --data-root: {', '.join(plan['missing'])} (add the folder or --root NAME=PATH)")
    print("runs, in order:")
    for c in plan["commands"]:
        print(f"  {c}")
    t = plan["timing"]
    if t:
        print(f"time per step measured here (width {t['width']:g}, batch {t['batch']}, {t['views']} views, "
              f"{t['device']}): pre-training {t['pretrain_s_per_step']:.3f} s, fine-tuning {t['finetune_s_per_step']:.3f} s")
    print("optimisation steps:")
    for w in plan["work"]:
        extra = f", {w['folds']} folds" if "folds" in w else ""
        est = f", ~{_duration(w['seconds'])}" if "seconds" in w else ""
        print(f"  {w['step']}: {w['items']} pairs{extra}, {w['steps']} steps ({w['images_per_step']} images/step){est}")
    if plan["total_seconds"] is not None:
        print(f"estimated compute: {_duration(plan['total_seconds'])} on this machine (caching not included)")
    print("disk for the caches:")
    for x in plan["disk"]:
        print(f"  {x['dataset']}: {x['samples']} samples x {_human(x['bytes_per_sample'])} = {_human(x['bytes'])} "
              f"({x['how']})")
    print(f"  total {_human(plan['disk_bytes'])}")


# ---------------------------------------------------------------------------------------
# CLI


def main(argv: Sequence[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m train.reproduce", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", type=int, required=True, choices=sorted(TABLES), help="the paper's table: 3, 4, 5, 6 or 7")
    ap.add_argument("--data-root", type=Path, help="folder holding the releases (CASME2, SAMM, SMIC, CASME3)")
    ap.add_argument("--root", action="append", default=[], metavar="NAME=PATH",
                    help="a release elsewhere (casme2, samm, smic, casme3), e.g. --root casme3=/data/CAS(ME)3/part_A")
    ap.add_argument("--out", type=Path, default=Path("runs/paper"),
                    help="where caches, pre-trainings, LOSO runs and the table go (default runs/paper)")
    ap.add_argument("--plan", action="store_true",
                    help="print the runs, optimisation steps, measured time per step and cache disk; run nothing")
    ap.add_argument("--measure-steps", type=int, default=2,
                    help="--plan: batches timed per phase (default 2; 0 = do not measure)")
    ap.add_argument("--trunk-weights", metavar="FILE",
                    help="an ImageNet ResNet-18 file you supply (.safetensors/.pt/.pth, torchvision names, read "
                         "safely) to start the trunk from, in pre-training (and in 'without pre-training'); width 1.0")
    ap.add_argument("--width", type=float, default=1.0, help="channel multiplier (default 1.0, the paper's network)")
    ap.add_argument("--epochs", type=int, default=30, help="fine-tuning epochs per fold (default 30, the paper's)")
    ap.add_argument("--pretrain-epochs", type=int, default=30, help="pre-training epochs (default 30, the paper's)")
    ap.add_argument("--batch-size", type=int, default=20, help="pairs per step in both phases (default 20)")
    ap.add_argument("--repeats", type=int, default=10, help="fine-tuning copies of each pair per epoch (default 10)")
    ap.add_argument("--views", type=int, default=3, help="pre-training instances per expansion set, m (default 3)")
    ap.add_argument("--pretrain-max-pairs", type=int, default=0,
                    help="pre-train on a seeded subset of this many pairs (quick checks; default 0 = all)")
    ap.add_argument("--seed", type=int, default=0, help="seed of every run (default 0)")
    ap.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--workers", type=int, help="data-loader workers of training (default: the trainers' default)")
    ap.add_argument("--cache-workers", type=int, default=1, help="processes cropping faces (default 1)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    args = ap.parse_args(argv)
    opt = Options(out=args.out, width=args.width, epochs=args.epochs, pretrain_epochs=args.pretrain_epochs,
                  batch_size=args.batch_size, repeats=args.repeats, views=args.views,
                  pretrain_max_pairs=args.pretrain_max_pairs, seed=args.seed, device=args.device, threads=args.threads,
                  workers=args.workers, cache_workers=args.cache_workers, trunk_weights=args.trunk_weights,
                  quiet=args.quiet)
    try:
        if args.trunk_weights and abs(args.width - 1.0) > 1e-9:
            raise ValueError(f"--trunk-weights needs --width 1.0 (ImageNet ResNet-18 sizes), got {args.width:g}")
        roots = find_roots(args.data_root, args.root)
        if args.plan:
            plan = make_plan(args.table, roots, opt, args.measure_steps)
            print_plan(plan)
            return plan
        steps = plan_steps(args.table, roots, opt)
        missing = [s.name for s in steps if s.kind == "cache" and s.name not in roots]
        if missing:
            raise ValueError(f"{TITLES[args.table]} needs {', '.join(missing)}: no such release folder under "
                             f"{args.data_root} (found {', '.join(sorted(roots)) or 'none'}); name it "
                             f"{' / '.join(m.upper() for m in missing)} or pass --root NAME=PATH")
        t0 = time.perf_counter()
        for step in steps:
            execute(step)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    rows, md = results_table(args.table, args.out)
    title = f"{TITLES[args.table]}: ours (this run) beside the paper's"
    print(f"\n{title}\n{md}")
    print("Ours: fixed schedule, nothing chosen on a test subject; the paper's figures are as published "
          "(MOEXT.md). Reports: " + ", ".join(str(args.out / "runs" / r.name / "report.json") for r in TABLES[args.table]))
    result = {"table": args.table, "title": TITLES[args.table], "rows": rows, "markdown": md,
              "commands": [s.command for s in steps], "seconds": round(time.perf_counter() - t0, 1),
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opt).items()}}
    write_json(args.out / f"table{args.table}.json", result)
    (args.out / f"table{args.table}.md").write_text(f"# {title}\n\n{md}\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
