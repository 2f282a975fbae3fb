"""The track store interface and the record it stores."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..summary import TrackSummary

__all__ = ["TrackRecord", "TrackStore"]


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
    """

    key: str
    stream: str
    version: int
    summary: TrackSummary
    state: dict
    events: tuple[str, ...] = ()

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
        return TrackRecord(self.key, self.stream, self.version, self.summary, self.state, tuple(events))


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

    def tracks(self, stream: str) -> list[TrackSummary]:
        """Summaries of a stream's tracks, oldest first."""
        ...

    def events(self, stream: str, count: int = 100) -> list[dict]:
        """The last ``count`` events of a stream, oldest first."""
        ...

    def close(self) -> None: ...
