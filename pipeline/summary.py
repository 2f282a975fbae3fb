"""What an analysis produces: the track summary, one typed object for ``tracks.jsonl``, Redis
and the HTTP API; and the :class:`JobResult` of a run (the CLI's, or a service job's).

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

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from collections import Counter

__all__ = ["AgeSummary", "EstimatePoint", "ExpressionSummary", "GenderSummary", "JobResult", "TrackSummary"]

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


class Tallies(Protocol):
    """What a run counted: a :class:`~.driver.StreamDriver`, or a saved ``JobPosition``."""

    tracks_ended: int
    answered: Counter | dict[str, int]
    invalid: Counter | dict[str, int]


class JobResult(BaseModel):
    """How an analysis of a video ended: the CLI's run or a service job (one class for both;
    the fields marked "the CLI" stay empty for a job). Errors and outputs are None when there
    was none.

    Attributes:
        state: ``done`` (the video ended), ``failed`` (see ``error`` / ``output_error``),
            ``stopped`` (a stop request, a signal in the CLI), ``cancelled`` (a job deleted).
        frames: frames analysed.
        tracks: tracks ended and written.
        estimates: estimates applied to tracks, per source (``mllm``, ``specialist``).
        invalid: those that were not usable, per reason (refusal, off-format, backend error...).
        seconds: how long it ran.
        error: the video broke off or ended short of its declared length, the live stream
            gave up, or the job could not run.
        output_error: an output could not be written; the run stopped there (the CLI).
        store_undelivered: tracks whose latest state never reached the store (the CLI's
            buffered store; the service's store keeps retrying).
        store_error: the store's last error, when some writes did not reach it.
        tracks_path: the CLI's tracks.jsonl once it was made final (None when a write failed:
            the older tracks.jsonl, if any, was left in place).
        tracks_kept: after a failed write, the ``.partial`` holding the tracks written before
            it (None when there were none).
        annotated: the CLI's annotated video once it was finalised.
        recovered_partial: an earlier run's unfinished tracks.jsonl, kept under this name.
        summaries: the final summaries of the tracks, in the order they ended (the CLI's
            table; not serialised: a service job's tracks are in its store).
    """

    model_config = ConfigDict(extra="forbid")

    #: the CLI's own files and buffered store, left out where a service job's result is shown
    LOCAL: ClassVar[set[str]] = {"output_error", "store_undelivered", "store_error", "tracks_path", "tracks_kept",
                                 "annotated", "recovered_partial"}  # fmt: skip

    state: Literal["done", "failed", "stopped", "cancelled"]
    frames: int = 0
    tracks: int = 0
    estimates: dict[str, int] = Field(default_factory=dict)
    invalid: dict[str, int] = Field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None
    output_error: str | None = None
    store_undelivered: int = 0
    store_error: str | None = None
    tracks_path: Path | None = None
    tracks_kept: Path | None = None
    annotated: Path | None = None
    recovered_partial: Path | None = None
    summaries: list[TrackSummary] = Field(default_factory=list, exclude=True)

    @classmethod
    def of(cls, tallies: Tallies, state: str, frames: int, seconds: float, **more) -> JobResult:
        """The result of a run, with the tallies of its driver (or, for a service job whose
        driver never started, those its earlier owners saved)."""
        return cls(state=state, frames=frames, tracks=tallies.tracks_ended, estimates=dict(tallies.answered),
                   invalid=dict(tallies.invalid), seconds=round(seconds, 2), **more)  # fmt: skip

    @property
    def backend_failures(self) -> int:
        """Estimates that failed because the estimator's backend did (not refusals)."""
        return self.invalid.get("backend error", 0)

    def public(self) -> dict:
        """What the API shows of a service job's result."""
        return self.model_dump(mode="json", exclude=self.LOCAL)
