"""Real servers the tests and the benches start and stop by their own PID: redis-server, an
RTSP camera on GStreamer's gst-rtsp-server (``rtsp_server.py``), and a multi-node Ray cluster on
this machine. No pytest here: the benches use them too."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np

__all__ = ["LoopbackRayCluster", "RedisServer", "RtspCamera", "free_port"]


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


class LoopbackRayCluster:
    """A real multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``: a head and
    worker raylets, each its own processes), every node on 127.0.0.1, with the driver of this
    process connected to it. ``add(name, resources)`` starts a worker node offering those
    custom resources; ``remove(name)`` kills its processes at once, as a lost machine.

    Ray turns a driver's ``127.0.0.1:PORT`` into the machine's outward address (where loopback
    nodes do not listen) unless told that this machine's Ray is one machine: the flag Ray read
    at import is set for this process, its variable for the processes started from here (the
    nodes' workers, a CLI under test), both restored by :meth:`shutdown`. The address Ray
    records as this machine's current cluster is removed at once, so that a plain
    ``ray.init()`` elsewhere on the machine never joins this one.
    """

    NODE = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "object_store_memory": 80 * 1024 * 1024}

    def __init__(self, head_resources: dict[str, float]) -> None:
        self.head_resources = head_resources
        self.nodes: dict = {}
        self.cluster = None
        self._saved = None

    @property
    def address(self) -> str:
        return self.cluster.address

    def start(self) -> LoopbackRayCluster:
        import ray
        import ray._common.utils
        import ray._private.ray_constants as ray_constants
        from ray.cluster_utils import Cluster

        variable = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
        self._saved = os.environ.get(variable), ray_constants.ENABLE_RAY_CLUSTER
        os.environ[variable] = "0"
        ray_constants.ENABLE_RAY_CLUSTER = False
        try:
            self.cluster = Cluster(initialize_head=True, head_node_args={**self.NODE, "resources": self.head_resources,
                                                                         "include_dashboard": False})  # fmt: skip
            ray._common.utils.reset_ray_address()
            ray.init(address=self.cluster.address, logging_level="WARNING", log_to_driver=False)
        except BaseException:
            self.shutdown()
            raise
        return self

    def add(self, name: str, resources: dict[str, float]):
        """A worker node offering ``resources``; returns Ray's node (``.node_id``)."""
        self.nodes[name] = self.cluster.add_node(**self.NODE, resources=resources)
        self.cluster.wait_for_nodes()
        return self.nodes[name]

    def remove(self, name: str) -> None:
        self.cluster.remove_node(self.nodes.pop(name), allow_graceful=False)

    def shutdown(self) -> None:
        """Disconnect, stop every node, restore Ray's flag."""
        import ray
        import ray._private.ray_constants as ray_constants

        try:
            ray.shutdown()
            if self.cluster is not None:
                self.cluster.shutdown()
        finally:
            if self._saved is not None:
                variable = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
                if self._saved[0] is None:
                    os.environ.pop(variable, None)
                else:
                    os.environ[variable] = self._saved[0]
                ray_constants.ENABLE_RAY_CLUSTER = self._saved[1]
                self._saved = None
