"""Fine-tuning ("objective learning") of the MoExt recognition network with cross-entropy.

Paper: Li et al., arXiv 2407.07345, Sec. 3; MOEXT.md ("Data for each phase",
"Hyper-parameters", "Evaluation"). The classifier (train/moext.py MoExtClassifier: trunk +
shape branch + motion extractor + FC) starts from a pre-training checkpoint
(``load_pretrained`` copies trunk, shape branch and motion extractor and reports the keys it
left out: the new FC head, and the texture branch / reconstructor / projection it drops).
It is trained on micro-expression pairs only, each pair 10x per epoch (the original once,
mirrored / rotated +-10 deg copies otherwise, train/augment.py), for a FIXED schedule:
batch 20, 30 epochs, Adam lr 1e-4, weight decay 1e-4.

No epoch is ever chosen on test data (MOEXT.md, honesty rule). The model kept is the last
epoch's, or with ``--val-subjects K`` the epoch with the best UF1 on K TRAINING subjects
held out of fine-tuning (never a test subject); the output says which rule was used.

    python -m train.finetune --cache cache/casme2 --protocol casme2 \\
        --pretrained runs/pretrain/pretrained.safetensors --out runs/ft_casme2
    python -m train.finetune --evaluate engines/assets/moext_demo.safetensors \\
        --eval-cache cache/synth_eval --protocol demo --out runs/demo_eval

Outputs in --out: classifier.safetensors (train/checkpoint.py), finetune.json (settings,
selection rule, history), log.jsonl (one line per epoch) and, with --eval-cache, eval/
(report.json, confusion.png, predictions.csv, subjects.csv; train/report.py).
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from train import metrics
from train.pretrain import (
    DistInfo, add_common_args, amp_dtype, append_jsonl, autocast, barrier, grad_scaler, init_distributed,
    make_loader, mean_across, seed_everything, set_threads, split_list, tqdm_bar, unwrap,
)
from train.cache import CacheError
from train.report import write_json, write_run_report


@dataclass
class FinetuneConfig:
    """Fine-tuning schedule; defaults are the paper's (MOEXT.md, "Hyper-parameters")."""

    epochs: int = 30
    batch_size: int = 20
    lr: float = 1e-4
    weight_decay: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.999
    repeats: int = 10  # augmentation: copies of every pair per epoch (copy 0 unchanged)
    val_subjects: int = 0  # K training subjects held out to choose the epoch (0 = fixed schedule)
    dropout: float = 0.0
    seed: int = 0
    workers: int = 0
    device: str = "auto"
    amp: str = "auto"
    threads: int = 0
    preload: bool = True  # decoded crops stay in memory (the 10 copies reuse them)


# ---------------------------------------------------------------------------------------
# model


def build_classifier(classes: Sequence[str], width: float | None = None, pretrained: str | Path | None = None,
                     dropout: float = 0.0) -> tuple[nn.Module, dict]:
    """A MoExtClassifier for ``classes``, initialised from ``pretrained`` when given.

    A pre-training checkpoint gives trunk, shape branch and motion extractor (the FC head
    starts fresh); a classifier checkpoint gives everything, except its FC head when its
    classes differ. The width comes from the checkpoint; a different ``width`` is an error."""
    from train.checkpoint import checkpoint_info, load_checkpoint
    from train.moext import MoExtClassifier, MoExtConfig

    info = {"pretrained": None, "missing": [], "unexpected": []}
    if pretrained is None:
        cfg = MoExtConfig(width=1.0 if width is None else width, num_classes=len(classes),
                          class_names=tuple(classes), dropout=dropout)
        return MoExtClassifier(cfg), info
    head = checkpoint_info(pretrained)
    pcfg = head["config"]
    if width is not None and abs(float(width) - pcfg.width) > 1e-9:
        raise ValueError(f"--width {width} but {pretrained} was trained at width {pcfg.width}; "
                         f"drop --width or pass --width {pcfg.width}")
    cfg = MoExtConfig(width=pcfg.width, num_classes=len(classes), class_names=tuple(classes), mean=pcfg.mean,
                      std=pcfg.std, motion_kernel=pcfg.motion_kernel, proj_dim=pcfg.proj_dim, dropout=dropout)
    state, _, _ = load_checkpoint(pretrained)
    if head["kind"] == "classifier" and tuple(pcfg.class_names) != tuple(classes):
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    model = MoExtClassifier(cfg)
    missing, unexpected = model.load_pretrained(state)
    info.update(pretrained=str(pretrained), pretrained_kind=head["kind"], missing=list(missing),
                unexpected=list(unexpected))
    return model, info


