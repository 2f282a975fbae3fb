"""Demographics per time bucket: the arithmetic, and the counts the stores keep as tracks end
(the in-memory store and a real redis-server: exactly once across retried writes, late label
changes, a take-over by another owner and a restart from the append-only file)."""

from __future__ import annotations

import uuid

import pytest
from conftest import RedisServer, wait_until
from tracklens.pipeline.demographics import (
    AGE_BANDS,
    BUCKETS_S,
    BucketCounts,
    age_band,
    bucket_starts,
    count,
    labels_of,
)
from tracklens.pipeline.store import Fence, MemoryTrackStore, RedisTrackStore, TrackRecord
from tracklens.pipeline.summary import AgeSummary, EstimatePoint, ExpressionSummary, GenderSummary, TrackSummary

DAY = 1_795_478_400  # a UTC midnight (a multiple of 86400)


def _summary(key: str, first_seen: float, state: str = "ended", age: float | None = 34.0, gender: str | None = "female",
             expression: str | None = "happy") -> TrackSummary:  # fmt: skip
    return TrackSummary(
        track=key, stream=key.split(":")[0], first_seen=first_seen, last_seen=first_seen + 5, frames=10, state=state,
        age=AgeSummary(mean=age, std=None if age is None else 3.0, n=2 if age is not None else 0),
        gender=GenderSummary(label=gender, p_female=None if gender is None else (0.9 if gender == "female" else 0.1), n=2),
        expression=ExpressionSummary(label=expression, n=2 if expression else 0),
    )  # fmt: skip


def _rec(summary: TrackSummary, version: int, fence: Fence | None = None, estimates=()) -> TrackRecord:
    events = ("end",) if summary.ended else ("start",)
    return TrackRecord(summary.track, summary.stream, version, summary, {"v": version}, events, fence, tuple(estimates))


def _people(buckets: list[BucketCounts]) -> list[int]:
    return [b.people for b in buckets]


@pytest.mark.parametrize(
    "mean, band",
    [(None, "unknown"), (0.0, "0-17"), (17.4, "0-17"), (17.6, "18-29"), (29.0, "18-29"), (30.0, "30-44"),
     (44.4, "30-44"), (45.0, "45-59"), (59.0, "45-59"), (60.0, "60+"), (97.0, "60+"), (float("nan"), "unknown")],
)  # fmt: skip
def test_age_bands_follow_the_age_as_the_label_rounds_it(mean, band):
    assert age_band(mean) == band


def test_null_labels_count_as_unknown_and_buckets_are_aligned_and_gap_free():
    summaries = [_summary("cam:0:1", DAY + 10), _summary("cam:0:2", DAY + 3599, age=None, gender=None, expression=None),
                 _summary("cam:0:3", DAY + 3600, gender="male", age=61.0), _summary("cam:0:4", DAY - 1)]  # fmt: skip
    assert labels_of(summaries[1]) == {"gender": "unknown", "age": "unknown", "expression": "unknown"}
    assert bucket_starts(3600, DAY + 100, DAY + 7200) == [DAY, DAY + 3600]
    assert bucket_starts(3600, DAY + 100, DAY + 100) == []
    hours = count(summaries, 3600, DAY, DAY + 3 * 3600)
    assert [b.start for b in hours] == [DAY, DAY + 3600, DAY + 7200] and _people(hours) == [2, 1, 0]
    assert hours[0].gender == {"female": 1, "male": 0, "unknown": 1}
    assert hours[0].age == {**dict.fromkeys(AGE_BANDS, 0), "30-44": 1, "unknown": 1}
    assert hours[0].expression["happy"] == 1 and hours[0].expression["unknown"] == 1
    assert hours[1].age["60+"] == 1 and hours[1].gender["male"] == 1
    for bucket in hours:  # every dimension sums to the people counted
        assert all(sum(getattr(bucket, d).values()) == bucket.people for d in ("gender", "age", "expression"))
    assert _people(count(summaries, 86400, DAY - 86400, DAY + 86400)) == [1, 3]


