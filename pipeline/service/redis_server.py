"""A private ``redis-server`` for a service started without a Redis URL.

It listens on 127.0.0.1 only, on a free port, keeps its data in ``$TRACKLENS_HOME/redis`` with
the append-only file on (tracks survive a restart of the service), and is stopped by its own
PID when the service stops.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from ..errors import ConfigError

__all__ = ["PrivateRedis"]


class PrivateRedis:
    """See the module docstring. ``start()`` raises :class:`ConfigError` when redis-server is
    missing or does not come up, saying how to fix it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = 0
        self.pid: int | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ConfigError(
                "redis-server is not installed: `sudo apt-get install redis-server` (Debian/Ubuntu), "
                "or give the service a Redis with --redis-url redis://HOST:PORT/DB"
            )
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"cannot make the Redis data folder {self.folder}: {err.strerror}; set TRACKLENS_HOME") from None
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        pidfile = self.folder / "redis.pid"
        pidfile.unlink(missing_ok=True)
        result = subprocess.run(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--daemonize", "yes", "--pidfile", str(pidfile),
             "--dir", str(self.folder), "--appendonly", "yes", "--save", "", "--logfile", str(self.folder / "redis.log")],
            capture_output=True, text=True,
        )  # fmt: skip
        for _ in range(100):
            if pidfile.exists() and self._answers():
                self.pid = int(pidfile.read_text())
                return self
            time.sleep(0.05)
        tail = (self.folder / "redis.log").read_text()[-300:] if (self.folder / "redis.log").exists() else result.stderr
        raise ConfigError(f"the private redis-server did not start: {tail.strip().splitlines()[-1] if tail.strip() else 'no output'}")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM to its own PID (it writes its append-only file and exits), then wait."""
        if self.pid is None:
            return
        subprocess.run(["kill", str(self.pid)], check=False, capture_output=True)
        for _ in range(200):
            if not Path(f"/proc/{self.pid}").exists():
                break
            time.sleep(0.05)
        self.pid = None
