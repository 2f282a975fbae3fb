"""``tracklens eval``: run estimators on labelled people and report the papers' metrics.

Each estimator sees exactly the same crops (face with margin, body) built the way the
pipeline builds them (:mod:`.prepare`). Reported per estimator: MAE, CS@5 and MAPE for age,
gender accuracy and the calibration of ``p_female`` (ECE over 10 equal-width bins), expression
accuracy, macro-F1 and the confusion matrix, the share of valid answers (format compliance),
refusals, answers rejected by the consistency rules, which model made each answer (and, for a
routed estimator, why its primary did not), how each row's face was found, crops per second,
and the same metrics per age band and per gender (a bias check).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from ..estimators.consistency import enforce
from ..types import EXPRESSIONS, Estimate
from .manifest import Sample
from .metrics import accuracy, age_metrics, calibration, confusion_matrix, macro_f1
from .prepare import FACE_OUTCOMES, RowCrop

__all__ = [
    "AGE_BANDS", "CALIBRATION_BINS", "Evaluation", "Judged", "evaluate", "judge", "run_estimators", "score", "summarize",
]  # fmt: skip

AGE_BANDS: tuple[tuple[float, float, str], ...] = (
    (0, 18, "0-17"), (18, 30, "18-29"), (30, 45, "30-44"), (45, 60, "45-59"), (60, 200, "60+"),
)  # fmt: skip

#: Equal-width bins of ``p_female`` over [0, 1] for the gender ECE (10: the usual choice, and
#: few enough that a few hundred people still fill the bins an estimator uses).
CALIBRATION_BINS = 10


@dataclass(frozen=True)
class Judged:
    """What the metrics make of one estimate.

    Attributes:
        kept: the estimate as scored (a field the consistency rules removed is None), or None
            when it does not count (invalid, or rejected by the consistency rules).
        reason: why it does not count (the estimate's own reason: refusal, off-format, backend
            error, no face in crop; or ``rejected: ...``), or which field was removed; None
            when it counts whole.
        violated: the consistency rules rejected it or removed a field.
    """

    kept: Estimate | None
    reason: str | None
    violated: bool


def judge(est: Estimate, min_face_px: float) -> Judged:
    """Apply the pipeline's consistency rules (``min_face_px``: smallest face height, in
    pixels, an expression may be read from) to one estimate."""
    kept, violations = enforce(est, min_face_px)
    if not est.valid:
        return Judged(None, est.reason or "invalid", False)
    if kept is None:
        return Judged(None, f"rejected: {'; '.join(violations)}", True)
    if violations:
        return Judged(kept, f"expression not scored: {'; '.join(violations)}", True)
    return Judged(kept, None, False)


def _head(reason: str) -> str:
    """A reason without its details: ``backend error: connection failed`` -> ``backend error``."""
    return reason.split(":")[0]


def _predictions(estimates: list[Estimate], min_face_px: float):
    ages, p_female, genders, expressions, reasons = [], [], [], [], Counter()
    refusals = rejected = 0
    for est in estimates:
        judged = judge(est, min_face_px)
        kept = judged.kept
        if not est.valid:
            reasons[_head(est.reason or "invalid")] += 1
            refusals += est.reason == "refusal" or est.refusal
        rejected += judged.violated
        ages.append(None if kept is None or kept.age is None else kept.age)
        p_female.append(None if kept is None or kept.p_female is None else kept.p_female)
        genders.append(None if p_female[-1] is None else ("female" if p_female[-1] >= 0.5 else "male"))
        expressions.append(None if kept is None or kept.expression is None else EXPRESSIONS[int(np.argmax(kept.expression))])
    return ages, p_female, genders, expressions, reasons, refusals, rejected


def _metrics(samples: list[Sample], ages, genders, expressions) -> dict:
    return {
        "age": age_metrics(ages, [s.age for s in samples]),
        "gender": accuracy(genders, [s.gender for s in samples]),
        "expression": {
            **accuracy(expressions, [s.expression for s in samples]),
            **macro_f1(expressions, [s.expression for s in samples]),
        },
    }


def score(samples: list[Sample], estimates: list[Estimate], seconds: float, min_face_px: float = 32) -> dict:
    """The report of one estimator: overall metrics, compliance, speed, and per-group metrics.

    ``expression_confusion`` counts (true, predicted) expressions, rows = truth and columns =
    prediction in :data:`EXPRESSIONS` order; ``gender_calibration`` is the ECE of ``p_female``
    against the true gender with its reliability bins (:func:`.metrics.calibration`);
    ``answered_by`` counts the answers per source that made them, and ``primary_failures``
    counts, per reason, the answers a routed estimator's fallback made in place of its primary.
    """
    if len(samples) != len(estimates):
        raise ValueError(f"{len(samples)} samples but {len(estimates)} estimates")
    ages, p_female, genders, expressions, reasons, refusals, rejected = _predictions(estimates, min_face_px)
    valid = sum(e.valid for e in estimates)
    failures = Counter(_head(e.primary_failure) for e in estimates if e.primary_failure)
    is_female = [None if s.gender is None else s.gender == "female" for s in samples]
    report = {
        "n": len(samples),
        **_metrics(samples, ages, genders, expressions),
        "expression_confusion": confusion_matrix(expressions, [s.expression for s in samples], EXPRESSIONS),
        "gender_calibration": calibration(p_female, is_female, CALIBRATION_BINS),
        "valid_share": valid / len(samples) if samples else None,
        "refusals": refusals,
        "invalid_reasons": dict(reasons),
        "rejected": rejected,
        "answered_by": dict(Counter(e.source for e in estimates)),
        "primary_failures": dict(failures),
        "crops_per_s": len(samples) / seconds if seconds > 0 else None,
        "model": estimates[0].model if estimates else None,
        "prompt": estimates[0].prompt if estimates else None,
        "by_age_band": {},
        "by_gender": {},
    }
    for lo, hi, name in AGE_BANDS:
        idx = [i for i, s in enumerate(samples) if s.age is not None and lo <= s.age < hi]
        if idx:
            report["by_age_band"][name] = _metrics([samples[i] for i in idx], *([v[i] for i in idx] for v in (ages, genders, expressions)))
    for gender in ("female", "male"):
        idx = [i for i, s in enumerate(samples) if s.gender == gender]
        if idx:
            report["by_gender"][gender] = _metrics([samples[i] for i in idx], *([v[i] for i in idx] for v in (ages, genders, expressions)))
    return report


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate` found.

    Attributes:
        reports: ``{estimator name: report}`` (see :func:`score`, plus ``rows``,
            ``invalid_rows`` and ``face_outcomes``).
        estimates: ``{estimator name: one estimate per manifest row}``, same order as the
            manifest; None for an invalid row.
    """

    reports: dict[str, dict]
    estimates: dict[str, list[Estimate | None]]


