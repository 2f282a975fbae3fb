"""Live previews: the drawing (the ``--annotate`` drawer on a downscaled frame), and the ingest
worker rendering them only while someone watches, from a real RTSP camera into a real Redis."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest
from conftest import RtspCamera, wait_until
from previews import annotation_pixels, decode_jpeg, grab_frame
from tracklens.pipeline.annotate import label_of
from tracklens.pipeline.preview import PreviewRenderer
from tracklens.pipeline.summary import AgeSummary, ExpressionSummary, GenderSummary, TrackSummary
from tracklens.pipeline.types import Frame, FrameResult, TrackedPerson


def _summary(sources: dict[str, int]) -> TrackSummary:
    return TrackSummary(track="cam:0:12", stream="cam", first_seen=0, last_seen=1, frames=5, state="active",
                        age=AgeSummary(mean=31.6, n=2), gender=GenderSummary(label="female", p_female=0.9, n=2),
                        expression=ExpressionSummary(label="happy", n=2), sources=sources)  # fmt: skip


def test_labels_say_what_is_known_and_which_sources_said_it():
    assert label_of(12, None) == "#12"
    assert label_of(12, _summary({})) == "#12 F 32y happy"
    assert label_of(12, _summary({"specialist": 4})) == "#12 F 32y happy (specialist)"
    assert label_of(12, _summary({"specialist": 4, "mllm": 6})) == "#12 F 32y happy (mllm+specialist)"
    assert label_of(12, _summary({"mllm": 0, "specialist": 1})) == "#12 F 32y happy (specialist)"


def _result(width: int, height: int, box: list[float]) -> FrameResult:
    image = np.full((height, width, 3), 128, np.uint8)
    person = TrackedPerson(key="cam:0:3", track_id=3, box=np.array(box, np.float32), face=None)
    return FrameResult(Frame("cam", 0, 0.0, 0.0, image), [person])


def test_a_preview_is_downscaled_to_its_width_keeps_the_aspect_ratio_and_shows_the_box():
    result = _result(1280, 720, [400, 200, 800, 700])
    preview = decode_jpeg(PreviewRenderer(lambda key: _summary({"specialist": 2}), width_px=640).render(result))
    assert preview.shape == (360, 640, 3)
    raw = np.full((360, 640, 3), 128, np.uint8)
    assert annotation_pixels(preview, raw) > 500
    import supervision as sv

    colour = np.array(sv.ColorPalette.DEFAULT.by_idx(3).as_rgb(), np.int16)
    edge = preview[250:340, 200:202].astype(np.int16)  # the box's left edge, at half scale (x = 400 / 2)
    assert (np.abs(edge - colour) <= 40).all(axis=2).mean() > 0.9
    inside = preview[250:340, 220:380].astype(np.int16)
    assert (np.abs(inside - 128) <= 8).all(axis=2).mean() > 0.95  # the frame itself is not painted over


def test_a_frame_narrower_than_the_preview_is_not_enlarged():
    preview = decode_jpeg(PreviewRenderer(lambda key: None, width_px=640).render(_result(320, 240, [10, 10, 100, 200])))
    assert preview.shape == (240, 320, 3)


@pytest.mark.integration
def test_an_ingest_worker_renders_previews_only_while_someone_watches(redis_url, models, tmp_path):
    """Nobody watches: nothing is drawn or stored. A viewer asks: previews of the latest frames
    come, the camera's aspect ratio, boxes drawn over the picture (more box colour than the
    un-annotated frame has), each kept a short while only. The viewer leaves: they stop."""
    from tracklens.pipeline.config import ServeConfig
    from tracklens.pipeline.detectors import build_detector
    from tracklens.pipeline.service.control import ControlPlane, Owner, StreamSpec
    from tracklens.pipeline.service.ingest import IngestNode
    from tracklens.pipeline.store import build_store

    config = ServeConfig.model_validate(
        {"store": {"url": redis_url, "prefix": f"t{uuid.uuid4().hex[:6]}"},
         "ingest": {"lease_s": 1.5, "renew_s": 0.3, "status_s": 0.3, "preview_width_px": 320, "preview_fps": 4.0,
                    "preview_watch_s": 1.0}}
    )  # fmt: skip
    detectors = (build_detector(config.detection.person, models), build_detector(config.detection.face, models))
    control, store = ControlPlane.from_config(config.store), build_store(config.store)
    camera = RtspCamera(tmp_path / "cam", period_s=900.0).start()  # someone standing nearly still: always in view
    node = IngestNode(config, detectors, store, control, lambda crops, done: done(crops, None), Owner.here("a"), "specialist only").start()
    key = f"{config.store.prefix}:ctl:preview:door"
    try:
        control.add(StreamSpec(id="door", kind="stream", url=camera.url()))
        wait_until(lambda: (s := control.status("door")) and s.state == "live" and s.frames_analysed > 20, timeout_s=90)
        worker = node.workers["door"]
        assert worker._renderer is None and not control.client.exists(key)  # never watched: nothing drawn, nothing kept

        def watched_preview():
            control.watch("door", config.ingest.preview_watch_s)  # a viewer polling
            jpeg, ttl_ms = control.client.pipeline().get(key).pttl(key).execute()  # read together: the key is short-lived
            if jpeg is None:
                return None
            preview = decode_jpeg(jpeg)
            raw = grab_frame(camera.url(), (preview.shape[1], preview.shape[0]))
            return (preview, ttl_ms) if annotation_pixels(preview, raw) > 300 else None

        preview, ttl_ms = wait_until(watched_preview, timeout_s=90, step_s=0.25)
        assert preview.shape == (180, 320, 3)  # the camera's 640x360, at the preview width
        assert 0 < ttl_ms <= 1000  # kept no longer than preview_watch_s
        wait_until(lambda: not control.client.exists(key), timeout_s=30)  # the viewer left: it expires...
        time.sleep(1.0)  # ...and, four preview periods later, no new one was rendered
        assert not control.client.exists(key) and control.status("door").state == "live"
    finally:
        node.shutdown()
        camera.stop()
        store.close()
        control.close()
