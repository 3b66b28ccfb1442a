"""What a LOSO run leaves for a reader: a JSON report, a per-subject table, a confusion-matrix PNG.

All figures come from the predictions of every fold pooled together (MOEXT.md,
"Evaluation"; metrics in train/metrics.py). Predictions are a table with one row per test
sample and the columns of ``PREDICTION_COLUMNS`` (``prob_<class>`` columns may follow).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import matplotlib
import numpy as np
import pandas as pd

matplotlib.use("Agg")   # figures are written to files; no display is needed (or present)
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

from train import metrics  # noqa: E402

PREDICTION_COLUMNS = ("dataset", "subject", "sample", "y_true", "y_pred", "true", "pred")


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a file so that a crash never leaves half of it (write to a temp name, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def subject_table(pred: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """One row per test subject: samples, correct, ACC, UF1/UAR over the classes present.

    A single subject rarely shows every class, so its UF1/UAR average over the classes
    present in its truth or predictions (``present_only``); the pooled figures use all classes.
    """
    rows = []
    for (dataset, subject), g in pred.groupby(["dataset", "subject"], sort=True):
        s = metrics.summarize(g["y_true"], g["y_pred"], classes, present_only=True)
        row = {"dataset": dataset, "subject": subject, "n": s["n"],
               "correct": int((g["y_true"] == g["y_pred"]).sum()),
               "acc": s["acc"], "uf1_present": s["uf1"], "uar_present": s["uar"]}
        for c in classes:
            row[f"n_{c}"] = s["per_class"][c]["support"]
        rows.append(row)
    return pd.DataFrame(rows)


def evaluate_predictions(pred: pd.DataFrame, classes: Sequence[str]) -> dict:
    """Pooled metrics overall and per dataset (the per-dataset split is the CDE protocol's)."""
    out = {"overall": metrics.summarize(pred["y_true"], pred["y_pred"], classes)}
    out["overall"]["chance_uar"] = metrics.chance_uar(len(classes))
    datasets = sorted(pred["dataset"].unique())
    out["per_dataset"] = {
        d: metrics.summarize(g["y_true"], g["y_pred"], classes) for d, g in pred.groupby("dataset", sort=True)
    } if len(datasets) > 1 else {}
    return out


def save_confusion_png(cm: np.ndarray, classes: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix with counts in each cell (matplotlib, Agg backend)."""
    cm = np.asarray(cm)
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.2 * n + 2.5, 1.1 * n + 2.0), dpi=120)
    im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), labels=list(classes), rotation=30, ha="right")
    ax.set_yticks(range(n), labels=list(classes))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{cm[i, j]}\n{frac[i, j]:.2f}", ha="center", va="center",
                    color="white" if frac[i, j] > 0.5 else "black", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_run_report(out_dir: str | Path, pred: pd.DataFrame, classes: Sequence[str], meta: dict,
                     title: str = "") -> dict:
    """Write report.json, subjects.csv, predictions.csv and confusion.png into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scores = evaluate_predictions(pred, classes)
    table = subject_table(pred, classes)
    atomic_write_text(out_dir / "subjects.csv", table.to_csv(index=False))
    atomic_write_text(out_dir / "predictions.csv", pred.to_csv(index=False))
    o = scores["overall"]
    head = f"UF1 {o['uf1']:.3f}  UAR {o['uar']:.3f}  ACC {o['acc']:.3f}  (n={o['n']})"
    save_confusion_png(np.array(o["confusion"]), classes, out_dir / "confusion.png",
                       title=f"{title}\n{head}" if title else head)
    report = {**meta, "classes": list(classes), "metrics": scores,
              "per_subject": table.to_dict(orient="records"),
              "files": {"predictions": "predictions.csv", "subjects": "subjects.csv",
                        "confusion_png": "confusion.png"}}
    write_json(out_dir / "report.json", report)
    return report
