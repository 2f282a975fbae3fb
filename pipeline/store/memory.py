"""Embedded in-memory store: the same interface as Redis, for runs without a server."""

from __future__ import annotations

import threading
from collections import deque

from ..demographics import BucketCounts, count
from ..summary import EstimatePoint, TrackSummary
from .base import TrackRecord

__all__ = ["MemoryTrackStore"]


class MemoryTrackStore:
    """Thread-safe, process-local. Ended tracks are kept (a one-shot run has no TTL)."""

    def __init__(self, events_maxlen: int = 100_000, estimates_kept: int = 100) -> None:
        self._lock = threading.Lock()
        self._history: dict[str, deque] = {}
        self._kept = estimates_kept
        self._records: dict[str, TrackRecord] = {}
        self._streams: dict[str, dict[str, float]] = {}
        self._events: dict[str, deque] = {}
        self._epochs: dict[str, int] = {}
        self._maxlen = events_maxlen

    def next_epoch(self, stream: str) -> int:
        with self._lock:
            self._epochs[stream] = self._epochs.get(stream, -1) + 1
            return self._epochs[stream]

    def put(self, records: list[TrackRecord]) -> int:
        applied = 0
        with self._lock:
            for rec in records:
                old = self._records.get(rec.key)
                if old is not None and old.version >= rec.version:
                    continue
                self._records[rec.key] = rec
                self._streams.setdefault(rec.stream, {})[rec.key] = rec.summary.first_seen
                log = self._events.setdefault(rec.stream, deque(maxlen=self._maxlen))
                for event in rec.events:
                    log.append({"track": rec.key, "version": rec.version, "event": event})
                self._history.setdefault(rec.key, deque(maxlen=self._kept)).extend(rec.estimates)
                applied += 1
        return applied

    def get(self, key: str) -> TrackSummary | None:
        rec = self._records.get(key)
        return None if rec is None else rec.summary

    def record(self, key: str) -> TrackRecord | None:
        rec = self._records.get(key)
        return None if rec is None else TrackRecord(rec.key, rec.stream, rec.version, rec.summary, rec.state)

    def tracks(self, stream: str, newest: int | None = None) -> list[TrackSummary]:
        with self._lock:
            keys = sorted(self._streams.get(stream, {}).items(), key=lambda kv: (kv[1], kv[0]))
            if newest is not None:
                keys = keys[-newest:] if newest > 0 else []
            return [self._records[k].summary for k, _ in keys]

    def active(self, stream: str) -> list[TrackSummary]:
        return [t for t in self.tracks(stream) if t.state == "active"]

    def estimates(self, key: str) -> list[EstimatePoint]:
        with self._lock:
            return list(self._history.get(key, ()))

    def demographics(self, stream: str, bucket_s: int, start: float, end: float) -> list[BucketCounts]:
        return count(self.tracks(stream), bucket_s, start, end)

    def events(self, stream: str, count: int = 100) -> list[dict]:
        with self._lock:
            return list(self._events.get(stream, ()))[-count:]

    def close(self) -> None:
        pass
