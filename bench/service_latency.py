"""Part 2 of the service bench: frame -> estimate latency with the MLLM pool idle, overloaded
and autoscaling, side by side with the router layout's own figures (see ``service.py``)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from service_app import REPO, RtspCamera, Service, free_port, service_config

__all__ = ["LATENCY_PHASES", "ROUTER_LAYOUT", "compare_latency", "latency"]

ANSWER = '{"age": 38, "gender": "female", "expression": "happy"}'


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
        config = service_config(
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
