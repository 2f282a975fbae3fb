"""The control plane on a real redis-server, its clock injected: leases, fencing tokens,
generations, heartbeats, jobs. No sleeps: time moves when the test moves it."""

from __future__ import annotations

import json
import uuid

import pytest
from tracklens.pipeline.service.control import (
    SNAPSHOT_VERSION,
    ControlPlane,
    Owner,
    Snapshot,
    StreamSpec,
    StreamStatus,
)
from tracklens.pipeline.store import RedisTrackStore, TrackRecord
from tracklens.pipeline.summary import JobResult, TrackSummary

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def plane(redis_url):
    clock = Clock()
    prefix = f"c{uuid.uuid4().hex[:6]}"
    control = ControlPlane(redis_url, prefix, clock=clock)
    yield control, clock, prefix
    control.close()


def test_a_lease_moves_only_after_it_expires_and_the_old_token_is_fenced_out(plane, redis_url):
    control, clock, prefix = plane
    spec = control.add(StreamSpec(id="door", kind="stream", url="rtsp://127.0.0.1:1/cam"))
    a = control.claim("door", "a", lease_s=6)
    assert a and control.claim("door", "b", lease_s=6) is None and control.owner("door") == "a"
    clock.now += 5
    assert control.renew("door", "a", a, lease_s=6)
    clock.now += 5.9
    assert control.claim("door", "b", lease_s=6) is None  # renewed: not expired yet
    clock.now += 0.2
    assert control.owner("door") is None
    b = control.claim("door", "b", lease_s=6)
    assert b and b > a and control.owner("door") == "b"
    # a, paused past its lease, resumes: every write it makes is refused
    assert not control.renew("door", "a", a, lease_s=6)
    assert not control.publish(StreamStatus(id="door", generation=spec.generation, owner=Owner.here("a")), 10, a)
    assert not control.save_snapshot("door", Snapshot(generation=spec.generation, token=a, state={"epoch": 0}))
    control.release("door", a)
    assert control.owner("door") == "b"
    assert control.publish(StreamStatus(id="door", generation=spec.generation, owner=Owner.here("b")), 10, b)
    assert control.status("door").owner == Owner.here("b")
    store = RedisTrackStore(redis_url, prefix)
    summary = TrackSummary(track="door:0:1", stream="door", first_seen=1.0, last_seen=2.0, frames=3, state="active")
    assert store.put([TrackRecord("door:0:1", "door", 1, summary, {}, ("start",), control.fence("door", b))]) == 1
    assert store.put([TrackRecord("door:0:1", "door", 2, summary, {}, ("estimate",), control.fence("door", a))]) == 0
    assert store.refused == 1 and store.record("door:0:1").version == 1
    assert [e["event"] for e in store.events("door")] == ["start"]
    store.close()


def test_a_lapsed_lease_nobody_claimed_is_renewed_in_place(plane):
    """A Redis outage longer than a lease: the holder's token is still the latest, so it goes on."""
    control, clock, _ = plane
    control.add(StreamSpec(id="door", kind="stream", url="rtsp://127.0.0.1:1/cam"))
    a = control.claim("door", "a", lease_s=6)
    clock.now += 60
    assert control.owner("door") is None and control.renew("door", "a", a, lease_s=6) and control.owner("door") == "a"


def test_a_stream_added_again_is_a_new_generation_and_old_state_is_not_restored(plane):
    control, clock, _ = plane
    first = control.add(StreamSpec(id="door", kind="stream", url="rtsp://127.0.0.1:1/cam"))
    assert control.add(StreamSpec(id="door", kind="stream", url="rtsp://127.0.0.1:1/cam")) is None  # taken
    token = control.claim("door", "a", lease_s=6)
    assert control.save_snapshot("door", Snapshot(generation=first.generation, token=token, state={"epoch": 0}))
    assert control.publish(StreamStatus(id="door", generation=first.generation, state="live"), 10, token)
    control.remove("door")
    second = control.add(StreamSpec(id="door", kind="stream", url="rtsp://127.0.0.1:1/cam"))
    assert second.generation != first.generation
    assert control.load_snapshot("door", second.generation) is None and control.status("door", second.generation) is None
    assert control.load_snapshot("door", first.generation).state == {"epoch": 0}
    control.forget("door", token)  # the old owner is done: its lease, status and snapshot go
    assert control.load_snapshot("door", first.generation) is None and control.owner("door") is None


