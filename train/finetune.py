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
selection rule, history), log.jsonl (one line per epoch), finetune_resume.pt (the atomic
per-epoch resume state; a run started again on the same --out continues from it unless
--no-resume) and, with --eval-cache, eval/ (report.json, confusion.png, predictions.csv,
subjects.csv; train/report.py).

Mechanics shared with train.pretrain (train/distributed.py): loader workers only decode
crops, the mirror / rotation copies are made batched on the training device; under torchrun
--batch-size is the global batch, losses and accuracies are reduced over the processes,
SyncBatchNorm on CUDA; --deterministic for reproducible CUDA kernels.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from train import metrics
from train.cache import CacheError
from train.checkpoint import (
    checkpoint_info,
    load_checkpoint,
    load_classifier,
    save_checkpoint,
)
from train.data import PairDataset, attach_labels, load_index, select_rows
from train.distributed import (
    DistInfo,
    amp_dtype,
    autocast,
    barrier,
    config_fingerprint,
    default_workers,
    grad_scaler,
    init_distributed,
    local_batch,
    maybe_sync_batchnorm,
    pick_device,
    revert_sync_batchnorm,
    seed_everything,
    set_rng_state,
    set_threads,
    sum_across,
    train_loader,
    train_mode,
    unwrap,
)
from train.moext import MoExtClassifier, MoExtConfig, without_motion_extractor
from train.pretrain import (
    add_common_args,
    append_jsonl,
    save_resume_state,
    split_list,
    tqdm_bar,
)
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
    workers: int = field(default_factory=default_workers)  # loader processes (decode only)
    device: str = "auto"
    amp: str = "auto"
    threads: int = 0
    preload: bool = True  # decoded crops stay in memory (the 10 copies reuse them)
    deterministic: bool = False  # torch.use_deterministic_algorithms + cuDNN deterministic
    freeze_bn: bool = False  # BatchNorm on running statistics (tiny per-process batches)
    sync_bn: bool = True  # SyncBatchNorm across processes on CUDA under DDP (never on CPU)
    motion_extractor: bool = True  # False: Table 7 ablation, |S_a - S_o| straight to the FC (train/moext.py)


# ---------------------------------------------------------------------------------------
# model


def build_classifier(classes: Sequence[str], width: float | None = None, pretrained: str | Path | None = None,
                     dropout: float = 0.0) -> tuple[nn.Module, dict]:
    """A MoExtClassifier for ``classes``, initialised from ``pretrained`` when given.

    A pre-training checkpoint gives trunk, shape branch and motion extractor (the FC head
    starts fresh); a classifier checkpoint gives everything, except its FC head when its
    classes differ. The width comes from the checkpoint; a different ``width`` is an error."""
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
def predict(model: nn.Module, rows: pd.DataFrame, device: torch.device | str = "auto", batch_size: int = 32,
            amp: str = "off", preload: bool = False, quiet: bool = True, workers: int = 0) -> np.ndarray:
    """Softmax probabilities (N, C) of the classifier on the (labelled) index rows, in row
    order, computed on ``device`` ("auto" = CUDA when available; the model is moved there
    for the call and back afterwards)."""
    device = pick_device(device) if isinstance(device, str) else device
    m = unwrap(model)
    home = next(m.parameters()).device
    ds = PairDataset(rows, None, kinds=None, mean=m.cfg.mean, std=m.cfg.std, preload=preload, raw=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers,
                                         pin_memory=device.type == "cuda")
    dtype = amp_dtype(device, amp)
    was_training = m.training
    m.eval().to(device)
    out = []
    try:
        for idx, onset_u8, apex_u8, _ in tqdm_bar(loader, DistInfo(), desc="predict", unit="batch", quiet=quiet):
            onset, apex = ds.prepare_batch(onset_u8, apex_u8, idx, 0, device)
            with autocast(device, dtype):
                logits = m(onset, apex)  # (B, C)
            out.append(F.softmax(logits.float(), dim=1).cpu())
    finally:
        m.to(home).train(was_training)
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

