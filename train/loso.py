"""Leave-one-subject-out (LOSO) evaluation of MoExt: SDE (one dataset) and CDE (composite).

Protocol (MOEXT.md, "Evaluation"; paper Sec. 4): each subject in turn is the test set and
every other subject trains. Each fold fine-tunes the classifier from the pre-trained weights
(train/finetune.py) and predicts its test subject; the predictions of ALL folds are pooled
and scored once (UF1, UAR, ACC; train/metrics.py), overall and, for the composite, per
source dataset, with a per-subject table and a confusion-matrix PNG (train/report.py).

Pre-training is label-free. Its DATA, by default as published: CASME II + CAS(ME)^3 part A,
micro- and macro-expressions (``--pretrain-data paper``), taken from the rows of every given
cache (--cache and --pretrain-cache) whose dataset is casme2 or casme3; when neither is among
the caches (synthetic or your own data) every cache's rows are used, and the report says so.
``--pretrain-data all`` or a list (``casme2,samm,smic``) chooses otherwise; ``--kinds micro``
drops the macro-expressions (Table 7, "without macro"). The report lists the datasets,
kinds and subjects pre-training saw. Modes (the report states which was used):
- once (default, as the paper): pre-train once on those pairs (test subjects included,
  labels never read) into RUN_DIR/pretrain;
- --strict-pretrain: pre-train per fold without the test subject (RUN_DIR/folds/<f>/pretrain);
- --pretrained CKPT: start every fold from a given pre-training checkpoint;
- --no-pretrain: fine-tune from random weights (the paper's "without pre-training" ablation;
  with --trunk-weights, from the ImageNet trunk and a random rest).
Pre-training flags pass through (--views, --margin, --a1, --a2, --kinds, --view-ops,
--recon-target, --deterministic, --trunk-weights FILE for a user-supplied ImageNet ResNet-18);
--no-motion-extractor is the Table 7 ablation (|S_a - S_o| straight to the classifier). Test
folds are predicted on the training device.

No epoch, threshold or checkpoint is ever chosen on a test subject: each fold trains a fixed
schedule, or with --val-subjects K picks its epoch on K of its TRAINING subjects.
--shuffle-labels permutes the training labels of each fold (seeded) as a control: the
pooled scores must then fall to chance (UAR ~ 1/C).

Resumable per fold (RUN_DIR/folds/<subject>/result.json; finished folds are skipped); folds
can be split over processes with --folds i/n and pooled with --merge:

    python -m train.loso --cache cache/casme2 --protocol casme2 --out runs/loso_casme2
    python -m train.loso --cache cache/casme2 --cache cache/samm --cache cache/smic \\
        --protocol composite --out runs/cde
    python -m train.loso ... --out runs/cde --pretrain-only          # shared pre-training first
    python -m train.loso ... --out runs/cde --folds 1/4              # then 4 jobs in parallel
    python -m train.loso --merge --out runs/cde                       # pool the folds
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
import zlib
from dataclasses import asdict, fields
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist

from train.cache import CacheError
from train.checkpoint import CheckpointError, checkpoint_info, load_resnet18_trunk, save_checkpoint
from train.data import attach_labels, load_index, select_rows
from train.distributed import barrier, init_distributed
from train.finetune import FinetuneConfig, finetune, predict, prediction_table, save_classifier
from train.moext import MoExtConfig, MoExtPretrainer
from train.pretrain import PretrainConfig, add_common_args, add_pretrain_args, is_finished, pretrain
from train.report import write_json, write_run_report

RESULT = "result.json"
# Settings that change a fold's result: a run folder holding folds made with other values
# refuses to mix them in.
KEY_FIELDS = ("protocol", "caches", "pretrain_caches", "pretrain_data", "pretrain_mode", "pretrained", "width",
              "finetune", "pretrain", "shuffle_labels", "subjects")
# The paper's pre-training data (MOEXT.md, "Data for each phase"): CASME II + CAS(ME)^3 part A.
PAPER_PRETRAIN_DATASETS = ("casme2", "casme3")
KINDS = ("micro", "macro")


def fold_name(subject: str) -> str:
    """A folder name for a subject ("casme2/sub01" -> "casme2__sub01")."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", subject.replace("/", "__"))


