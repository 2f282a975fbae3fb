"""The live service on this machine, measured: ``make bench`` runs it after the pipeline bench.

Everything real: Ray Serve with the service's deployments, a redis-server, and a live 720p
camera from GStreamer's RTSP server (``tests/rtsp_server.py``: the astronaut photo at 300 px
crossing a brick wall, 25 fps, H.264 at 4 Mb/s). Three parts, one run:

1. **Live streams in real time.** N streams of the camera at the default analysis rate
   (10 fps): for N = 1, 2, ... each stream's analysed fps and dropped share over a window;
   the largest N at which every stream keeps >= 95% of its rate with < 5% of its frames
   dropped. Beside it, the compute bound: cores / the CPU cost of one stream (all processes
   but the camera, one stream minus the idle service, measured in the same run).
2. **Frame -> estimate latency**, p50/p95, with the MLLM pool idle, overloaded ~5x at one
   replica, and overloaded with autoscaling on (its running replicas sampled every second),
   and the crops each pool answered. The MLLM is an OpenAI-compatible endpoint emulated here
   with a fixed per-crop service time of 0.5 s (this machine has no GPU, and a real VLM runs
   ~1 crop/s on its CPU); each pool replica stands for one GPU: 64 crops at once (idle), then
   1 (overloaded), for two streams of three people whose tracks keep asking (refresh every
   0.5 s, no confidence stop), so the load is steady. Printed side by side with the router
   layout's figures (``bench/results/service_router_layout.json``, commit 9677385).
3. **Memory** (RSS of the ingest replica) of one live stream over ``--minutes``.
4. **Two ingest nodes** of a real Ray cluster on this machine (``LoopbackRayCluster``: a head
   with the API, two ingest nodes with one ingest replica each, a pool node with the
   specialist): streams per ingest node in real time, then the take-over time of a lost node's
   streams (the node's processes killed at once; from the kill until each of its streams is
   live again on the other node), ``--losses`` times, the lost node added back each time.

Usage: ``.venv/bin/python bench/service.py [--minutes 10] [--window 30] [--losses 3] [--parts live,latency,memory,two_nodes]
[--out bench/results/service.json]``; the parts not run keep their last results in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from servers import LoopbackRayCluster, RedisServer, RtspCamera, free_port  # noqa: E402

ANSWER = '{"age": 38, "gender": "female", "expression": "happy"}'


def _cpu_seconds(exclude: set[int]) -> float:
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


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class MllmEndpoint:
    """An OpenAI-compatible chat endpoint answering every request after ``service_s``
    seconds, ``concurrency`` at a time (a GPU's batch slots), with a valid person answer."""

    def __init__(self) -> None:
        import uvicorn
        from fastapi import FastAPI

        self.service_s, self.slots = 0.05, threading.Semaphore(16)
        app = FastAPI()

        @app.post("/v1/chat/completions")
        def chat(body: dict) -> dict:
            with self.slots:
                time.sleep(self.service_s)
            return {"choices": [{"message": {"role": "assistant", "content": ANSWER}}]}

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        threading.Thread(target=self.server.run, daemon=True).start()
        while not self.server.started:
            time.sleep(0.05)

    def set(self, service_s: float, concurrency: int) -> None:
        self.service_s, self.slots = service_s, threading.Semaphore(concurrency)


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


def _config(redis_url: str, port: int, **sections):
    from tracklens.pipeline.config import ServeConfig

    # one ingest replica (process) per core: streams spread over them
    base = {"store": {"url": redis_url, "prefix": f"bench{port}"}, "api": {"port": port},
            "ingest": {"replicas": os.cpu_count() or 1, "max_streams": 8, "num_cpus": 0.5}}  # fmt: skip
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value}
    return ServeConfig.model_validate(base)


