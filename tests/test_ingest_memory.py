"""Memory an ingest process gives back when its streams go.

Regression: one live stream's ingest replica held ~1 GB, and after streams were added and
deleted it stayed at ~1.4 GB. onnxruntime's arenas kept the buffers of the largest calls
they had run for good (a tiled SSDLite scan of 4 queued frames: 20 windows, ~530 MB), and
nothing gave them back when a stream went. The figures are measured in
``bench/ingest_memory.py``; these tests check the mechanisms, not the megabytes.
"""

from __future__ import annotations

import gc
import threading
import uuid
import weakref

import numpy as np
import pytest
from conftest import wait_until
from tracklens.pipeline.config import ServeConfig
from tracklens.pipeline.detectors import build_detector, release_memory

pytestmark = pytest.mark.integration

_SHRINK = "memory.enable_memory_arena_shrinkage"


class _SessionSpy:
    """An onnxruntime session, passed through, recording each call's batch and shrink option."""

    def __init__(self, session) -> None:
        self.session, self.calls = session, []

    def __getattr__(self, name):
        return getattr(self.session, name)

    def run(self, outputs, feed, run_options=None):
        shrink = run_options.get_run_config_entry(_SHRINK) if run_options is not None else None
        self.calls.append((len(next(iter(feed.values()))), shrink))
        return self.session.run(outputs, feed, run_options)


@pytest.fixture(scope="module")
def detectors(models):
    config = ServeConfig()
    return build_detector(config.detection.person, models), build_detector(config.detection.face, models)


@pytest.fixture()
def frames(astronaut):
    """Four 640x360 frames of the astronaut (a person, a face) at different places."""
    import cv2

    person = cv2.resize(astronaut, (300, 300), interpolation=cv2.INTER_AREA)
    out = []
    for x in (0, 110, 220, 340):
        frame = np.full((360, 640, 3), 90, np.uint8)
        frame[30:330, x : x + 300] = person
        out.append(frame)
    return out


def test_person_scans_of_queued_frames_run_in_small_calls_with_the_same_boxes(detectors, frames):
    """Regression: the tiled scans of every frame of a batch ran as one call (4 queued frames:
    20 windows), and onnxruntime's arena kept that call's ~530 MB for good. On CPU a call now
    takes at most one tiled frame's windows, and finds the same people."""
    person, _ = detectors
    spy, cap = _SessionSpy(person._session), person._max_windows
    person._session = spy
    try:
        small = person.detect(frames)
        person._max_windows = None  # one call, as before
        whole = person.detect(frames)
    finally:
        person._session, person._max_windows = spy.session, cap
    sizes = [n for n, _ in spy.calls]
    assert sizes[:-1] and max(sizes[:-1]) <= 5 and sum(sizes[:-1]) == sizes[-1] == 20
    assert all(len(d) for d in small)  # the astronaut is found in every frame
    for a, b in zip(small, whole):
        assert np.allclose(a.xyxy, b.xyxy, atol=1e-2) and np.allclose(a.confidence, b.confidence, atol=1e-4)


def test_releasing_runs_one_shrinking_call_per_session_and_the_detectors_still_work(detectors, frames):
    person, face = detectors
    before = [d.detect(frames[:1])[0] for d in detectors]
    spies = [_SessionSpy(person._session), _SessionSpy(face._session)]
    person._session, face._session = spies
    try:
        release_memory(detectors)
    finally:
        person._session, face._session = (s.session for s in spies)
    for spy in spies:
        assert len(spy.calls) == 1 and spy.calls[0] == (1, "cpu:0")
    after = [d.detect(frames[:1])[0] for d in detectors]
    for a, b in zip(before, after):
        assert len(a) and np.array_equal(a.xyxy, b.xyxy)


def test_releasing_skips_detectors_without_arenas_and_survives_one_that_fails(detectors, caplog):
    class Failing:
        def release_memory(self) -> None:
            raise RuntimeError("onnxruntime said no")

    release_memory([object(), Failing(), *detectors])  # no exception
    assert "Failing kept its buffers: onnxruntime said no" in caplog.text


def test_a_closed_live_source_lets_go_of_its_queued_frames(rtsp_camera):
    from tracklens.pipeline.sources import LiveSource

    source = LiveSource(rtsp_camera.url(), stream="q")
    try:
        source.wait_live()
        wait_until(lambda: source.queued > 0)  # nobody reads: frames pile up to queue_frames
    finally:
        source.close()
    assert source.queued == 0


class _CountingDetector:
    """A real detector, passed through, counting ``release_memory`` calls."""

    def __init__(self, detector) -> None:
        self.inner, self.releases = detector, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def release_memory(self) -> None:
        self.releases += 1
        self.inner.release_memory()


def test_a_deleted_stream_leaves_nothing_behind_and_the_detectors_are_released(detectors, redis_url, rtsp_camera):
    """Once the node drops a deleted stream's worker: the worker, its perception, track book and
    live source are garbage (nothing else holds them), its threads have ended, and the shared
    detectors were asked to give back their peak buffers."""
    from tracklens.pipeline.service.control import ControlPlane, Owner, StreamSpec
    from tracklens.pipeline.service.ingest import IngestNode
    from tracklens.pipeline.store import build_store

    prefix = f"m{uuid.uuid4().hex[:6]}"
    config = ServeConfig.model_validate(
        {"store": {"url": redis_url, "prefix": prefix}, "ingest": {"lease_s": 1.5, "renew_s": 0.3, "end_grace_s": 1.0}}
    )
    counted = tuple(_CountingDetector(d) for d in detectors)
    control, store = ControlPlane(redis_url, prefix), build_store(config.store)
    node = IngestNode(config, counted, store, control, lambda crops, done: done(crops, None), Owner.here("a"), "specialist only").start()
    try:
        control.add(StreamSpec(id="gone", kind="stream", url=rtsp_camera.url()))
        worker = wait_until(lambda: (w := node.workers.get("gone")) is not None and w.driver is not None and w)
        wait_until(lambda: (s := control.status("gone")) and s.frames_analysed > 5)
        refs = [weakref.ref(o) for o in (worker, worker.driver, worker.driver.perception, worker.driver.book, worker._source)]
        del worker
        control.remove("gone")
        wait_until(lambda: "gone" not in node.workers)

        def all_gone() -> bool:
            gc.collect()
            threads = [t for t in threading.enumerate() if t.name in ("live-gone", "ingest-gone")]
            return not threads and all(r() is None for r in refs)

        wait_until(all_gone, timeout_s=10.0)
        assert all(d.releases >= 1 for d in counted)
    finally:
        node.shutdown()
        store.close()
        control.close()
