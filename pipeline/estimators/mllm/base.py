"""What crosses the boundary between the MLLM estimator and its backends (no torch here)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BackendFailure", "MllmRequest", "ScoredAnswer"]


@dataclass(frozen=True)
class MllmRequest:
    """Chat messages with image placeholders, and the RGB images in placeholder order."""

    messages: list[dict]
    images: list[np.ndarray]


@dataclass(frozen=True)
class ScoredAnswer:
    """Per-field distributions: ``age`` over 0..100, ``p_female``, ``expression`` over EXPRESSIONS."""

    age: np.ndarray
    p_female: float
    expression: np.ndarray


@dataclass(frozen=True)
class BackendFailure:
    """Why a request produced no answer (after the backend's own retries)."""

    reason: str
