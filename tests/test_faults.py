"""Faults during a run, with the real parts: a redis-server stopped and restarted, signals
from the process manager, a full disk, a bug. In each, nothing analysed is lost.

The runs are real ``tracklens analyze`` processes on the 8 s demo video (80 analysed
frames). Faults are injected at a point read from the run's own progress output, never
after a fixed sleep, so the tests do not depend on the machine's speed.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import RedisServer, progress_frames, read_until, start_analyze

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    from tracklens.pipeline.sample import make_sample_video

    return make_sample_video(tmp_path_factory.mktemp("media") / "walk.mp4", seconds=8.0)


def _tracks(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _assert_playable(path: Path, frames: int) -> None:
    import av

    with av.open(str(path)) as container:
        assert sum(1 for _ in container.decode(video=0)) == frames


def _frames_analysed(stderr: str) -> int:
    return int(re.search(r"(\d+) frames analysed", stderr).group(1))


def test_a_redis_restart_during_a_run_loses_nothing(tmp_path, video):
    """Redis goes away after a few frames and comes back (with its data, as a server with
    persistence does): the run goes on, buffers its writes, delivers them on return, and
    Redis ends up with every track exactly as tracks.jsonl has it."""
    server = RedisServer(tmp_path / "redis-data", appendonly=True)
    (tmp_path / "redis-data").mkdir()
    server.start()
    try:
        out = tmp_path / "out"
        proc = start_analyze(str(video), "--out", str(out), "--redis-url", server.url, "--stream", "outage")
        seen = read_until(proc, lambda s: progress_frames(s) >= 9)
        server.stop()
        seen += read_until(proc, lambda s: "buffering track writes" in s)
        assert progress_frames(seen) < 80, "the run ended before the outage began"
        time.sleep(0.5)
        server.start()
        _, rest = proc.communicate(timeout=300)
        stderr = seen + rest
        assert proc.returncode == 0, stderr
        assert "cannot reach Redis" in stderr and "the store is back" in stderr and "Traceback" not in stderr
        tracks = _tracks(out / "tracks.jsonl")
        assert tracks and all(t["state"] == "ended" for t in tracks)
        from tracklens.pipeline.store import RedisTrackStore

        store = RedisTrackStore(server.url)
        for t in tracks:
            assert store.get(t["track"]).model_dump() == t
            events = [e["event"] for e in store.events("outage") if e["track"] == t["track"]]
            assert events[0] == "start" and events[-1] == "end"
        assert [t.track for t in store.tracks("outage")] == sorted(t["track"] for t in tracks)
        store.close()
    finally:
        server.stop()


def test_redis_still_down_at_the_end_keeps_the_local_output_and_says_what_did_not_arrive(tmp_path, video):
    server = RedisServer(tmp_path / "redis-data")
    (tmp_path / "redis-data").mkdir()
    server.start()
    config = tmp_path / "c.yaml"
    config.write_text(f"store: {{type: redis, url: '{server.url}', drain_s: 1.0}}\n")
    out = tmp_path / "out"
    try:
        proc = start_analyze(str(video), "--out", str(out), "--config", str(config))
        seen = read_until(proc, lambda s: progress_frames(s) >= 9)
    finally:
        server.stop()
    _, rest = proc.communicate(timeout=300)
    stderr = seen + rest
    assert proc.returncode == 1, stderr
    (line,) = [x for x in stderr.splitlines() if x.startswith("tracklens: error:")]
    assert "did not reach Redis" in line and "Connection refused" in line and "tracks.jsonl has every track" in line
    tracks = _tracks(out / "tracks.jsonl")
    assert len(tracks) == 1 and tracks[0]["state"] == "ended" and tracks[0]["last_seen"] > 7.0


@pytest.mark.parametrize(
    "signals, status, said",
    [
        ((signal.SIGTERM, signal.SIGTERM, signal.SIGINT), 143, "terminated (SIGTERM)"),
        ((signal.SIGINT, signal.SIGINT), 130, "interrupted"),
    ],
    ids=["sigterm-then-more", "ctrl-c-twice"],
)
def test_a_signal_mid_run_keeps_everything_and_more_signals_do_not_cut_the_writing(tmp_path, video, redis_url, signals, status, said):
    """What docker/systemd/Kubernetes send (SIGTERM), or an impatient double Ctrl-C: the run
    stops, ends its open tracks, writes tracks.jsonl, finishes a playable annotated video and
    ends the tracks in Redis with their retention TTL."""
    out = tmp_path / "out"
    stream = f"sig{status}"
    proc = start_analyze(str(video), "--out", str(out), "--annotate", str(out / "a.mp4"), "--redis-url", redis_url, "--stream", stream)
    seen = read_until(proc, lambda s: progress_frames(s) >= 17)
    for sig in signals:
        proc.send_signal(sig)
        time.sleep(0.05)
    _, rest = proc.communicate(timeout=300)
    stderr = seen + rest
    assert proc.returncode == status, stderr
    assert "Traceback" not in stderr and f"tracklens: {said}; the tracks up to that point were kept" in stderr
    analysed = _frames_analysed(stderr)
    assert 17 <= analysed < 80
    (track,) = _tracks(out / "tracks.jsonl")
    assert track["state"] == "ended" and track["last_seen"] < 7.9
    _assert_playable(out / "a.mp4", analysed)
    assert not list(out.glob("*.partial*"))
    import redis

    client = redis.Redis.from_url(redis_url)
    stored = json.loads(client.hget(f"tl:track:{track['track']}", "summary"))
    assert stored == track and 0 < client.ttl(f"tl:track:{track['track']}") <= 7 * 24 * 3600
    client.close()


def _file_size_limit(limit: int):
    """For the child: files may not grow past ``limit`` bytes, as on a full disk (EFBIG
    instead of the default SIGXFSZ that would kill it)."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_under_the_annotated_video_stops_the_run_and_keeps_the_tracks(tmp_path, video, redis_url):
    out = tmp_path / "out"
    proc = start_analyze(str(video), "--out", str(out), "--annotate", str(out / "a.mp4"), "--redis-url", redis_url,
                  "--stream", "diskfull", "--no-progress", preexec_fn=_file_size_limit(400_000))  # fmt: skip
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr
    (line,) = [x for x in stderr.splitlines() if x.startswith("tracklens: error:")]
    assert "cannot write the annotated video" in line and "File too large" in line and "the run stopped there" in line
    (track,) = _tracks(out / "tracks.jsonl")
    assert track["state"] == "ended" and track["last_seen"] < 7.0
    assert not (out / "a.mp4").exists() and not list(out.glob("*.mp4"))  # no unplayable file left behind


