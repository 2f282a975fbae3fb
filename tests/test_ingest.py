"""Ingest without Ray: leases in a real Redis, streams from a real RTSP camera, the real
detectors, estimates that come back later on another thread."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from conftest import RtspCamera, wait_until
from tracklens.pipeline.config import ServeConfig
from tracklens.pipeline.demographics import count
from tracklens.pipeline.service.control import ControlPlane, Owner, Snapshot, StreamSpec
from tracklens.pipeline.service.ingest import IngestNode
from tracklens.pipeline.store import TrackRecord

pytestmark = pytest.mark.integration


class LateEstimator:
    """``submit`` for the nodes: the real specialist, answering after ``delay_s`` on its own
    thread, as the router does; ``fail`` makes every batch fail."""

    def __init__(self, estimator, delay_s: float = 0.3) -> None:
        self.estimator, self.delay_s, self.fail = estimator, delay_s, False
        self.batches = 0

    def __call__(self, crops, done) -> None:
        def answer() -> None:
            time.sleep(self.delay_s)
            self.batches += 1
            done(crops, None if self.fail else self.estimator.estimate(crops))

        threading.Thread(target=answer, daemon=True).start()


@pytest.fixture(scope="module")
def parts(models):
    from tracklens.pipeline.config import SpecialistEstimatorConfig
    from tracklens.pipeline.detectors import build_detector
    from tracklens.pipeline.estimators import build_estimator

    config = ServeConfig()
    detectors = (build_detector(config.detection.person, models), build_detector(config.detection.face, models))
    return detectors, build_estimator(SpecialistEstimatorConfig(), models)


@pytest.fixture()
def env(redis_url, parts):
    from tracklens.pipeline.store import build_store

    prefix = f"t{uuid.uuid4().hex[:6]}"
    config = ServeConfig.model_validate(
        {"store": {"url": redis_url, "prefix": prefix},
         "ingest": {"lease_s": 1.5, "renew_s": 0.3, "snapshot_s": 0.5, "status_s": 0.3, "end_grace_s": 5.0}}
    )  # fmt: skip
    detectors, estimator = parts
    control = ControlPlane(redis_url, prefix)
    store = build_store(config.store)
    submit = LateEstimator(estimator)
    nodes = []

    def node(name: str) -> IngestNode:
        n = IngestNode(config, detectors, store, control, submit, Owner.here(name), "specialist only").start()
        nodes.append(n)
        return n

    yield config, control, store, submit, node
    for n in nodes:
        n.shutdown()
    store.close()
    control.close()


def test_a_stream_runs_where_it_is_claimed_and_deleting_it_ends_its_tracks(env, rtsp_camera):
    config, control, store, submit, node = env
    a = node("a")
    control.add(StreamSpec(id="door", kind="stream", url=rtsp_camera.url()))
    status = wait_until(lambda: (s := control.status("door")) and s.state == "live" and s.frames_analysed > 20 and s)
    assert status.owner == a.owner and status.fps > 0 and control.owner("door") == a.owner.id
    estimated = wait_until(lambda: [t for t in store.tracks("door") if t.sources.get("specialist")])
    assert estimated[0].track.startswith("door:0:")
    control.remove("door")
    wait_until(lambda: "door" not in a.workers)  # ended, written, forgotten
    tracks = store.tracks("door")
    assert tracks and all(t.state == "ended" for t in tracks)
    assert control.status("door") is None and control.owner("door") is None
    events = [e["event"] for e in store.events("door", count=1000)]
    assert events.count("start") == events.count("end") == len(tracks)


def test_a_stream_whose_owner_dies_is_taken_over_with_the_same_track_keys(env, tmp_path):
    """The owner stops renewing (as if its process died): after the lease runs out the other
    node claims the stream, restores the snapshot and goes on; the person, who barely moves
    in this scene, keeps the track key they had."""
    config, control, store, submit, node = env
    camera = RtspCamera(tmp_path / "cam", period_s=900.0).start()  # a person standing nearly still
    try:
        a = node("a")
        control.add(StreamSpec(id="hall", kind="stream", url=camera.url()))
        (before,) = wait_until(lambda: [t for t in store.tracks("hall") if t.frames > 20])
        a._stop.set()  # the lease loop dies with the process: no renewals, no release
        a._thread.join()
        for worker in a.workers.values():
            worker.stop("handover")
        b = node("b")
        wait_until(lambda: (s := control.status("hall")) and s.owner == b.owner and s.frames_analysed > 20)
        after = wait_until(lambda: [t for t in store.tracks("hall") if t.track == before.track and t.frames > before.frames + 20])
        assert after[0].state == "active" and after[0].first_seen == before.first_seen
        assert {t.track.split(":")[1] for t in store.tracks("hall")} == {"0"}  # one epoch: no restart from scratch
        control.remove("hall")
        wait_until(lambda: "hall" not in b.workers)
        tracks = store.tracks("hall")
        assert all(t.state == "ended" for t in tracks)
        # demographics: every track counted once, with its final labels, whichever owner ended it
        span = (min(t.first_seen for t in tracks) - 1, max(t.first_seen for t in tracks) + 1)
        counted = store.demographics("hall", 900, *span)
        assert sum(b.people for b in counted) == len(tracks) and counted == count(tracks, 900, *span)
    finally:
        camera.stop()


def test_a_stream_deleted_after_its_owner_died_has_its_tracks_ended_by_another_replica(env, rtsp_camera):
    """Regression: the owner died with tracks open and the stream was deleted before anyone took
    it over; nobody claims a deleted stream, so its tracks stayed active for ever (counted in
    view and in the demographics). The next replica ends them once the lease has expired."""
    config, control, store, submit, node = env
    a = node("a")
    control.add(StreamSpec(id="porch", kind="stream", url=rtsp_camera.url()))
    wait_until(lambda: [t for t in store.active("porch") if t.frames > 5])
    a._stop.set()  # the owner's process dies: no renewals, no release, no end written
    a._thread.join()
    for worker in a.workers.values():
        worker.stop("handover")
        worker.join(10)
    left_open = {t.track for t in store.active("porch")}
    assert left_open, "the dead owner left no open track to end"
    control.remove("porch")
    assert control.retired() == {"porch"}
    b = node("b")
    wait_until(lambda: not store.active("porch") and not control.retired())
    tracks = {t.track: t for t in store.tracks("porch")}
    assert left_open <= set(tracks) and all(t.state == "ended" for t in tracks.values())
    assert "porch" not in b.workers and control.owner("porch") is None and control.status("porch") is None
    events = [e["event"] for e in store.events("porch", count=1000)]
    assert events.count("start") == events.count("end") == len(tracks)


def test_a_paused_owner_cannot_overwrite_the_stream_once_another_has_claimed_it(env, rtsp_camera, redis_url):
    """Regression: a worker that lost its lease kept writing until its next renewal check, and
    on hand-over saved its snapshot unconditionally over the state the new owner had restored.
    Now every owner write is fenced by its claim token. Owner "a" pauses (its lease loop stops:
    a long GC pause, a partition); "b", whose clock is past a's lease (injected, no sleep),
    claims the stream and saves its snapshot; "a" resumes: its writes are refused and counted,
    it stops without writing more, and b's state stays."""
    config, control, store, submit, node = env
    a = node("a")
    spec = control.add(StreamSpec(id="lobby", kind="stream", url=rtsp_camera.url()))
    wait_until(lambda: (s := control.status("lobby")) and s.state == "live" and s.frames_analysed > 10)
    old = a.workers["lobby"]
    wait_until(lambda: control.load_snapshot("lobby", spec.generation) is not None)
    a._stop.set()  # a pauses: no renewals, no lease checks; its worker goes on writing
    a._thread.join()
    later = ControlPlane(redis_url, config.store.prefix, clock=lambda: time.time() + 2 * config.ingest.lease_s)
    token = later.claim("lobby", "b", config.ingest.lease_s)
    assert token is not None and token > old.token
    restored = later.load_snapshot("lobby", spec.generation)
    assert later.save_snapshot("lobby", Snapshot(generation=spec.generation, token=token, state=restored.state))
    wait_until(lambda: old.finished.is_set())  # its next status write was refused: it stopped
    saved = control.load_snapshot("lobby", spec.generation)
    assert saved.token == token and saved.state == restored.state
    assert not control.save_snapshot("lobby", Snapshot(generation=spec.generation, token=old.token, state={}))
    assert not control.renew("lobby", a.owner.id, old.token, config.ingest.lease_s)
    (track,) = wait_until(lambda: store.tracks("lobby"))[:1]
    before = store.record(track.track)
    refused = store.inner.refused
    stale = TrackRecord(before.key, before.stream, before.version + 1, before.summary, before.state, ("estimate",))
    assert old.store.put([stale]) == 0  # a's own store view carries its (stale) claim
    assert store.inner.refused == refused + 1 and store.record(track.track).version == before.version
    later.close()


