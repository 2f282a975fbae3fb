"""The papers' metrics as pure functions over paired predictions and labels.

Age (Beyond Specialization): MAE in years, CS@5 (share of predictions within 5 years), MAPE
in percent (|error| / true age, as scikit-learn defines it, times 100). Gender: accuracy.
Expression (Face-MLLM): accuracy and macro-F1 over the classes present in labels or
predictions (scikit-learn's default). Pairs with a missing label or prediction are skipped;
``n`` says how many counted.
"""

from __future__ import annotations

import numpy as np

__all__ = ["accuracy", "age_metrics", "macro_f1"]

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
