"""The Ray Serve deployments: wiring of the pipeline's objects, no stage logic.

- ``MLLMPool``: the MLLM estimator, ``@ray.serve.batch`` over single crops (one batch at a time
  for an in-process model, several for a remote endpoint).
- ``SpecialistPool``: the ONNX specialist, a list of crops per call.
- ``EstimatorRouter``: :class:`~tracklens.pipeline.service.routing.RouteDecider` over the two pools.
- ``StreamIngest``: an :class:`~tracklens.pipeline.service.ingest.IngestNode`; it sends crop
  batches to the router and never waits for them.
- ``Api``: the FastAPI app of :mod:`.api`.

Each takes the service configuration as JSON (it crosses process boundaries) and builds what
it needs in its own replica process.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import ray
import ray.serve
from tracklens.pipeline.config import ServeConfig
from tracklens.pipeline.types import Crop, Estimate

__all__ = ["Api", "EstimatorRouter", "MLLMPool", "SpecialistPool", "StreamIngest", "estimators_label"]

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
            batched.set_max_batch_size(pool.max_batch_size)
            batched.set_batch_wait_timeout_s(pool.batch_wait_timeout_s)

    async def estimate(self, crop: Crop) -> Estimate:
        return await (self._several_batches(crop) if self.remote else self._one_batch_at_a_time(crop))

    def check_health(self) -> None:
        if not self.estimator.healthy:
            raise RuntimeError("the MLLM can no longer run on its device")

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
class EstimatorRouter:
    """Crops to the MLLM pool while it has room, to the specialist pool otherwise; every
    estimate keeps its source, and a fallback estimate says why the MLLM did not answer."""

    def __init__(self, config_json: str, specialist, mllm=None) -> None:
        from tracklens.pipeline.service.control import ControlPlane
        from tracklens.pipeline.service.routing import RouteDecider

        config = ServeConfig.model_validate_json(config_json)
        self.config = config
        self.specialist, self.mllm = specialist, mllm
        pool = config.pools.mllm
        replicas = pool.max_replicas if pool.num_replicas == "auto" else pool.num_replicas
        queued = pool.max_queued_requests if pool.max_queued_requests >= 0 else pool.max_ongoing_requests
        capacity = replicas * pool.max_ongoing_requests + queued if mllm is not None else 0
        self.decider = RouteDecider(config.router, capacity)
        self.control = ControlPlane.from_config(config.store)

    async def estimate(self, crops: list[Crop]) -> list[Estimate]:
        from ray.serve.exceptions import BackPressureError
        from tracklens.pipeline.estimators.routed import needs_fallback

        out: list[Estimate | None] = [None] * len(crops)
        why: dict[int, str] = {}
        chosen = [i for i, use in enumerate(self.decider.plan([c.track for c in crops])) if use]
        counts: dict[str, int] = {}
        if chosen:
            responses = [self.mllm.estimate.remote(crops[i]) for i in chosen]
            trouble = None
            try:
                answers = await asyncio.wait_for(asyncio.gather(*responses, return_exceptions=True), self.config.router.latency_budget_s)
            except asyncio.TimeoutError:
                for response in responses:
                    response.cancel()
                answers, trouble = [None] * len(chosen), "overrun"
            for i, answer in zip(chosen, answers):
                if isinstance(answer, Estimate) and not needs_fallback(answer):
                    out[i] = answer
                    continue
                if isinstance(answer, BackPressureError):
                    reason = "backpressure"
                elif isinstance(answer, BaseException):
                    reason = "failure"
                    log.warning("MLLM pool call failed: %s", answer)
                elif answer is None:
                    reason = "overrun"
                else:
                    reason = "invalid"
                why[i] = answer.reason if isinstance(answer, Estimate) else reason
                counts[f"fallback:{reason}"] = counts.get(f"fallback:{reason}", 0) + 1
                if reason != "invalid":
                    trouble = trouble or reason
            self.decider.done(len(chosen), [crops[i].track for i in chosen if out[i] is not None], trouble)
        rest = [i for i, est in enumerate(out) if est is None]
        if rest:
            answers = await self.specialist.estimate.remote([crops[i] for i in rest])
            for i, est in zip(rest, answers):
                out[i] = replace(est, extra={**est.extra, "primary_failure": why[i]}) if i in why else est
        for est in out:
            counts[f"routed:{est.source}"] = counts.get(f"routed:{est.source}", 0) + 1
        await asyncio.to_thread(self._publish, counts)
        return out

    def _publish(self, counts: dict[str, int]) -> None:
        from tracklens.pipeline.errors import StoreError

        try:
            self.control.count(counts)
            self.control.set_gauge("mllm_in_flight", self.decider.in_flight)
        except StoreError as err:  # metrics are best effort; the estimates still go back
            log.warning("router metrics not published: %s", err)


@ray.serve.deployment
class StreamIngest:
    """Runs the streams whose leases it holds (see ``IngestNode``)."""

    def __init__(self, config_json: str, router) -> None:
        from tracklens.pipeline.detectors import build_detector
        from tracklens.pipeline.models import ModelCache
        from tracklens.pipeline.service.control import ControlPlane
        from tracklens.pipeline.service.ingest import IngestNode
        from tracklens.pipeline.store import build_store

        config = ServeConfig.model_validate_json(config_json)
        self.config, self.router = config, router
        models = ModelCache()
        detectors = (build_detector(config.detection.person, models), build_detector(config.detection.face, models))
        self.store = build_store(config.store)
        self.control = ControlPlane.from_config(config.store)
        self._waiters = ThreadPoolExecutor(32, thread_name_prefix="estimates")
        context = ray.serve.get_replica_context()
        owner = f"{context.replica_id.unique_id}@{os.uname().nodename}:{os.getpid()}"
        self.node = IngestNode(config, detectors, self.store, self.control, self._submit, owner, estimators_label(config))
        self.node.start()

    def _submit(self, crops: list[Crop], done) -> None:
        try:
            response = self.router.estimate.remote(crops)
        except Exception as err:
            log.warning("could not send %d crops to the router: %s", len(crops), err)
            done(None)
            return
        self._waiters.submit(self._wait, response, done)

    def _wait(self, response, done) -> None:
        try:
            estimates = response.result(timeout_s=self.config.ingest.estimate_timeout_s)
        except Exception as err:
            log.warning("a crop batch got no estimates: %s", err)
            done(None)
            return
        done(estimates)

    def describe(self) -> dict:
        """Which streams this replica runs (tests and operators)."""
        return {"owner": self.node.owner, "streams": sorted(self.node.workers)}

    def check_health(self) -> None:
        if not self.node.alive:
            raise RuntimeError("the lease loop has stopped")

    def __del__(self) -> None:
        # graceful shutdown: hand the streams over (snapshots saved, leases released)
        node = getattr(self, "node", None)
        if node is not None:
            node.shutdown()
            self._waiters.shutdown(wait=False)
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
