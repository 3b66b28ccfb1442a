"""Recognition metrics: UF1, UAR, ACC and the confusion matrix (MOEXT.md, "Evaluation").

The paper (and MEGC 2019) computes the metrics once, on the predictions of all LOSO
folds pooled together, never per fold and then averaged:

    UF1 = 1/C sum_c F1_c      F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c)
    UAR = 1/C sum_c R_c       R_c  = TP_c / (TP_c + FN_c)
    ACC = sum_c TP_c / N

The numbers come from scikit-learn (``sklearn.metrics``), not from code of ours:
``f1_score(average="macro")``, ``recall_score(average="macro")``, ``accuracy_score``,
``confusion_matrix`` and ``precision_recall_fscore_support`` for the per-class table.

C is the number of classes of the protocol, ALWAYS all of them (``labels=range(C)``),
whether or not a class occurs in the set being scored. A class with no support and no
prediction gets F1 = 0 and R = 0 (``zero_division=0``: it is not skipped). Pooling over all
folds makes every class present in practice; the convention only matters for small
subsets such as one subject, where ``present_only=True`` averages over the classes that
occur in the truth or the predictions instead (``labels`` = those classes; used for the
per-subject table, and stated there).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn import metrics as skm


def _check(y_true, y_pred, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(y_pred, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.size} vs {p.size}")
    if num_classes is not None:
        for name, v in (("y_true", t), ("y_pred", p)):
            if v.size and (v.min() < 0 or v.max() >= num_classes):
                raise ValueError(
                    f"{name} holds class indices outside 0..{num_classes - 1} "
                    f"(min {v.min()}, max {v.max()}); pass the protocol's number of classes"
                )
    return t, p


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """(C, C) int64 counts; row = true class, column = predicted class (sklearn, labels=range(C))."""
    t, p = _check(y_true, y_pred, num_classes)
    if not t.size:
        return np.zeros((num_classes, num_classes), dtype=np.int64)
    return skm.confusion_matrix(t, p, labels=list(range(num_classes))).astype(np.int64)


def _labels(t: np.ndarray, p: np.ndarray, num_classes: int, present_only: bool) -> list[int]:
    if not present_only:
        return list(range(num_classes))
    return sorted(set(t.tolist()) | set(p.tolist()))


def uf1(y_true, y_pred, num_classes: int, present_only: bool = False) -> float:
    """Unweighted F1: sklearn f1_score(average="macro") over all classes (or the present ones)."""
    t, p = _check(y_true, y_pred, num_classes)
    labels = _labels(t, p, num_classes, present_only)
    if not t.size or not labels:
        return 0.0
    return float(skm.f1_score(t, p, labels=labels, average="macro", zero_division=0))


def uar(y_true, y_pred, num_classes: int, present_only: bool = False) -> float:
    """Unweighted average recall: sklearn recall_score(average="macro")."""
    t, p = _check(y_true, y_pred, num_classes)
    labels = _labels(t, p, num_classes, present_only)
    if not t.size or not labels:
        return 0.0
    return float(skm.recall_score(t, p, labels=labels, average="macro", zero_division=0))


def accuracy(y_true, y_pred) -> float:
    """sklearn accuracy_score; 0 for an empty set."""
    t, p = _check(y_true, y_pred)
    return float(skm.accuracy_score(t, p)) if t.size else 0.0


def summarize(y_true, y_pred, classes: Sequence[str], present_only: bool = False) -> dict:
    """All metrics of one set of predictions as a JSON-ready dict."""
    classes = tuple(classes)
    c = len(classes)
    t, p = _check(y_true, y_pred, c)
    cm = confusion_matrix(t, p, c)
    if t.size:
        prec, rec, f1, _ = skm.precision_recall_fscore_support(t, p, labels=list(range(c)), average=None,
                                                               zero_division=0)
    else:
        prec = rec = f1 = np.zeros(c)
    used = _labels(t, p, c, present_only)
    return {
        "n": int(cm.sum()),
        "uf1": uf1(t, p, c, present_only),
        "uar": uar(t, p, c, present_only),
        "acc": accuracy(t, p),
        "classes_averaged": [classes[i] for i in used],
        "per_class": {
            name: {"f1": float(f1[i]), "recall": float(rec[i]), "precision": float(prec[i]),
                   "support": int(cm[i].sum()), "predicted": int(cm[:, i].sum())}
            for i, name in enumerate(classes)
        },
        "confusion": cm.tolist(),
    }


def chance_uar(num_classes: int) -> float:
    """UAR expected from any predictor independent of the truth: 1/C (the reference line).

    Per class the expected recall is the probability q_c of predicting c, and sum_c q_c = 1.
    UF1 of such a predictor is near 1/C too when the classes are balanced
    (``chance_uf1`` gives the expected value for given class counts).
    """
    return 1.0 / num_classes


def chance_uf1(class_counts: Sequence[int], pred_fractions: Sequence[float] | None = None) -> float:
    """UF1 (in the large-sample limit) of a predictor independent of the truth.

    With class frequencies p_c (from ``class_counts``) and prediction frequencies q_c
    (``pred_fractions``; default q = p, the shuffled-label case, where a model that learns
    nothing still reproduces the training label mix), TP_c / N = p_c q_c, so
    F1_c = 2 p_c q_c / (p_c + q_c) and UF1 = mean_c F1_c. With q = p: UF1 = mean_c p_c = 1/C
    exactly; other q give less (it is at most 1/C, since F1_c <= (p_c + q_c) / 2)."""
    n = np.asarray(class_counts, dtype=np.float64)
    p = n / n.sum()
    q = p if pred_fractions is None else np.asarray(pred_fractions, dtype=np.float64) / np.sum(pred_fractions)
    den = p + q
    f1 = np.divide(2 * p * q, den, out=np.zeros_like(p), where=den > 0)
    return float(f1.mean())