def test_a_stored_url_with_crlf_fails_its_stream_and_never_reaches_redis(env, redis_url):
    """Regression: a stream URL with CR/LF made the RTSP client send its request lines to the
    service's own Redis, which ran them. A spec stored by any path (not only the API) is parsed
    again before the worker connects: the stream fails with a clear error, nothing is sent."""
    import redis

    config, control, store, submit, node = env
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    key = f"injected-{uuid.uuid4().hex[:8]}"
    control.add(StreamSpec(id="evil", kind="stream", url=f"rtsp://127.0.0.1:{port}/a\r\nSET {key} v\r\nX: y"))
    node("a")
    status = wait_until(lambda: (s := control.status("evil")) and s.state == "failed" and s)
    assert "control character" in status.last_error and "SET" not in status.last_error
    assert redis.Redis.from_url(redis_url).exists(key) == 0


def test_a_stream_deleted_and_added_again_at_once_is_restarted_as_the_new_one(env, rtsp_camera):
    """Regression: delete and re-add of a name within about a second kept the old stream
    running with the old settings (the ingest checked only that the id existed). The new
    spec is a new generation: the old worker ends its tracks, a new one runs the new spec."""
    config, control, store, submit, node = env
    a = node("a")
    first = control.add(StreamSpec(id="gate", kind="stream", url=rtsp_camera.url()))
    wait_until(lambda: (s := control.status("gate", first.generation)) and s.state == "live" and s.frames_analysed > 10)
    old = a.workers["gate"]
    control.remove("gate")
    second = control.add(StreamSpec(id="gate", kind="stream", url=rtsp_camera.url(), options={"fps": 5}))
    assert second.generation != first.generation
    wait_until(lambda: old.finished.is_set())
    new = wait_until(lambda: (w := a.workers.get("gate")) is not None and w is not old and w)
    assert new.spec.generation == second.generation and new.spec.options.fps == 5
    wait_until(lambda: (s := control.status("gate", second.generation)) and s.state == "live")
    epochs = {t.track.split(":")[1]: t.state for t in store.tracks("gate") if t.track.split(":")[1] == "0"}
    assert set(epochs.values()) <= {"ended"}  # the first generation's tracks were all ended
    control.remove("gate")
    wait_until(lambda: "gate" not in a.workers)


