"""The service on a real multi-node Ray cluster (``ray.cluster_utils.Cluster``: a real head and
real worker raylets, each its own processes, on this machine), with a real redis-server and a
real RTSP camera. One cluster for the module, kept small for a 2-core machine:

- head: Serve's controller and proxy, and the API replica (role ``api``); no work role;
- two ingest nodes (role ``ingest``, room for one ingest replica each);
- a pool node (roles ``specialist`` and ``mllm``: the specialist and the tiny offline VLM as the
  MLLM pool).

A node is removed the way a machine is lost (its processes killed at once). Every wait is a
bounded poll that says what it waited for; nothing asserts wall time.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid

import httpx
import pytest
from conftest import LoopbackRayCluster, RtspCamera, free_port

pytestmark = pytest.mark.integration
ray = pytest.importorskip("ray")


def _wait(what: str, predicate, timeout_s: float = 120.0, step_s: float = 0.25):
    """``predicate()`` once it is truthy; fails naming ``what`` and the last value otherwise."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as err:
            last = f"{type(err).__name__}: {err}"
        else:
            if last:
                return last
        time.sleep(step_s)
    raise AssertionError(f"{what}: not within {timeout_s} s (last: {last!r})")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, redis_url, models):
    import ray.serve
    from ray.serve.config import HTTPOptions
    from ray.serve.schema import LoggingConfig

    work = tmp_path_factory.mktemp("multinode")
    ray_cluster = LoopbackRayCluster(head_resources={"api": 1}).start()
    camera = None
    try:
        ray_cluster.add("ingest-a", {"ingest": 1})
        ray_cluster.add("ingest-b", {"ingest": 1})
        ray_cluster.add("pools", {"specialist": 1, "mllm": 1})
        port = free_port()
        # Serve as a shared cluster runs it: started once, one proxy on the head
        quiet = LoggingConfig(log_level="WARNING", enable_access_log=False)
        ray.serve.start(proxy_location="HeadOnly", http_options=HTTPOptions(host="127.0.0.1", port=port), logging_config=quiet)
        camera = RtspCamera(work / "cam", period_s=900.0).start()  # people standing still: their tracks go on
        yield {"cluster": ray_cluster, "nodes": ray_cluster.nodes, "port": port, "redis": redis_url, "camera": camera, "work": work}
    finally:
        try:
            if ray.is_initialized():
                ray.serve.shutdown()
        finally:
            ray_cluster.shutdown()
            if camera is not None:
                camera.stop()


def _config(cluster: dict, mllm=None, **ingest) -> dict:
    """A service config for the module's cluster, under a fresh Redis prefix; with ``mllm`` (a
    model folder) the MLLM pool runs it, on the pool node, with the specialist as fallback."""
    estimator = {} if mllm is None else {"estimator": {"type": "routed", "primary": {
        "type": "mllm", "mode": "constrained", "batch_size": 4,
        "backend": {"type": "transformers", "model": str(mllm), "local_files_only": True, "device": "cpu"}}}}
    return {
        **estimator,
        "store": {"url": cluster["redis"], "prefix": f"mn{uuid.uuid4().hex[:6]}"},
        "ingest": {"replicas": 2, "max_streams": 3, "lease_s": 3.0, "renew_s": 0.5, "snapshot_s": 1.0, "status_s": 0.5,
                   "end_grace_s": 5.0, "num_cpus": 0.25, "resources": {"ingest": 1}, **ingest},  # one replica per ingest node
        "pools": {"specialist": {"num_cpus": 0.25, "resources": {"specialist": 0.01}},
                  "mllm": {"num_cpus": 0.25, "resources": {"mllm": 0.01}}},
        "api": {"port": cluster["port"], "num_cpus": 0.1, "resources": {"api": 0.01}},
    }  # fmt: skip


