"""``tracklens eval --predictions``: one row per person per estimator, to see the errors.

Columns (CSV header, or the keys of each JSONL object, in this order):

- ``row``: the manifest row, ``file:line``; ``image``: the image path;
- ``true_age`` (years), ``true_gender``, ``true_expression``: the labels (empty when unlabelled);
- ``estimator``: the name in the report (``specialist``, ``mllm``, ``routed``);
- ``age`` (years), ``p_female`` (``[0, 1]``), ``gender`` (``female`` when ``p_female >= 0.5``),
  ``expression`` (the most probable class) and ``expression_p`` (its probability): the answer
  as the model gave it, also when it was not counted;
- ``source`` (``mllm``/``specialist``: which model answered; a routed estimator's answer names
  the one that made it) and ``model``;
- ``valid``: whether the answer counts in the metrics; ``reason``: why not (refusal,
  off-format, backend error, no face in crop, ``rejected: ...`` by the consistency rules, or
  the row's own problem: ``invalid row: ...``), or which field was not scored;
- ``primary_failure``: for a routed estimator's answer made by its fallback, why the primary
  did not answer (refusal, off-format, backend error, a full MLLM pool in the service); empty
  when the primary answered or the estimator is not routed;
- ``face``: how the face was found (``face_given``, ``face_detected``, ``face_detected_padded``,
  ``face_unreadable``, ``no_face``; empty for an invalid row), ``face_box`` (``x0 y0 x1 y1``
  image pixels: the box used, or the one found but unreadable) and ``face_score`` (detector
  confidence, 1 for a given box).

In CSV, missing values are empty cells and ``valid`` is ``true``/``false``; in JSONL they are
``null`` and JSON booleans, and ``face_box`` is a list.
"""

from __future__ import annotations

import csv
import io
import json

import numpy as np

from ..types import EXPRESSIONS, Estimate
from .harness import judge
from .manifest import Sample
from .prepare import RowCrop

__all__ = ["PREDICTION_COLUMNS", "PREDICTION_SUFFIXES", "format_predictions", "prediction_rows"]

PREDICTION_SUFFIXES = (".csv", ".jsonl")

PREDICTION_COLUMNS: tuple[str, ...] = (
    "row", "image", "true_age", "true_gender", "true_expression", "estimator", "age", "p_female", "gender",
    "expression", "expression_p", "source", "model", "valid", "reason", "primary_failure", "face", "face_box", "face_score",
)  # fmt: skip


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


def _answer(est: Estimate | None) -> dict:
    if est is None:
        return {}
    top = None if est.expression is None else int(np.argmax(est.expression))
    return {
        "age": _round(est.age, 2),
        "p_female": _round(est.p_female, 4),
        "gender": None if est.p_female is None else ("female" if est.p_female >= 0.5 else "male"),
        "expression": None if top is None else EXPRESSIONS[top],
        "expression_p": None if top is None else _round(est.expression[top], 4),
        "source": est.source,
        "model": est.model,
        "primary_failure": est.primary_failure,
    }


def prediction_rows(
    samples: list[Sample], rows: list[RowCrop], estimates: dict[str, list[Estimate | None]], min_face_px: float = 32
) -> list[dict]:
    """One dict per manifest row per estimator (manifest order, then estimator order), keys
    :data:`PREDICTION_COLUMNS`; ``estimates`` as in :attr:`.harness.Evaluation.estimates`."""
    out = []
    for i, (sample, row) in enumerate(zip(samples, rows, strict=True)):
        found = row.found
        face = {
            "face": row.face,
            "face_box": None if found is None else [round(float(v), 1) for v in found.box],
            "face_score": None if found is None else _round(found.confidence, 4),
        }
        for name, per_row in estimates.items():
            est = per_row[i]
            if row.crop is None:
                valid, reason = False, f"invalid row: {row.invalid}"
            elif est is None:
                raise ValueError(f"estimator {name} has no estimate for the valid row {sample.where}")
            else:
                judged = judge(est, min_face_px)
                valid, reason = judged.kept is not None, judged.reason
            record = {
                "row": sample.where, "image": str(sample.image), "true_age": sample.age, "true_gender": sample.gender,
                "true_expression": sample.expression, "estimator": name, **_answer(est), "valid": valid, "reason": reason, **face,
            }  # fmt: skip
            out.append({key: record.get(key) for key in PREDICTION_COLUMNS})
    return out


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return " ".join(format(v, ".1f").rstrip("0").rstrip(".") for v in value)
    return str(value)


def format_predictions(rows: list[dict], suffix: str) -> str:
    """The rows of :func:`prediction_rows` as the text of a ``.csv`` (with a header) or
    ``.jsonl`` file."""
    if suffix.lower() == ".jsonl":
        return "".join(json.dumps(row) + "\n" for row in rows)
    if suffix.lower() != ".csv":
        raise ValueError(f"predictions are .csv or .jsonl, not {suffix!r}")
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(PREDICTION_COLUMNS)
    for row in rows:
        writer.writerow([_cell(row[key]) for key in PREDICTION_COLUMNS])
    return text.getvalue()
