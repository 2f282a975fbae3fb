"""Real servers the tests and the benches start and stop by their own PID: redis-server, and an
RTSP camera on GStreamer's gst-rtsp-server (``rtsp_server.py``). No pytest here: the benches use
them too."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np

__all__ = ["RedisServer", "RtspCamera", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A real ``redis-server`` on 127.0.0.1, started and stopped by its own PID.

    ``appendonly`` keeps its data across :meth:`stop` / :meth:`start`, as a production
    server with persistence does across a restart.
    """

    def __init__(self, workdir: Path, port: int | None = None, appendonly: bool = False) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server); `make test` installs it")
        self.workdir, self.port, self.appendonly = workdir, port or free_port(), appendonly
        self.pidfile = workdir / "redis.pid"
        self.pid: int | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        subprocess.run(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--daemonize", "yes", "--pidfile", str(self.pidfile),
             "--dir", str(self.workdir), "--save", "", "--appendonly", "yes" if self.appendonly else "no",
             "--logfile", str(self.workdir / "redis.log")],
            check=True,
        )  # fmt: skip
        import redis

        client = redis.Redis(port=self.port)
        try:
            for _ in range(200):
                try:
                    client.ping()
                    break
                except (redis.ConnectionError, redis.BusyLoadingError):
                    time.sleep(0.05)
            else:
                raise RuntimeError(f"redis-server did not come up on port {self.port}")
        finally:
            client.close()
        self.pid = int(self.pidfile.read_text())
        return self

    def stop(self) -> None:
        """SIGTERM to the server's own PID, then wait until it is gone."""
        if self.pid is None:
            return
        subprocess.run(["kill", str(self.pid)], check=False)
        for _ in range(200):
            if not Path(f"/proc/{self.pid}").exists():
                break
            time.sleep(0.05)
        self.pid = None


class RtspCamera:
    """A real RTSP camera: GStreamer's gst-rtsp-server (Debian's python3-gi) running
    ``tests/rtsp_server.py``, showing the astronaut crossing a brick wall, started and stopped
    by its own PID. The scene follows the wall clock, so after :meth:`stop` and :meth:`start`
    it goes on where it would have been."""

    SCRIPT = Path(__file__).with_name("rtsp_server.py")

    def __init__(self, workdir: Path, width: int = 640, height: int = 360, person_px: int = 240, people: int = 1,
                 user: str | None = None, password: str | None = None, period_s: float = 8.0, fps: int = 25,
                 bitrate_kbps: int = 2000) -> None:  # fmt: skip
        import cv2
        from skimage import data
        from tracklens.pipeline.sample import _background

        python = Path("/usr/bin/python3")
        probe = subprocess.run([str(python), "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"], capture_output=True)
        if probe.returncode != 0:
            raise RuntimeError("the RTSP tests need GStreamer's RTSP server: apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 "
                        "gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly (make test installs them)")  # fmt: skip
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "bg.rgb").write_bytes(np.ascontiguousarray(_background(width, height)).tobytes())
        person = cv2.resize(data.astronaut(), (person_px, person_px), interpolation=cv2.INTER_AREA)
        (workdir / "person.rgb").write_bytes(np.ascontiguousarray(person).tobytes())
        self.port = free_port()
        self.args = [str(python), str(self.SCRIPT), "--port", str(self.port), "--width", str(width), "--height", str(height),
                     "--background", str(workdir / "bg.rgb"), "--person", str(workdir / "person.rgb"),
                     "--person-width", str(person_px), "--person-height", str(person_px), "--people", str(people),
                     "--period", str(period_s), "--fps", str(fps), "--bitrate", str(bitrate_kbps)]  # fmt: skip
        if user:
            self.args += ["--user", user, "--password", password or ""]
        self.user, self.password = user, password
        self.log = workdir / "rtsp.log"
        self.proc: subprocess.Popen | None = None

    def url(self, mount: str = "/cam", credentials: bool = True) -> str:
        auth = f"{self.user}:{self.password}@" if self.user and credentials else ""
        return f"rtsp://{auth}127.0.0.1:{self.port}{mount}"

    def start(self) -> RtspCamera:
        self.proc = subprocess.Popen(self.args, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        for _ in range(200):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"the RTSP server exited: {self.log.read_text()[-500:]}")
            time.sleep(0.05)
        raise RuntimeError(f"the RTSP server did not listen on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
