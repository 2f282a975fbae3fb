"""Evaluation of estimators on labelled people: manifest, crops, metrics, harness, report,
predictions file."""

from .harness import AGE_BANDS, CALIBRATION_BINS, Evaluation, Judged, evaluate, judge, score
from .manifest import Sample, load_manifest
from .metrics import accuracy, age_metrics, calibration, confusion_matrix, macro_f1
from .predictions import PREDICTION_COLUMNS, format_predictions, prediction_rows
from .prepare import FACE_OUTCOMES, FoundFace, RowCrop, build_crops, find_face
from .table import format_confusion, format_report

__all__ = [
    "AGE_BANDS",
    "CALIBRATION_BINS",
    "FACE_OUTCOMES",
    "PREDICTION_COLUMNS",
    "Evaluation",
    "FoundFace",
    "Judged",
    "RowCrop",
    "Sample",
    "accuracy",
    "age_metrics",
    "build_crops",
    "calibration",
    "confusion_matrix",
    "evaluate",
    "find_face",
    "format_confusion",
    "format_predictions",
    "format_report",
    "judge",
    "load_manifest",
    "macro_f1",
    "prediction_rows",
    "score",
]