def test_serve_attaches_to_a_cluster_and_deletes_only_its_own_application_when_stopped(cluster, tmp_path):
    """``tracklens serve --address`` on a cluster it does not own: another application and
    every node are still there after it stops, and its own application is gone."""
    import ray.serve
    import yaml
    from tracklens.pipeline.env import tracklens_home

    @ray.serve.deployment(ray_actor_options={"num_cpus": 0, "resources": {"api": 0.01}})
    class Other:
        def __call__(self, request) -> str:
            return "other"

    ray.serve.run(Other.bind(), name="other", route_prefix="/other")
    config = _config(cluster, replicas=1)
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(config))
    home = tmp_path / "home"  # its own serve lock, over the models of the shared cache
    home.mkdir()
    for name in ("manifest.json", "models", "converter"):
        if (tracklens_home() / name).exists():
            (home / name).symlink_to(tracklens_home() / name)
    env = {k: v for k, v in os.environ.items() if k not in ("TRACKLENS_REDIS_URL", "RAY_ADDRESS")} | {"TRACKLENS_HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracklens.serve.cli", "serve", "--address", cluster["cluster"].address, "--redis-url", cluster["redis"],
         "--config", str(tmp_path / "serve.yaml")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    said: list[str] = []
    reader = threading.Thread(target=lambda: said.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    base = f"http://127.0.0.1:{cluster['port']}"
    try:
        _wait("the CLI to say it serves", lambda: any("serving on the head node's" in line for line in said) or proc.poll(), 240)
        assert proc.poll() is None, "".join(said)
        health = _wait("the API of the attached service", lambda: (r := httpx.get(f"{base}/healthz", timeout=10)).status_code == 200
                       and r.json(), 120)  # fmt: skip
        assert health["status"] == "ok"
        assert "tracklens" in ray.serve.status().applications
        # a second serve on the same cluster (its own home, so its own serve lock) is refused in
        # one line: it would take the application over and delete it when stopped
        other_home = tmp_path / "other-home"
        shutil.copytree(home, other_home, symlinks=True)
        second = subprocess.run(
            [sys.executable, "-m", "tracklens.serve.cli", "serve", "--address", cluster["cluster"].address, "--redis-url",
             cluster["redis"], "--config", str(tmp_path / "serve.yaml")],
            capture_output=True, text=True, env=env | {"TRACKLENS_HOME": str(other_home)}, timeout=180,
        )  # fmt: skip
        assert second.returncode == 2, second.stderr
        errors = [line for line in second.stderr.splitlines() if line.startswith("tracklens: error:")]
        assert len(errors) == 1 and "already runs a tracklens application" in errors[0], second.stderr
        assert "Traceback" not in second.stderr
        assert proc.poll() is None and httpx.get(f"{base}/healthz", timeout=10).status_code == 200  # the first goes on
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=180) == 0, "".join(said)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)
    assert any("the cluster goes on" in line for line in said), "".join(said)
    assert not any("Traceback" in line for line in said), "".join(said)
    apps = ray.serve.status().applications
    assert "tracklens" not in apps and apps["other"].status == "RUNNING", apps
    assert httpx.get(f"{base}/other", timeout=10).text == "other"
    assert sum(node["Alive"] for node in ray.nodes()) == 4  # the cluster goes on
    ray.serve.delete("other")


class _ApiWatch:
    """Asks the API every ~0.2 s on a thread (``/healthz`` and one stream) and keeps every
    answer that was not a 200: the API must answer throughout a node loss."""

    def __init__(self, base: str, stream: str) -> None:
        self.base, self.stream = base, stream
        self.ok, self.failures = 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _ApiWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=10) as client:
            while not self._stop.wait(0.2):
                for path in ("/healthz", f"/v1/streams/{self.stream}"):
                    try:
                        r = client.get(path)
                        if r.status_code == 200:
                            self.ok += 1
                        else:
                            self.failures.append(f"{path}: {r.status_code} {r.text[:100]}")
                    except httpx.HTTPError as err:
                        self.failures.append(f"{path}: {type(err).__name__}: {err}")


