"""The track book, per stream: estimates in whenever they arrive, fused track states out.

Perception says when tracks start, are seen and end; estimates arrive separately, later
than the frames that asked for them when the estimators run elsewhere, possibly out of
order, possibly for a track that has ended. The book

- fuses each estimate into its track (``aggregation.fuse``), late or not;
- owns each track's version, so writes to the store are monotonic and idempotent;
- writes only the tracks that changed since its last flush;
- holds a track's ``end`` until the estimates it asked for have come back (or
  ``end_grace_s`` has passed), so the final record has them; then writes it, hands the final
  summary to ``on_track_end`` and forgets the track: a stream that runs for months keeps only
  its open tracks in memory;
- applies an estimate for a track it has already forgotten by continuing the stored record;
- continues tracks from the store's aggregator state (a stream taken over by another process).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .aggregation import TrackAggregate, fuse, summarize, uncertain_fields
from .config import AggregationConfig
from .store import TrackRecord, TrackStore
from .summary import EstimatePoint, TrackSummary
from .types import Crop, Estimate, TrackEvent, TrackSpan

__all__ = ["BookStats", "TrackBook"]


@dataclass
class BookStats:
    """Counts of what the book did.

    Attributes:
        writes: track records written.
        late: estimates applied to a track that had already been written as ended.
        orphaned: estimates for a track the store no longer has (expired), dropped.
        ends_timed_out: ends written without every estimate asked for (``end_grace_s``).
        requests: crops sent for estimates, by why (``first``, ``confirm``, ``uncertain``...).
    """

    writes: int = 0
    late: int = 0
    orphaned: int = 0
    ends_timed_out: int = 0
    requests: Counter = field(default_factory=Counter)


@dataclass
class _Entry:
    span: TrackSpan
    agg: TrackAggregate = field(default_factory=TrackAggregate)
    version: int = 0
    events: list[str] = field(default_factory=list)
    points: list[EstimatePoint] = field(default_factory=list)
    changed: bool = True
    ended: bool = False
    outstanding: int = 0
    end_by: float = 0.0


class TrackBook:
    """See the module docstring.

    Args:
        stream: the stream id (its track keys start with it).
        aggregation: fusion settings.
        store: where records are written (and read back for late estimates and take-overs).
        end_grace_s: longest wait for outstanding estimates before an end is written anyway.
        on_track_end: called with each track's final summary once its end is written.
        clock: monotonic seconds (tests pass a fake one).
    """

    def __init__(
        self,
        stream: str,
        aggregation: AggregationConfig,
        store: TrackStore,
        end_grace_s: float = 30.0,
        on_track_end: Callable[[TrackSummary], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.config = aggregation
        self.store = store
        self.end_grace_s = end_grace_s
        self.on_track_end = on_track_end
        self.clock = clock
        self.stats = BookStats()
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        """Tracks held: open ones, and ended ones waiting for their estimates."""
        return len(self._entries)

    def observe(self, events: Iterable[TrackEvent], seen: Iterable[TrackSpan] = ()) -> None:
        """Track starts and ends from perception, then the latest spans of tracks seen."""
        for event in events:
            if event.kind == "start":
                self._entries[event.span.key] = _Entry(event.span, events=["start"])
            else:
                entry = self._entries.get(event.span.key)
                if entry is not None:
                    entry.span, entry.ended, entry.changed = event.span, True, True
                    entry.end_by = self.clock() + self.end_grace_s
        for span in seen:
            entry = self._entries.get(span.key)
            if entry is not None and not entry.ended:
                entry.span, entry.changed = span, True

    def resume(self, spans: Iterable[TrackSpan]) -> None:
        """Hold open tracks that another process was keeping: continue each from its stored
        record (version and aggregator state), or start it when the store has none."""
        for span in spans:
            record = self.store.record(span.key)
            if record is None:
                self._entries[span.key] = _Entry(span, events=["start"])
            else:
                self._entries[span.key] = _Entry(span, TrackAggregate.from_dict(record.state), record.version)

    def requested(self, crops: Iterable[Crop]) -> None:
        """Crops were sent for estimation: their tracks' ends wait for the answers."""
        for crop in crops:
            self.stats.requests[crop.reason.split(":")[0] or "unspecified"] += 1
            entry = self._entries.get(crop.track)
            if entry is not None:
                entry.outstanding += 1

    def unanswered(self, crops: Iterable[Crop]) -> None:
        """Requests that will never be answered (their batch failed): stop waiting for them."""
        for crop in crops:
            entry = self._entries.get(crop.track)
            if entry is not None:
                entry.outstanding = max(0, entry.outstanding - 1)

    def apply(self, estimates: Iterable[Estimate]) -> dict[str, frozenset[str]]:
        """Fuse estimates into their tracks, whenever they come; returns, for each open track
        that got one, the fields it is still unsure of (perception's request policy asks
        again only for those; empty: settled)."""
        needs = {}
        for est in estimates:
            entry = self._entries.get(est.track)
            if entry is None:
                self._apply_late(est)
                continue
            entry.outstanding = max(0, entry.outstanding - 1)
            entry.agg = fuse(entry.agg, est, self.config)
            entry.points.append(EstimatePoint.of(est))
            entry.changed = True
            if "estimate" not in entry.events:
                entry.events.append("estimate")
            needs[est.track] = uncertain_fields(entry.agg, self.config)
        return needs

    def _apply_late(self, est: Estimate) -> None:
        """An estimate for a track already written as ended: continue its stored record."""
        if not est.track.startswith(self.stream + ":"):
            raise ValueError(f"estimate for {est.track!r} sent to the track book of stream {self.stream!r}")
        record = self.store.record(est.track)
        if record is None:
            self.stats.orphaned += 1
            return
        agg = fuse(TrackAggregate.from_dict(record.state), est, self.config)
        summary = TrackSummary.model_validate({**record.summary.model_dump(), **summarize(agg, self.config)})
        self.store.put([TrackRecord(record.key, record.stream, record.version + 1, summary, agg.to_dict(), ("estimate",),
                                    estimates=(EstimatePoint.of(est),))])  # fmt: skip
        self.stats.late += 1
        self.stats.writes += 1

    def flush(self, final: bool = False) -> list[TrackRecord]:
        """Write every track that changed, and the ends that are due (all of them when
        ``final``); forget ended tracks once written. Returns the records written."""
        now = self.clock()
        records, finished = [], []
        for key in list(self._entries):
            entry = self._entries[key]
            release = entry.ended and (final or entry.outstanding == 0 or now >= entry.end_by)
            if not (entry.changed or release):
                continue
            entry.version += 1
            events = entry.events + (["end"] if release else [])
            summary = self._summary(entry, ended=release)
            records.append(TrackRecord(key, self.stream, entry.version, summary, entry.agg.to_dict(), tuple(events),
                                       estimates=tuple(entry.points)))  # fmt: skip
            entry.events, entry.points, entry.changed = [], [], False
            if release:
                self.stats.ends_timed_out += entry.outstanding > 0
                del self._entries[key]
                finished.append(summary)
        if records:
            self.store.put(records)
            self.stats.writes += len(records)
        if self.on_track_end is not None:
            for summary in finished:
                self.on_track_end(summary)
        return records

    def summary(self, key: str) -> TrackSummary | None:
        """The current summary of a track the book holds (None once its end was written)."""
        entry = self._entries.get(key)
        return None if entry is None else self._summary(entry, ended=False)

    def _summary(self, entry: _Entry, ended: bool) -> TrackSummary:
        span = entry.span
        return TrackSummary(
            track=span.key,
            stream=self.stream,
            first_seen=round(span.first_seen, 3),
            last_seen=round(span.last_seen, 3),
            frames=span.frames,
            state="ended" if ended else "active",
            **summarize(entry.agg, self.config),
        )
