"""Track stores: Redis (system of record) and an embedded in-memory twin."""

from __future__ import annotations

from .base import TrackRecord, TrackStore
from .memory import MemoryTrackStore

__all__ = ["MemoryTrackStore", "RedisTrackStore", "TrackRecord", "TrackStore", "build_store"]


def build_store(config) -> TrackStore:
    """A store from a ``store`` config section (``type: memory`` or ``type: redis``)."""
    if config.type == "redis":
        from .redis import RedisTrackStore

        return RedisTrackStore(config.url, config.prefix, config.ended_ttl_s, config.events_maxlen)
    return MemoryTrackStore()


def __getattr__(name: str):
    if name == "RedisTrackStore":
        from .redis import RedisTrackStore

        return RedisTrackStore
    raise AttributeError(name)
