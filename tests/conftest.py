"""Shared fixtures: media the tests make themselves, a real redis-server, the model cache."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> str:
    """A real redis-server on 127.0.0.1, started for the session and stopped by its own PID."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server); `make test` installs it")
    workdir = tmp_path_factory.mktemp("redis")
    port = _free_port()
    pidfile = workdir / "redis.pid"
    subprocess.run(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "yes", "--pidfile", str(pidfile),
         "--dir", str(workdir), "--save", "", "--appendonly", "no", "--logfile", str(workdir / "redis.log")],
        check=True,
    )  # fmt: skip
    import redis

    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    else:
        pytest.fail(f"redis-server did not come up on port {port}")
    yield f"redis://127.0.0.1:{port}/0"
    client.close()
    pid = int(pidfile.read_text())
    subprocess.run(["kill", str(pid)], check=False)
    for _ in range(100):
        try:
            Path(f"/proc/{pid}").stat()
        except FileNotFoundError:
            break
        time.sleep(0.05)


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


def mllm_yaml(path: Path, section: str, model: Path, mode: str = "constrained") -> Path:
    """A config file whose ``section`` (estimator or mllm) is the MLLM on a local model."""
    path.write_text(
        f"{section}:\n  type: mllm\n  mode: {mode}\n"
        f"  backend: {{type: transformers, model: '{model}', local_files_only: true, device: cpu}}\n"
    )
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
