"""The Ray Serve deployments: wiring of the pipeline's objects, no stage logic.

- ``MLLMPool``: the MLLM estimator, ``@ray.serve.batch`` over single crops (one batch at a time
  for an in-process model, several for a remote endpoint).
- ``SpecialistPool``: the ONNX specialist, a list of crops per call.
- ``StreamIngest``: an :class:`~tracklens.pipeline.service.ingest.IngestNode`; it routes crop
  batches straight to the pools (:mod:`.routing`) and never waits for them.
- ``Api``: the FastAPI app of :mod:`.api`.

Each takes the service configuration as JSON (it crosses process boundaries) and builds what
it needs in its own replica process.
"""

from __future__ import annotations

import asyncio
import logging

import ray
import ray.serve
from tracklens.pipeline.config import ServeConfig
from tracklens.pipeline.types import Crop, Estimate

__all__ = ["Api", "MLLMPool", "SpecialistPool", "StreamIngest", "estimators_label"]

log = logging.getLogger("tracklens.serve")


def estimators_label(config: ServeConfig) -> str:
    return "mllm+specialist" if config.estimator.type == "routed" else "specialist only"


@ray.serve.deployment
class MLLMPool:
    """The MLLM (the routed estimator's primary): single crops in, batched by Ray Serve.

    An in-process model (transformers) runs one batch at a time on its device; a remote
    endpoint (openai: vLLM, a hosted API) takes several batches at once, since its own server
    batches and queues them.
    """

    def __init__(self, config_json: str) -> None:
        from tracklens.pipeline.estimators import build_estimator
        from tracklens.pipeline.models import ModelCache

        config = ServeConfig.model_validate_json(config_json)
        self.estimator = build_estimator(config.estimator.primary, ModelCache())
        self.remote = config.estimator.primary.backend.type == "openai"
        pool = config.pools.mllm
        for batched in (self._one_batch_at_a_time, self._several_batches):
            batched.set_max_batch_size(config.estimator.primary.batch_size)  # one batch size: the estimator's
            batched.set_batch_wait_timeout_s(pool.batch_wait_timeout_s)

    async def estimate(self, crop: Crop) -> Estimate:
        return await (self._several_batches(crop) if self.remote else self._one_batch_at_a_time(crop))

    def check_health(self) -> None:
        self.estimator.check_health()

    @ray.serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def _one_batch_at_a_time(self, crops: list[Crop]) -> list[Estimate]:
        # the model runs in a thread: the replica's event loop keeps taking requests meanwhile
        return await asyncio.to_thread(self.estimator.estimate, crops)

    @ray.serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05, max_concurrent_batches=8)
    async def _several_batches(self, crops: list[Crop]) -> list[Estimate]:
        return await asyncio.to_thread(self.estimator.estimate, crops)


@ray.serve.deployment
class SpecialistPool:
    """The specialist: always there, fast, the floor under every track."""

    def __init__(self, config_json: str) -> None:
        from tracklens.pipeline.config import SpecialistEstimatorConfig
        from tracklens.pipeline.estimators import build_estimator
        from tracklens.pipeline.models import ModelCache

        config = ServeConfig.model_validate_json(config_json)
        spec = config.estimator if isinstance(config.estimator, SpecialistEstimatorConfig) else config.estimator.fallback
        self.estimator = build_estimator(spec, ModelCache())

    async def estimate(self, crops: list[Crop]) -> list[Estimate]:
        return await asyncio.to_thread(self.estimator.estimate, crops)


@ray.serve.deployment
class StreamIngest:
    """Runs the streams whose leases it holds (see ``IngestNode``) and sends their crops
    straight to the pools (:class:`~.routing.PoolRouter`): no replica in between."""

    def __init__(self, config_json: str, specialist, mllm=None) -> None:
        from tracklens.pipeline.detectors import build_detector
        from tracklens.pipeline.models import ModelCache
        from tracklens.pipeline.service.control import ControlPlane, Owner
        from tracklens.pipeline.service.ingest import IngestNode
        from tracklens.pipeline.store import build_store

        from .routing import PoolRouter

        config = ServeConfig.model_validate_json(config_json)
        self.config = config
        models = ModelCache()
        detectors = (build_detector(config.detection.person, models), build_detector(config.detection.face, models))
        self.store = build_store(config.store)
        self.control = ControlPlane.from_config(config.store)
        self.router = PoolRouter(config, specialist, mllm)
        replica = ray.serve.get_replica_context().replica_id.unique_id
        owner = Owner.here(replica, node=ray.get_runtime_context().get_node_id())
        self.node = IngestNode(config, detectors, self.store, self.control, self.router.submit, owner, estimators_label(config),
                               after_tick=self._publish_metrics)  # fmt: skip
        self.node.start()

    def _publish_metrics(self) -> None:
        """The router's counters since the last tick, and its MLLM crops in flight (a gauge
        per replica, summed by /metrics); a Redis outage only delays them."""
        from tracklens.pipeline.errors import StoreError

        counts = self.router.take_counts()
        try:
            self.control.count(counts)
            self.control.set_in_flight(self.node.owner.id, self.router.in_flight)
        except StoreError as err:
            log.warning("router metrics not published: %s", err)
            with self.router._lock:
                self.router._counts.update(counts)  # kept for the next tick

    def describe(self) -> dict:
        """Which streams this replica runs (tests and operators)."""
        return {"owner": self.node.owner.model_dump(), "streams": sorted(self.node.workers)}

    def check_health(self) -> None:
        if not self.node.alive:
            raise RuntimeError("the lease loop has stopped")

    def __del__(self) -> None:
        # graceful shutdown: hand the streams over (snapshots saved, leases released)
        node = getattr(self, "node", None)
        if node is not None:
            node.shutdown()
            self.router.close()
            self.store.close()


@ray.serve.deployment
@ray.serve.ingress()
class Api:
    """The FastAPI ingress; see :mod:`.api`."""

    def __init__(self, config_json: str, ingest) -> None:
        from tracklens.pipeline.env import secret
        from tracklens.pipeline.service.control import ControlPlane
        from tracklens.pipeline.store import build_store

        config = ServeConfig.model_validate_json(config_json)
        self.config, self.ingest = config, ingest
        self.control = ControlPlane.from_config(config.store)
        self.store = build_store(config.store)
        key = None
        if config.api.api_key_file is not None:
            key = config.api.api_key_file.read_text().strip()
        elif config.api.api_key_env:
            key = secret(config.api.api_key_env)
        self.api_key = key

    def __serve_build_asgi_app__(self):
        from .api import make_api

        return make_api(self.config, self.control, self.store, self.api_key, self._health)

    def _health(self) -> dict:
        return {"estimators": estimators_label(self.config), "auth": self.api_key is not None}
