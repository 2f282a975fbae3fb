"""The track store interface and the record it stores."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

from ..summary import EstimatePoint, TrackSummary

if TYPE_CHECKING:
    from ..demographics import BucketCounts

__all__ = ["Fence", "FencedStore", "StoreView", "TrackRecord", "TrackStore"]


@dataclass(frozen=True)
class Fence:
    """A stream owner's right to write: the Redis key holding the token of the stream's latest
    claim, and the token this owner got. A write whose token is no longer the latest (another
    replica has claimed the stream since) is refused by the store and counted."""

    key: str
    token: int


@dataclass(frozen=True)
class TrackRecord:
    """One write of one track.

    Attributes:
        key: track key ``{stream}:{epoch}:{track_id}``.
        stream: stream id.
        version: increases with every write of this track; a write whose version is not
            newer than the stored one is ignored, which makes retries idempotent.
        summary: the track's summary.
        state: the aggregator state, JSON-compatible, so another process can continue it.
        events: what happened since the track's previous write (``start``, ``estimate``,
            ``end``), in order, appended to the stream's event log; empty for silent
            refreshes. A write that supersedes unsent ones carries their events too.
        fence: the writer's claim on the stream (the service's owners); None: unfenced
            (a one-shot run, the only writer).
        estimates: the estimates fused since the track's previous write, oldest first,
            appended to the track's history (bounded); a write that supersedes unsent ones
            carries theirs too.
    """

    key: str
    stream: str
    version: int
    summary: TrackSummary
    state: dict
    events: tuple[str, ...] = ()
    fence: Fence | None = None
    estimates: tuple[EstimatePoint, ...] = ()

    @property
    def ended(self) -> bool:
        return self.summary.ended

    def superseding(self, older: TrackRecord) -> TrackRecord:
        """This record, also carrying the events of ``older`` (an unsent write of the same track)."""
        if older.version > self.version:
            return older.superseding(self)
        events = list(older.events)
        for event in self.events:
            if not (event == "estimate" and events and events[-1] == "estimate"):  # one estimate event stands for a run of them
                events.append(event)
        return replace(self, events=tuple(events), estimates=older.estimates + self.estimates)


class TrackStore(Protocol):
    """System of record for per-track state. Each record is written atomically."""

    def next_epoch(self, stream: str) -> int:
        """A new epoch for a stream whose tracker starts without a snapshot."""
        ...

    def put(self, records: list[TrackRecord]) -> int:
        """Write records (each atomic, stale versions ignored); returns how many were applied."""
        ...

    def get(self, key: str) -> TrackSummary | None:
        """The summary of one track, or None."""
        ...

    def record(self, key: str) -> TrackRecord | None:
        """The last write of one track (version, summary, aggregator state), or None."""
        ...

    def tracks(self, stream: str, newest: int | None = None) -> list[TrackSummary]:
        """Summaries of a stream's tracks by first seen, oldest first (only the ``newest``
        ones, when given)."""
        ...

    def active(self, stream: str) -> list[TrackSummary]:
        """Summaries of a stream's active tracks, oldest first (read without a scan of its
        ended ones)."""
        ...

    def estimates(self, key: str) -> list[EstimatePoint]:
        """The most recent estimates of a track, oldest first (a bounded history)."""
        ...

    def demographics(self, stream: str, bucket_s: int, start: float, end: float) -> list[BucketCounts]:
        """People of a stream per bucket (see :mod:`~tracklens.pipeline.demographics`): every
        bucket overlapping ``[start, end)``, ended tracks counted as they ended, active ones
        with their labels so far."""
        ...

    def events(self, stream: str, count: int = 100) -> list[dict]:
        """The last ``count`` events of a stream, oldest first."""
        ...

    def close(self) -> None: ...


class StoreView:
    """A store in front of another (``inner``): every read passes through; subclasses decide
    what writing and closing do."""

    def __init__(self, inner: TrackStore) -> None:
        self.inner = inner

    def next_epoch(self, stream: str) -> int:
        return self.inner.next_epoch(stream)

    def get(self, key: str) -> TrackSummary | None:
        return self.inner.get(key)

    def record(self, key: str) -> TrackRecord | None:
        return self.inner.record(key)

    def tracks(self, stream: str, newest: int | None = None) -> list[TrackSummary]:
        return self.inner.tracks(stream, newest)

    def active(self, stream: str) -> list[TrackSummary]:
        return self.inner.active(stream)

    def estimates(self, key: str) -> list[EstimatePoint]:
        return self.inner.estimates(key)

    def demographics(self, stream: str, bucket_s: int, start: float, end: float) -> list[BucketCounts]:
        return self.inner.demographics(stream, bucket_s, start, end)

    def events(self, stream: str, count: int = 100) -> list[dict]:
        return self.inner.events(stream, count)


class FencedStore(StoreView):
    """One stream owner's view of a shared store: every record it writes carries its
    :class:`Fence`; reads pass through. Closing it leaves the shared store open."""

    def __init__(self, inner: TrackStore, fence: Fence) -> None:
        super().__init__(inner)
        self.fence = fence

    def put(self, records: list[TrackRecord]) -> int:
        return self.inner.put([replace(r, fence=self.fence) for r in records])

    def close(self) -> None:
        pass
