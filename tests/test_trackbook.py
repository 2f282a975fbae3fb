"""The track book: estimates whenever they arrive, versions, held ends, bounded memory."""

from __future__ import annotations

import pytest
from tracklens.pipeline.config import AggregationConfig
from tracklens.pipeline.store import MemoryTrackStore
from tracklens.pipeline.trackbook import TrackBook
from tracklens.pipeline.types import EXPRESSIONS, Crop, Estimate, TrackEvent, TrackSpan

CFG = AggregationConfig()
HAPPY = tuple(0.9 if n == "happy" else 0.1 / 6 for n in EXPRESSIONS)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _span(key: str, last: float = 1.0, frames: int = 5) -> TrackSpan:
    return TrackSpan(key, 0.0, last, frames)


def _est(key: str, age: float = 30.0, t: float = 1.0, source: str = "specialist") -> Estimate:
    return Estimate(key, t, source, "m", age=age, age_std=3.0, p_female=0.9, expression=HAPPY, quality=0.8, face_px=80.0)


def _crop(key: str) -> Crop:
    return Crop(key, 1.0, None, None, None, 0.5)


def _book(store=None, **kw):
    clock = Clock()
    ended = []
    book = TrackBook("cam", CFG, store or MemoryTrackStore(), on_track_end=ended.append, clock=clock, **kw)
    return book, clock, ended


def test_writes_only_tracks_that_changed_with_increasing_versions():
    store = MemoryTrackStore()
    book, _, _ = _book(store)
    book.observe([TrackEvent("start", _span("cam:0:1")), TrackEvent("start", _span("cam:0:2"))])
    assert [r.version for r in book.flush()] == [1, 1]
    book.observe([], [_span("cam:0:1", last=2.0, frames=6)])
    (record,) = book.flush()
    assert (record.key, record.version, record.summary.last_seen, record.events) == ("cam:0:1", 2, 2.0, ())
    assert book.flush() == []  # nothing changed: nothing written
    book.apply([_est("cam:0:2")])
    (record,) = book.flush()
    assert (record.key, record.version, record.events) == ("cam:0:2", 2, ("estimate",))
    assert store.get("cam:0:2").age.n == 1


def test_an_end_waits_for_the_estimates_it_asked_for_then_the_track_is_forgotten():
    store = MemoryTrackStore()
    book, clock, ended = _book(store, end_grace_s=10.0)
    book.observe([TrackEvent("start", _span("cam:0:1"))])
    book.requested([_crop("cam:0:1"), _crop("cam:0:1")])
    book.observe([TrackEvent("end", _span("cam:0:1", last=3.0))])
    book.flush()
    assert store.get("cam:0:1").state == "active" and len(book) == 1 and ended == []
    book.apply([_est("cam:0:1", age=30)])
    book.flush()
    assert store.get("cam:0:1").state == "active"  # one answer still out
    book.apply([_est("cam:0:1", age=34)])
    book.flush()
    final = store.get("cam:0:1")
    assert final.state == "ended" and final.age.n == 2 and final.last_seen == 3.0
    assert len(book) == 0 and ended == [final]
    assert [e["event"] for e in store.events("cam")] == ["start", "estimate", "estimate", "end"]


def test_an_end_is_written_anyway_once_its_grace_time_is_over():
    store = MemoryTrackStore()
    book, clock, ended = _book(store, end_grace_s=10.0)
    book.observe([TrackEvent("start", _span("cam:0:1"))])
    book.requested([_crop("cam:0:1")])
    book.observe([TrackEvent("end", _span("cam:0:1"))])
    clock.now = 9.9
    book.flush()
    assert ended == []
    clock.now = 10.0
    book.flush()
    assert len(ended) == 1 and book.stats.ends_timed_out == 1 and store.get("cam:0:1").state == "ended"


def test_an_estimate_after_the_end_was_written_continues_the_stored_record():
    """Late answers (a slow MLLM pool) are not lost: the stored track gains them."""
    store = MemoryTrackStore()
    book, clock, _ = _book(store, end_grace_s=1.0)
    book.observe([TrackEvent("start", _span("cam:0:1"))])
    book.requested([_crop("cam:0:1")])
    book.apply([_est("cam:0:1", age=30)])
    book.observe([TrackEvent("end", _span("cam:0:1"))])
    book.flush()
    before = store.record("cam:0:1")
    assert before.summary.state == "ended" and before.summary.age.n == 1
    book.apply([_est("cam:0:1", age=32, t=0.5)])  # out of order too: older than the first
    after = store.record("cam:0:1")
    assert after.version == before.version + 1 and after.summary.age.n == 2 and after.summary.state == "ended"
    assert after.summary.age.mean == pytest.approx(31.0) and book.stats.late == 1
    book.apply([_est("cam:0:9")])  # never stored (or expired): counted, not invented
    assert book.stats.orphaned == 1 and store.get("cam:0:9") is None
    with pytest.raises(ValueError, match="stream 'cam'"):
        book.apply([_est("other:0:1")])


def test_a_taken_over_stream_continues_its_tracks_from_the_store():
    store = MemoryTrackStore()
    first, _, _ = _book(store)
    first.observe([TrackEvent("start", _span("cam:0:1"))])
    first.apply([_est("cam:0:1", age=30), _est("cam:0:1", age=30)])
    first.flush()
    stored = store.record("cam:0:1")
    second, _, _ = _book(store)
    second.resume([_span("cam:0:1", last=5.0, frames=40), _span("cam:0:2")])
    second.apply([_est("cam:0:1", age=30)])
    records = {r.key: r for r in second.flush()}
    assert records["cam:0:1"].version == stored.version + 1 and records["cam:0:1"].summary.age.n == 3
    assert records["cam:0:2"].version == 1 and records["cam:0:2"].events == ("start",)


def test_each_estimate_reports_what_its_track_is_still_unsure_of():
    """The request policy asks again only for fields still uncertain: one estimate labels
    nothing yet; two settle this track (precise, consistent answers)."""
    book, _, _ = _book()
    book.observe([TrackEvent("start", _span("cam:0:1"))])
    assert book.apply([_est("cam:0:1")]) == {"cam:0:1": frozenset({"age", "gender", "expression"})}
    assert book.apply([_est("cam:0:1")]) == {"cam:0:1": frozenset()}
    assert book.apply([_est("cam:0:1")]) == {"cam:0:1": frozenset()}
    assert book.apply([_est("cam:9:9")]) == {}  # not an open track: nothing to say


def test_each_source_is_weighed_by_its_own_typical_error():
    """Hard answers have no spread: the MLLM's (5 years) and the specialist's (here 10)
    typical errors decide how much each moves the fused age."""
    cfg = AggregationConfig(age_error_years={"mllm": 5.0, "specialist": 10.0}, age_band_min_years=50)
    book = TrackBook("cam", cfg, MemoryTrackStore())
    book.observe([TrackEvent("start", _span("cam:0:1"))])
    hard = [Estimate("cam:0:1", 1.0, "mllm", "m", age=20.0, quality=1.0), Estimate("cam:0:1", 1.0, "specialist", "s", age=40.0, quality=1.0)]
    book.apply(hard)
    # weights 1/25 and 1/100: (20/25 + 40/100) / (1/25 + 1/100) = 24
    assert book.summary("cam:0:1").age.mean == pytest.approx(24.0)