def live_streams(camera: RtspCamera, redis_url: str, window_s: float, max_streams: int) -> dict:
    """Part 1: the largest N sustained in real time, and the compute bound."""
    service = Service(_config(redis_url, free_port()))
    exclude = {camera.proc.pid, os.getpid()}
    t0, c0 = time.monotonic(), _cpu_seconds(exclude)
    time.sleep(window_s / 2)
    idle_cores = (_cpu_seconds(exclude) - c0) / (time.monotonic() - t0)
    cam0, camera_t0 = _cpu_seconds(set()) - _cpu_seconds({camera.proc.pid}), time.monotonic()
    runs, names = [], []
    for n in range(1, max_streams + 1):
        name = f"cam{n}"
        service.add(name, camera.url())
        names.append(name)
        service.wait_live(names)
        time.sleep(5.0)  # settle
        before = {s: service.status(s) for s in names}
        t0, c0 = time.monotonic(), _cpu_seconds(exclude)
        time.sleep(window_s)
        elapsed, cores = time.monotonic() - t0, (_cpu_seconds(exclude) - c0) / (time.monotonic() - t0)
        after = {s: service.status(s) for s in names}
        per = {}
        for s in names:
            analysed = after[s]["frames_analysed"] - before[s]["frames_analysed"]
            dropped = after[s]["frames_dropped"] - before[s]["frames_dropped"]
            per[s] = {"fps": round(analysed / elapsed, 2), "dropped_share": round(dropped / max(analysed + dropped, 1), 4)}
        ok = all(p["fps"] >= 9.5 and p["dropped_share"] < 0.05 for p in per.values())
        runs.append({"streams": n, "cpu_cores": round(cores, 2), "per_stream": per, "real_time": ok})
        print(f"  {n} stream(s): {per}; CPU {cores:.2f} cores; {'real time' if ok else 'behind'}", flush=True)
        if not ok:
            break
    camera_cores = (_cpu_seconds(set()) - _cpu_seconds({camera.proc.pid}) - cam0) / (time.monotonic() - camera_t0)
    service.stop()
    cost = runs[0]["cpu_cores"] - idle_cores
    cores = os.cpu_count() or 1
    sustained = max((r["streams"] for r in runs if r["real_time"]), default=0)
    bound = cores / cost if cost > 0 else None
    # the camera server and Ray's idle work share these cores in this bench; without them
    left = (cores - idle_cores - camera_cores) / cost if cost > 0 else None
    return {"runs": runs, "idle_service_cpu_cores": round(idle_cores, 2), "camera_server_cpu_cores": round(camera_cores, 2),
            "one_stream_cpu_cores": round(cost, 2), "compute_bound_streams": None if bound is None else round(bound, 2),
            "bound_on_cores_left_streams": None if left is None else round(left, 2), "sustained_streams": sustained,
            "sustained_over_bound": None if not bound else round(sustained / bound, 2),
            "sustained_over_bound_on_cores_left": None if not left else round(sustained / left, 2)}  # fmt: skip


#: The MLLM pool in each latency phase: replicas (a number, or (min, max) with autoscaling on)
#: and the crops each replica takes at once. A replica stands for one GPU running the model.
LATENCY_PHASES = {"idle": (1, 64), "overload": (1, 1), "overload_autoscaling": ((1, 4), 1)}


def _mllm_replicas() -> int:
    """Running replicas of the MLLM pool now."""
    import ray.serve

    try:
        pool = ray.serve.status().applications["tracklens"].deployments["MLLMPool"]
    except KeyError:
        return 0
    return int(pool.replica_states.get("RUNNING", 0))


