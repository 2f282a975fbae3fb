"""The service's private redis-server and its home: a password, private files, one service per
``TRACKLENS_HOME``, and no server left orphaned by a killed service."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from tracklens.pipeline.errors import ConfigError
from tracklens.pipeline.locks import LockHeldError, ProcessLock
from tracklens.pipeline.service.redis_server import PrivateRedis

pytestmark = pytest.mark.integration
redis = pytest.importorskip("redis")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_private_server_needs_a_password_that_no_process_list_shows_and_its_files_are_private(tmp_path):
    """Regression: it ran without a password (any local process could read camera passwords
    with ``HGET tl:ctl:streams NAME``) and its append-only files were 0644."""
    folder = tmp_path / "home" / "redis"
    folder.mkdir(parents=True, mode=0o755)
    (folder / "appendonlydir").mkdir(mode=0o755)
    (folder / "appendonlydir" / "old.aof").write_text("left by an older version")
    os.chmod(folder / "appendonlydir" / "old.aof", 0o644)
    server = PrivateRedis(folder).start()
    try:
        open_client = redis.Redis(port=server.port)
        with pytest.raises(redis.AuthenticationError):
            open_client.hgetall("tl:ctl:streams")
        password = server.password_file.read_text().strip()
        client = redis.Redis(port=server.port, password=password)
        client.hset("tl:ctl:streams", "door", '{"url": "rtsp://admin:secret@127.0.0.1/cam"}')
        client.execute_command("BGREWRITEAOF")
        assert len(password) >= 32 and "@" not in server.url
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes()
        assert password.encode() not in cmdline
        assert _mode(folder) == 0o700
        files = [p for p in folder.rglob("*") if p.is_file()]
        assert {p.name for p in files} >= {"password", "redis.conf", "redis.pid", "old.aof"}
        assert any(p.suffix == ".aof" and p.name != "old.aof" for p in files)
        for path in folder.rglob("*"):
            assert _mode(path) == (0o700 if path.is_dir() else 0o600), path
        client.close()
    finally:
        server.stop()


def test_a_server_left_by_a_killed_service_is_stopped_before_the_next_one_starts(tmp_path):
    """Regression: after ``kill -9`` of the service its redis-server stayed, and the next start
    ran a second server on the same append-only file."""
    folder = tmp_path / "redis"
    first = PrivateRedis(folder).start()
    orphan = first.pid
    first.pid = None  # the service that started it died without stopping it
    second = PrivateRedis(folder).start()
    try:
        assert second.pid != orphan and not Path(f"/proc/{orphan}").exists()
    finally:
        second.stop()


def test_one_service_per_home_and_a_killed_holder_never_blocks_the_next(tmp_path):
    """Regression: a second ``tracklens serve`` on the same ``TRACKLENS_HOME`` shared the
    first one's Redis data folder and analysed the same cameras twice."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from tracklens.pipeline.locks import ProcessLock; "
         f"ProcessLock(Path({str(tmp_path / 'serve.lock')!r}), 'home').acquire(); print('held', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockHeldError) as err:
            ProcessLock(tmp_path / "serve.lock", "TRACKLENS_HOME x").acquire()
        assert err.value.pid == holder.pid and f"process {holder.pid}" in str(err.value)
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        with ProcessLock(tmp_path / "serve.lock", "TRACKLENS_HOME x"):
            pass  # the kernel let go of the dead holder's lock
    finally:
        holder.kill()
        holder.wait()


def test_serve_refuses_a_home_another_service_holds_before_starting_anything(tmp_path, monkeypatch):
    from tracklens.serve.server import run_server

    monkeypatch.setenv("TRACKLENS_HOME", str(tmp_path))
    said = []
    with ProcessLock(tmp_path / "serve.lock", "home"):
        with pytest.raises(ConfigError) as err:
            run_server(None, None, None, None, said.append)
    assert f"process {os.getpid()}" in str(err.value) and "another tracklens serve" in str(err.value)
    assert said == [] and not (tmp_path / "redis").exists()  # no model check, no redis-server


def test_a_local_ray_s_auth_token_is_made_readable_by_its_owner_only(tmp_path, monkeypatch):
    """Regression: Ray writes ``~/.ray/auth_token`` 0644; with it anyone on the machine could
    drive the service's local Ray."""
    from tracklens.serve.server import _private_ray_token

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ray").mkdir()
    token = tmp_path / ".ray" / "auth_token"
    token.write_text("x" * 64)
    token.chmod(0o644)
    _private_ray_token()
    assert _mode(token) == 0o600