STATE_FILE = "finetune_resume.pt"  # the per-epoch resume state in the run's folder


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy written with a one-hot product: the same value as F.cross_entropy,
    and allowed under --deterministic on CUDA (torch's NLLLoss kernel is not)."""
    return -(F.log_softmax(logits, dim=1) * F.one_hot(y, logits.shape[1]).to(logits.dtype)).sum(dim=1).mean()


def _fingerprint(cfg: FinetuneConfig, classes, rows: pd.DataFrame, pretrained, width) -> str:
    """What a resume state must agree on: the settings that change the result, and the data."""
    hp = {k: v for k, v in asdict(cfg).items() if k not in ("workers", "device", "threads", "preload")}
    data = hashlib.sha256(pd.util.hash_pandas_object(
        rows[["dataset", "subject", "sample", "label"]], index=False).to_numpy().tobytes()).hexdigest()[:16]
    return config_fingerprint({"cfg": hp, "classes": list(classes), "rows": len(rows), "data": data,
                               "pretrained": str(pretrained) if pretrained else None, "width": width})


def load_finetune_state(path: Path, fingerprint: str, device: torch.device) -> dict | None:
    """The resume state in ``path`` (torch.load weights_only), or an error naming the mismatch."""
    if not path.is_file():
        return None
    st = torch.load(path, map_location=device, weights_only=True)
    if st.get("fingerprint") != fingerprint:
        raise ValueError(f"{path} is the resume state of a fine-tuning run with other settings or data; "
                         "use another --out, pass --no-resume to start over, or delete the file")
    return st


def finetune(train_rows: pd.DataFrame, classes: Sequence[str], cfg: FinetuneConfig | None = None,
             pretrained: str | Path | None = None, width: float | None = None, out_dir: str | Path | None = None,
             quiet: bool = False, desc: str = "finetune", resume: bool = True) -> tuple[nn.Module, dict]:
    """Fine-tune on labelled micro rows (``train.data.attach_labels(...).rows``); returns the
    classifier (eval mode, on the CPU) and a summary (selection rule, history, load report).

    With ``cfg.val_subjects = K`` the K validation subjects are taken out of ``train_rows``.
    With ``out_dir``, every epoch ends with an atomic resume state (out_dir/finetune_resume.pt:
    model, optimiser, loss scaler, RNG, epoch, history, the validation choice so far); with
    ``resume`` (default) a run finds it and continues after the last finished epoch, so an
    interrupted run ends with the uninterrupted run's weights. A finished state returns at once."""
    cfg = cfg or FinetuneConfig()
    set_threads(cfg.threads)
    info, device = init_distributed(cfg.device)
    dtype = amp_dtype(device, cfg.amp)
    say = (lambda *a: None) if quiet or not info.is_main else (lambda *a: print(*a, flush=True))
    local_batch(cfg.batch_size, info.world)
    out = Path(out_dir) if out_dir else None

    train_rows = train_rows[train_rows["kind"] == "micro"].reset_index(drop=True)
    val_subjects = choose_val_subjects(train_rows, cfg.val_subjects, cfg.seed)
    val_rows = train_rows[train_rows["subject"].isin(val_subjects)].reset_index(drop=True)
    fit_rows = train_rows[~train_rows["subject"].isin(val_subjects)].reset_index(drop=True)
    if len(fit_rows) < 2:
        raise ValueError(f"{desc}: {len(fit_rows)} training pair(s); fine-tuning needs at least 2")

    seed_everything(cfg.seed, cfg.deterministic)
    model, load_info = build_classifier(classes, width, pretrained, cfg.dropout)
    if not cfg.motion_extractor:
        model = without_motion_extractor(model)
    if load_info["pretrained"]:
        say(f"{desc}: from {load_info['pretrained']} ({load_info['pretrained_kind']}); "
            f"missing {load_info['missing']}; unexpected {load_info['unexpected']}")
    model = model.to(device)
    ds = PairDataset(fit_rows, None, kinds=None, augment="finetune" if cfg.repeats > 1 else None,
                     repeats=cfg.repeats, mean=model.cfg.mean, std=model.cfg.std, preload=cfg.preload, seed=cfg.seed,
                     raw=True)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
    scaler = grad_scaler(device, dtype)

    history, best, best_state, start = [], None, None, 0
    state_path = out / STATE_FILE if out else None
    fingerprint = _fingerprint(cfg, classes, train_rows, pretrained, model.cfg.width)
    st = load_finetune_state(state_path, fingerprint, device) if (out and resume) else None
    if st is not None:
        model.load_state_dict(st["model"])
        if st.get("optimizer"):
            opt.load_state_dict(st["optimizer"])
        if st.get("scaler"):
            scaler.load_state_dict(st["scaler"])
        set_rng_state(st["rng"])
        start, history, best = int(st["epoch"]), list(st["history"]), st.get("best")
        best_state = st.get("best_state") or None
        say(f"{desc}: resuming {out} after epoch {start}/{cfg.epochs}")
    if out and info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if st is None and state_path.exists():
            state_path.unlink()  # --no-resume: start over
        log = out / "log.jsonl"
        log.unlink(missing_ok=True)
        for record in history:
            append_jsonl(log, record)

    model = maybe_sync_batchnorm(model, info, device, cfg.sync_bn)
    net = model
    if info.enabled:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    counts = np.bincount(fit_rows["label"].to_numpy(), minlength=len(classes)).tolist()
    say(f"{desc}: {len(fit_rows)} pairs x{cfg.repeats} from {fit_rows['subject'].nunique()} subjects "
        f"(class counts {dict(zip(classes, counts))}), width {model.cfg.width}, {cfg.epochs} epochs, "
        f"global batch {cfg.batch_size} ({info.world} x {cfg.batch_size // info.world}), device {device}"
        + (f", validation on {val_subjects}" if val_subjects else ""))
    loader, sampler = train_loader(ds, cfg.batch_size, cfg.seed, info, cfg.workers if start < cfg.epochs else 0,
                                   device)

    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        train_mode(net, cfg.freeze_bn)
        sampler.set_epoch(epoch)
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm_bar(loader, info, desc=f"{desc} {epoch + 1}/{cfg.epochs}", unit="batch", quiet=quiet)
        for idx, onset_u8, apex_u8, y in bar:  # (B,), (B, 3, 224, 224) uint8 x2, (B,)
            onset, apex = ds.prepare_batch(onset_u8, apex_u8, idx, epoch, device)  # augmented, normalised
            y = y.to(device, non_blocking=True)
            with autocast(device, dtype):
                logits = net(onset, apex)  # (B, C)
                loss = cross_entropy(logits.float(), y)
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
        tot = sum_across(info, {"loss": loss_sum, "correct": correct, "seen": seen}, device)
        stats = {"loss": tot["loss"] / max(tot["seen"], 1), "train_acc": tot["correct"] / max(tot["seen"], 1)}
        record = {"epoch": epoch + 1, **stats, "time_s": round(time.perf_counter() - t0, 2)}
        if len(val_rows):
            probs = predict(model, val_rows, device, amp=cfg.amp, preload=cfg.preload)
            record["val_uf1"] = metrics.uf1(val_rows["label"], probs.argmax(1), len(classes))
            record["val_acc"] = metrics.accuracy(val_rows["label"], probs.argmax(1))
            if best is None or record["val_uf1"] > best["val_uf1"]:
                best = record
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        history.append(record)
        if out and info.is_main:
            append_jsonl(out / "log.jsonl", record)
            save_resume_state(state_path, model, opt if epoch + 1 < cfg.epochs else None, scaler, epoch + 1,
                              {"history": history, "best": best, "best_state": best_state or {},
                               "fingerprint": fingerprint})
        barrier(info)
        say(f"{desc} epoch {epoch + 1}/{cfg.epochs}: loss {record['loss']:.4f} train acc {record['train_acc']:.3f}"
            + (f" val UF1 {record['val_uf1']:.3f}" if "val_uf1" in record else "") + f" {record['time_s']:.0f} s")
    del loader
    model = revert_sync_batchnorm(model)
    if best_state:
        model.load_state_dict(best_state)
        selection = (f"epoch {best['epoch']} of {cfg.epochs}, best UF1 on {len(val_subjects)} validation "
                     f"subject(s) held out of the training subjects: {val_subjects}")
    else:
        selection = f"fixed schedule: the last epoch ({cfg.epochs}); no validation data, no test data used"
    summary = {"selection": selection, "selection_rule": "validation" if best_state else "fixed",
               "best_epoch": best["epoch"] if best else cfg.epochs, "val_subjects": val_subjects,
               "n_train": len(fit_rows), "n_val": len(val_rows), "train_subjects": sorted(set(fit_rows["subject"])),
               "class_counts": dict(zip(classes, counts)), "config": asdict(cfg), "width": model.cfg.width,
               "device": str(device), "world_size": info.world, "resumed_after_epoch": start if st else None,
               "history": history, **load_info}
    barrier(info)
    return model.cpu().eval(), summary


def remove_resume_state(out_dir: str | Path) -> None:
    """Delete out_dir's fine-tuning resume state (e.g. once a LOSO fold's result is written:
    at width 1.0 it holds ~70 MB of weights after the last epoch, ~210 MB with Adam's moments
    during training)."""
    (Path(out_dir) / STATE_FILE).unlink(missing_ok=True)


def save_classifier(path: str | Path, model: nn.Module, meta: dict, fp16: bool = False) -> Path:
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
  # an interrupted run continues after its last finished epoch when started again; --no-resume starts over
  python -m train.finetune --cache cache/casme2 --protocol casme2 --out runs/ft_casme2 --no-resume
  # evaluate an existing classifier only (e.g. the shipped demo weights)
  python -m train.finetune --evaluate engines/assets/moext_demo.safetensors --protocol demo \\
      --eval-cache cache/synth_eval --out runs/demo_eval
"""


def evaluate_checkpoint(model: nn.Module, eval_caches: Sequence[str], protocol: str, out_dir: Path,
                        meta: dict, device: str = "auto", quiet: bool = False) -> dict:
    """Score a classifier on the micro samples of ``eval_caches``; writes out_dir/report.json etc."""
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
    ap.add_argument("--no-resume", dest="resume", action="store_false",
                    help="start over even if OUT holds the resume state of an interrupted run (default: "
                         "continue after its last finished epoch, to the uninterrupted run's result)")
    add_common_args(ap, epochs=30)
    ap.set_defaults(width=None)
    args = ap.parse_args(argv)
    out = Path(args.out)
    try:
        if args.evaluate:
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
        labelled = attach_labels(load_index(args.cache), args.protocol)
        print(labelled.summary())
        rows = select_rows(labelled.rows, split_list(args.subjects) or None, split_list(args.exclude_subjects),
                           kinds=("micro",))
        cfg = FinetuneConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             weight_decay=args.weight_decay, beta1=args.beta1, beta2=args.beta2,
                             repeats=args.repeats, val_subjects=args.val_subjects, dropout=args.dropout,
                             seed=args.seed, workers=args.workers, device=args.device, amp=args.amp,
                             threads=args.threads, deterministic=args.deterministic, freeze_bn=args.freeze_bn,
                             sync_bn=args.sync_bn)
        model, summary = finetune(rows, labelled.classes, cfg, args.pretrained, args.width, out, quiet=args.quiet,
                                  resume=args.resume)
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