def fold_seed(seed: int, subject: str) -> int:
    """Each fold's seed depends on the run seed and its subject only, so a fold gives the
    same result whichever process runs it and in whatever order (--folds i/n)."""
    return (int(seed) * 1_000_003 + zlib.crc32(subject.encode())) % (2**31 - 1)


def parse_folds(text: str | None, n_subjects: int) -> tuple[int, int]:
    if not text:
        return 1, 1
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise ValueError(f"--folds {text!r}: expected i/n with 1 <= i <= n, e.g. --folds 2/4")
    return int(m.group(1)), int(m.group(2))


def my_subjects(subjects: Sequence[str], i: int, n: int) -> list[str]:
    """Process i of n takes every n-th subject (round robin: balanced when folds differ in size)."""
    return list(subjects[i - 1::n])


def shuffle_labels(rows: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The control: permute the labels of the training rows (seeded), keep everything else."""
    out = rows.copy()
    out["label"] = np.random.default_rng([seed, 11]).permutation(out["label"].to_numpy())
    return out


def resolve_pretrain_data(spec: str, present: Sequence[str]) -> tuple[list[str], str]:
    """The datasets pre-training uses, from ``--pretrain-data`` and the datasets present in the
    given caches: (datasets, a sentence for the report)."""
    present = sorted(set(present))
    spec = (spec or "paper").strip()
    if spec == "all":
        return present, f"every dataset of the given caches ({', '.join(present)})"
    if spec == "paper":
        chosen = [d for d in PAPER_PRETRAIN_DATASETS if d in present]
        missing = [d for d in PAPER_PRETRAIN_DATASETS if d not in present]
        if not chosen:
            return present, (f"the paper's datasets ({', '.join(PAPER_PRETRAIN_DATASETS)}) are not among the "
                             f"caches; every dataset of the given caches is used ({', '.join(present)})")
        if missing:
            return chosen, (f"the paper's set is CASME II + CAS(ME)^3 part A, but {', '.join(missing)} is not among "
                            f"the caches (add it with --pretrain-cache): pre-training used {', '.join(chosen)} only")
        return chosen, "the paper's set: CASME II + CAS(ME)^3 part A"
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in present]
    if unknown or not names:
        raise ValueError(f"--pretrain-data {spec!r}: {', '.join(unknown) or 'nothing'} not among the datasets of the "
                         f"given caches ({', '.join(present)}); use paper, all, or a comma list of those")
    return names, f"chosen with --pretrain-data: {', '.join(names)}"


def parse_kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in (text or "").split(",") if k.strip())
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ValueError(f"--kinds {text!r}: use micro, macro or micro,macro")
    return tuple(k for k in KINDS if k in kinds)


def pretraining_rows(caches: Sequence[str], data: dict, exclude: Sequence[str] = (), max_pairs: int = 0,
                     seed: int = 0) -> pd.DataFrame:
    """Label-free pre-training pairs: the chosen datasets and kinds of ``caches``, minus
    ``exclude`` subjects, optionally a seeded subset of ``max_pairs``."""
    rows = select_rows(load_index(caches), exclude_subjects=exclude, kinds=data["kinds"])
    rows = rows[rows["dataset"].isin(data["datasets"])].reset_index(drop=True)
    if not len(rows):
        raise ValueError(f"no pre-training pairs: datasets {data['datasets']}, kinds {list(data['kinds'])} "
                         f"(excluded {list(exclude)[:5]}) select nothing in {list(caches)}")
    if max_pairs and len(rows) > max_pairs:
        keep = np.sort(np.random.default_rng(seed).choice(len(rows), size=max_pairs, replace=False))
        rows = rows.iloc[keep].reset_index(drop=True)
    return rows


def describe_rows(rows: pd.DataFrame) -> dict:
    """What pre-training saw: pairs per dataset and kind, and its subjects."""
    return {"n_pairs": int(len(rows)),
            "pairs": {f"{d}/{k}": int(n) for (d, k), n in rows.groupby(["dataset", "kind"]).size().items()},
            "subjects": sorted(set(rows["subject"]))}


def make_config(cls, base: dict, optional: dict, flags: dict):
    """``cls(**base, **optional)``; an ``optional`` key that ``cls`` lacks is dropped when it
    holds its neutral value (None) and an error naming the flag otherwise (a pass-through flag
    that this version of the trainer does not support)."""
    known = {f.name: f for f in fields(cls)}
    kw = dict(base)
    for k, v in optional.items():
        if k in known:
            if v is not None:
                kw[k] = v
        elif v is not None:
            raise ValueError(f"{flags.get(k, k)}: this version of {cls.__module__} has no {cls.__name__}.{k}")
    return cls(**kw)


def given_pretraining(ckpt: Path) -> dict | None:
    """What a given pre-training checkpoint saw, from the pretrain.json that train.pretrain
    writes beside it (None when there is none, e.g. a checkpoint from elsewhere)."""
    p = ckpt.parent / "pretrain.json"
    if not p.is_file():
        return None
    try:
        info = json.loads(p.read_text())
    except ValueError:
        return None
    subjects = sorted(info.get("subjects") or [])
    datasets = sorted({s.split("/", 1)[0] for s in subjects})
    kinds = info.get("kinds_used") or info.get("kinds") or {}
    if not isinstance(kinds, dict):          # a "micro,macro" setting, not counts
        kinds = {k: 0 for k in str(kinds).split(",") if k}
    return {"spec": "given checkpoint", "datasets": datasets, "kinds": sorted(kinds),
            "note": f"as recorded in {p}: datasets {', '.join(datasets) or '?'}, caches {info.get('caches')}",
            "seen": {"n_pairs": int(info.get("pairs") or sum(kinds.values()) or 0),
                     "pairs": {str(k): int(v) for k, v in kinds.items()}, "subjects": subjects}}


def trunk_init_checkpoint(path: Path, width: float, trunk_weights: str) -> str:
    """A pre-training checkpoint whose trunk is the user's ImageNet ResNet-18 and whose other
    parts are freshly initialised: where --no-pretrain --trunk-weights starts every fold."""
    if abs(width - 1.0) > 1e-9:
        raise ValueError(f"--trunk-weights needs --width 1.0 (ImageNet ResNet-18 sizes), got {width}")
    cfg = MoExtConfig(width=width)
    torch.manual_seed(0)
    model = MoExtPretrainer(cfg)
    missing, unexpected = load_resnet18_trunk(model, trunk_weights)
    save_checkpoint(path, model, cfg, meta={"phase": "trunk-init", "trunk_weights": str(trunk_weights),
                                            "trunk_missing": missing, "trunk_unexpected": unexpected})
    return str(path.resolve())


def describe_pretraining(mode: str, pretrained: str | None) -> str:
    return {
        "once": "pre-trained once on the pre-training pairs (see pretrain_data), test subjects "
                "included, labels unused (the paper's protocol)",
        "strict": "pre-trained per fold without the test subject (strict mode)",
        "given": f"every fold starts from the given pre-training checkpoint {pretrained}",
        "none": "no pre-training: fine-tuned from random weights (ablation)" + (
            f"; trunk from {pretrained}" if pretrained else ""),
    }[mode]


def describe_selection(cfg: FinetuneConfig) -> str:
    if cfg.val_subjects:
        return (f"per fold, the epoch with the best UF1 on {cfg.val_subjects} of its TRAINING subjects held out "
                f"of fine-tuning (max {cfg.epochs} epochs); test subjects never used for any choice")
    return f"fixed schedule: every fold keeps its last epoch ({cfg.epochs}); test subjects never used for any choice"


# ---------------------------------------------------------------------------------------
# run


def check_settings(run_dir: Path, settings: dict) -> None:
    """Write run.json, or check that the folds already there were made with the same settings."""
    path = run_dir / "run.json"
    if path.is_file():
        old = json.loads(path.read_text())
        diff = [f"{k}: {old.get(k)!r} there vs {settings.get(k)!r} now" for k in KEY_FIELDS
                if json.dumps(old.get(k), sort_keys=True) != json.dumps(settings.get(k), sort_keys=True)]
        if diff:
            raise ValueError(f"{run_dir} holds folds made with other settings ({'; '.join(diff)[:600]}); "
                             "use another --out, or delete that folder to start over")
        return
    write_json(path, settings)


def run_fold(subject: str, rows: pd.DataFrame, classes: Sequence[str], settings: dict, run_dir: Path,
             fcfg: FinetuneConfig, pcfg: PretrainConfig, pretrained: str | None, quiet: bool,
             save_checkpoints: bool) -> dict:
    """Fine-tune without ``subject``, predict it, write folds/<subject>/result.json."""
    t0 = time.perf_counter()
    fdir = run_dir / "folds" / fold_name(subject)
    seed = fold_seed(fcfg.seed, subject)
    train = rows[rows["subject"] != subject].reset_index(drop=True)
    test = rows[rows["subject"] == subject].reset_index(drop=True)
    if settings["shuffle_labels"]:
        train = shuffle_labels(train, seed)
    if settings["pretrain_mode"] == "strict":
        prows = pretraining_rows(settings["pretrain_caches"], settings["pretrain_data"], [subject], pcfg.max_pairs,
                                 pcfg.seed)
        pretrained = str(pretrain(prows, fdir / "pretrain", settings["width"], pcfg, resume=True,
                                  meta={"excluded_subjects": [subject], "pretrain_data": settings["pretrain_data"]},
                                  quiet=quiet))
    cfg = FinetuneConfig(**{**asdict(fcfg), "seed": seed})
    model, summary = finetune(train, classes, cfg, pretrained, settings["width"], fdir, quiet=quiet,
                              desc=f"fold {subject}")
    # the test subject is predicted on the training device (fine-tuning returns the model on the CPU)
    info, device = init_distributed(fcfg.device)
    probs = predict(model.to(device), test, device, amp=fcfg.amp, preload=False)
    model = model.cpu()
    table = prediction_table(test, probs, classes)
    result = {"subject": subject, "n_train": summary["n_train"], "n_val": summary["n_val"], "n_test": len(test),
              "seed": seed, "selection": summary["selection"], "best_epoch": summary["best_epoch"],
              "val_subjects": summary["val_subjects"], "pretrained": pretrained,
              "missing_keys": summary["missing"], "unexpected_keys": summary["unexpected"],
              "shuffle_labels": settings["shuffle_labels"], "history": summary["history"],
              "predicted_on": str(device),
              "pretrain_excluded": [subject] if settings["pretrain_mode"] == "strict" else [],
              "time_s": round(time.perf_counter() - t0, 1), "predictions": table.to_dict(orient="records")}
    if info.is_main:
        if save_checkpoints:
            save_classifier(fdir / "classifier.safetensors", model,
                            {"phase": "loso-fold", "protocol": settings["protocol"], "test_subject": subject,
                             "selection": summary["selection"], "shuffle_labels": settings["shuffle_labels"]})
        write_json(fdir / RESULT, result)  # written last: its presence means "fold done"
    barrier(info)
    return result


def merge(run_dir: Path, quiet: bool = False) -> dict:
    """Pool the predictions of every fold and write report.json, subjects.csv, predictions.csv, confusion.png."""
    settings_path = run_dir / "run.json"
    if not settings_path.is_file():
        raise ValueError(f"{run_dir}: no run.json; run python -m train.loso ... --out {run_dir} first")
    settings = json.loads(settings_path.read_text())
    results, missing = [], []
    for s in settings["subjects"]:
        p = run_dir / "folds" / fold_name(s) / RESULT
        if p.is_file():
            results.append(json.loads(p.read_text()))
        else:
            missing.append(s)
    if missing:
        raise ValueError(f"{run_dir}: {len(missing)} of {len(settings['subjects'])} folds are not finished "
                         f"({', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}); run the remaining "
                         "--folds i/n jobs (or the run without --folds) before --merge")
    classes = tuple(settings["classes"])
    pred = pd.DataFrame([r for res in results for r in res["predictions"]])
    pred = pred.sort_values(["dataset", "subject", "sample"], kind="stable").reset_index(drop=True)
    fcfg = FinetuneConfig(**settings["finetune"])
    meta = {
        "protocol": settings["protocol"],
        "evaluation": "leave-one-subject-out; predictions of all folds pooled, then scored once",
        "pretraining": {"mode": settings["pretrain_mode"],
                        "description": describe_pretraining(settings["pretrain_mode"], settings["pretrained"]),
                        "checkpoint": settings["pretrained"], "caches": settings["pretrain_caches"],
                        "data": settings.get("pretrain_data"),
                        "settings": settings["pretrain"] if settings["pretrain_mode"] in ("once", "strict") else None},
        "motion_extractor": settings["finetune"].get("motion_extractor", True),
        "selection": describe_selection(fcfg),
        "selection_rule": "validation on training subjects" if fcfg.val_subjects else "fixed schedule",
        "shuffle_labels": settings["shuffle_labels"],
        "shuffle_labels_note": ("CONTROL RUN: training labels permuted within each fold; scores should be at "
                                "chance") if settings["shuffle_labels"] else "",
        "width": settings["width"], "finetune": settings["finetune"], "caches": settings["caches"],
        "n_folds": len(results), "n_samples": len(pred), "dropped": settings["dropped"],
        "folds": [{k: r[k] for k in ("subject", "n_train", "n_val", "n_test", "selection", "best_epoch",
                                     "val_subjects", "time_s")} for r in results],
        "fold_time_s": round(sum(r["time_s"] for r in results), 1),
        "commands": settings.get("commands", []), "torch": torch.__version__,
    }
    title = f"LOSO {settings['protocol']}" + (" (shuffled labels)" if settings["shuffle_labels"] else "")
    report = write_run_report(run_dir, pred, classes, meta, title=title)
    if not quiet:
        o = report["metrics"]["overall"]
        print(f"LOSO {settings['protocol']}: {len(results)} folds, n={o['n']}: UF1 {o['uf1']:.4f} UAR {o['uar']:.4f} "
              f"ACC {o['acc']:.4f} (chance UAR {o['chance_uar']:.3f})")
        data = settings.get("pretrain_data") or {}
        if data.get("seen"):
            seen = data["seen"]
            print(f"  pre-training ({settings['pretrain_mode']}): {data['note']}; {seen['n_pairs']} pairs "
                  f"{seen['pairs']} from {len(seen['subjects'])} subjects"
                  + (" (each fold without its test subject)" if settings["pretrain_mode"] == "strict" else ""))
        for d, s in report["metrics"]["per_dataset"].items():
            print(f"  {d}: n={s['n']} UF1 {s['uf1']:.4f} UAR {s['uar']:.4f} ACC {s['acc']:.4f}")
        print(f"wrote {run_dir / 'report.json'}, {run_dir / 'confusion.png'}, {run_dir / 'subjects.csv'}")
    return report


def run(args) -> dict | None:
    run_dir = Path(args.out)
    if args.merge:
        return merge(run_dir, args.quiet)
    if not args.cache:
        raise ValueError("give at least one --cache DIR (or --merge to pool finished folds)")
    modes = [m for m, on in (("strict", args.strict_pretrain), ("given", bool(args.pretrained)),
                             ("none", args.no_pretrain)) if on]
    if len(modes) > 1:
        raise ValueError(f"choose one of --strict-pretrain, --pretrained CKPT, --no-pretrain (got {modes})")
    mode = modes[0] if modes else "once"
    if args.trunk_weights and mode == "given":
        raise ValueError("--trunk-weights starts a new pre-training (or, with --no-pretrain, fine-tuning); it cannot "
                         "be combined with --pretrained CKPT, which already holds a trunk")
    width = args.width
    if mode == "given":
        head = checkpoint_info(args.pretrained)
        if width is not None and abs(width - head["config"].width) > 1e-9:
            raise ValueError(f"--width {width} but {args.pretrained} has width {head['config'].width}")
        width = head["config"].width
    width = 1.0 if width is None else float(width)

    # LOSO classifies micro-expressions only: macro rows (label-free pre-training data, whose
    # labels may be anything, e.g. unlabelled or unknown) never reach the label map
    labelled = attach_labels(select_rows(load_index(args.cache), kinds=("micro",)), args.protocol)
    rows = labelled.rows
    if not args.quiet:
        print(labelled.summary())
    subjects = sorted(set(rows["subject"]))
    if len(subjects) < 2:
        raise ValueError(f"LOSO needs at least 2 subjects with labelled micro samples, found {subjects}")
    # flags of both phases; None = "not given", so a trainer without that field is not bothered
    both = {"deterministic": True if args.deterministic else None, "freeze_bn": True if args.freeze_bn else None,
            "sync_bn": False if not args.sync_bn else None}
    names = {"deterministic": "--deterministic", "freeze_bn": "--freeze-bn", "sync_bn": "--no-sync-bn",
             "motion_extractor": "--no-motion-extractor", "trunk_weights": "--trunk-weights"}
    fcfg = make_config(FinetuneConfig, dict(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        beta1=args.beta1, beta2=args.beta2, repeats=args.repeats, val_subjects=args.val_subjects,
        dropout=args.dropout, seed=args.seed, workers=args.workers, device=args.device,
        amp=args.amp, threads=args.threads, preload=True),
        {**both, "motion_extractor": False if args.no_motion_extractor else None}, names)
    pcfg = make_config(PretrainConfig, dict(
        epochs=args.pretrain_epochs, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, beta1=args.beta1, beta2=args.beta2, seed=args.seed,
        workers=args.workers, device=args.device, amp=args.amp, threads=args.threads,
        max_pairs=args.pretrain_max_pairs, preload=args.preload, views=args.views, eps=args.margin,
        a1=args.a1, a2=args.a2, ops_per_view=args.view_ops, recon_target=args.recon_target, kinds=args.kinds),
        {**both, "trunk_weights": str(Path(args.trunk_weights).resolve()) if args.trunk_weights and mode != "none"
         else None}, names)
    pretrain_caches = [str(Path(c).resolve()) for c in list(args.cache) + list(args.pretrain_cache)]
    if mode not in ("once", "strict"):
        if args.pretrain_cache:
            raise ValueError("--pretrain-cache adds pre-training data; with "
                             f"{'--pretrained' if mode == 'given' else '--no-pretrain'} nothing is pre-trained here")
        pretrain_caches = []
    kinds = parse_kinds(args.kinds)
    pretrain_data = None
    if mode in ("once", "strict"):
        present = sorted(set(load_index(pretrain_caches)["dataset"]))
        datasets, note = resolve_pretrain_data(args.pretrain_data, present)
        pretrain_data = {"spec": args.pretrain_data, "datasets": datasets, "kinds": list(kinds), "note": note}
        seen = pretraining_rows(pretrain_caches, pretrain_data, (), pcfg.max_pairs, pcfg.seed)
        pretrain_data["seen"] = describe_rows(seen)
        if not args.quiet:
            print(f"pre-training data: {note}; kinds {', '.join(kinds)}; {len(seen)} pairs from "
                  f"{seen['subject'].nunique()} subjects" + (" (strict: each fold without its test subject)"
                                                             if mode == "strict" else ""))
    elif kinds != parse_kinds(PretrainConfig().kinds) or args.pretrain_data != "paper":
        raise ValueError(f"--kinds / --pretrain-data choose pre-training data; with "
                         f"{'--pretrained' if mode == 'given' else '--no-pretrain'} nothing is pre-trained here")
    elif mode == "given":
        pretrain_data = given_pretraining(Path(args.pretrained))
    pretrained = str(Path(args.pretrained).resolve()) if mode == "given" else None
    if mode == "once":
        pretrained = str((run_dir / "pretrain" / "pretrained.safetensors").resolve())
    if mode == "none" and args.trunk_weights:
        pretrained = str((run_dir / "init" / "trunk_init.safetensors").resolve())
    hp = {k: v for k, v in asdict(fcfg).items() if k not in ("workers", "device", "threads", "preload")}
    php = {k: v for k, v in asdict(pcfg).items() if k not in ("workers", "device", "threads", "preload")}
    settings = {"protocol": args.protocol, "classes": list(labelled.classes),
                "caches": [str(Path(c).resolve()) for c in args.cache], "pretrain_caches": pretrain_caches,
                "pretrain_data": pretrain_data, "trunk_weights": args.trunk_weights or None,
                "pretrain_mode": mode, "pretrained": pretrained, "width": width, "finetune": hp,
                "pretrain": php if mode in ("once", "strict") else None,
                "shuffle_labels": bool(args.shuffle_labels), "subjects": subjects, "dropped": labelled.dropped,
                "commands": []}
    info, _ = init_distributed(args.device)
    if info.is_main:
        check_settings(run_dir, settings)
        path = run_dir / "run.json"
        saved = json.loads(path.read_text())
        saved["commands"] = saved.get("commands", []) + ["python -m train.loso " + " ".join(args.argv)]
        write_json(path, saved)
        if mode == "none" and args.trunk_weights and not Path(pretrained).is_file():
            trunk_init_checkpoint(Path(pretrained), width, args.trunk_weights)
    barrier(info)

    i, n = parse_folds(args.folds, len(subjects))
    if mode == "once" and not is_finished(run_dir / "pretrain"):
        if n > 1 and not args.pretrain_only:
            raise ValueError(
                f"with --folds, run the shared pre-training first (once, one process): the same command with "
                f"--pretrain-only instead of --folds (it writes {run_dir / 'pretrain'}), or pass --pretrained CKPT")
        prows = pretraining_rows(pretrain_caches, pretrain_data, (), pcfg.max_pairs, pcfg.seed)
        pretrain(prows, run_dir / "pretrain", width, pcfg, resume=True,
                 meta={"caches": pretrain_caches, "pretrain_data": pretrain_data}, quiet=args.quiet)
    if args.pretrain_only:
        print(f"pre-training ready in {run_dir / 'pretrain'}; now run the folds (--folds i/n) and --merge")
        return None

    mine = my_subjects(subjects, i, n)
    done = skipped = 0
    for subject in mine:
        if (run_dir / "folds" / fold_name(subject) / RESULT).is_file():
            skipped += 1
            if not args.quiet:
                print(f"fold {subject}: already done, skipped")
            continue
        r = run_fold(subject, rows, labelled.classes, settings, run_dir,
                     fcfg, pcfg, pretrained, args.quiet, not args.no_fold_checkpoints)
        done += 1
        if not args.quiet:
            acc = np.mean([p["y_true"] == p["y_pred"] for p in r["predictions"]])
            print(f"fold {subject}: {r['n_test']} test samples, accuracy {acc:.3f}, {r['time_s']:.0f} s")
    print(f"folds {i}/{n}: {done} run, {skipped} skipped (already done) of {len(mine)}")
    remaining = [s for s in subjects if not (run_dir / "folds" / fold_name(s) / RESULT).is_file()]
    if remaining:
        print(f"{len(remaining)} folds of other processes not finished yet; when all are, run: "
              f"python -m train.loso --merge --out {run_dir}")
        return None
    return merge(run_dir, args.quiet) if info.is_main else None


EXAMPLES = """examples:
  # SDE, CASME II 5 classes (pre-trained once on CASME II + CAS(ME)^3 micro+macro, as the paper)
  python -m train.loso --cache cache/casme2 --pretrain-cache cache/casme3 --protocol casme2 --out runs/loso_casme2
  # CDE, MEGC 2019 composite 3 classes; pre-training on the paper's CASME II + CAS(ME)^3 (micro + macro)
  python -m train.loso --cache cache/casme2 --cache cache/samm --cache cache/smic --pretrain-cache cache/casme3 \\
      --protocol composite --out runs/cde
  # ... strict pre-training (no test subject in pre-training); Table 7 ablations
  python -m train.loso ... --strict-pretrain --out runs/cde_strict
  python -m train.loso ... --kinds micro --out runs/cde_no_macro          # without macro-expressions
  python -m train.loso ... --no-motion-extractor --out runs/cde_no_me      # |S_a - S_o| straight to the FC
  python -m train.loso ... --a1 0 --out runs/cde_no_lst                    # without L_st (a2 0: without L_oa)
  # or all of a paper table in one command: python -m train.reproduce --table 7 --data-root /data
  # split over 4 processes (or cluster jobs), then pool
  python -m train.loso --cache cache/casme2 --protocol casme2 --out runs/l --pretrain-only
  python -m train.loso --cache cache/casme2 --protocol casme2 --out runs/l --folds 1/4   # ... 2/4, 3/4, 4/4
  python -m train.loso --merge --out runs/l
  # synthetic identities, small CPU run, and its shuffled-label control
  python -m train.loso --cache cache/synth_train --protocol demo --pretrained runs/pre_demo/pretrained.safetensors \\
      --epochs 3 --repeats 3 --threads 1 --out runs/loso_synth
  python -m train.loso ... --shuffle-labels --out runs/loso_synth_shuffled
"""


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m train.loso", description=__doc__.split("\n\n")[0],
                                 epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", action="append", default=[], metavar="DIR",
                    help="crop cache(s) with the LOSO samples (repeat: --cache casme2 --cache samm ...)")
    ap.add_argument("--pretrain-cache", action="append", default=[], metavar="DIR",
                    help="extra caches used for pre-training only (e.g. cache/casme3: the paper pre-trains on "
                         "CASME II + CAS(ME)^3 part A whatever the LOSO protocol)")
    ap.add_argument("--pretrain-data", default="paper", metavar="SPEC",
                    help="which datasets of the given caches (--cache and --pretrain-cache) pre-training uses: "
                         "paper (default: casme2 + casme3, the paper's set; every cache's rows when neither is "
                         "given), all, or a comma list of dataset names, e.g. casme2,samm,smic")

    ap.add_argument("--protocol", default="demo", help="casme2, samm, casme3, composite or demo")
    ap.add_argument("--out", required=True, help="run folder (resumable; folds/, report.json, confusion.png)")
    ap.add_argument("--strict-pretrain", action="store_true", help="pre-train per fold without the test subject")
    ap.add_argument("--pretrained", help="start every fold from this pre-training checkpoint")
    ap.add_argument("--no-pretrain", action="store_true", help="fine-tune from random weights (ablation)")
    ap.add_argument("--pretrain-only", action="store_true", help="run the shared pre-training and stop")
    ap.add_argument("--pretrain-epochs", type=int, default=30, help="pre-training epochs (default 30)")
    ap.add_argument("--pretrain-max-pairs", type=int, default=0, help="seeded subset of pre-training pairs (0 = all)")
    ap.add_argument("--folds", help="i/n: run only this process's share of the folds (round robin)")
    ap.add_argument("--merge", action="store_true", help="pool the finished folds of --out and write the report")
    ap.add_argument("--shuffle-labels", action="store_true",
                    help="control: permute the training labels of every fold (seeded); scores should be at chance")
    ap.add_argument("--val-subjects", type=int, default=0,
                    help="per fold, choose the epoch on K training subjects (default 0: fixed schedule)")
    ap.add_argument("--repeats", type=int, default=10, help="augmented copies per pair and epoch (default 10)")
    ap.add_argument("--dropout", type=float, default=0.0, help="dropout before the FC (default 0)")
    ap.add_argument("--no-fold-checkpoints", action="store_true", help="do not keep each fold's classifier")
    ap.add_argument("--no-motion-extractor", action="store_true",
                    help="ablation (Table 7): fine-tune without the motion extractor, |S_a - S_o| straight to the "
                         "classifier (pre-training keeps it: its reconstructor needs M)")
    ap.add_argument("--trunk-weights", metavar="FILE",
                    help="start the ResNet-18 trunk from this ImageNet ResNet-18 file you supply (.safetensors, or "
                         ".pt/.pth read with weights_only=True; torchvision key names; --width 1.0). Used by the "
                         "pre-training, or with --no-pretrain by fine-tuning; nothing is downloaded")
    d = PretrainConfig()
    ap.add_argument("--views", type=int, default=d.views, help="pre-training: m, instances per expansion set "
                                                               f"(default {d.views})")
    ap.add_argument("--margin", type=float, default=d.eps, help=f"pre-training: contrastive margin eps (default {d.eps})")
    ap.add_argument("--a1", type=float, default=d.a1, help=f"pre-training: weight of L_st (default {d.a1}; 0 = "
                                                           "Table 7 'without L_st')")
    ap.add_argument("--a2", type=float, default=d.a2, help=f"pre-training: weight of L_ss (default {d.a2}; 0 = "
                                                           "Table 7 'without L_oa')")
    add_pretrain_args(ap)      # --kinds, --view-ops, --recon-target (pre-training; the paper's by default)
    add_common_args(ap, epochs=30)   # ... --deterministic, --freeze-bn, --no-sync-bn (both phases)
    ap.set_defaults(width=None)
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        run(args)
    except (ValueError, FileNotFoundError, CacheError, CheckpointError) as e:
        raise SystemExit(f"error: {e}") from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
