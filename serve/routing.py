"""Routing inside an ingest replica: each crop goes straight to the pool that answers it.

Every ``StreamIngest`` replica holds handles to the two pools and runs the route decision
(:class:`~tracklens.pipeline.service.routing.RouteDecider`) itself, so crop pixels cross one
process boundary each way (ingest -> pool -> ingest) and no single router replica funnels
every stream's crops. Ray Serve does the queueing: the MLLM pool's ``max_queued_requests``
refuses what it cannot queue (``BackPressureError``), those crops go to the specialist, and
the pool's autoscaler sees the real demand. An MLLM answer later than the latency budget does
not make its crop wait: the specialist answers it now, and the MLLM's answer is still handed
to the track book when it comes (it fuses late estimates). Counters are kept in memory and
written by the ingest's lease loop, so no crop waits for a metrics write.

The answers come back on this router's own event loop thread, not on the stream threads:
``submit`` only schedules, and ``deliver(crops, estimates)`` is called once per answered part
of a batch (``estimates`` None when a part got no answer at all).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import replace

from tracklens.pipeline.config import ServeConfig
from tracklens.pipeline.estimators.routed import needs_fallback
from tracklens.pipeline.service.routing import RouteDecider
from tracklens.pipeline.types import Crop, Estimate

__all__ = ["Deliver", "PoolRouter", "pool_capacity"]

log = logging.getLogger("tracklens.serve")

#: ``deliver(crops, estimates)``: one estimate per crop, or None when those crops got none.
Deliver = Callable[[list[Crop], list[Estimate] | None], None]


def pool_capacity(config: ServeConfig) -> int:
    """Crops the MLLM pool takes at once at its full size (replicas x ongoing + queued)."""
    pool = config.pools.mllm
    replicas = pool.max_replicas if pool.num_replicas == "auto" else pool.num_replicas
    queued = pool.max_queued_requests if pool.max_queued_requests >= 0 else pool.max_ongoing_requests
    return replicas * pool.max_ongoing_requests + queued


class PoolRouter:
    """See the module docstring.

    Args:
        config: the service configuration (``router`` and ``pools.mllm``).
        specialist: handle to ``SpecialistPool`` (a list of crops per call).
        mllm: handle to ``MLLMPool`` (one crop per call, batched by the pool), or None.
    """

    def __init__(self, config: ServeConfig, specialist, mllm=None) -> None:
        self.config = config
        self.specialist, self.mllm = specialist, mllm
        self.decider = RouteDecider(config.router, pool_capacity(config) if mllm is not None else 0)
        self._counts: Counter = Counter()
        self._lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="pool-router", daemon=True)
        self._thread.start()

    def submit(self, crops: list[Crop], deliver: Deliver) -> None:
        """Route ``crops``; returns at once (called from stream threads)."""
        asyncio.run_coroutine_threadsafe(self._route(crops, deliver), self.loop)

    def take_counts(self) -> dict[str, int]:
        """Counters since the last call (``routed:mllm``, ``fallback:backpressure``, ``late:mllm``...)."""
        with self._lock:
            counts, self._counts = dict(self._counts), Counter()
        return counts

    @property
    def in_flight(self) -> int:
        return self.decider.in_flight

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)

    # -- on the router's loop -------------------------------------------------------------------

    async def _route(self, crops: list[Crop], deliver: Deliver) -> None:
        plan = self.decider.plan([c.track for c in crops]) if self.mllm is not None else [False] * len(crops)
        asked = [i for i, use in enumerate(plan) if use]
        rest = [i for i, use in enumerate(plan) if not use]
        parts = []
        if rest:
            parts.append(self._specialist([crops[i] for i in rest], deliver, {}))
        if asked:
            parts.append(self._ask_mllm([crops[i] for i in asked], deliver))
        await asyncio.gather(*parts)

    async def _ask_mllm(self, crops: list[Crop], deliver: Deliver) -> None:
        from ray.serve.exceptions import BackPressureError

        calls = {asyncio.ensure_future(self._one(crop)): i for i, crop in enumerate(crops)}
        done, late = await asyncio.wait(calls, timeout=self.config.router.latency_budget_s)
        answered, why, troubles = {}, {}, set()
        for call in done:
            i = calls[call]
            error = call.exception()
            if error is None and not needs_fallback(call.result()):
                answered[i] = call.result()
                continue
            if isinstance(error, BackPressureError):
                reason = "backpressure"
            elif error is not None:
                reason = "failure"
                log.warning("MLLM pool call failed: %s", error)
            else:
                reason = "invalid"
            why[i] = call.result().reason if error is None else reason
            self._count(f"fallback:{reason}")
            troubles.add(reason)
        for call in late:
            why[calls[call]] = "overrun"
            self._count("fallback:overrun")
            troubles.add("overrun")
            call.add_done_callback(lambda c, i=calls[call]: self._late(c, crops[i], deliver))
        # the worst trouble of the batch speaks for it: a failure or an overrun sheds, back-pressure alone does not
        trouble = next((t for t in ("failure", "overrun", "backpressure") if t in troubles), None)
        self.decider.done(len(done), [crops[i].track for i in answered], trouble)
        if answered:
            order = sorted(answered)
            self._deliver(deliver, [crops[i] for i in order], [answered[i] for i in order])
        if why:
            order = sorted(why)
            await self._specialist([crops[i] for i in order], deliver, {k: why[i] for k, i in enumerate(order)})

    async def _one(self, crop: Crop) -> Estimate:
        return await self.mllm.estimate.remote(crop)

    def _late(self, call: asyncio.Future, crop: Crop, deliver: Deliver) -> None:
        """An MLLM answer that came after the latency budget: still an estimate of its track."""
        valid = not call.cancelled() and call.exception() is None and not needs_fallback(call.result())
        self.decider.done(1, [crop.track] if valid else [], None)
        if valid:
            self._count("late:mllm")
            self._deliver(deliver, [crop], [call.result()])

    async def _specialist(self, crops: list[Crop], deliver: Deliver, why: dict[int, str]) -> None:
        try:
            answers = await self.specialist.estimate.remote(crops)
        except Exception as err:  # a pool failure: the crops get no estimate (the track book counts them)
            log.warning("the specialist pool failed %d crops: %s", len(crops), err)
            deliver(crops, None)
            return
        answers = [replace(e, primary_failure=why[k]) if k in why else e for k, e in enumerate(answers)]
        self._deliver(deliver, crops, answers)

    def _deliver(self, deliver: Deliver, crops: list[Crop], estimates: list[Estimate]) -> None:
        for est in estimates:
            self._count(f"routed:{est.source}")
        deliver(crops, estimates)

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1
