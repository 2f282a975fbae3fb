"""The buffered store: writes survive an outage of the store behind it, bounded and counted."""

from __future__ import annotations

import threading

from fakes import FlakyStore
from tracklens.pipeline.store import BufferedTrackStore, TrackRecord
from tracklens.pipeline.summary import TrackSummary


class FakeClock:
    def __init__(self) -> None:
        self.now, self.slept = 100.0, 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds


def _rec(key: str, version: int, events: tuple[str, ...] = (), state: str = "active") -> TrackRecord:
    summary = TrackSummary(track=key, stream=key.split(":")[0], first_seen=0.0, last_seen=float(version), frames=version, state=state)
    return TrackRecord(key, key.split(":")[0], version, summary, {"v": version}, events)


def test_writes_pass_straight_through_while_the_store_is_up():
    inner = FlakyStore()
    store = BufferedTrackStore(inner)
    assert store.put([_rec("cam:0:1", 1, ("start",))]) == 1
    assert store.pending == 0 and store.undelivered == 0 and store.stats.written == 1
    assert inner.get("cam:0:1").frames == 1


def test_an_outage_buffers_one_state_per_track_and_delivers_it_with_every_event_on_return():
    inner = FlakyStore()
    store = BufferedTrackStore(inner, retry_s=0.0)
    store.put([_rec("cam:0:1", 1, ("start",))])
    inner.down = True
    assert store.put([_rec("cam:0:1", 2, ("estimate",)), _rec("cam:0:2", 1, ("start",))]) == 0
    store.put([_rec("cam:0:1", 3, ("estimate",))])
    store.put([_rec("cam:0:1", 4, ("end",), state="ended")])
    assert store.pending == 2 and not store.available
    assert store.stats.outages == 1 and store.stats.superseded == 2 and store.stats.buffered == 4
    assert "Connection refused" in store.stats.last_error
    inner.down = False
    assert store.flush(timeout_s=1.0)
    assert store.undelivered == 0 and store.available
    assert inner.get("cam:0:1") == _rec("cam:0:1", 4, state="ended").summary
    # the superseded writes' events arrive with the newest one: a run of estimates counts once
    assert [e["event"] for e in inner.events("cam") if e["track"] == "cam:0:1"] == ["start", "estimate", "end"]
    assert [e["event"] for e in inner.events("cam") if e["track"] == "cam:0:2"] == ["start"]


def test_retries_back_off_instead_of_hammering_the_store():
    inner, clock = FlakyStore(), FakeClock()
    store = BufferedTrackStore(inner, retry_s=0.2, max_retry_s=0.4, clock=clock, sleep=clock.sleep)
    inner.down = True
    store.put([_rec("cam:0:1", 1)])
    for v in range(2, 50):  # a burst of writes within the backoff: no new attempts
        store.put([_rec("cam:0:1", v)])
    assert inner.attempts == 1
    clock.now += 0.25
    store.put([_rec("cam:0:1", 50)])
    assert inner.attempts == 2  # one more try once the delay had passed, and it doubled
    clock.now += 0.25
    store.put([_rec("cam:0:1", 51)])
    assert inner.attempts == 2
    inner.down = False
    clock.now += 0.2
    store.put([_rec("cam:0:1", 52)])
    assert inner.attempts == 3 and inner.get("cam:0:1").frames == 52 and store.pending == 0


def test_the_buffer_is_bounded_and_what_it_drops_is_counted():
    inner = FlakyStore()
    inner.down = True
    store = BufferedTrackStore(inner, max_pending=3, retry_s=0.0)
    store.put([_rec(f"cam:0:{i}", 1, ("start",)) for i in range(5)])
    assert store.pending == 3 and store.stats.dropped == 2 and store.undelivered == 5
    inner.down = False
    store.flush(timeout_s=1.0)
    assert [t.track for t in inner.tracks("cam")] == ["cam:0:2", "cam:0:3", "cam:0:4"]
    assert store.undelivered == 2  # the dropped ones never arrived, and that stays visible


def test_close_gives_up_after_the_drain_time_and_reports_what_is_left():
    inner, clock = FlakyStore(), FakeClock()
    inner.down = True
    store = BufferedTrackStore(inner, retry_s=0.05, drain_s=0.3, clock=clock, sleep=clock.sleep)
    store.put([_rec("cam:0:1", 1), _rec("cam:0:2", 1)])
    start = clock.now
    store.close()
    assert 0.3 - 1e-9 <= clock.now - start < 0.5 and clock.slept  # it waited between tries, on its clock
    assert store.undelivered == 2 and inner.attempts >= 3


class _BlockingStore(FlakyStore):
    """A store whose writes hang (a Redis that stopped answering) until released."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.release = threading.Event(), threading.Event()

    def put(self, records):
        self.entered.set()
        self.release.wait(30)
        return super().put(records)


def test_a_write_stuck_on_the_network_does_not_stall_the_other_streams():
    """Regression: the shared buffer held its lock across network I/O (and slept under it),
    so during an outage every stream of a replica stalled on each retry."""
    inner = _BlockingStore()
    store = BufferedTrackStore(inner)
    stuck = threading.Thread(target=store.put, args=([_rec("cam:0:1", 1, ("start",))],))
    stuck.start()
    assert inner.entered.wait(30)
    other = threading.Thread(target=lambda: (store.put([_rec("hall:0:1", 1, ("start",))]), store.record("cam:0:1")))
    other.start()
    other.join(30)
    try:
        assert not other.is_alive()  # buffered and returned while the first write hangs
        assert stuck.is_alive() and store.pending == 2
    finally:
        inner.release.set()
        stuck.join(30)
    assert store.flush(timeout_s=5.0) and inner.get("hall:0:1") is not None and inner.get("cam:0:1") is not None


def test_a_batch_that_fails_goes_back_under_the_writes_made_while_it_was_sent():
    inner = _BlockingStore()
    store = BufferedTrackStore(inner, retry_s=0.0)
    inner.down = True
    stuck = threading.Thread(target=store.put, args=([_rec("cam:0:1", 1, ("start",))],))
    stuck.start()
    assert inner.entered.wait(30)
    store.put([_rec("cam:0:1", 2, ("estimate",))])  # arrives while version 1 is on the wire
    inner.release.set()
    stuck.join(30)
    assert store.pending == 1 and store.record("cam:0:1").version == 2
    inner.down = False
    assert store.flush(timeout_s=5.0)
    assert [e["event"] for e in inner.events("cam")] == ["start", "estimate"] and inner.get("cam:0:1").frames == 2