# ---------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def predict(model: nn.Module, rows: pd.DataFrame, device: torch.device | str = "cpu", batch_size: int = 32,
            amp: str = "off", preload: bool = False, quiet: bool = True) -> np.ndarray:
    """Softmax probabilities (N, C) of the classifier on the (labelled) index rows, in row order."""
    from train.data import PairDataset

    device = torch.device(device)
    m = unwrap(model)
    ds = PairDataset(rows, None, kinds=None, mean=m.cfg.mean, std=m.cfg.std, preload=preload)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False)
    dtype = amp_dtype(device, amp)
    was_training = m.training
    m.eval()
    out = []
    for onset, apex, _ in tqdm_bar(loader, DistInfo(), desc="predict", unit="batch", quiet=quiet):
        with autocast(device, dtype):
            logits = m(onset.to(device), apex.to(device))  # (B, C)
        out.append(F.softmax(logits.float(), dim=1).cpu())
    m.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, m.cfg.num_classes), np.float32)


def prediction_table(rows: pd.DataFrame, probs: np.ndarray, classes: Sequence[str]) -> pd.DataFrame:
    """One row per sample: dataset, subject, sample, y_true, y_pred, true, pred, prob_<class>."""
    pred = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=np.int64)
    table = pd.DataFrame({
        "dataset": rows["dataset"].to_numpy(), "subject": rows["subject"].to_numpy(),
        "sample": rows["sample"].to_numpy(), "y_true": rows["label"].to_numpy(dtype=np.int64),
        "y_pred": pred.astype(np.int64),
    })
    table["true"] = [classes[i] for i in table["y_true"]]
    table["pred"] = [classes[i] for i in table["y_pred"]]
    for j, c in enumerate(classes):
        table[f"prob_{c}"] = probs[:, j] if len(probs) else []
    return table


def choose_val_subjects(rows: pd.DataFrame, k: int, seed: int) -> list[str]:
    """K training subjects for validation, drawn with the seed (never a test subject: the
    caller passes training rows only)."""
    subjects = sorted(set(rows["subject"]))
    if k <= 0:
        return []
    if k >= len(subjects):
        raise ValueError(f"--val-subjects {k} leaves no subject to train on ({len(subjects)} training subjects); "
                         f"use at most {len(subjects) - 1}")
    return sorted(np.random.default_rng([seed, 7]).choice(subjects, size=k, replace=False).tolist())


# ---------------------------------------------------------------------------------------
# fine-tuning


