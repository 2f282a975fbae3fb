"""The contract between the MLLM estimator and its backends, and what crosses it (no torch here)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

__all__ = ["BackendFailure", "MllmBackend", "MllmRequest", "ScoredAnswer"]


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


class MllmBackend(ABC):
    """What the MLLM estimator needs of a backend (an in-process model, an HTTP endpoint), as
    an engine protocol: start it, ask it, check it, close it. Answer methods are list in, list
    out, same length and order; a request that got no answer is a :class:`BackendFailure` in
    its slot, never an exception for the batch.

    Attributes:
        model_id: the name recorded on every estimate.
    """

    model_id: str

    def start(self) -> None:
        """Get ready before any work (warm up, check the endpoint); raise a
        :class:`~tracklens.pipeline.errors.ModelError` naming what is wrong."""

    def check_mode(self, mode: str) -> None:
        """Raise a :class:`~tracklens.pipeline.errors.ModelError` when ``mode``
        (constrained, scored, free) cannot run on this backend."""

    def check_health(self) -> None:
        """Raise when the backend can no longer answer (its device failed): the service then
        replaces the replica."""

    @abstractmethod
    def generate(self, requests: list[MllmRequest], constrained: bool) -> list[str | BackendFailure]:
        """One answer text per request: inside the answer schema when ``constrained``."""

    @abstractmethod
    def score(self, requests: list[MllmRequest]) -> list[ScoredAnswer | BackendFailure]:
        """Per-field distributions per request."""

    def close(self) -> None:
        """Release what the backend holds (HTTP clients, threads)."""
