"""Shared fixtures: media the tests make themselves, a real redis-server, the model cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from servers import LoopbackRayCluster, RedisServer, RtspCamera, free_port  # noqa: F401 (re-exported for the tests)


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


def run_cli(*args: str, home: Path | None = None, cwd: Path | None = None, env: dict | None = None, timeout: float = 600,
            module: str = "tracklens.pipeline.cli"):  # fmt: skip
    """``tracklens ARGS`` in a subprocess, as a user runs it; no Redis URL from the caller's env.
    ``module="tracklens.serve.cli"`` for the installed command with ``serve``."""
    full = dict(os.environ)
    full.pop("TRACKLENS_REDIS_URL", None)
    if home is not None:
        full["TRACKLENS_HOME"] = str(home)
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, env=full, cwd=cwd, timeout=timeout
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


def start_analyze(*args: str, env: dict | None = None, preexec_fn=None) -> subprocess.Popen:
    """``tracklens analyze ARGS`` running in the background, its stderr readable as it comes."""
    full = {k: v for k, v in os.environ.items() if k != "TRACKLENS_REDIS_URL"} | (env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "tracklens.pipeline.cli", "analyze", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full, preexec_fn=preexec_fn,
    )  # fmt: skip


def read_until(proc: subprocess.Popen, done) -> str:
    """stderr, read as it comes, until ``done(text)`` holds or the process ends."""
    seen = ""
    while not done(seen):
        chunk = proc.stderr.read(1)
        if not chunk:
            break
        seen += chunk
    return seen


def progress_frames(text: str) -> int:
    """Frames analysed so far, from the progress bar (``17/80`` with a known length, ``17frame``
    for a live stream)."""
    import re

    return max((int(n) for n in re.findall(r"(?<![\d.])(\d+)(?:/\d+ \[| ?frame \[)", text)), default=0)


API_KEY = "k3y-for-tests"


@pytest.fixture()
def api_app(redis_url, tmp_path):
    """Builds the HTTP API without Ray (FastAPI app, key :data:`API_KEY`) over the session's
    redis-server, under a fresh prefix: ``api_app(max_streams=8, **ingest_settings)`` gives
    ``(app, control, store, videos)``, ``videos`` being its only file root (one ingest replica)."""
    import uuid

    from tracklens.pipeline.config import ServeConfig
    from tracklens.pipeline.service.control import ControlPlane
    from tracklens.pipeline.store import build_store
    from tracklens.serve.api import make_api

    opened = []

    def build(max_streams: int = 8, **ingest):
        videos = tmp_path / "videos"
        videos.mkdir(exist_ok=True)
        config = ServeConfig.model_validate({"store": {"url": redis_url, "prefix": f"t{uuid.uuid4().hex[:6]}"},
                                             "ingest": {"max_streams": max_streams, **ingest}, "api": {"file_roots": [str(videos)]}})  # fmt: skip
        control, store = ControlPlane.from_config(config.store), build_store(config.store)
        opened.extend((store, control))
        return make_api(config, control, store, API_KEY, lambda: {"estimators": "specialist only"}), control, store, videos

    yield build
    for resource in opened:
        resource.close()


def wait_until(predicate, timeout_s: float = 60.0, step_s: float = 0.1):
    """Poll ``predicate`` until it returns something truthy (returned), for at most
    ``timeout_s``: a bounded wait, never a timing assertion."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step_s)
    raise AssertionError(f"not within {timeout_s} s")
