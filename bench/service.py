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
   layout's figures (``bench/results/service_router_layout.json``, commit 9677385); the
   part itself is in ``service_latency.py``, what the parts share in ``service_app.py``.
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
import time
from pathlib import Path

from service_app import (
    REPO,
    LoopbackRayCluster,
    RedisServer,
    RtspCamera,
    Service,
    cpu_seconds,
    free_port,
    rss_mb,
    service_config,
)
from service_latency import ROUTER_LAYOUT, compare_latency, latency


def live_streams(camera: RtspCamera, redis_url: str, window_s: float, max_streams: int) -> dict:
    """Part 1: the largest N sustained in real time, and the compute bound."""
    service = Service(service_config(redis_url, free_port()))
    exclude = {camera.proc.pid, os.getpid()}
    t0, c0 = time.monotonic(), cpu_seconds(exclude)
    time.sleep(window_s / 2)
    idle_cores = (cpu_seconds(exclude) - c0) / (time.monotonic() - t0)
    cam0, camera_t0 = cpu_seconds(set()) - cpu_seconds({camera.proc.pid}), time.monotonic()
    runs, names = [], []
    for n in range(1, max_streams + 1):
        name = f"cam{n}"
        service.add(name, camera.url())
        names.append(name)
        service.wait_live(names)
        time.sleep(5.0)  # settle
        before = {s: service.status(s) for s in names}
        t0, c0 = time.monotonic(), cpu_seconds(exclude)
        time.sleep(window_s)
        elapsed, cores = time.monotonic() - t0, (cpu_seconds(exclude) - c0) / (time.monotonic() - t0)
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
    camera_cores = (cpu_seconds(set()) - cpu_seconds({camera.proc.pid}) - cam0) / (time.monotonic() - camera_t0)
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


def memory(camera: RtspCamera, redis_url: str, minutes: float) -> dict:
    """Part 3: RSS of the ingest replica running one live stream, sampled every 30 s."""
    service = Service(service_config(redis_url, free_port()))
    service.add("door", camera.url())
    service.wait_live(["door"])
    pid = service.status("door")["owner"]["pid"]
    samples = []
    t0 = time.monotonic()
    while True:
        samples.append((round(time.monotonic() - t0), round(rss_mb(pid), 1)))
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
        config = service_config(redis_url, free_port(), api={"resources": {"api": 0.01}},
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
