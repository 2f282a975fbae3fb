"""The papers' metrics as pure functions over paired predictions and labels.

Age (Beyond Specialization): MAE in years, CS@5 (share of predictions within 5 years), MAPE
in percent (|error| / true age, as scikit-learn defines it, times 100). Gender: accuracy.
Expression (Face-MLLM): accuracy and macro-F1 over the classes present in labels or
predictions (scikit-learn's default), and the confusion matrix. Gender calibration: the
expected calibration error of ``p_female`` over equal-width bins (Guo et al. 2017). Pairs with
a missing label or prediction are skipped; ``n`` says how many counted.
"""

from __future__ import annotations

import numpy as np

__all__ = ["accuracy", "age_metrics", "calibration", "confusion_matrix", "macro_f1"]

_EPS = np.finfo(np.float64).eps


def _pairs(pred, true) -> tuple[list, list]:
    kept = [(p, t) for p, t in zip(pred, true, strict=True) if p is not None and t is not None]
    return [p for p, _ in kept], [t for _, t in kept]


def age_metrics(pred, true, within: float = 5.0) -> dict:
    """``{"mae", "cs5", "mape", "n"}``; values are None when no pair counts."""
    p, t = _pairs(pred, true)
    if not p:
        return {"mae": None, "cs5": None, "mape": None, "n": 0}
    p, t = np.asarray(p, np.float64), np.asarray(t, np.float64)
    err = np.abs(p - t)
    return {
        "mae": float(err.mean()),
        "cs5": float((err <= within).mean()),
        "mape": float(100.0 * (err / np.maximum(np.abs(t), _EPS)).mean()),
        "n": int(len(p)),
    }


def accuracy(pred, true) -> dict:
    p, t = _pairs(pred, true)
    if not p:
        return {"accuracy": None, "n": 0}
    return {"accuracy": float(np.mean([a == b for a, b in zip(p, t)])), "n": len(p)}


def macro_f1(pred, true) -> dict:
    """Unweighted mean of per-class F1 (0 for a class never predicted correctly)."""
    p, t = _pairs(pred, true)
    if not p:
        return {"macro_f1": None, "n": 0}
    scores = []
    for label in sorted(set(p) | set(t)):
        tp = sum(a == label and b == label for a, b in zip(p, t))
        fp = sum(a == label and b != label for a, b in zip(p, t))
        fn = sum(a != label and b == label for a, b in zip(p, t))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return {"macro_f1": float(np.mean(scores)), "n": len(p)}


def confusion_matrix(pred, true, labels) -> dict:
    """Counts of (true, predicted) label pairs.

    Returns:
        ``{"labels", "counts", "n"}``: ``counts`` is a ``len(labels) x len(labels)`` list of
        int lists, row = true label, column = predicted label, both in the order of
        ``labels`` (scikit-learn's convention).

    Raises:
        ValueError: a label or prediction is not in ``labels``.
    """
    labels = list(labels)
    index = {label: i for i, label in enumerate(labels)}
    counts = np.zeros((len(labels), len(labels)), np.int64)
    p, t = _pairs(pred, true)
    for a, b in zip(p, t):
        if a not in index or b not in index:
            raise ValueError(f"label {(a if a not in index else b)!r} is not one of {labels}")
        counts[index[b], index[a]] += 1
    return {"labels": labels, "counts": counts.tolist(), "n": len(p)}


def calibration(prob, outcome, n_bins: int = 10) -> dict:
    """Expected calibration error of probabilities ``prob`` (in ``[0, 1]``) of a binary
    ``outcome`` (bool or 0/1), with ``n_bins`` equal-width bins over ``[0, 1]``.

    Bin ``k`` holds ``k/n_bins < p <= (k+1)/n_bins`` (the first also holds 0), the convention
    of Guo et al. and of scikit-learn's ``calibration_curve(strategy="uniform")``. ECE is
    ``sum_k (n_k / n) * |mean p in bin k - observed frequency in bin k|``, in ``[0, 1]``.

    Returns:
        ``{"ece", "n_bins", "bins", "n"}``; ``bins`` lists every bin as ``{"lo", "hi", "n",
        "mean_p", "observed"}``: its edges, its pairs, their mean probability and the share
        of them whose outcome is true (the reliability diagram; the last two None when the bin
        is empty). ``ece`` is None when no pair counts.

    Raises:
        ValueError: a probability outside ``[0, 1]`` or not finite, or ``n_bins < 1``.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    p, y = _pairs(prob, outcome)
    p, y = np.asarray(p, np.float64), np.asarray(y, np.float64)
    if not (np.isfinite(p) & (p >= 0) & (p <= 1)).all():
        raise ValueError("probabilities must lie in [0, 1]")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.searchsorted(edges[1:-1], p, side="left")  # the same float edges as scikit-learn
    bins, ece = [], 0.0
    for k in range(n_bins):
        inside = which == k
        count = int(inside.sum())
        mean_p = float(p[inside].mean()) if count else None
        observed = float(y[inside].mean()) if count else None
        if count:
            ece += count / len(p) * abs(mean_p - observed)
        lo, hi = round(float(edges[k]), 9), round(float(edges[k + 1]), 9)
        bins.append({"lo": lo, "hi": hi, "n": count, "mean_p": mean_p, "observed": observed})
    return {"ece": float(ece) if len(p) else None, "n_bins": n_bins, "bins": bins, "n": int(len(p))}
