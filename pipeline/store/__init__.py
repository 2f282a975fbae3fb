"""Track stores: Redis (system of record) and an embedded in-memory twin."""

from __future__ import annotations

from .base import Fence, FencedStore, TrackRecord, TrackStore
from .buffered import BufferedTrackStore, DeliveryStats
from .memory import MemoryTrackStore

__all__ = [
    "BufferedTrackStore",
    "DeliveryStats",
    "Fence",
    "FencedStore",
    "MemoryTrackStore",
    "RedisTrackStore",
    "TrackRecord",
    "TrackStore",
    "build_store",
]


def build_store(config) -> TrackStore:
    """A store from a ``store`` config section (``type: memory`` or ``type: redis``).

    Redis is checked on construction (an unreachable server is an error before any work)
    and wrapped in a :class:`BufferedTrackStore`, so a later outage buffers writes instead
    of ending the run.
    """
    if config.type == "redis":
        from .redis import RedisTrackStore

        inner = RedisTrackStore(config.connect_url(), config.prefix, config.ended_ttl_s, config.events_maxlen, config.timeout_s,
                                config.stats_ttl_s, config.estimates_kept)  # fmt: skip
        return BufferedTrackStore(inner, config.max_pending_tracks, config.retry_s, config.max_retry_s, config.drain_s)
    return MemoryTrackStore()


def __getattr__(name: str):
    if name == "RedisTrackStore":
        from .redis import RedisTrackStore

        return RedisTrackStore
    raise AttributeError(name)
