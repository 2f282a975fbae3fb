"""Shared fixtures: media the tests make themselves, a real redis-server, the model cache."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest


def _free_port() -> int:
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
            pytest.fail("redis-server is not installed (apt-get install redis-server); `make test` installs it")
        self.workdir, self.port, self.appendonly = workdir, port or _free_port(), appendonly
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
                pytest.fail(f"redis-server did not come up on port {self.port}")
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
                 user: str | None = None, password: str | None = None, period_s: float = 8.0) -> None:  # fmt: skip
        import cv2
        from skimage import data
        from tracklens.pipeline.sample import _background

        python = Path("/usr/bin/python3")
        probe = subprocess.run([str(python), "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"], capture_output=True)
        if probe.returncode != 0:
            pytest.fail("the RTSP tests need GStreamer's RTSP server: apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 "
                        "gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly (make test installs them)")  # fmt: skip
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "bg.rgb").write_bytes(np.ascontiguousarray(_background(width, height)).tobytes())
        person = cv2.resize(data.astronaut(), (person_px, person_px), interpolation=cv2.INTER_AREA)
        (workdir / "person.rgb").write_bytes(np.ascontiguousarray(person).tobytes())
        self.port = _free_port()
        self.args = [str(python), str(self.SCRIPT), "--port", str(self.port), "--width", str(width), "--height", str(height),
                     "--background", str(workdir / "bg.rgb"), "--person", str(workdir / "person.rgb"),
                     "--person-width", str(person_px), "--person-height", str(person_px), "--people", str(people),
                     "--period", str(period_s)]  # fmt: skip
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
                pytest.fail(f"the RTSP server exited: {self.log.read_text()[-500:]}")
            time.sleep(0.05)
        pytest.fail(f"the RTSP server did not listen on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture(scope="session")
def rtsp_camera(tmp_path_factory) -> RtspCamera:
    """A live 640x360 camera for the session (tests that stop it make their own)."""
    camera = RtspCamera(tmp_path_factory.mktemp("rtsp")).start()
    yield camera
    camera.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> str:
    """A real redis-server for the session."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def sample_video(tmp_path_factory) -> Path:
    """The demo video, shortened: the astronaut photo crossing a brick wall at 1280x720."""
    from tracklens.pipeline.sample import make_sample_video

    return make_sample_video(tmp_path_factory.mktemp("media") / "sample.mp4", seconds=4.0)


@pytest.fixture(scope="session")
def models():
    """The real model cache ($TRACKLENS_HOME); pulls on first use."""
    from tracklens.pipeline.models import ModelCache

    return ModelCache()


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def tiny_whole(tmp_path_factory) -> Path:
    """The tiny offline LLaVA, numbers as whole tokens (built once per session)."""
    pytest.importorskip("torch", reason="the MLLM path needs the [mllm] extra (make test installs it)")
    from tracklens.pipeline.estimators.mllm.tiny import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("tiny-whole"), digits="whole")


@pytest.fixture(scope="session")
def tiny_split(tmp_path_factory) -> Path:
    """The tiny offline LLaVA with numbers split digit by digit (ages of 1-3 tokens)."""
    pytest.importorskip("torch", reason="the MLLM path needs the [mllm] extra (make test installs it)")
    from tracklens.pipeline.estimators.mllm.tiny import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("tiny-split"), digits="split", seed=1)


def mllm_yaml(path: Path, model: Path, mode: str = "constrained", routed: bool = False) -> Path:
    """A config file whose estimator is the MLLM on a local model (``routed``: as the primary
    of a routed estimator, the specialist as fallback)."""
    mllm = (
        f"type: mllm\nmode: {mode}\n"
        f"backend: {{type: transformers, model: '{model}', local_files_only: true, device: cpu}}\n"
    )
    if routed:
        body = "estimator:\n  type: routed\n  primary:\n" + "".join(f"    {line}\n" for line in mllm.splitlines())
    else:
        body = "estimator:\n" + "".join(f"  {line}\n" for line in mllm.splitlines())
    path.write_text(body)
    return path


def write_video(path: Path, frames: int = 30, fps: int = 30, size=(160, 120), codec: str = "libx264") -> Path:
    """A small video of a moving square, with any codec PyAV can encode."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            img = np.full((size[1], size[0], 3), 40, np.uint8)
            x = (i * 3) % (size[0] - 20)
            img[40:60, x : x + 20] = 220
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def run_cli(*args: str, home: Path | None = None, cwd: Path | None = None, env: dict | None = None, timeout: float = 600):
    """``tracklens ARGS`` in a subprocess, as a user runs it; no Redis URL from the caller's env."""
    full = dict(os.environ)
    full.pop("TRACKLENS_REDIS_URL", None)
    if home is not None:
        full["TRACKLENS_HOME"] = str(home)
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "tracklens.pipeline.cli", *args], capture_output=True, text=True, env=full, cwd=cwd, timeout=timeout
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str, status: int = 2) -> str:
    """Exit ``status``, no traceback, exactly one stderr line ``tracklens: error: ...`` holding
    every needle; returns that line."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 and lines[0].startswith("tracklens: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert result.returncode == status, (result.returncode, result.stderr)
    return lines[0]
