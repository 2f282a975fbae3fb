"""What the service bench's parts share: the Serve app of a given config on a Ray of this
machine, its HTTP API, CPU and memory readings of processes, and the real servers the tests
start (Redis, the RTSP camera, a Ray cluster of this machine)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from servers import LoopbackRayCluster, RedisServer, RtspCamera, free_port  # noqa: E402

__all__ = ["REPO", "LoopbackRayCluster", "RedisServer", "RtspCamera", "Service", "cpu_seconds", "free_port", "rss_mb",
           "service_config"]  # fmt: skip


def cpu_seconds(exclude: set[int]) -> float:
    """CPU seconds (user + system) used so far by every process but ``exclude``."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in exclude:
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Service:
    """Ray + the Serve app with a given config; streams added and read over HTTP."""

    def __init__(self, config) -> None:
        import httpx
        import ray
        import ray.serve
        from ray.serve.config import HTTPOptions
        from ray.serve.schema import LoggingConfig
        from tracklens.serve.app import build_app

        if not ray.is_initialized():
            # one Ray of this machine for every config of the run: it offers the default node
            # roles (which the bench's configs keep) for any replica count used here
            roles = {name: 100.0 for name in ("ingest", "specialist", "mllm")}
            ray.init(address="local", include_dashboard=False, logging_level="ERROR", log_to_driver=False, resources=roles)
        quiet = LoggingConfig(log_level="WARNING", enable_access_log=False)
        # one proxy, on the head (the nodes of a cluster on one machine would share its port)
        ray.serve.start(proxy_location="HeadOnly", http_options=HTTPOptions(host="127.0.0.1", port=config.api.port),
                        logging_config=quiet)  # fmt: skip
        ray.serve.run(build_app(config), name="tracklens", route_prefix="/", logging_config=quiet)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{config.api.port}", timeout=30)

    def add(self, name: str, url: str) -> None:
        r = self.http.post("/v1/streams", json={"url": url, "name": name})
        r.raise_for_status()

    def status(self, name: str) -> dict:
        return self.http.get(f"/v1/streams/{name}").json()["status"]

    def wait_live(self, names: list[str], frames: int = 20, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(self.status(n)["frames_analysed"] >= frames for n in names):
                return
            time.sleep(0.5)
        raise RuntimeError(f"streams {names} did not start")

    def stop(self) -> None:
        import ray.serve

        self.http.close()
        ray.serve.shutdown()


def service_config(redis_url: str, port: int, **sections):
    from tracklens.pipeline.config import ServeConfig

    # one ingest replica (process) per core: streams spread over them
    base = {"store": {"url": redis_url, "prefix": f"bench{port}"}, "api": {"port": port},
            "ingest": {"replicas": os.cpu_count() or 1, "max_streams": 8, "num_cpus": 0.5}}  # fmt: skip
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value}
    return ServeConfig.model_validate(base)
