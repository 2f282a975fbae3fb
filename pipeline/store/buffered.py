"""Writes that outlive a store outage: buffered in memory, retried with backoff, flushed on return.

A Redis restart, a failover or a network blip must not end a run or lose a track. While the
store is unreachable, :meth:`BufferedTrackStore.put` keeps the records in memory and returns
at once; the run goes on. The buffer holds one record per track: a newer write of a track
supersedes its unsent older one and carries the older one's events along, so the buffer is
bounded by the number of tracks, not by the length of the outage, and the event log loses
nothing. Past ``max_pending`` tracks the oldest are dropped, and counted.

Delivery is retried when a write comes in and at least the current backoff has passed
(doubling from ``retry_s`` up to ``max_retry_s``), and once more, for up to ``drain_s``, on
:meth:`close`. What never reached the store is reported by :attr:`undelivered`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import StoreError
from ..summary import TrackSummary
from .base import StoreView, TrackRecord, TrackStore

__all__ = ["BufferedTrackStore", "DeliveryStats"]

log = logging.getLogger(__name__)


@dataclass
class DeliveryStats:
    """Counts of a buffered store's writes.

    Attributes:
        written: records the store applied (stale versions it ignored included).
        buffered: records that had to wait for the store.
        superseded: buffered records replaced by a newer write of the same track.
        dropped: buffered tracks given up because the buffer was full.
        outages: times the store went from reachable to unreachable.
        last_error: the most recent failure, one line.
    """

    written: int = 0
    buffered: int = 0
    superseded: int = 0
    dropped: int = 0
    outages: int = 0
    last_error: str | None = None


class BufferedTrackStore(StoreView):
    """Wraps a :class:`TrackStore` whose writes may fail for a while; reads pass through.

    Thread-safe: many streams of a process write through one buffer. Its lock guards only
    the buffer, never network I/O or a wait: one thread delivers at a time, and while it
    does (during an outage a call can take the store's whole timeout) the others buffer
    their writes and return at once.

    Args:
        inner: the store written to (Redis).
        max_pending: tracks held at most while the store is unreachable.
        retry_s: first delay before a failed write is tried again; doubles per failure.
        max_retry_s: cap of that delay.
        drain_s: how long :meth:`close` keeps trying to deliver what is pending.
        clock: monotonic seconds; sleep: waits that many seconds (tests inject both).
    """

    def __init__(
        self,
        inner: TrackStore,
        max_pending: int = 100_000,
        retry_s: float = 0.25,
        max_retry_s: float = 5.0,
        drain_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(inner)
        self.max_pending = max_pending
        self.retry_s = retry_s
        self.max_retry_s = max_retry_s
        self.drain_s = drain_s
        self.stats = DeliveryStats()
        self._clock, self._sleep = clock, sleep
        self._pending: OrderedDict[str, TrackRecord] = OrderedDict()
        self._sending: dict[str, TrackRecord] = {}  # handed to the store by the delivering thread
        self._lock = threading.Lock()
        self._failing = False
        self._delay = 0.0
        self._next_try = 0.0

    @property
    def pending(self) -> int:
        """Tracks whose latest write has not reached the store yet."""
        with self._lock:
            return len(self._pending.keys() | self._sending.keys())

    @property
    def undelivered(self) -> int:
        """Tracks whose latest state never reached the store (pending now, or dropped)."""
        return self.pending + self.stats.dropped

    @property
    def available(self) -> bool:
        """False while the store is in an outage (writes are being buffered)."""
        return self.pending == 0

    def put(self, records: list[TrackRecord]) -> int:
        """Write ``records``, or keep them for later; returns how many the store applied now.

        Never raises for an unreachable store; other store errors (a refused write) are
        handled the same way, since retrying a write is always safe (versions).
        """
        with self._lock:
            for rec in records:
                self._hold(rec)
        applied = self._deliver() if self._clock() >= self._next_try else None
        if applied is None:
            with self._lock:
                self.stats.buffered += len(records)
        return applied or 0

    def flush(self, timeout_s: float | None = None) -> bool:
        """Try to deliver everything pending for up to ``timeout_s`` (default ``drain_s``);
        True when nothing is left."""
        deadline = self._clock() + (self.drain_s if timeout_s is None else timeout_s)
        while True:
            self._deliver()
            if self.pending == 0:
                return True
            now = self._clock()
            if now >= deadline:
                return False
            # another thread may be delivering: look again soon; else wait for the next try
            self._sleep(max(0.0, min(self._next_try, deadline) - now) if not self._sending else min(0.05, deadline - now))

    def _hold(self, rec: TrackRecord) -> None:
        if rec.key in self._pending:
            self.stats.superseded += 1
        self._merge(rec)

    def _merge(self, rec: TrackRecord) -> None:
        """Buffer ``rec``, superseding an unsent older write of its track (whose events it
        carries on), and drop the oldest tracks past ``max_pending``."""
        old = self._pending.pop(rec.key, None)
        self._pending[rec.key] = rec if old is None else rec.superseding(old)
        while len(self._pending) > self.max_pending:
            key, _ = self._pending.popitem(last=False)
            self.stats.dropped += 1
            log.warning("store buffer full (%d tracks): dropped the unsent state of %s", self.max_pending, key)

    def _deliver(self) -> int | None:
        """Send everything pending in one call, outside the lock; the number applied (0 when
        nothing was pending), or None when the records stay buffered (the store failed, or
        another thread is sending: they go with the next delivery)."""
        with self._lock:
            if not self._pending:
                return 0
            if self._sending:
                return None
            self._sending, self._pending = dict(self._pending), OrderedDict()
            batch = list(self._sending.values())
        try:
            applied = self.inner.put(batch)
        except StoreError as err:
            with self._lock:
                self._requeue(batch)
                if not self._failing:
                    self._failing = True
                    self.stats.outages += 1
                    log.warning("%s; buffering track writes and retrying", err)
                self.stats.last_error = str(err)
                self._delay = min(self.max_retry_s, max(self.retry_s, 2 * self._delay))
                self._next_try = self._clock() + self._delay
            return None
        with self._lock:
            self._sending = {}
            if self._failing:
                log.warning("the store is back: delivered the latest state of %d tracks", len(batch))
            self._failing = False
            self._delay = self._next_try = 0.0
            self.stats.written += len(batch)
        return applied

    def _requeue(self, batch: list[TrackRecord]) -> None:
        """Put a failed batch back in front of what was buffered while it was being sent; a
        newer write of the same track supersedes it and carries its events on."""
        newer = self._pending
        self._pending, self._sending = OrderedDict((rec.key, rec) for rec in batch), {}
        for rec in newer.values():
            self._merge(rec)

    def get(self, key: str) -> TrackSummary | None:
        pending = self._unsent(key)
        return pending.summary if pending is not None else self.inner.get(key)

    def record(self, key: str) -> TrackRecord | None:
        """The newest state of a track: the unsent one when there is one (an outage)."""
        pending = self._unsent(key)
        return pending if pending is not None else self.inner.record(key)

    def _unsent(self, key: str) -> TrackRecord | None:
        with self._lock:
            return self._pending.get(key) or self._sending.get(key)

    def close(self) -> None:
        """Deliver what is pending (for up to ``drain_s``), then close the inner store.
        Check :attr:`undelivered` afterwards."""
        try:
            self.flush()
        finally:
            self.inner.close()