def latency(camera: RtspCamera, redis_url: str, window_s: float, service_s: float = 0.5) -> dict:
    """Part 2: frame -> estimate latency with the MLLM pool idle, overloaded about 5x at a fixed
    size, and overloaded with autoscaling on.

    The emulated MLLM answers each crop in ``service_s`` (a GPU VLM's per-crop time) and has
    slots for every crop the pool can send; the pool's replicas are the limit: each stands for
    one GPU running the model in process, taking ``slots`` crops at once
    (``max_ongoing_requests``). Idle: one replica of 64 slots (capacity ~10x the crop rate).
    Overloaded: one replica of 1 slot, capacity 1/``service_s`` crops/s, while two streams of
    three people each ask about every track every 0.5 s (~5x that capacity; the measured factor
    is reported). With autoscaling: the same, the pool free to grow to 4 replicas (target 1
    request per replica, 2 s upscale delay); its running replicas are sampled every second
    from when the streams are added."""
    from tracklens.pipeline.service.control import ControlPlane

    endpoint = MllmEndpoint()
    results = {}
    for phase, (replicas, slots) in LATENCY_PHASES.items():
        port = free_port()
        most = replicas[1] if isinstance(replicas, tuple) else replicas
        size = ({"num_replicas": "auto", "min_replicas": replicas[0], "max_replicas": replicas[1], "target_ongoing_requests": 1,
                 "upscale_delay_s": 2.0} if isinstance(replicas, tuple) else {"num_replicas": replicas})  # fmt: skip
        config = _config(
            redis_url, port,
            estimator={"type": "routed", "primary": {"type": "mllm", "mode": "free", "backend": {
                "type": "openai", "base_url": f"http://127.0.0.1:{endpoint.port}/v1", "model": "emulated", "api_key_env": None,
                "max_retries": 0, "max_concurrency": 64}}},
            # a load test: every track asked about every 0.5 s, settled or not
            crops={"confirm_after_s": 0.5, "refresh_s": 0.5, "per_minute": 120, "expression_refresh_s": 0.5, "max_requests": 100000},
            aggregation={"confident_age_std": 0.01},
            # a replica here is a thin client of the emulated GPU: its CPU share must not be what limits the pool
            pools={"mllm": {**size, "max_ongoing_requests": slots, "max_queued_requests": slots, "num_cpus": 0.05}},
            router={"latency_budget_s": 10.0},
        )  # fmt: skip
        endpoint.set(service_s=service_s, concurrency=slots * most)
        control = ControlPlane(redis_url, config.store.prefix)
        service = Service(config)
        names = ["door", "hall"]
        added = time.monotonic()
        timeline: list[tuple[float, int]] = []
        sampling = threading.Event()

        def sample(added=added, timeline=timeline, sampling=sampling) -> None:
            while not sampling.wait(1.0):
                timeline.append((round(time.monotonic() - added, 1), _mllm_replicas()))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        for name in names:
            service.add(name, camera.url())
        service.wait_live(names)
        time.sleep(5.0)
        m0 = control.metrics()
        control.client.delete(f"{config.store.prefix}:ctl:latency")
        t0 = time.monotonic()
        in_flight = []
        while time.monotonic() - t0 < window_s:
            in_flight.append(control.in_flight())
            time.sleep(0.5)
        elapsed = time.monotonic() - t0
        sampling.set()
        sampler.join()
        m1 = control.metrics()
        samples = sorted(control.latencies())
        routed = {s: m1.get(f"routed:{s}", 0) - m0.get(f"routed:{s}", 0) for s in ("mllm", "specialist")}
        crops_per_s = sum(routed.values()) / elapsed
        confirmed = [t for name in names for t in service.http.get(f"/v1/streams/{name}/tracks").json() if t["frames"] >= 10]
        estimated = sum(1 for t in confirmed if sum(t["sources"].values()) > 0)
        q = (lambda f: round(samples[min(len(samples) - 1, int(f * len(samples)))], 3)) if samples else (lambda f: None)
        capacity = slots / service_s  # of one replica
        counts = [n for _, n in timeline]
        results[phase] = {
            "mllm_service_s": service_s, "mllm_slots_per_replica": slots, "mllm_replicas": list(replicas) if isinstance(replicas, tuple) else replicas,
            "mllm_capacity_per_s_one_replica": round(capacity, 2),
            "crops_per_s": round(crops_per_s, 2), "load_over_one_replica": round(crops_per_s / capacity, 2),
            "latency_p50_s": q(0.5), "latency_p95_s": q(0.95), "samples": len(samples),
            "answered_by": routed, "share": {s: round(n / max(sum(routed.values()), 1), 3) for s, n in routed.items()},
            "mllm_answers_per_s": round(routed["mllm"] / elapsed, 2),
            "confirmed_tracks": len(confirmed), "estimated_tracks": estimated, "max_mllm_in_flight": max(in_flight, default=0),
            "fallbacks": {k.split(":")[1]: m1[k] - m0.get(k, 0) for k in m1 if k.startswith("fallback:")},
            "late_mllm_answers_used": m1.get("late:mllm", 0) - m0.get("late:mllm", 0),
            "mllm_replicas_over_time": timeline, "mllm_replicas_max": max(counts, default=0),
            "first_scale_up_s": next((t for t, n in timeline if n > counts[0]), None) if counts else None,
            "window_s": round(elapsed, 1), "window_starts_s": round(t0 - added, 1),
        }  # fmt: skip
        print(f"  {phase}: {results[phase]}", flush=True)
        service.stop()
        control.close()
    endpoint.server.should_exit = True
    idle, over = results["idle"]["latency_p95_s"], results["overload"]["latency_p95_s"]
    results["p95_overload_over_idle"] = round(over / idle, 2) if idle and over else None
    return results


#: The latency part as the router layout ran it (commit 9677385, before routing moved into
#: ingest: every crop went through one ``EstimatorRouter`` replica, which shed the MLLM's
#: overflow itself), measured with that commit's bench in the same session as the committed
#: results.
ROUTER_LAYOUT = REPO / "bench" / "results" / "service_router_layout.json"


