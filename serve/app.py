"""The Serve application: the deployments of :mod:`.deployments`, sized from the config."""

from __future__ import annotations

import math
from collections import Counter

from tracklens.pipeline.config import PoolConfig, ServeConfig

__all__ = ["app_builder", "build_app", "deployment_options", "local_resources"]


def _actor_options(num_cpus: float, resources: dict[str, float], num_gpus: float = 0.0) -> dict:
    options: dict = {"num_cpus": num_cpus, "num_gpus": num_gpus}
    if resources:
        options["resources"] = dict(resources)
    return options


def _pool_options(pool: PoolConfig) -> dict:
    options: dict = {
        "ray_actor_options": _actor_options(pool.num_cpus, pool.resources, pool.num_gpus),
        "max_ongoing_requests": pool.max_ongoing_requests,
        "max_queued_requests": pool.max_queued_requests,
    }
    if pool.num_replicas == "auto":
        options["autoscaling_config"] = {
            "min_replicas": pool.min_replicas,
            "max_replicas": pool.max_replicas,
            "target_ongoing_requests": pool.target_ongoing_requests,
            "upscale_delay_s": pool.upscale_delay_s,
            "downscale_delay_s": pool.downscale_delay_s,
        }
    else:
        options["num_replicas"] = pool.num_replicas
    return options


def deployment_options(config: ServeConfig) -> dict[str, dict]:
    """Ray Serve options of each deployment by name (``MLLMPool`` only when the estimator is
    routed): replicas, limits, and what each replica asks of its node (CPUs, GPUs, and the
    custom resources of its node role)."""
    options = {
        "Api": {"ray_actor_options": _actor_options(config.api.num_cpus, config.api.resources), "max_ongoing_requests": 100},
        "StreamIngest": {
            "num_replicas": config.ingest.replicas,
            "ray_actor_options": _actor_options(config.ingest.num_cpus, config.ingest.resources),
            "health_check_period_s": 5,
            "graceful_shutdown_timeout_s": 30,
        },
        "SpecialistPool": _pool_options(config.pools.specialist),
    }
    if config.estimator.type == "routed":
        options["MLLMPool"] = _pool_options(config.pools.mllm)
    return options


def build_app(config: ServeConfig):
    """The bound application: ``Api`` (ingress) -> ``StreamIngest`` -> ``SpecialistPool`` and,
    when the estimator is routed, ``MLLMPool``: each ingest replica sends its crops straight to
    the pool that answers them."""
    from .deployments import Api, MLLMPool, SpecialistPool, StreamIngest

    text = config.model_dump_json()
    options = deployment_options(config)
    specialist = SpecialistPool.options(**options["SpecialistPool"]).bind(text)
    mllm = MLLMPool.options(**options["MLLMPool"]).bind(text) if "MLLMPool" in options else None
    ingest = StreamIngest.options(**options["StreamIngest"]).bind(text, specialist, mllm)
    return Api.options(**options["Api"]).bind(text, ingest)


def local_resources(config: ServeConfig) -> dict[str, float]:
    """The custom resources a Ray of this machine alone offers, so that every replica of
    ``config`` fits on it: per name, twice what the replicas ask for at most (a replacement
    can start while the replica it replaces stops), rounded up to a whole number (Ray's rule
    for a node). On a cluster the nodes offer them instead (``ray start --resources``)."""
    need: Counter[str] = Counter()
    for options in deployment_options(config).values():
        scaling = options.get("autoscaling_config")
        replicas = scaling["max_replicas"] if scaling else options.get("num_replicas", 1)
        for name, amount in options["ray_actor_options"].get("resources", {}).items():
            need[name] += amount * replicas
    return {name: float(max(1, math.ceil(2 * total - 1e-9))) for name, total in need.items()}


def app_builder(args: dict):
    """Entry point for ``serve run`` and KubeRay's ``RayService`` (``import_path:
    tracklens.serve.app:app_builder``); ``args: {config: /path/serve.yaml}``. The Redis URL comes
    from ``$TRACKLENS_REDIS_URL`` when set (a cluster's Redis is an external service)."""
    from tracklens.pipeline.config import load_serve_config
    from tracklens.pipeline.env import redis_url

    url = redis_url()
    overrides = {"store.url": url} if url else {}
    return build_app(load_serve_config(args.get("config"), overrides, {"store.url": "TRACKLENS_REDIS_URL"}))
