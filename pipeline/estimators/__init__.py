"""Estimators behind a registry keyed by the config's ``type``; imported on first use."""

from __future__ import annotations

import importlib
from typing import Protocol

from ..models import ModelCache
from ..types import Crop, Estimate

__all__ = ["ESTIMATORS", "Estimator", "build_estimator"]

#: ``type`` -> (module, class)
ESTIMATORS: dict[str, tuple[str, str]] = {
    "specialist": (".specialist", "OnnxSpecialistEstimator"),
    "mllm": (".mllm", "MllmEstimator"),
    "routed": (".routed", "RoutedEstimator"),
}


class Estimator(Protocol):
    source: str
    model_id: str

    def estimate(self, crops: list[Crop]) -> list[Estimate]:
        """One :class:`Estimate` per crop, same order; invalid ones carry a reason."""
        ...


def build_estimator(config, models: ModelCache) -> Estimator:
    module, name = ESTIMATORS[config.type]
    cls = getattr(importlib.import_module(module, __name__), name)
    return cls(config, models)