def compare_latency(now: dict, before_path: Path) -> str:
    """The latency phases side by side with the router layout's (its committed results)."""
    before = json.loads(before_path.read_text())["latency"] if before_path.exists() else {}
    rows = [("router layout (9677385)", before.get("idle"), before.get("overload")),
            ("routing in ingest, 1 replica", now.get("idle"), now.get("overload")),
            ("routing in ingest, autoscaling", None, now.get("overload_autoscaling"))]  # fmt: skip
    lines = ["layout                          idle p50/p95 s   overload p50/p95 s   overload MLLM share   MLLM replicas"]
    for name, idle, over in rows:
        cell = (lambda r: f"{r['latency_p50_s']}/{r['latency_p95_s']}" if r else "-")
        share = f"{over['share']['mllm']:.2f}" if over else "-"
        replicas = over.get("mllm_replicas_max", 1) if over else "-"
        lines.append(f"{name:32}{cell(idle):17}{cell(over):21}{share:22}{replicas}")
    lines.append("(overload: two streams asking ~10 crops/s of an MLLM pool whose replicas answer 2 crops/s each)")
    return "\n".join(lines)


def memory(camera: RtspCamera, redis_url: str, minutes: float) -> dict:
    """Part 3: RSS of the ingest replica running one live stream, sampled every 30 s."""
    service = Service(_config(redis_url, free_port()))
    service.add("door", camera.url())
    service.wait_live(["door"])
    pid = service.status("door")["owner"]["pid"]
    samples = []
    t0 = time.monotonic()
    while True:
        samples.append((round(time.monotonic() - t0), round(_rss_mb(pid), 1)))
        if time.monotonic() - t0 >= minutes * 60:
            break
        time.sleep(min(30.0, minutes * 60 - (time.monotonic() - t0) + 0.1))
    status = service.status("door")
    service.stop()
    start = next((mb for s, mb in samples if s >= 60), samples[0][1])
    return {"minutes": minutes, "rss_mb_after_1_min": start, "rss_mb_at_end": samples[-1][1],
            "growth_mb": round(samples[-1][1] - start, 1), "samples": samples,
            "frames_analysed": status["frames_analysed"], "frames_dropped": status["frames_dropped"]}  # fmt: skip


