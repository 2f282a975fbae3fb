"""Demographics per time bucket: people counted by gender, age band and expression.

A person (one track) is counted once, in the bucket that holds its ``first_seen``, with the
labels it has: an ended track with its final labels, an active one with its labels so far. A
label that is still null counts as ``unknown``, never guessed. Buckets are aligned on
multiples of their size from the epoch (``1d`` buckets are UTC days); the times are those of
the stream (wall-clock seconds on live streams, seconds of the video in a file job).

The Redis store keeps these counts as tracks end, inside the same Lua script that writes the
track (:mod:`.store.redis`); :func:`count` is the same arithmetic over summaries (the in-memory
store, and the active tracks the Redis store adds at read time).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

from .summary import TrackSummary
from .types import EXPRESSIONS

__all__ = [
    "AGE_BANDS",
    "BUCKETS_S",
    "GENDERS",
    "UNKNOWN",
    "BucketCounts",
    "age_band",
    "bucket_starts",
    "count",
    "labels_of",
    "tally_marker",
]

#: Bucket names and their sizes in seconds; 900 divides the others, so the buckets of every
#: size are unions of 15-minute buckets.
BUCKETS_S = {"15m": 900, "1h": 3600, "1d": 86400}
AGE_BANDS = ("0-17", "18-29", "30-44", "45-59", "60+")
GENDERS = ("female", "male")
UNKNOWN = "unknown"
_BAND_FLOORS = (0, 18, 30, 45, 60)
_SMALLEST_S = min(BUCKETS_S.values())


def age_band(mean: float | None) -> str:
    """The band of an age in years, rounded as the labels show it (``17.6`` is ``18y``, so
    ``18-29``); ``unknown`` without an age."""
    if mean is None or not math.isfinite(mean):
        return UNKNOWN
    years = round(mean)
    band = AGE_BANDS[0]
    for name, floor in zip(AGE_BANDS, _BAND_FLOORS):
        if years >= floor:
            band = name
    return band


def labels_of(summary: TrackSummary) -> dict[str, str]:
    """What a track counts as: ``{"gender": ..., "age": ..., "expression": ...}``."""
    return {
        "gender": summary.gender.label or UNKNOWN,
        "age": age_band(summary.age.mean),
        "expression": summary.expression.label or UNKNOWN,
    }


def tally_marker(summary: TrackSummary) -> str:
    """How an ended track is counted, as the Redis script reads it:
    ``{15-minute bucket start}|{gender}|{age band}|{expression}``."""
    labels = labels_of(summary)
    start = math.floor(summary.first_seen / _SMALLEST_S) * _SMALLEST_S
    return f"{start}|{labels['gender']}|{labels['age']}|{labels['expression']}"


class BucketCounts(BaseModel):
    """People first seen in ``[start, start + bucket size)``; each of ``gender``, ``age`` and
    ``expression`` sums to ``people`` (``unknown`` included)."""

    model_config = ConfigDict(extra="forbid")
    start: int = Field(description="seconds, a multiple of the bucket size")
    people: int = 0
    gender: dict[str, int] = Field(default_factory=lambda: dict.fromkeys((*GENDERS, UNKNOWN), 0))
    age: dict[str, int] = Field(default_factory=lambda: dict.fromkeys((*AGE_BANDS, UNKNOWN), 0))
    expression: dict[str, int] = Field(default_factory=lambda: dict.fromkeys((*EXPRESSIONS, UNKNOWN), 0))

    def add(self, labels: dict[str, str], n: int = 1) -> None:
        """Count ``n`` people with ``labels`` (a label outside the known ones is ``unknown``)."""
        self.people += n
        for dimension, value in labels.items():
            counts = getattr(self, dimension)
            key = value if value in counts else UNKNOWN
            counts[key] += n

    def merge(self, other: BucketCounts) -> None:
        self.people += other.people
        for dimension in ("gender", "age", "expression"):
            mine = getattr(self, dimension)
            for key, n in getattr(other, dimension).items():
                mine[key] = mine.get(key, 0) + n


def bucket_count(bucket_s: int, start: float, end: float) -> int:
    """How many buckets :func:`bucket_starts` gives, without making them."""
    return max(0, math.ceil(end / bucket_s) - math.floor(start / bucket_s)) if end > start else 0


def bucket_starts(bucket_s: int, start: float, end: float) -> list[int]:
    """Starts of the buckets that overlap ``[start, end)``: from the one holding ``start``."""
    first = math.floor(start / bucket_s) * bucket_s
    return list(range(first, math.ceil(end / bucket_s) * bucket_s, bucket_s)) if end > start else []


def count(summaries: Iterable[TrackSummary], bucket_s: int, start: float, end: float) -> list[BucketCounts]:
    """Every bucket of :func:`bucket_starts`, with the tracks first seen in it counted."""
    buckets = {s: BucketCounts(start=s) for s in bucket_starts(bucket_s, start, end)}
    for summary in summaries:
        bucket = buckets.get(math.floor(summary.first_seen / bucket_s) * bucket_s)
        if bucket is not None:
            bucket.add(labels_of(summary))
    return list(buckets.values())
