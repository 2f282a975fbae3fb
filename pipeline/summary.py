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

__all__ = ["AgeSummary", "ExpressionSummary", "GenderSummary", "TrackSummary"]

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
