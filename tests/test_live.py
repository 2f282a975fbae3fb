"""Live sources against a real RTSP server (GStreamer's gst-rtsp-server): the rate cap, never
falling behind, reconnecting after the server dies, credentials kept out of every message."""

from __future__ import annotations

import json
import logging
import signal
import time

import pytest
from conftest import RtspCamera, progress_frames, read_until, start_analyze
from tracklens.pipeline.config import LiveSourceConfig
from tracklens.pipeline.errors import InputError
from tracklens.pipeline.sources import LiveSource, open_source

pytestmark = pytest.mark.integration

FAST = LiveSourceConfig(reconnect_s=0.2, max_reconnect_s=1.0, read_timeout_s=3.0, open_timeout_s=3.0)


def _take(source, n: int) -> list:
    frames = []
    for frame in source:
        frames.append(frame)
        if len(frames) == n:
            break
    return frames


def _wait(predicate, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_frames_come_at_the_capped_rate_with_wall_clock_times(rtsp_camera):
    with open_source(rtsp_camera.url(), stream="cam", fps=5.0, live=FAST) as source:
        frames = _take(source, 15)
        stats = source.stats
    assert stats.state in ("live", "stopped") and stats.frames_analysed == 15
    gaps = [b.pts - a.pts for a, b in zip(frames, frames[1:])]
    assert 0.15 < sum(gaps) / len(gaps) < 0.3  # 5 fps of a 25 fps camera
    assert abs(frames[-1].wall_time - time.time()) < 5.0 and frames[0].image.shape == (360, 640, 3)
    assert stats.frames_decoded > 3 * stats.frames_analysed  # every frame decoded, a fifth handed on


def test_a_slow_consumer_gets_recent_frames_and_the_drops_are_counted(rtsp_camera):
    with open_source(rtsp_camera.url(), stream="cam", fps=10.0, live=FAST) as source:
        _take(source, 1)
        time.sleep(2.0)  # analysis stalls for 2 s: 20 frames were due, the queue holds 4
        (frame,) = _take(source, 1)
        stats = source.stats
    assert stats.frames_dropped >= 12
    assert time.time() - frame.wall_time < 1.0  # not 2 s old: the oldest frames went first


def test_the_server_dying_is_a_disconnect_and_the_source_comes_back_by_itself(tmp_path):
    camera = RtspCamera(tmp_path / "cam").start()
    try:
        source = open_source(camera.url(), stream="cam", fps=10.0, live=FAST)
        _take(source, 5)
        camera.stop()
        assert _wait(lambda: source.stats.state == "reconnecting")
        assert source.stats.last_error
        time.sleep(1.0)
        camera.start()
        assert _wait(lambda: source.stats.state == "live")
        before = source.stats.frames_analysed
        _take(source, 5)
        stats = source.stats
        assert stats.reconnects >= 1 and stats.frames_analysed == before + 5
        source.close()
        assert source.stats.state == "stopped"
    finally:
        camera.stop()


def test_a_source_gives_up_after_its_longest_outage_and_says_why(tmp_path):
    camera = RtspCamera(tmp_path / "cam").start()
    source = open_source(camera.url(), stream="cam", fps=10.0, live=FAST.model_copy(update={"max_outage_s": 1.5}))
    camera.stop()
    frames = list(source)  # ends by itself once the source gives up
    assert source.stats.state == "failed" and "gave up after 1.5 s" in source.error
    assert len(frames) < 40
    source.close()


def test_close_ends_a_reconnecting_source_at_once(tmp_path):
    camera = RtspCamera(tmp_path / "cam").start()
    source = open_source(camera.url(), stream="cam", fps=10.0, live=FAST)
    camera.stop()
    assert _wait(lambda: source.stats.state == "reconnecting")
    t0 = time.monotonic()
    source.stop()
    assert list(source) == [] and time.monotonic() - t0 < 1.0
    source.close()


def test_credentials_never_appear_in_errors_states_or_logs(tmp_path, caplog):
    camera = RtspCamera(tmp_path / "cam", user="admin", password="pa55word").start()
    caplog.set_level(logging.DEBUG, logger="tracklens")
    try:
        with open_source(camera.url(), stream="cam", fps=10.0, live=FAST) as source:
            assert len(_take(source, 3)) == 3  # the right password works
        wrong = camera.url().replace("pa55word", "wr0ngpa55")
        with pytest.raises(InputError) as err:
            open_source(wrong, stream="cam", fps=10.0, live=FAST)
        message = str(err.value)
        assert "rtsp://***@127.0.0.1" in message and "wr0ngpa55" not in message and "admin" not in message
        source = LiveSource(wrong, stream="cam", config=FAST)
        assert _wait(lambda: source.stats.reconnects >= 1)
        source.close()
        assert "wr0ngpa55" not in json.dumps(source.stats.to_dict())
        assert "wr0ngpa55" not in caplog.text and "pa55word" not in caplog.text
    finally:
        camera.stop()


def test_unreachable_camera_is_one_clear_error_before_any_work():
    with pytest.raises(InputError, match=r"cannot open the live stream rtsp://127.0.0.1:1/cam: Connection refused"):
        open_source("rtsp://127.0.0.1:1/cam", live=FAST)


def test_analyze_a_camera_until_ctrl_c(tmp_path, rtsp_camera):
    """`tracklens analyze rtsp://...` runs until it is stopped, then writes its tracks."""
    out = tmp_path / "out"
    proc = start_analyze(rtsp_camera.url(), "--out", str(out), "--stream", "cam1")
    seen = read_until(proc, lambda text: progress_frames(text) >= 60)
    proc.send_signal(signal.SIGINT)
    stdout, rest = proc.communicate(timeout=120)
    assert proc.returncode == 130, seen + rest
    tracks = [json.loads(line) for line in (out / "tracks.jsonl").read_text().splitlines()]
    assert tracks and all(t["state"] == "ended" and t["track"].startswith("cam1:") for t in tracks)
    assert all(t["first_seen"] > 1e9 for t in tracks)  # live tracks carry wall-clock times
    assert any(t["sources"].get("specialist", 0) >= 1 for t in tracks)
