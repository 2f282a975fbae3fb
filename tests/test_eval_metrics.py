"""Evaluation metrics as pure functions: against hand-computed cases and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from tracklens.pipeline.evaluation import accuracy, age_metrics, calibration, confusion_matrix, macro_f1
from tracklens.pipeline.types import EXPRESSIONS


def test_age_metrics_by_hand():
    m = age_metrics([30, 40, None, 25], [32, 30, 50, None])
    assert m["n"] == 2
    assert m["mae"] == pytest.approx(6.0)
    assert m["cs5"] == pytest.approx(0.5)
    assert m["mape"] == pytest.approx(100 * (2 / 32 + 10 / 30) / 2)


def test_classification_metrics_by_hand():
    pred = ["happy", "happy", "sad", "neutral", None]
    true = ["happy", "sad", "sad", "happy", "anger"]
    assert accuracy(pred, true) == {"accuracy": 0.5, "n": 4}
    # happy: tp1 fp1 fn1 -> 0.5; sad: tp1 fp0 fn1 -> 2/3; neutral: tp0 fp1 -> 0
    assert macro_f1(pred, true)["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0) / 3)


def test_metrics_agree_with_scikit_learn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    true_age = rng.uniform(1, 90, 200)
    pred_age = true_age + rng.normal(0, 6, 200)
    m = age_metrics(pred_age, true_age)
    assert m["mae"] == pytest.approx(sk.mean_absolute_error(true_age, pred_age))
    assert m["mape"] == pytest.approx(100 * sk.mean_absolute_percentage_error(true_age, pred_age))
    labels_true = rng.choice(EXPRESSIONS, 300).tolist()
    labels_pred = [t if rng.random() < 0.6 else rng.choice(EXPRESSIONS) for t in labels_true]
    assert accuracy(labels_pred, labels_true)["accuracy"] == pytest.approx(sk.accuracy_score(labels_true, labels_pred))
    assert macro_f1(labels_pred, labels_true)["macro_f1"] == pytest.approx(
        sk.f1_score(labels_true, labels_pred, average="macro")
    )


def test_confusion_matrix_by_hand():
    pred = ["happy", "happy", "sad", "neutral", None, "anger"]
    true = ["happy", "sad", "sad", "happy", "anger", None]
    m = confusion_matrix(pred, true, EXPRESSIONS)
    assert m["n"] == 4 and m["labels"] == list(EXPRESSIONS)
    expected = np.zeros((7, 7), int)
    neutral, happy, sad = (EXPRESSIONS.index(e) for e in ("neutral", "happy", "sad"))
    expected[happy, happy] = expected[sad, happy] = expected[sad, sad] = expected[happy, neutral] = 1  # [truth, prediction]
    assert m["counts"] == expected.tolist()
    with pytest.raises(ValueError, match="'joy'"):
        confusion_matrix(["joy"], ["happy"], EXPRESSIONS)


def test_confusion_matrix_agrees_with_scikit_learn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(5)
    true = rng.choice(EXPRESSIONS[:5], 400).tolist()  # two classes never occur: their rows and columns stay 0
    pred = [t if rng.random() < 0.5 else str(rng.choice(EXPRESSIONS)) for t in true]
    ours = confusion_matrix(pred, true, EXPRESSIONS)
    assert ours["counts"] == sk.confusion_matrix(true, pred, labels=list(EXPRESSIONS)).tolist()
    assert ours["n"] == 400


def test_calibration_by_hand():
    """Bins are (k/10, (k+1)/10], the first also holding 0: 0.1 falls in the first bin, 0.3 in
    the third, 1.0 in the last; a pair without an outcome is skipped."""
    p = [0.0, 0.1, 0.3, 0.35, 0.5, 0.95, 1.0, 0.8]
    outcome = [False, True, False, True, True, True, True, None]
    c = calibration(p, outcome, n_bins=10)
    assert c["n"] == 7 and c["n_bins"] == 10 and len(c["bins"]) == 10
    assert [b["n"] for b in c["bins"]] == [2, 0, 1, 1, 1, 0, 0, 0, 0, 2]
    assert (c["bins"][0]["lo"], c["bins"][0]["hi"], c["bins"][9]["hi"]) == (0.0, 0.1, 1.0)
    assert c["bins"][0]["mean_p"] == pytest.approx(0.05) and c["bins"][0]["observed"] == 0.5
    assert c["bins"][9]["mean_p"] == pytest.approx(0.975) and c["bins"][9]["observed"] == 1.0
    assert c["bins"][1]["mean_p"] is None and c["bins"][1]["observed"] is None
    # |0.05 - 0.5| x 2 + |0.3 - 0| + |0.35 - 1| + |0.5 - 1| + |0.975 - 1| x 2, over 7 pairs
    assert c["ece"] == pytest.approx((0.9 + 0.3 + 0.65 + 0.5 + 0.05) / 7)
    assert calibration([0.2, 0.8], [False, True], n_bins=1)["ece"] == pytest.approx(0.0)  # one bin: 0.5 vs 0.5
    assert calibration([], [])["ece"] is None
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        calibration([1.2], [True])


def test_calibration_agrees_with_scikit_learn():
    calibration_curve = pytest.importorskip("sklearn.calibration").calibration_curve
    rng = np.random.default_rng(11)
    p = np.concatenate([rng.uniform(0, 1, 500), np.linspace(0, 1, 11)])  # bin edges included
    y = rng.random(len(p)) < p**1.5  # over-confident towards 1
    c = calibration(p.tolist(), y.tolist(), n_bins=10)
    observed, mean_p = calibration_curve(y, p, n_bins=10, strategy="uniform")
    filled = [b for b in c["bins"] if b["n"]]
    assert [b["observed"] for b in filled] == pytest.approx(observed.tolist())
    assert [b["mean_p"] for b in filled] == pytest.approx(mean_p.tolist())
    weights = np.array([b["n"] for b in filled]) / len(p)
    assert c["ece"] == pytest.approx(float(weights @ np.abs(observed - mean_p)))
