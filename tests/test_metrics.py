"""UF1 / UAR / ACC / confusion matrix against scikit-learn, including classes absent from a set."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, recall_score
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from train import metrics


def _sk(y_true, y_pred, c):
    labels = list(range(c))
    return (
        f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0),
        recall_score(y_true, y_pred, labels=labels, average="macro", zero_division=0),
        accuracy_score(y_true, y_pred),
    )


@pytest.mark.parametrize("seed", range(40))
def test_random_predictions_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    c = int(rng.integers(2, 7))
    n = int(rng.integers(1, 60))
    # Draw from a random subset of classes so some classes are absent from the truth,
    # from the predictions, or from both (as in a single LOSO fold).
    true_classes = rng.choice(c, size=int(rng.integers(1, c + 1)), replace=False)
    pred_classes = rng.choice(c, size=int(rng.integers(1, c + 1)), replace=False)
    y_true = rng.choice(true_classes, size=n)
    y_pred = rng.choice(pred_classes, size=n)
    f1, rec, acc = _sk(y_true, y_pred, c)
    assert metrics.uf1(y_true, y_pred, c) == pytest.approx(f1, abs=1e-12)
    assert metrics.uar(y_true, y_pred, c) == pytest.approx(rec, abs=1e-12)
    assert metrics.accuracy(y_true, y_pred) == pytest.approx(acc, abs=1e-12)
    np.testing.assert_array_equal(
        metrics.confusion_matrix(y_true, y_pred, c), sk_confusion_matrix(y_true, y_pred, labels=list(range(c)))
    )
    s = metrics.summarize(y_true, y_pred, [f"c{i}" for i in range(c)])
    assert s["uf1"] == pytest.approx(f1, abs=1e-12) and s["uar"] == pytest.approx(rec, abs=1e-12)
    assert s["n"] == n and sum(v["support"] for v in s["per_class"].values()) == n


def test_hand_computed_absent_class():
    # 3 classes; class 2 never occurs in the truth and is never predicted.
    y_true = [0, 0, 1, 1]
    y_pred = [0, 1, 1, 1]
    # F1_0 = 2*1/(2+0+1) = 2/3 ; F1_1 = 2*2/(4+1+0) = 4/5 ; F1_2 = 0 (no support, no prediction)
    assert metrics.uf1(y_true, y_pred, 3) == pytest.approx((2 / 3 + 4 / 5 + 0) / 3)
    # recall: 1/2, 1, 0
    assert metrics.uar(y_true, y_pred, 3) == pytest.approx((0.5 + 1.0) / 3)
    # present_only averages over classes seen in truth or predictions
    assert metrics.uf1(y_true, y_pred, 3, present_only=True) == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert metrics.accuracy(y_true, y_pred) == 0.75


def test_hand_computed_class_absent_from_predictions():
    # 3 classes, all in the truth; class 2 is never predicted (a collapsed model).
    y_true = [0, 0, 0, 1, 1, 2, 2]
    y_pred = [0, 0, 1, 1, 1, 0, 1]
    # cm = [[2,1,0],[0,2,0],[1,1,0]]: F1_0 = 4/(4+1+1) = 2/3, F1_1 = 4/(4+2+0) = 2/3, F1_2 = 0
    assert metrics.uf1(y_true, y_pred, 3) == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    # recall 2/3, 1, 0; precision 2/3, 1/2, 0 (zero_division=0 for the never-predicted class)
    assert metrics.uar(y_true, y_pred, 3) == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert metrics.accuracy(y_true, y_pred) == pytest.approx(4 / 7)
    s = metrics.summarize(y_true, y_pred, ["a", "b", "c"])
    assert s["confusion"] == [[2, 1, 0], [0, 2, 0], [1, 1, 0]]
    assert s["per_class"]["c"] == {"f1": 0.0, "recall": 0.0, "precision": 0.0, "support": 2, "predicted": 0}
    assert s["per_class"]["b"]["precision"] == pytest.approx(0.5)
    # present_only still averages over class 2 (present in the truth)
    assert metrics.uf1(y_true, y_pred, 3, present_only=True) == metrics.uf1(y_true, y_pred, 3)


def test_per_class_table_matches_sklearn_report():
    from sklearn.metrics import classification_report

    rng = np.random.default_rng(5)
    y_true, y_pred = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    rep = classification_report(y_true, y_pred, labels=[0, 1, 2, 3], output_dict=True, zero_division=0)
    s = metrics.summarize(y_true, y_pred, ["w", "x", "y", "z"])
    for i, c in enumerate("wxyz"):
        assert s["per_class"][c]["f1"] == pytest.approx(rep[str(i)]["f1-score"])
        assert s["per_class"][c]["precision"] == pytest.approx(rep[str(i)]["precision"])
        assert s["per_class"][c]["support"] == rep[str(i)]["support"]
    assert s["uf1"] == pytest.approx(rep["macro avg"]["f1-score"])


def test_empty_set_scores_zero():
    s = metrics.summarize([], [], ["a", "b"])
    assert s["n"] == 0 and s["uf1"] == s["uar"] == s["acc"] == 0.0 and s["confusion"] == [[0, 0], [0, 0]]


def test_chance_uf1():
    # shuffled labels: predictions follow the training label mix, UF1 -> 1/C whatever the counts
    assert metrics.chance_uf1([250, 109, 83]) == pytest.approx(1 / 3)
    # a predictor that always says class 0: F1_0 = 2p/(p+1), others 0
    p0 = 250 / 442
    assert metrics.chance_uf1([250, 109, 83], [1, 0, 0]) == pytest.approx(2 * p0 / (p0 + 1) / 3)
    rng = np.random.default_rng(1)
    y_true = rng.choice(3, size=30000, p=[0.6, 0.3, 0.1])
    y_pred = rng.choice(3, size=30000, p=[0.6, 0.3, 0.1])
    assert metrics.uf1(y_true, y_pred, 3) == pytest.approx(metrics.chance_uf1([0.6, 0.3, 0.1]), abs=0.01)


def test_pooling_differs_from_fold_average():
    # The paper pools predictions over folds; averaging per-fold UF1 would give another number.
    folds = [([0, 0], [0, 0]), ([1, 2], [1, 1])]
    pooled_t = sum((list(t) for t, _ in folds), [])
    pooled_p = sum((list(p) for _, p in folds), [])
    pooled = metrics.uf1(pooled_t, pooled_p, 3)
    assert pooled == pytest.approx(f1_score(pooled_t, pooled_p, labels=[0, 1, 2], average="macro", zero_division=0))
    averaged = np.mean([metrics.uf1(t, p, 3) for t, p in folds])
    assert pooled != pytest.approx(averaged)


def test_bad_indices_name_the_problem():
    with pytest.raises(ValueError, match="outside 0..2"):
        metrics.confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="differ in length"):
        metrics.confusion_matrix([0, 1], [0], 3)


def test_chance_uar_is_one_over_c():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, size=20000)
    y_pred = rng.integers(0, 3, size=20000)
    assert metrics.uar(y_true, y_pred, 3) == pytest.approx(metrics.chance_uar(3), abs=0.02)