@pytest.fixture(params=["memory", "redis"])
def store(request):
    if request.param == "memory":
        yield MemoryTrackStore(estimates_kept=5)
        return
    s = RedisTrackStore(request.getfixturevalue("redis_url"), prefix=f"t{uuid.uuid4().hex[:8]}", ended_ttl_s=600, estimates_kept=5)
    yield s
    s.close()


def test_ended_and_active_tracks_are_counted_once_in_every_bucket_size(store):
    ended = [_summary("cam:0:1", DAY + 60), _summary("cam:0:2", DAY + 1000, gender="male", age=22.0, expression="sad"),
             _summary("cam:0:3", DAY + 4000, age=None, gender=None, expression=None)]  # fmt: skip
    active = _summary("cam:0:4", DAY + 100, state="active", gender=None)
    store.put([_rec(_summary(s.track, s.first_seen, state="active"), 1) for s in ended] + [_rec(active, 1)])
    store.put([_rec(s, 2) for s in ended])
    for size in BUCKETS_S.values():
        buckets = store.demographics("cam", size, DAY, DAY + 86400)
        assert buckets == count(ended + [active], size, DAY, DAY + 86400), size
    quarter = store.demographics("cam", 900, DAY, DAY + 3600)
    assert _people(quarter) == [2, 1, 0, 0]
    assert quarter[0].gender == {"female": 1, "male": 0, "unknown": 1}  # the active track, no label yet
    assert quarter[1].age["18-29"] == 1 and quarter[1].expression["sad"] == 1
    assert _people(store.demographics("cam", 3600, DAY, DAY + 7200)) == [3, 1]
    assert store.demographics("other", 3600, DAY, DAY + 3600)[0].people == 0


def test_a_retried_write_and_a_late_label_change_keep_each_track_counted_once(store):
    first = _summary("cam:0:1", DAY + 10, state="active", gender=None)
    store.put([_rec(first, 1)])
    end = _summary("cam:0:1", DAY + 10, gender=None)
    for _ in range(3):  # the same write retried (a lost reply, a buffered store redelivering)
        store.put([_rec(end, 2)])
    hour = store.demographics("cam", 3600, DAY, DAY + 3600)[0]
    assert hour.people == 1 and hour.gender["unknown"] == 1
    store.put([_rec(_summary("cam:0:1", DAY + 10, gender="male"), 3)])  # a late estimate decided the gender
    store.put([_rec(_summary("cam:0:1", DAY + 10, gender="female"), 2)])  # a stale write changes nothing
    hour = store.demographics("cam", 3600, DAY, DAY + 3600)[0]
    assert hour.people == 1 and hour.gender == {"female": 0, "male": 1, "unknown": 0}
    assert [t.track for t in store.active("cam")] == []


def test_a_track_history_keeps_its_latest_estimates_in_order(store):
    points = [EstimatePoint(time=DAY + i, source="mllm" if i % 2 else "specialist", model="m", age=30.0 + i, p_female=0.8)
              for i in range(7)]  # fmt: skip
    store.put([_rec(_summary("cam:0:1", DAY, state="active"), 1, estimates=points[:3])])
    store.put([_rec(_summary("cam:0:1", DAY, state="active"), 1, estimates=points[3:])])  # a retry of version 1: ignored
    store.put([_rec(_summary("cam:0:1", DAY), 2, estimates=points[3:])])
    assert store.estimates("cam:0:1") == points[2:]  # the latest 5 (estimates_kept)
    assert store.estimates("cam:0:9") == []


def test_newest_tracks_and_active_tracks_are_read_without_the_rest(store):
    for i in range(1, 6):
        store.put([_rec(_summary(f"cam:0:{i}", DAY + i, state="active" if i in (1, 4) else "ended"), 1)])
    assert [t.track for t in store.tracks("cam", newest=2)] == ["cam:0:4", "cam:0:5"]
    assert [t.track for t in store.active("cam")] == ["cam:0:1", "cam:0:4"]
    assert store.tracks("cam", newest=0) == [] and len(store.tracks("cam")) == 5