def test_a_lost_ingest_node_s_stream_is_taken_over_on_the_other_and_a_new_node_gets_new_streams(cluster, tiny_whole):
    import ray.serve
    from tracklens.pipeline.config import ServeConfig
    from tracklens.pipeline.service.control import ControlPlane
    from tracklens.pipeline.store import RedisTrackStore
    from tracklens.serve.app import build_app

    config = ServeConfig.model_validate(_config(cluster, mllm=tiny_whole))
    nodes = cluster["nodes"]
    base = f"http://127.0.0.1:{cluster['port']}"
    control = ControlPlane.from_config(config.store)
    store = RedisTrackStore(config.store.url, prefix=config.store.prefix)
    client = httpx.Client(base_url=base, timeout=30)
    try:
        ray.serve.run(build_app(config), name="tracklens", route_prefix="/")
        _wait("both ingest replicas alive (one per ingest node)", lambda: control.live_replicas() == 2)
        url = cluster["camera"].url()
        for name in ("north", "south"):
            r = client.post("/v1/streams", json={"url": url, "name": name, "options": {"fps": 5}})
            assert r.status_code == 201, r.text

        def status(name: str) -> dict:
            return client.get(f"/v1/streams/{name}").json()["status"]

        def tracked(name: str) -> list[dict]:
            return [t for t in client.get(f"/v1/streams/{name}/tracks").json() if t["frames"] >= 5]

        running = _wait("both streams live on the ingest nodes, with tracks", lambda: all(
            status(n)["state"] == "live" and tracked(n) for n in ("north", "south")) and {n: status(n) for n in ("north", "south")}, 240)  # fmt: skip
        # the pools hold their roles, which only the pool node offers: the MLLM (the tiny VLM) answers from there
        free = ray.available_resources()
        assert free.get("mllm", 1.0) < 1.0 and free.get("specialist", 1.0) < 1.0, free
        _wait("an estimate from the MLLM pool", lambda: any(t["sources"].get("mllm") for n in ("north", "south") for t in tracked(n)), 180)
        ingest_ids = {nodes["ingest-a"].node_id: "ingest-a", nodes["ingest-b"].node_id: "ingest-b"}
        placed = {name: ingest_ids.get(s["owner"]["node"]) for name, s in running.items()}
        assert sorted(placed.values()) == ["ingest-a", "ingest-b"], (placed, running)  # one stream per ingest node

        victim = "north"
        lost, kept = placed[victim], placed["south"]
        before = running[victim]
        keys_before = {t["track"] for t in tracked(victim)}
        with _ApiWatch(base, victim) as watch:
            lost_at = time.monotonic()
            cluster["cluster"].remove(lost)  # as a machine is lost: its processes killed at once
            taken = _wait(f"stream {victim} taken over on {kept}", lambda: (s := status(victim))["owner"] not in (None, before["owner"])
                          and s["state"] == "live" and s["owner"]["node"] == nodes[kept].node_id and s, config.ingest.lease_s + 120)  # fmt: skip
            took_s = time.monotonic() - lost_at
            after = taken["frames_analysed"]
            # the same people, under the same track keys, go on being tracked by the new owner
            resumed = _wait(f"a track of {victim} seen before the loss updated after the take-over", lambda: [
                t for t in tracked(victim) if t["track"] in keys_before and t["frames"] > 0 and status(victim)["frames_analysed"] > after + 10
                and t["last_seen"] > time.time() - 2], 120)  # fmt: skip
        print(f"\nmultinode: {victim} on {lost} lost; taken over on {kept} after {took_s:.1f} s (lease {config.ingest.lease_s} s)")
        assert resumed
        assert watch.ok > 10 and not watch.failures, watch.failures[:5]
        assert {t["track"].split(":")[1] for t in tracked(victim)} == {k.split(":")[1] for k in keys_before}  # one epoch: restored
        events = sorted(store.events(victim, count=100_000), key=lambda e: tuple(map(int, e["id"].split("-"))))  # in write order
        versions: dict[str, list[int]] = {}
        for event in events:
            versions.setdefault(event["track"], []).append(event["version"])
        for track, seen in versions.items():
            # each write of a track is a new version, written once, never going back (one
            # record may carry several events, e.g. start + estimate, under its version)
            pairs = [(e["version"], e["event"]) for e in events if e["track"] == track]
            assert len(pairs) == len(set(pairs)), (track, pairs)
            assert seen == sorted(seen), (track, seen)
        assert any(e["event"] == "estimate" for e in events), events[:5]

        # a new ingest node: the ingest replica Serve could not place goes there, and a new stream too
        cluster["cluster"].add("ingest-c", {"ingest": 1})
        _wait("the ingest replica placed on the new node", lambda: control.live_replicas() == 2, 240)
        r = client.post("/v1/streams", json={"url": url, "name": "east", "options": {"fps": 5}})
        assert r.status_code == 201, r.text
        east = _wait("stream east live", lambda: (s := status("east"))["state"] == "live" and s, 120)
        assert east["owner"]["node"] == nodes["ingest-c"].node_id, (east, {k: n.node_id for k, n in nodes.items()})
        assert {status(n)["owner"]["node"] for n in ("north", "south")} == {nodes[kept].node_id}
    finally:
        for name in ("north", "south", "east"):
            client.delete(f"/v1/streams/{name}")
        client.close()
        ray.serve.delete("tracklens")
        control.close()
        store.close()
