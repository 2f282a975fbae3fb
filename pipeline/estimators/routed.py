"""The routed estimator: the MLLM first, the specialist for every crop it cannot answer.

In one process (``tracklens analyze``, ``eval``) the primary answers every crop and the
fallback takes the ones that came back invalid: a refusal, an off-format answer, a failed
request. The service's router (``serve/router.py``) adds the other reason to fall back, a
full MLLM pool, on top of the same rule (:func:`needs_fallback`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from ..config import RoutedEstimatorConfig
from ..models import ModelCache
from ..types import Crop, Estimate

__all__ = ["RoutedEstimator", "needs_fallback"]


def needs_fallback(estimate: Estimate) -> bool:
    """Whether the fallback should answer this crop: the primary gave no usable estimate."""
    return not estimate.valid


class RoutedEstimator:
    """List of crops in, list of estimates out (same length and order); each estimate keeps
    the source that made it, and a fallback estimate records why the primary did not answer
    (``primary_failure``).

    Attributes:
        routed: estimates made, per source.
    """

    source = "routed"

    def __init__(self, config: RoutedEstimatorConfig, models: ModelCache | None = None) -> None:
        from . import build_estimator

        self.config = config
        self.primary = build_estimator(config.primary, models)
        try:
            self.fallback = build_estimator(config.fallback, models)
        except BaseException:
            _close(self.primary)
            raise
        self.model_id = f"{self.primary.model_id} | {self.fallback.model_id}"
        self.routed: Counter = Counter()

    def estimate(self, crops: list[Crop]) -> list[Estimate]:
        out = self.primary.estimate(crops)
        redo = [i for i, est in enumerate(out) if needs_fallback(est)]
        if redo:
            second = self.fallback.estimate([crops[i] for i in redo])
            for i, est in zip(redo, second, strict=True):
                out[i] = replace(est, primary_failure=out[i].reason)
        self.routed.update(est.source for est in out)
        return out

    def close(self) -> None:
        _close(self.primary)
        _close(self.fallback)


def _close(estimator) -> None:
    close = getattr(estimator, "close", None)
    if close is not None:
        close()
