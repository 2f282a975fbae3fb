"""The Serve application: the deployments of :mod:`.deployments`, sized from the config."""

from __future__ import annotations

from tracklens.pipeline.config import PoolConfig, ServeConfig

__all__ = ["app_builder", "build_app"]


def _pool_options(pool: PoolConfig) -> dict:
    options: dict = {
        "ray_actor_options": {"num_cpus": pool.num_cpus, "num_gpus": pool.num_gpus},
        "max_ongoing_requests": pool.max_ongoing_requests,
        "max_queued_requests": pool.max_queued_requests,
    }
    if pool.num_replicas == "auto":
        options["autoscaling_config"] = {
            "min_replicas": pool.min_replicas,
            "max_replicas": pool.max_replicas,
            "target_ongoing_requests": pool.target_ongoing_requests,
        }
    else:
        options["num_replicas"] = pool.num_replicas
    return options


def build_app(config: ServeConfig):
    """The bound application: ``Api`` (ingress) -> ``StreamIngest`` -> ``SpecialistPool`` and,
    when the estimator is routed, ``MLLMPool``: each ingest replica sends its crops straight to
    the pool that answers them."""
    from .deployments import Api, MLLMPool, SpecialistPool, StreamIngest

    text = config.model_dump_json()
    specialist = SpecialistPool.options(**_pool_options(config.pools.specialist)).bind(text)
    mllm = MLLMPool.options(**_pool_options(config.pools.mllm)).bind(text) if config.estimator.type == "routed" else None
    ingest = StreamIngest.options(
        num_replicas=config.ingest.replicas,
        ray_actor_options={"num_cpus": config.ingest.num_cpus},
        health_check_period_s=5,
        graceful_shutdown_timeout_s=30,
    ).bind(text, specialist, mllm)
    return Api.options(ray_actor_options={"num_cpus": config.api.num_cpus}, max_ongoing_requests=100).bind(text, ingest)


def app_builder(args: dict):
    """Entry point for ``serve run`` and KubeRay's ``RayService`` (``import_path:
    tracklens.serve.app:app_builder``); ``args: {config: /path/serve.yaml}``. The Redis URL comes
    from ``$TRACKLENS_REDIS_URL`` when set (a cluster's Redis is an external service)."""
    from tracklens.pipeline.config import load_serve_config
    from tracklens.pipeline.env import redis_url

    url = redis_url()
    overrides = {"store.url": url} if url else {}
    return build_app(load_serve_config(args.get("config"), overrides, {"store.url": "TRACKLENS_REDIS_URL"}))