def test_a_file_job_reports_progress_and_its_result(env, sample_video):
    config, control, store, submit, node = env
    node("a")
    control.add(StreamSpec(id="job1", kind="job", url=str(sample_video)))
    seen = []
    result = wait_until(lambda: seen.append(control.status("job1")) or control.result("job1"))
    progress = [s.progress for s in seen if s is not None and s.progress is not None]
    assert progress and progress == sorted(progress)
    assert result.state == "done" and result.tracks >= 1 and result.frames == 40
    status = control.status("job1")
    assert status.state == "done" and status.progress == 1.0 and status.frames_expected == 40
    assert control.spec("job1") is None and control.job("job1").url == str(sample_video)  # done, and still on record
    tracks = store.tracks("job1")
    assert tracks and all(t.state == "ended" for t in tracks) and any(t.sources.get("specialist") for t in tracks)


def test_a_cancelled_job_stops_writes_its_tracks_so_far_and_says_cancelled(env, tmp_path):
    """Regression: jobs could not be cancelled, so a wrong job held an ingest slot until its end."""
    from tracklens.pipeline.sample import make_sample_video

    config, control, store, submit, node = env
    video = make_sample_video(tmp_path / "long.mp4", seconds=60.0, width=640, height=360, person_px=150)  # 600 analysed frames: far longer than the test
    a = node("a")
    control.add(StreamSpec(id="long", kind="job", url=str(video)))
    wait_until(lambda: (s := control.status("long")) and s.frames_analysed >= 16)
    assert control.remove("long")  # what DELETE /v1/jobs/long does
    result = wait_until(lambda: control.result("long"))
    assert result.state == "cancelled" and 16 <= result.frames < 600
    assert control.status("long").state == "cancelled" and control.job("long") is not None
    assert all(t.state == "ended" for t in store.tracks("long"))
    wait_until(lambda: "long" not in a.workers)


def test_a_file_job_taken_over_goes_on_after_the_frame_its_snapshot_saw(env, tmp_path):
    """Regression: a job taken over read its file again from the first frame with the tracker
    restored from later on, so the people already seen came back as new tracks and frames were
    counted twice. Its snapshot now says where it was, and the new owner goes on from there:
    the same frames, track ids and counts as a run nobody interrupted."""
    from tracklens.pipeline.sample import make_sample_video

    config, control, store, submit, node = env
    video = make_sample_video(tmp_path / "job.mp4", seconds=12.0, width=640, height=360, person_px=150)
    a = node("a")
    control.add(StreamSpec(id="whole", kind="job", url=str(video)))
    whole = wait_until(lambda: control.result("whole"), timeout_s=120)
    spec = control.add(StreamSpec(id="split", kind="job", url=str(video)))
    saved = wait_until(lambda: (s := control.load_snapshot("split", spec.generation)) and s.job.frame >= 40 and s)
    a._stop.set()  # a dies: no renewals, and its worker writes nothing more
    a._thread.join()
    for worker in a.workers.values():
        worker.stop("fenced")
    b = node("b")
    split = wait_until(lambda: control.result("split"), timeout_s=120)
    assert control.status("split").owner == b.owner, "a finished the job before it was stopped"
    assert saved.job.frames_analysed > 0 and split.state == whole.state == "done"
    assert split.frames == whole.frames  # every frame counted once (those after the snapshot were analysed twice)
    assert split.tracks == whole.tracks >= 1 and split.seconds >= saved.job.seconds
    def ids(stream: str) -> list[str]:  # epoch and track id, without the stream
        return sorted(t.track.split(":", 1)[1] for t in store.tracks(stream))

    assert ids("split") == ids("whole")
    assert all(t.state == "ended" for t in store.tracks("split"))