def test_live_replicas_come_from_one_sorted_set_of_heartbeats(plane):
    """Regression: liveness used SCAN over the whole keyspace on every tick of every replica."""
    control, clock, prefix = plane
    assert control.heartbeat("a", ttl_s=6) == 1 and control.heartbeat("b", ttl_s=6) == 2
    clock.now += 4
    assert control.heartbeat("a", ttl_s=6) == 2
    clock.now += 3  # b's heartbeat has run out
    assert control.live_replicas() == 1 and control.heartbeat("a", ttl_s=6) == 1
    assert control.client.keys(f"{prefix}:ctl:replica*") == [f"{prefix}:ctl:replicas".encode()]


def test_jobs_stay_on_record_until_their_retention_and_only_their_owner_finishes_them(plane):
    control, clock, prefix = plane
    job = control.add(StreamSpec(id="j1", kind="job", url="/videos/a.mp4"))
    control.add(StreamSpec(id="j2", kind="job", url="/videos/b.mp4"))
    assert [j.id for j in control.jobs()] == ["j1", "j2"]
    token = control.claim("j1", "a", lease_s=6)
    status = StreamStatus(id="j1", kind="job", generation=job.generation, state="done")
    assert not control.finish_job("j1", JobResult(state="done"), status, 60, token + 1)  # not the owner
    assert control.finish_job("j1", JobResult(state="done", frames=40), status, 60, token)
    assert control.spec("j1") is None and control.job("j1") is not None and control.result("j1").frames == 40
    assert 0 < control.client.pttl(f"{prefix}:ctl:job:j1") <= 60_000
    control.client.delete(f"{prefix}:ctl:job:j1")  # as its retention running out does
    assert [j.id for j in control.jobs()] == ["j2"]


def test_a_status_written_before_owners_were_typed_still_reads(plane):
    """Regression: after the upgrade that typed owners, the statuses older replicas had
    written (kept for days for ended jobs) failed validation and the job list gave a 500."""
    control, clock, prefix = plane
    spec = control.add(StreamSpec(id="j3", kind="job", url="/videos/c.mp4"))
    old = {"id": "j3", "kind": "job", "generation": spec.generation, "state": "done", "owner": "r1@host:42", "node": "n1",
           "frames_analysed": 40, "progress": 1.0}  # fmt: skip
    control.client.set(f"{prefix}:ctl:status:j3", json.dumps(old))
    status = control.status("j3", spec.generation)
    assert status.state == "done" and status.frames_analysed == 40
    assert status.owner.name == "r1@host:42" and status.owner.node == "n1" and status.owner.pid is None
    control.client.set(f"{prefix}:ctl:status:j3", json.dumps({**old, "owner": None, "node": None, "state": "cancelled"}))
    assert control.status("j3").state == "cancelled" and control.status("j3").owner is None


def test_a_snapshot_of_another_layout_is_recognised_and_not_restored(plane):
    """A snapshot saved by an older tracklens (unversioned, or another version) is not
    misread after an upgrade: the stream starts afresh."""
    control, clock, prefix = plane
    spec = control.add(StreamSpec(id="door", kind="stream", url="rtsp://127.0.0.1:1/cam"))
    token = control.claim("door", "a", lease_s=6)
    key = f"{prefix}:ctl:snapshot:door"
    control.client.set(key, json.dumps({"epoch": 0, "tracker": {}, "writer": "old-worker"}))  # before versions
    assert control.load_snapshot("door", spec.generation) is None
    old = Snapshot(version=SNAPSHOT_VERSION - 1, generation=spec.generation, token=token, state={"epoch": 0})
    control.client.set(key, old.model_dump_json())
    assert control.load_snapshot("door", spec.generation) is None
    assert control.save_snapshot("door", Snapshot(generation=spec.generation, token=token, state={"epoch": 3}))
    assert control.load_snapshot("door", spec.generation).state == {"epoch": 3}