def finetune(train_rows: pd.DataFrame, classes: Sequence[str], cfg: FinetuneConfig | None = None,
             pretrained: str | Path | None = None, width: float | None = None, out_dir: str | Path | None = None,
             quiet: bool = False, desc: str = "finetune") -> tuple[nn.Module, dict]:
    """Fine-tune on labelled micro rows (``train.data.attach_labels(...).rows``); returns the
    classifier (eval mode, on the CPU) and a summary (selection rule, history, load report).

    With ``cfg.val_subjects = K`` the K validation subjects are taken out of ``train_rows``."""
    from train.data import PairDataset

    cfg = cfg or FinetuneConfig()
    set_threads(cfg.threads)
    info, device = init_distributed(cfg.device)
    dtype = amp_dtype(device, cfg.amp)
    say = (lambda *a: None) if quiet or not info.is_main else (lambda *a: print(*a, flush=True))
    out = Path(out_dir) if out_dir else None
    if out and info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "log.jsonl").unlink(missing_ok=True)

    train_rows = train_rows[train_rows["kind"] == "micro"].reset_index(drop=True)
    val_subjects = choose_val_subjects(train_rows, cfg.val_subjects, cfg.seed)
    val_rows = train_rows[train_rows["subject"].isin(val_subjects)].reset_index(drop=True)
    fit_rows = train_rows[~train_rows["subject"].isin(val_subjects)].reset_index(drop=True)
    if len(fit_rows) < 2:
        raise ValueError(f"{desc}: {len(fit_rows)} training pair(s); fine-tuning needs at least 2")

    seed_everything(cfg.seed)
    model, load_info = build_classifier(classes, width, pretrained, cfg.dropout)
    if load_info["pretrained"]:
        say(f"{desc}: from {load_info['pretrained']} ({load_info['pretrained_kind']}); "
            f"missing {load_info['missing']}; unexpected {load_info['unexpected']}")
    model = model.to(device)
    ds = PairDataset(fit_rows, None, kinds=None, augment="finetune" if cfg.repeats > 1 else None,
                     repeats=cfg.repeats, mean=model.cfg.mean, std=model.cfg.std, preload=cfg.preload, seed=cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
    scaler = grad_scaler(device, dtype)
    net = model
    if info.enabled:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    counts = np.bincount(fit_rows["label"].to_numpy(), minlength=len(classes)).tolist()
    say(f"{desc}: {len(fit_rows)} pairs x{cfg.repeats} from {fit_rows['subject'].nunique()} subjects "
        f"(class counts {dict(zip(classes, counts))}), width {model.cfg.width}, {cfg.epochs} epochs, "
        f"device {device}" + (f", validation on {val_subjects}" if val_subjects else ""))

    history, best, best_state = [], None, None
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        net.train()
        loader = make_loader(ds, cfg.batch_size, epoch, cfg.seed, info, True, cfg.workers, device)
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm_bar(loader, info, desc=f"{desc} {epoch + 1}/{cfg.epochs}", unit="batch", quiet=quiet)
        for onset, apex, y in bar:  # (B, 3, 224, 224) x2, (B,)
            onset, apex, y = onset.to(device), apex.to(device), y.to(device)
            with autocast(device, dtype):
                logits = net(onset, apex)  # (B, C)
                loss = F.cross_entropy(logits.float(), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{desc}: loss became {loss.item()} at epoch {epoch + 1}; lower --lr "
                                         "or use --amp off")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            bar.set_postfix(loss=f"{loss_sum / max(seen, 1):.4f}")
        stats = mean_across(info, {"loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1)}, device)
        record = {"epoch": epoch + 1, **stats, "time_s": round(time.perf_counter() - t0, 2)}
        if len(val_rows):
            probs = predict(model, val_rows, device, amp=cfg.amp, preload=cfg.preload)
            record["val_uf1"] = metrics.uf1(val_rows["label"], probs.argmax(1), len(classes))
            record["val_acc"] = metrics.accuracy(val_rows["label"], probs.argmax(1))
            if best is None or record["val_uf1"] > best["val_uf1"]:
                best = record
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        history.append(record)
        if out and info.is_main:
            append_jsonl(out / "log.jsonl", record)
        say(f"{desc} epoch {epoch + 1}/{cfg.epochs}: loss {record['loss']:.4f} train acc {record['train_acc']:.3f}"
            + (f" val UF1 {record['val_uf1']:.3f}" if "val_uf1" in record else "") + f" {record['time_s']:.0f} s")
    if best_state is not None:
        model.load_state_dict(best_state)
        selection = (f"epoch {best['epoch']} of {cfg.epochs}, best UF1 on {len(val_subjects)} validation "
                     f"subject(s) held out of the training subjects: {val_subjects}")
    else:
        selection = f"fixed schedule: the last epoch ({cfg.epochs}); no validation data, no test data used"
    summary = {"selection": selection, "selection_rule": "validation" if best_state is not None else "fixed",
               "best_epoch": best["epoch"] if best else cfg.epochs, "val_subjects": val_subjects,
               "n_train": len(fit_rows), "n_val": len(val_rows), "train_subjects": sorted(set(fit_rows["subject"])),
               "class_counts": dict(zip(classes, counts)), "config": asdict(cfg), "width": model.cfg.width,
               "device": str(device), "world_size": info.world, "history": history, **load_info}
    barrier(info)
    return model.cpu().eval(), summary


def save_classifier(path: str | Path, model: nn.Module, meta: dict, fp16: bool = False) -> Path:
    from train.checkpoint import save_checkpoint

    m = unwrap(model)
    return save_checkpoint(path, m, m.cfg, meta=meta, dtype=torch.float16 if fp16 else None)


# ---------------------------------------------------------------------------------------
# CLI


EXAMPLES = """examples:
  # fine-tune on CASME II (5 classes) from a pre-training run, fixed 30-epoch schedule
  python -m train.finetune --cache cache/casme2 --protocol casme2 \\
      --pretrained runs/pretrain/pretrained.safetensors --out runs/ft_casme2
  # choose the epoch on 3 training subjects held out of fine-tuning
  python -m train.finetune --cache cache/casme2 --protocol casme2 --val-subjects 3 \\
      --pretrained runs/pretrain/pretrained.safetensors --out runs/ft_casme2_val
  # fine-tune on synthetic train identities and evaluate on unseen identities
  python -m train.finetune --cache cache/synth_train --protocol demo --threads 1 \\
      --pretrained runs/pre_demo/pretrained.safetensors --epochs 4 --eval-cache cache/synth_eval --out runs/ft_demo
  # evaluate an existing classifier only (e.g. the shipped demo weights)
  python -m train.finetune --evaluate engines/assets/moext_demo.safetensors --protocol demo \\
      --eval-cache cache/synth_eval --out runs/demo_eval
"""


def evaluate_checkpoint(model: nn.Module, eval_caches: Sequence[str], protocol: str, out_dir: Path,
                        meta: dict, device: str = "cpu", quiet: bool = False) -> dict:
    """Score a classifier on the micro samples of ``eval_caches``; writes out_dir/report.json etc."""
    from train.data import attach_labels, load_index, select_rows

    labelled = attach_labels(load_index(eval_caches), protocol)
    rows = select_rows(labelled.rows, kinds=("micro",))
    classes = unwrap(model).cfg.class_names
    if tuple(classes) != tuple(labelled.classes):
        raise ValueError(f"the classifier's classes {classes} differ from protocol {protocol!r}'s {labelled.classes}")
    probs = predict(model, rows, device, quiet=quiet)
    pred = prediction_table(rows, probs, classes)
    report = write_run_report(out_dir, pred, classes,
                              {**meta, "eval_caches": [str(c) for c in eval_caches], "protocol": protocol,
                               "dropped": labelled.dropped},
                              title=f"{protocol}: {', '.join(Path(c).name for c in eval_caches)}")
    return report


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m train.finetune", description=__doc__.split("\n\n")[0],
                                 epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", action="append", default=[], metavar="DIR", help="crop cache(s) to fine-tune on")
    ap.add_argument("--protocol", default="demo", help="casme2, samm, casme3, composite or demo (default)")
    ap.add_argument("--pretrained", help="pre-training (or classifier) checkpoint to start from; "
                                         "without it the network starts from random weights")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--subjects", default="", help="comma-separated subjects to train on (default all)")
    ap.add_argument("--exclude-subjects", default="", help="comma-separated subjects left out")
    ap.add_argument("--val-subjects", type=int, default=0,
                    help="K training subjects held out to choose the epoch by UF1 (default 0: fixed schedule)")
    ap.add_argument("--repeats", type=int, default=10, help="augmented copies of each pair per epoch (default 10)")
    ap.add_argument("--dropout", type=float, default=0.0, help="dropout before the FC (default 0)")
    ap.add_argument("--fp16", action="store_true", help="store the weights as float16 (half the file)")
    ap.add_argument("--eval-cache", action="append", default=[], metavar="DIR",
                    help="after training, score the micro samples of this cache (e.g. unseen identities)")
    ap.add_argument("--evaluate", metavar="CKPT", help="no training: score this classifier on --eval-cache")
    add_common_args(ap, epochs=30)
    ap.set_defaults(width=None)
    args = ap.parse_args(argv)
    out = Path(args.out)
    try:
        if args.evaluate:
            from train.checkpoint import load_classifier

            if not args.eval_cache:
                raise ValueError("--evaluate needs --eval-cache DIR (the samples to score)")
            set_threads(args.threads)
            model = load_classifier(args.evaluate)
            r = evaluate_checkpoint(model, args.eval_cache, args.protocol, out,
                                    {"checkpoint": str(args.evaluate)}, quiet=args.quiet)
            o = r["metrics"]["overall"]
            print(f"{args.evaluate} on {', '.join(args.eval_cache)}: UF1 {o['uf1']:.4f} UAR {o['uar']:.4f} "
                  f"ACC {o['acc']:.4f} (n={o['n']}); report in {out / 'report.json'}")
            return
        if not args.cache:
            raise ValueError("give at least one --cache DIR to fine-tune on (or --evaluate CKPT)")
        from train.data import attach_labels, load_index, select_rows

        labelled = attach_labels(load_index(args.cache), args.protocol)
        print(labelled.summary())
        rows = select_rows(labelled.rows, split_list(args.subjects) or None, split_list(args.exclude_subjects),
                           kinds=("micro",))
        cfg = FinetuneConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             weight_decay=args.weight_decay, beta1=args.beta1, beta2=args.beta2,
                             repeats=args.repeats, val_subjects=args.val_subjects, dropout=args.dropout,
                             seed=args.seed, workers=args.workers, device=args.device, amp=args.amp,
                             threads=args.threads)
        model, summary = finetune(rows, labelled.classes, cfg, args.pretrained, args.width, out, quiet=args.quiet)
        if int(os.environ.get("RANK", "0")) != 0:
            return
        meta = {"phase": "finetune", "protocol": args.protocol, "caches": [str(c) for c in args.cache],
                "selection": summary["selection"], "train_subjects": summary["train_subjects"],
                "val_subjects": summary["val_subjects"], "epochs": cfg.epochs, "n_train": summary["n_train"],
                "pretrained": summary["pretrained"], "dropped": labelled.dropped}
        path = save_classifier(out / "classifier.safetensors", model, meta, fp16=args.fp16)
        write_json(out / "finetune.json", {**summary, "protocol": args.protocol, "caches": meta["caches"],
                                           "dropped": labelled.dropped, "checkpoint": path.name})
        print(f"wrote {path} ({summary['selection']})")
        if args.eval_cache:
            r = evaluate_checkpoint(model, args.eval_cache, args.protocol, out / "eval", {"checkpoint": str(path)},
                                    quiet=args.quiet)
            o = r["metrics"]["overall"]
            print(f"held-out {', '.join(args.eval_cache)}: UF1 {o['uf1']:.4f} UAR {o['uar']:.4f} ACC {o['acc']:.4f} "
                  f"(n={o['n']}); report in {out / 'eval' / 'report.json'}")
    except (ValueError, FileNotFoundError, CacheError) as e:
        raise SystemExit(f"error: {e}") from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