def test_tracks_still_end_when_their_estimates_never_come(env, sample_video):
    config, control, store, submit, node = env
    submit.fail = True
    node("a")
    control.add(StreamSpec(id="job2", kind="job", url=str(sample_video)))
    result = wait_until(lambda: control.result("job2"))
    assert result.state == "done" and submit.batches >= 1
    tracks = store.tracks("job2")
    assert tracks and all(t.state == "ended" and not t.sources for t in tracks)


def test_streams_spread_over_the_replicas(env, rtsp_camera):
    """Two replicas, two streams: each runs one (their own process and cores in the service),
    not the first replica both."""
    config, control, store, submit, node = env
    a, b = node("a"), node("b")
    wait_until(lambda: control.live_replicas() == 2)
    for name in ("left", "right"):
        control.add(StreamSpec(id=name, kind="stream", url=rtsp_camera.url()))
    owners = wait_until(lambda: (o := {control.owner("left"), control.owner("right")}) and None not in o and o)
    assert owners == {a.owner.id, b.owner.id}
    for name in ("left", "right"):
        control.remove(name)
    wait_until(lambda: not a.workers and not b.workers)


def test_face_crops_are_kept_only_when_switched_on_and_expire_with_their_track(env, sample_video, redis_url):
    config, control, store, submit, node = env
    a = node("a")
    control.add(StreamSpec(id="plain", kind="job", url=str(sample_video)))
    wait_until(lambda: control.result("plain"))
    prefix = config.store.prefix
    assert control.client.keys(f"{prefix}:ctl:face:*") == []  # off by default: no image stored
    a.shutdown()
    keeping = config.model_copy(update={"ingest": config.ingest.model_copy(update={"store_face_crops": True})})
    other = IngestNode(keeping, a.detectors, store, control, submit, Owner.here("c"), "specialist only").start()
    try:
        control.add(StreamSpec(id="kept", kind="job", url=str(sample_video)))
        wait_until(lambda: control.result("kept"))
        keys = control.client.keys(f"{prefix}:ctl:face:kept:*")
        assert keys and control.client.get(keys[0])[:3] == b"\xff\xd8\xff"  # a JPEG
        assert 0 < control.client.ttl(keys[0]) <= config.store.ended_ttl_s
    finally:
        other.shutdown()


def test_a_stream_rides_out_a_redis_outage(parts, rtsp_camera, tmp_path):
    """Redis goes away for a few seconds (longer than a lease) and comes back with its data:
    the stream keeps being analysed meanwhile (track writes wait in the store's buffer, status
    and snapshots are skipped), then the same worker takes its lapsed lease again (nobody ran
    the stream meanwhile) and goes on with its tracks: no restart, no reconnect to the camera."""
    from conftest import RedisServer
    from tracklens.pipeline.store import build_store

    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    try:
        config = ServeConfig.model_validate(
            {"store": {"url": server.url, "prefix": "out", "retry_s": 0.2, "max_retry_s": 1.0},
             "ingest": {"lease_s": 1.5, "renew_s": 0.3, "snapshot_s": 0.5, "status_s": 0.3}}
        )  # fmt: skip
        detectors, estimator = parts
        control, store = ControlPlane(server.url, "out"), build_store(config.store)
        node = IngestNode(config, detectors, store, control, LateEstimator(estimator), Owner.here("a"), "specialist only").start()
        try:
            control.add(StreamSpec(id="gate", kind="stream", url=rtsp_camera.url()))
            before = wait_until(lambda: (s := control.status("gate")) and s.frames_analysed > 20 and s)
            worker = node.workers["gate"]
            server.stop()
            time.sleep(3.0)
            server.start()
            wait_until(lambda: control.owner("gate") == node.owner.id)
            after = wait_until(lambda: (s := control.status("gate")) and s.frames_analysed > before.frames_analysed + 40 and s)
            assert after.state == "live" and after.reconnects == 0
            assert node.workers["gate"] is worker and not worker.finished.is_set()
            assert wait_until(lambda: (snap := control.load_snapshot("gate", worker.spec.generation)) and snap.token == worker.token)
            assert wait_until(lambda: [t for t in store.tracks("gate") if t.sources.get("specialist")])
        finally:
            node.shutdown()
            store.close()
            control.close()
    finally:
        server.stop()
