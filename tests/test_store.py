"""Track stores: one contract, checked on the in-memory store and on a real redis-server."""

from __future__ import annotations

import threading
import uuid

import pytest
from tracklens.pipeline.errors import StoreError
from tracklens.pipeline.store import MemoryTrackStore, RedisTrackStore, TrackRecord
from tracklens.pipeline.summary import AgeSummary, TrackSummary


@pytest.fixture(params=["memory", "redis"])
def store(request):
    if request.param == "memory":
        yield MemoryTrackStore()
        return
    url = request.getfixturevalue("redis_url")
    s = RedisTrackStore(url, prefix=f"t{uuid.uuid4().hex[:8]}", ended_ttl_s=60)
    yield s
    s.close()


def _rec(key: str, version: int, state: str = "active", event: str | None = "estimate", age: float = 30.0) -> TrackRecord:
    stream, _, track_id = key.split(":")
    summary = TrackSummary(track=key, stream=stream, first_seen=float(track_id), last_seen=float(track_id) + 1, frames=3,
                           state=state, age=AgeSummary(mean=age, std=2.0, n=2))  # fmt: skip
    return TrackRecord(key, stream, version, summary, {"age_n": version}, (event,) if event else ())


def test_put_get_and_list(store):
    assert store.put([_rec("cam:0:2", 1, event="start"), _rec("cam:0:1", 1, event="start")]) == 2
    assert store.get("cam:0:1").track == "cam:0:1" and store.get("cam:0:1") == _rec("cam:0:1", 1).summary
    assert store.record("cam:0:2").state == {"age_n": 1} and store.record("cam:0:2").version == 1
    assert [t.track for t in store.tracks("cam")] == ["cam:0:1", "cam:0:2"]
    assert store.tracks("other") == [] and store.get("cam:0:9") is None


def test_stale_and_repeated_writes_change_nothing(store):
    store.put([_rec("cam:0:1", 1, event="start")])
    store.put([_rec("cam:0:1", 3, age=40.0)])
    assert store.put([_rec("cam:0:1", 2, age=10.0), _rec("cam:0:1", 3, age=10.0)]) == 0
    assert store.get("cam:0:1").age.mean == 40.0
    assert [e["version"] for e in store.events("cam")] == [1, 3]


def test_events_are_appended_in_order_and_silent_refreshes_add_none(store):
    store.put([_rec("cam:0:1", 1, event="start")])
    store.put([_rec("cam:0:1", 2, event=None)])
    store.put([_rec("cam:0:1", 3, state="ended", event="end")])
    events = store.events("cam")
    assert [(e["track"], e["event"]) for e in events] == [("cam:0:1", "start"), ("cam:0:1", "end")]
    assert store.events("cam", count=1)[0]["event"] == "end"


def test_epochs_increase_per_stream(store):
    assert [store.next_epoch("a"), store.next_epoch("a"), store.next_epoch("b")] == [0, 1, 0]


def test_concurrent_writers_keep_the_newest_version(store):
    def writer(offset: int) -> None:
        for v in range(offset, 200, 4):
            store.put([_rec("cam:0:1", v, age=float(v))])

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get("cam:0:1").age.mean == 199.0


def test_redis_ended_tracks_get_a_ttl_and_vanish_from_listings(redis_url):
    import redis

    s = RedisTrackStore(redis_url, prefix=f"t{uuid.uuid4().hex[:8]}", ended_ttl_s=60)
    s.put([_rec("cam:0:1", 1), _rec("cam:0:2", 1)])
    s.put([_rec("cam:0:1", 2, state="ended", event="end")])
    client = redis.Redis.from_url(redis_url)
    assert 0 < client.ttl(f"{s._k('track', 'cam:0:1')}") <= 60
    assert client.ttl(f"{s._k('track', 'cam:0:2')}") == -1
    client.delete(s._k("track", "cam:0:1"))  # as if the TTL had passed
    assert [t.track for t in s.tracks("cam")] == ["cam:0:2"]
    assert client.zcard(s._k("stream", "cam", "tracks")) == 1


def test_unreachable_redis_is_a_clear_error():
    with pytest.raises(StoreError, match="cannot reach Redis at redis://127.0.0.1:1/0"):
        RedisTrackStore("redis://127.0.0.1:1/0")
