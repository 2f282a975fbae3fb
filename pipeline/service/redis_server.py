"""A private ``redis-server`` for a service started without a Redis URL.

It listens on 127.0.0.1 only, on a free port, and needs a password generated at each start.
Its folder ``$TRACKLENS_HOME/redis`` is 0700 and every file in it 0600: the append-only file
holds camera credentials (stream URLs), so no other local user may read it. The password is
kept in ``password`` there (0600) and handed to the server in its config file (0600), never on a
command line, so it does not show in process lists; the service's replicas read it from that
file (``store.password_file``). Tracks survive a restart of the service (append-only file on).

A server left running by a service that was killed (``kill -9``: nothing stopped it) is found
by its pid file and stopped before a new one starts on the same data; the caller holds the
home's lock (:class:`~tracklens.pipeline.locks.ProcessLock`), so no live service owns it.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from ..errors import ConfigError

__all__ = ["PrivateRedis"]

log = logging.getLogger(__name__)


class PrivateRedis:
    """See the module docstring. ``start()`` raises :class:`ConfigError` when redis-server is
    missing or does not come up, saying how to fix it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = 0
        self.pid: int | None = None
        self.password_file = folder / "password"
        self._pidfile = folder / "redis.pid"

    @property
    def url(self) -> str:
        """The server's URL, without its password (see :attr:`password_file`)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ConfigError(
                "redis-server is not installed: `sudo apt-get install redis-server` (Debian/Ubuntu), "
                "or give the service a Redis with --redis-url redis://HOST:PORT/DB"
            )
        try:
            self._private_folder()
            self._stop_orphan()
            password = secrets.token_urlsafe(32)
            _write_private(self.password_file, password + "\n")
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.port = s.getsockname()[1]
            conf = self.folder / "redis.conf"
            _write_private(conf, self._config(password))
        except OSError as err:
            raise ConfigError(f"cannot prepare the Redis data folder {self.folder}: {err.strerror}; set TRACKLENS_HOME") from None
        self._pidfile.unlink(missing_ok=True)
        # umask 077: the append-only files redis-server makes are 0600 from the start
        result = subprocess.run([binary, str(conf)], capture_output=True, text=True, preexec_fn=lambda: os.umask(0o077))
        for _ in range(100):
            if self._pidfile.exists() and self._answers(password):
                self.pid = int(self._pidfile.read_text())
                return self
            time.sleep(0.05)
        logfile = self.folder / "redis.log"
        tail = logfile.read_text()[-300:] if logfile.exists() else result.stderr
        raise ConfigError(f"the private redis-server did not start: {tail.strip().splitlines()[-1] if tail.strip() else 'no output'}")

    def _config(self, password: str) -> str:
        lines = {
            "port": self.port, "bind": "127.0.0.1", "protected-mode": "yes", "daemonize": "yes",
            "pidfile": json.dumps(str(self._pidfile)), "dir": json.dumps(str(self.folder)), "appendonly": "yes",
            "save": '""', "logfile": json.dumps(str(self.folder / "redis.log")), "requirepass": json.dumps(password),
        }  # fmt: skip (quoted: redis.conf reads double-quoted strings with C escapes)
        return "".join(f"{key} {value}\n" for key, value in lines.items())

    def _private_folder(self) -> None:
        """The folder 0700, everything in it 0600 (also files an older version left 0644)."""
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        for path in self.folder.rglob("*"):
            os.chmod(path, 0o700 if path.is_dir() else 0o600)

    def _stop_orphan(self) -> None:
        """Stop a redis-server a killed service left running on this folder."""
        try:
            pid = int(self._pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if b"redis-server" not in cmdline:
            return  # the pid was reused by another program
        log.warning("stopping the private redis-server (pid %d) left running by a service that did not stop it", pid)
        os.kill(pid, signal.SIGTERM)
        _wait_gone(pid)

    def _answers(self, password: str) -> bool:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, password=password, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        """SIGTERM to its own PID (it writes its append-only file and exits), then wait."""
        if self.pid is None:
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        _wait_gone(self.pid)
        self.pid = None


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner can read (0600 before anything is written)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _wait_gone(pid: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