def two_nodes(camera: RtspCamera, redis_url: str, window_s: float, losses: int) -> dict:
    """Part 4: streams per ingest node, and take-over times after node losses."""
    cluster = LoopbackRayCluster(head_resources={"api": 1}).start()
    try:
        for name in ("ingest-a", "ingest-b"):
            cluster.add(name, {"ingest": 1})
        cluster.add("pools", {"specialist": 1})
        config = _config(redis_url, free_port(), api={"resources": {"api": 0.01}},
                         ingest={"replicas": 2, "resources": {"ingest": 1}, "lease_s": 3.0, "renew_s": 0.5, "snapshot_s": 1.0,
                                 "status_s": 0.5})  # fmt: skip
        service = Service(config)
        names = {n.node_id: name for name, n in cluster.nodes.items()}
        runs, streams = [], []
        for per_node in (1, 2):
            while len(streams) < 2 * per_node:
                streams.append(f"cam{len(streams) + 1}")
                service.add(streams[-1], camera.url())
            service.wait_live(streams)
            time.sleep(5.0)  # settle
            before = {s: service.status(s) for s in streams}
            t0 = time.monotonic()
            time.sleep(window_s)
            elapsed = time.monotonic() - t0
            after = {s: service.status(s) for s in streams}
            per = {}
            for s in streams:
                analysed = after[s]["frames_analysed"] - before[s]["frames_analysed"]
                dropped = after[s]["frames_dropped"] - before[s]["frames_dropped"]
                per[s] = {"node": names.get(after[s]["owner"]["node"]), "fps": round(analysed / elapsed, 2),
                          "dropped_share": round(dropped / max(analysed + dropped, 1), 4)}  # fmt: skip
            ok = all(p["fps"] >= 9.5 and p["dropped_share"] < 0.05 for p in per.values())
            runs.append({"streams_per_ingest_node": per_node, "per_stream": per, "real_time": ok})
            print(f"  {per_node} stream(s) per ingest node: {per}; {'real time' if ok else 'behind'}", flush=True)
        takeovers = []
        spare = 0
        for _ in range(losses):
            statuses = {s: service.status(s) for s in streams}
            held: dict[str, list[str]] = {}
            for s, st in statuses.items():
                held.setdefault(names[st["owner"]["node"]], []).append(s)
            lost = max(held, key=lambda n: len(held[n]))
            moved = {s: statuses[s]["owner"] for s in held[lost]}
            lost_id = cluster.nodes[lost].node_id
            killed = time.monotonic()
            cluster.remove(lost)
            taken: dict[str, float] = {}
            while len(taken) < len(moved) and time.monotonic() - killed < 120:
                for s, owner in moved.items():
                    st = service.status(s)
                    if s not in taken and st["owner"] not in (None, owner) and st["owner"]["node"] != lost_id and st["state"] == "live":
                        taken[s] = round(time.monotonic() - killed, 2)
                time.sleep(0.1)
            takeovers.append({"lost": lost, "streams": len(moved), "takeover_s": taken, "all_taken": len(taken) == len(moved)})
            print(f"  lost {lost} with {len(moved)} stream(s): taken over after {taken} s", flush=True)
            spare += 1
            node = cluster.add(f"ingest-{spare}", {"ingest": 1})
            names[node.node_id] = f"ingest-{spare}"
            _wait_replicas(config, 2)
        service.stop()
        times = sorted(t for run in takeovers for t in run["takeover_s"].values())
        return {"lease_s": config.ingest.lease_s, "renew_s": config.ingest.renew_s, "runs": runs, "losses": takeovers,
                "takeover_s_median": times[len(times) // 2] if times else None, "takeover_s_max": times[-1] if times else None}  # fmt: skip
    finally:
        cluster.shutdown()


def _wait_replicas(config, n: int, timeout_s: float = 180.0) -> None:
    from tracklens.pipeline.service.control import ControlPlane

    control = ControlPlane(config.store.url, config.store.prefix)
    try:
        deadline = time.monotonic() + timeout_s
        while control.live_replicas() != n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{n} ingest replicas not alive within {timeout_s} s")
            time.sleep(0.5)
    finally:
        control.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the memory run")
    parser.add_argument("--window", type=float, default=30.0, help="seconds each measurement window lasts")
    parser.add_argument("--max-streams", type=int, default=4)
    parser.add_argument("--losses", type=int, default=3, help="node losses in the two-node run")
    parser.add_argument("--parts", default="live,latency,memory,two_nodes", help="which parts to run (comma-separated)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "service.json"))
    args = parser.parse_args()
    import tempfile

    import ray

    work = Path(tempfile.mkdtemp(prefix="tracklens-bench-"))
    (work / "redis").mkdir()
    redis = RedisServer(work / "redis").start()
    camera = RtspCamera(work / "cam", width=1280, height=720, person_px=300, bitrate_kbps=4000).start()
    # the parts not run this time are kept from the last run, each with its own date
    out = Path(args.out)
    result = json.loads(out.read_text()) if out.exists() else {}
    result.update(cores=os.cpu_count(), host=socket.gethostname())
    when = time.strftime("%Y-%m-%dT%H:%M:%S")
    parts = set(args.parts.split(","))
    try:
        if "live" in parts:
            print("live streams in real time (720p, 10 fps analysis):", flush=True)
            result["live_streams"] = {"when": when, **live_streams(camera, redis.url, args.window, args.max_streams)}
        if "latency" in parts:
            print("frame -> estimate latency, MLLM pool idle and overloaded ~5x:", flush=True)
            crowd = RtspCamera(work / "crowd", width=1280, height=720, person_px=220, people=3, bitrate_kbps=4000).start()
            try:
                result["latency"] = {"when": when, **latency(crowd, redis.url, args.window)}
            finally:
                crowd.stop()
        if "memory" in parts:
            print(f"memory of one live stream over {args.minutes:g} minutes:", flush=True)
            result["memory"] = {"when": when, **memory(camera, redis.url, args.minutes)}
            print(f"  {result['memory']}", flush=True)
        if "two_nodes" in parts:
            ray.shutdown()  # the parts before ran on a Ray of this machine alone
            print(f"two ingest nodes of a Ray cluster on this machine, {args.losses} node losses:", flush=True)
            result["two_nodes"] = {"when": when, **two_nodes(camera, redis.url, args.window, args.losses)}
    finally:
        ray.shutdown()
        camera.stop()
        redis.stop()
    for part in ("live_streams", "latency", "memory", "two_nodes"):  # parts of a run before parts had dates
        if part in result and "when" not in result[part]:
            result[part] = {"when": result.get("when"), **result[part]}
    result.pop("when", None)
    if "latency" in parts:
        print(compare_latency(result["latency"], ROUTER_LAYOUT), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
