"""The track summary: one typed object for ``tracks.jsonl``, Redis and the HTTP API.

Its JSON (``model_dump_json``) is the schema in docs/architecture.md::

    {"track": "cam1:0:17", "stream": "cam1", "first_seen": 12.4, "last_seen": 31.0,
     "frames": 412, "state": "active|ended",
     "age": {"mean": 34.2, "std": 3.1, "n": 6},
     "gender": {"label": "female", "p_female": 0.93, "n": 6},
     "expression": {"label": "happy", "probs": {"neutral": 0.2, ...}, "n": 6},
     "sources": {"mllm": 2, "specialist": 4}}

Labels are null until enough evidence has been gathered (see ``AggregationConfig``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AgeSummary", "EstimatePoint", "ExpressionSummary", "GenderSummary", "TrackSummary"]

Expression = Literal["neutral", "happy", "sad", "surprise", "fear", "disgust", "anger"]


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AgeSummary(_Part):
    """Fused age in years: ``mean`` and ``std`` (its uncertainty) once ``n`` is enough."""

    mean: float | None = None
    std: float | None = None
    n: int = Field(0, ge=0, description="estimates fused")


class GenderSummary(_Part):
    """``p_female`` from the summed log-odds; ``label`` once they are decisive."""

    label: Literal["female", "male"] | None = None
    p_female: float | None = Field(None, ge=0, le=1)
    n: int = Field(0, ge=0)


class ExpressionSummary(_Part):
    """Time-decayed distribution over the seven expressions and the current label."""

    label: Expression | None = None
    probs: dict[Expression, float] | None = None
    n: int = Field(0, ge=0)


class TrackSummary(_Part):
    """One person's track: when and how long it was seen, and what is known of them.

    Times are seconds of the stream (presentation time, or wall-clock time on live sources).
    """

    track: str = Field(description="{stream}:{epoch}:{track_id}")
    stream: str
    first_seen: float
    last_seen: float
    frames: int = Field(ge=0, description="analysed frames the track was seen in")
    state: Literal["active", "ended"]
    age: AgeSummary = AgeSummary()
    gender: GenderSummary = GenderSummary()
    expression: ExpressionSummary = ExpressionSummary()
    sources: dict[str, int] = Field(default_factory=dict, description="estimates fused, per source (mllm, specialist)")

    @property
    def ended(self) -> bool:
        return self.state == "ended"


class EstimatePoint(_Part):
    """One estimate as a track's history keeps it (``GET /v1/tracks/{key}/estimates``): when,
    from which source and model, and what it said; ``valid=False`` with its ``reason`` for a
    refusal or an off-format answer, which was not fused."""

    time: float = Field(description="time of the frame the crop came from (seconds of the stream)")
    source: str
    model: str
    valid: bool = True
    reason: str | None = None
    age: float | None = None
    age_std: float | None = None
    p_female: float | None = None
    expression: Expression | None = Field(None, description="the most likely expression")
    expression_p: float | None = Field(None, description="its probability")

    @classmethod
    def of(cls, estimate) -> EstimatePoint:
        """The point of an :class:`~tracklens.pipeline.types.Estimate`."""
        from .types import EXPRESSIONS

        expression = expression_p = None
        if estimate.expression is not None:
            best = max(range(len(EXPRESSIONS)), key=lambda i: estimate.expression[i])
            expression, expression_p = EXPRESSIONS[best], round(float(estimate.expression[best]), 4)
        return cls(
            time=round(float(estimate.time), 3), source=estimate.source, model=estimate.model, valid=estimate.valid,
            reason=estimate.reason, age=_rounded(estimate.age, 2), age_std=_rounded(estimate.age_std, 2),
            p_female=_rounded(estimate.p_female, 4), expression=expression, expression_p=expression_p,
        )  # fmt: skip


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)
