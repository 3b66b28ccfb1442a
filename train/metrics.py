"""Recognition metrics: UF1, UAR, ACC and the confusion matrix (MOEXT.md, "Evaluation").

The paper (and MEGC 2019) computes the metrics once, on the predictions of all LOSO
folds pooled together, never per fold and then averaged:

    UF1 = 1/C sum_c F1_c      F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c)
    UAR = 1/C sum_c R_c       R_c  = TP_c / (TP_c + FN_c)
    ACC = sum_c TP_c / N

C is the number of classes of the protocol, ALWAYS all of them (``labels=range(C)``),
whether or not a class occurs in the set being scored. A class with no support and no
prediction gets F1 = 0 and R = 0 (it is not skipped). This is exactly scikit-learn's
``f1_score(..., labels=range(C), average="macro", zero_division=0)`` and
``recall_score(..., labels=range(C), average="macro", zero_division=0)``; the tests check
it. Pooling over all folds makes every class present in practice; the convention only
matters for small subsets such as one subject, where ``present_only=True`` averages over
the classes that occur in the truth or the predictions instead (used for the per-subject
table, and stated there).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """(C, C) int64 counts; row = true class, column = predicted class."""
    t = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(y_pred, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.size} vs {p.size}")
    for name, v in (("y_true", t), ("y_pred", p)):
        if v.size and (v.min() < 0 or v.max() >= num_classes):
            raise ValueError(
                f"{name} holds class indices outside 0..{num_classes - 1} "
                f"(min {v.min()}, max {v.max()}); pass the protocol's number of classes"
            )
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den > 0)
    return out


def per_class_f1(cm: np.ndarray) -> np.ndarray:
    """F1 per class from a confusion matrix; 0 where 2TP + FP + FN = 0."""
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    return _safe_div(2 * tp, 2 * tp + fp + fn)


def per_class_recall(cm: np.ndarray) -> np.ndarray:
    """Recall per class; 0 for a class with no support."""
    tp = np.diag(cm)
    return _safe_div(tp, cm.sum(axis=1))


def per_class_precision(cm: np.ndarray) -> np.ndarray:
    """Precision per class; 0 for a class never predicted."""
    tp = np.diag(cm)
    return _safe_div(tp, cm.sum(axis=0))


def _classes_used(cm: np.ndarray, present_only: bool) -> np.ndarray:
    if not present_only:
        return np.ones(cm.shape[0], dtype=bool)
    return (cm.sum(axis=0) + cm.sum(axis=1)) > 0


def uf1(y_true, y_pred, num_classes: int, present_only: bool = False) -> float:
    """Unweighted F1: mean of per-class F1 over all classes (or over present ones)."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    used = _classes_used(cm, present_only)
    return float(per_class_f1(cm)[used].mean()) if used.any() else 0.0


def uar(y_true, y_pred, num_classes: int, present_only: bool = False) -> float:
    """Unweighted average recall: mean of per-class recall."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    used = _classes_used(cm, present_only)
    return float(per_class_recall(cm)[used].mean()) if used.any() else 0.0


def accuracy(y_true, y_pred) -> float:
    t = np.asarray(y_true).ravel()
    p = np.asarray(y_pred).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.size} vs {p.size}")
    return float((t == p).mean()) if t.size else 0.0


def summarize(y_true, y_pred, classes: Sequence[str], present_only: bool = False) -> dict:
    """All metrics of one set of predictions as a JSON-ready dict."""
    classes = tuple(classes)
    cm = confusion_matrix(y_true, y_pred, len(classes))
    used = _classes_used(cm, present_only)
    f1 = per_class_f1(cm)
    rec = per_class_recall(cm)
    prec = per_class_precision(cm)
    return {
        "n": int(cm.sum()),
        "uf1": float(f1[used].mean()) if used.any() else 0.0,
        "uar": float(rec[used].mean()) if used.any() else 0.0,
        "acc": accuracy(y_true, y_pred),
        "classes_averaged": [c for c, u in zip(classes, used) if u],
        "per_class": {
            c: {"f1": float(f1[i]), "recall": float(rec[i]), "precision": float(prec[i]),
                "support": int(cm[i].sum()), "predicted": int(cm[:, i].sum())}
            for i, c in enumerate(classes)
        },
        "confusion": cm.tolist(),
    }



def chance_uar(num_classes: int) -> float:
    """UAR expected from any predictor independent of the truth: 1/C (the reference line).

    Per class the expected recall is the probability q_c of predicting c, and sum_c q_c = 1.
    UF1 of such a predictor is near 1/C too when the classes are balanced.
    """
    return 1.0 / num_classes