def test_a_take_over_counts_each_track_once_whichever_owner_wrote_its_end(redis_url):
    """The old owner ended a track its last snapshot still had open; the new owner resumes it
    (active again) and ends it later; the old owner's retried end is refused by its fence."""
    store = RedisTrackStore(redis_url, prefix=f"t{uuid.uuid4().hex[:8]}")
    fence_key = f"{store._prefix}:ctl:fence:cam"
    try:
        store._client.set(fence_key, 1)
        old = Fence(fence_key, 1)
        store.put([_rec(_summary("cam:0:1", DAY + 10, state="active"), 1, old), _rec(_summary("cam:0:2", DAY + 20, state="active"), 1, old)])
        store.put([_rec(_summary("cam:0:1", DAY + 10), 2, old)])
        assert store.demographics("cam", 3600, DAY, DAY + 3600)[0].people == 2
        store._client.set(fence_key, 2)  # another replica claimed the stream
        new = Fence(fence_key, 2)
        assert store.put([_rec(_summary("cam:0:2", DAY + 20), 2, old)]) == 0 and store.refused == 1
        store.put([_rec(_summary("cam:0:1", DAY + 10, state="active"), 3, new), _rec(_summary("cam:0:2", DAY + 20, state="active"), 2, new)])
        hour = store.demographics("cam", 3600, DAY, DAY + 3600)[0]
        assert hour.people == 2 and {t.track for t in store.active("cam")} == {"cam:0:1", "cam:0:2"}
        store.put([_rec(_summary("cam:0:1", DAY + 10, expression="sad"), 4, new), _rec(_summary("cam:0:2", DAY + 20), 3, new)])
        hour = store.demographics("cam", 3600, DAY, DAY + 3600)[0]
        assert hour.people == 2 and hour.expression["sad"] == 1 and hour.expression["happy"] == 1 and not store.active("cam")
    finally:
        store.close()


def test_counts_outlive_the_tracks_they_came_from(redis_url):
    """The counts are kept as tracks end, not recomputed from the tracks: once the ended tracks
    have expired (their retention), the buckets still hold them."""
    store = RedisTrackStore(redis_url, prefix=f"t{uuid.uuid4().hex[:8]}", ended_ttl_s=1)
    try:
        store.put([_rec(_summary(f"cam:0:{i}", DAY + 900 * i), 1) for i in range(3)])
        wait_until(lambda: store.tracks("cam") == [], timeout_s=30)
        assert _people(store.demographics("cam", 900, DAY, DAY + 2700)) == [1, 1, 1]
        assert _people(store.demographics("cam", 86400, DAY, DAY + 86400)) == [3]
        ttl = store._client.ttl(f"{store._prefix}:stream:cam:stats:900:{DAY}")
        assert 0 < ttl <= 400 * 86400
    finally:
        store.close()


@pytest.mark.integration
def test_counts_survive_a_redis_restart_from_its_append_only_file(tmp_path):
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    try:
        store = RedisTrackStore(server.url, prefix="aof")
        store.put([_rec(_summary("cam:0:1", DAY + 5, state="active"), 1), _rec(_summary("cam:0:2", DAY + 7, state="active"), 1)])
        store.put([_rec(_summary("cam:0:1", DAY + 5), 2)])
        before = store.demographics("cam", 900, DAY, DAY + 3600)
        store.close()
        server.stop()
        server.start()
        store = RedisTrackStore(server.url, prefix="aof")
        assert store.demographics("cam", 900, DAY, DAY + 3600) == before and before[0].people == 2
        store.put([_rec(_summary("cam:0:1", DAY + 5), 2), _rec(_summary("cam:0:2", DAY + 7, gender="male"), 2)])  # retry + end
        after = store.demographics("cam", 900, DAY, DAY + 3600)[0]
        assert after.people == 2 and after.gender == {"female": 1, "male": 1, "unknown": 0}
        store.close()
    finally:
        server.stop()
