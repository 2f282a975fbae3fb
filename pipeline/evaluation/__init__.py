"""Evaluation of estimators on labelled people: manifest, metrics, harness."""

from .harness import AGE_BANDS, build_crops, evaluate, format_report, score
from .manifest import Sample, load_manifest
from .metrics import accuracy, age_metrics, macro_f1

__all__ = [
    "AGE_BANDS",
    "Sample",
    "accuracy",
    "age_metrics",
    "build_crops",
    "evaluate",
    "format_report",
    "load_manifest",
    "macro_f1",
    "score",
]