def test_a_tracks_file_that_cannot_be_written_is_reported_and_redis_still_has_the_tracks(tmp_path, video, redis_url):
    out = tmp_path / "out"
    (out).mkdir()
    (out / "tracks.jsonl").write_text('{"track": "from an earlier run"}\n')
    proc = start_analyze(str(video), "--out", str(out), "--redis-url", redis_url, "--stream", "tracksfull", "--no-progress",
                  preexec_fn=_file_size_limit(100))  # fmt: skip
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1, stderr
    (line,) = [x for x in stderr.splitlines() if x.startswith("tracklens: error:")]
    assert "tracks.jsonl" in line and "File too large" in line
    assert "tracksfull:0:1" in stdout  # the table still shows what was analysed
    from tracklens.pipeline.store import RedisTrackStore

    store = RedisTrackStore(redis_url)
    (stored,) = store.tracks("tracksfull")
    assert stored.state == "ended" and stored.frames > 70
    store.close()


def test_a_bug_mid_run_prints_one_line_keeps_the_tracks_and_logs_the_traceback(tmp_path, video, redis_url):
    """An unexpected exception (simulated by breaking frame processing on its third call)
    ends in one line naming a log file with the traceback; the open track is still ended
    and written, locally and in Redis."""
    code = (
        "import sys\n"
        "from tracklens.pipeline import driver\n"
        "real, calls = driver.StreamDriver.step, []\n"
        "def broken(self, frames):\n"
        "    calls.append(1)\n"
        "    if len(calls) == 3:\n"
        "        raise ValueError('a bug in frame processing')\n"
        "    return real(self, frames)\n"
        "driver.StreamDriver.step = broken\n"
        "from tracklens.pipeline.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    out, logs = tmp_path / "out", tmp_path / "logs"
    env = {k: v for k, v in os.environ.items() if k != "TRACKLENS_REDIS_URL"} | {"TRACKLENS_LOG_DIR": str(logs)}
    result = subprocess.run(
        [sys.executable, "-c", code, "analyze", str(video), "--out", str(out), "--redis-url", redis_url, "--stream", "bug",
         "--no-progress"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 70
    (line,) = [x for x in result.stderr.splitlines() if x.strip()]
    assert line.startswith("tracklens: internal error: ValueError: a bug in frame processing (this is a bug; ")
    (log,) = logs.glob("tracklens-*.log")
    assert str(log) in line and "Traceback" in log.read_text() and "a bug in frame processing" in log.read_text()
    (track,) = _tracks(out / "tracks.jsonl")
    assert track["state"] == "ended" and track["frames"] < 24
    import redis

    client = redis.Redis.from_url(redis_url)
    assert json.loads(client.hget("tl:track:bug:0:1", "summary"))["state"] == "ended" and client.ttl("tl:track:bug:0:1") > 0
    client.close()