def run_estimators(rows: list[RowCrop], estimators: dict) -> tuple[dict[str, list[Estimate | None]], dict[str, float]]:
    """Every estimator on the crops of the valid ``rows``: ``{name: one estimate per row, None
    for an invalid row}`` and ``{name: seconds it took}``. Called on all rows at once or a
    chunk at a time (then concatenate the lists and add the seconds)."""
    valid = [i for i, r in enumerate(rows) if r.crop is not None]
    by_row: dict[str, list[Estimate | None]] = {}
    seconds: dict[str, float] = {}
    for name, estimator in estimators.items():
        start = time.perf_counter()
        estimates = estimator.estimate([rows[i].crop for i in valid]) if valid else []
        seconds[name] = time.perf_counter() - start
        if len(estimates) != len(valid):
            raise RuntimeError(f"estimator {name} returned {len(estimates)} estimates for {len(valid)} crops")
        by_row[name] = [None] * len(rows)
        for i, est in zip(valid, estimates):
            by_row[name][i] = est
    return by_row, seconds


def summarize(
    samples: list[Sample], rows: list[RowCrop], estimates: dict[str, list[Estimate | None]], seconds: dict[str, float],
    min_face_px: float = 32,
) -> Evaluation:  # fmt: skip
    """The reports of the estimates :func:`run_estimators` made for ``rows`` (one per sample).

    Each report also counts the rows, lists the invalid ones with their reason (rows whose
    image cannot be read or whose boxes are not inside the image), and counts how the valid
    rows' faces were found (``face_outcomes``, keys :data:`.prepare.FACE_OUTCOMES`).
    """
    if len(samples) != len(rows):
        raise ValueError(f"{len(samples)} samples but {len(rows)} prepared rows")
    valid = [i for i, r in enumerate(rows) if r.crop is not None]
    invalid = [{"row": samples[i].where or str(samples[i].image), "reason": r.invalid} for i, r in enumerate(rows) if r.crop is None]
    outcomes = Counter(rows[i].face for i in valid)
    reports = {}
    for name, per_row in estimates.items():
        report = score([samples[i] for i in valid], [per_row[i] for i in valid], seconds[name], min_face_px)
        reports[name] = {
            "rows": len(samples), "invalid_rows": invalid, "face_outcomes": {k: outcomes[k] for k in FACE_OUTCOMES}, **report,
        }  # fmt: skip
    return Evaluation(reports, estimates)


def evaluate(samples: list[Sample], rows: list[RowCrop], estimators: dict, min_face_px: float = 32) -> Evaluation:
    """Run every estimator on the same crops of the valid rows and report (see
    :func:`run_estimators` and :func:`summarize`)."""
    if len(samples) != len(rows):
        raise ValueError(f"{len(samples)} samples but {len(rows)} prepared rows")
    estimates, seconds = run_estimators(rows, estimators)
    return summarize(samples, rows, estimates, seconds, min_face_px)
