"""Routing inside an ingest replica, without Ray: fake pool handles with the calling convention
of Ray Serve's (``handle.estimate.remote(x)`` is awaitable), the real decision logic.

Regression: crops went ingest -> router replica -> pool -> router -> ingest; on a latency
overrun the router dropped the MLLM answers still on their way while the GPU finished them."""

from __future__ import annotations

import asyncio
import threading

import pytest
from conftest import wait_until
from tracklens.pipeline.config import ServeConfig
from tracklens.pipeline.types import Crop, Estimate

pytest.importorskip("ray")
from ray.serve.exceptions import BackPressureError  # noqa: E402
from tracklens.serve.routing import PoolRouter  # noqa: E402


class _Method:
    def __init__(self, fn) -> None:
        self.fn = fn

    def remote(self, arg):
        return asyncio.ensure_future(self.fn(arg))


class _Handle:
    def __init__(self, fn) -> None:
        self.estimate = _Method(fn)


def _estimate(crop: Crop, source: str, valid: bool = True) -> Estimate:
    return Estimate(crop.track, crop.time, source, f"{source}-model", age=30.0 if valid else None, valid=valid,
                    reason=None if valid else "off-format: test")  # fmt: skip


def _crops(n: int) -> list[Crop]:
    return [Crop(f"s:0:{i}", 0.0, None, None, None, 1.0) for i in range(n)]


class _Collected:
    """``deliver`` that records every call, thread-safe."""

    def __init__(self) -> None:
        self.calls, self.lock = [], threading.Lock()

    def __call__(self, crops, estimates) -> None:
        with self.lock:
            self.calls.append(([c.track for c in crops], estimates))

    def estimates(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for tracks, ests in self.calls:
            for track, est in zip(tracks, ests or [None] * len(tracks)):
                out.setdefault(track, []).append(None if est is None else est.source)
        return out


async def _specialist(crops):
    return [_estimate(c, "specialist") for c in crops]


def _router(mllm, specialist=_specialist, budget_s: float = 5.0) -> PoolRouter:
    config = ServeConfig.model_validate({"estimator": {"type": "specialist"}, "router": {"latency_budget_s": budget_s}})
    return PoolRouter(config, _Handle(specialist), None if mllm is None else _Handle(mllm))


def test_crops_go_straight_to_the_mllm_pool_and_back():
    async def mllm(crop):
        return _estimate(crop, "mllm")

    router, got = _router(mllm), _Collected()
    router.submit(_crops(3), got)
    wait_until(lambda: len(got.estimates()) == 3)
    assert got.estimates() == {f"s:0:{i}": ["mllm"] for i in range(3)}
    assert router.take_counts() == {"routed:mllm": 3} and router.in_flight == 0
    router.close()


def test_crops_the_mllm_pool_refuses_or_answers_badly_go_to_the_specialist_and_say_why():
    async def mllm(crop):
        if crop.track == "s:0:0":
            raise BackPressureError(num_queued_requests=1, max_queued_requests=1)
        return _estimate(crop, "mllm", valid=crop.track != "s:0:1")

    router, got = _router(mllm), _Collected()
    router.submit(_crops(3), got)
    wait_until(lambda: len(got.estimates()) == 3)
    assert got.estimates() == {"s:0:0": ["specialist"], "s:0:1": ["specialist"], "s:0:2": ["mllm"]}
    fallback = {t: e.primary_failure for tracks, ests in got.calls for t, e in zip(tracks, ests) if e.source == "specialist"}
    assert fallback == {"s:0:0": "backpressure", "s:0:1": "off-format: test"}
    assert not router.decider.shedding  # back-pressure refuses crops, not the next ones: the pool stays busy
    counts = router.take_counts()
    assert counts["fallback:backpressure"] == 1 and counts["fallback:invalid"] == 1 and counts["routed:specialist"] == 2
    router.close()


def test_a_batch_with_back_pressure_and_an_overrun_sheds():
    """Back-pressure alone does not shed, but it must not hide worse trouble in the same batch:
    a refused crop beside one that overran the budget starts the cooldown."""
    release = threading.Event()

    async def mllm(crop):
        if crop.track == "s:0:0":
            raise BackPressureError(num_queued_requests=1, max_queued_requests=1)
        while not release.is_set():
            await asyncio.sleep(0.01)
        return _estimate(crop, "mllm")

    router, got = _router(mllm, budget_s=0.05), _Collected()
    router.submit(_crops(2), got)
    wait_until(lambda: len(got.estimates()) == 2)
    assert router.decider.shedding and router.decider.troubles == {"overrun": 1}
    release.set()
    wait_until(lambda: router.in_flight == 0)
    router.close()


def test_an_answer_past_the_latency_budget_is_still_delivered_after_the_specialist_s():
    release = threading.Event()

    async def mllm(crop):
        while not release.is_set():  # the GPU is still working on it
            await asyncio.sleep(0.01)
        return _estimate(crop, "mllm")

    router, got = _router(mllm, budget_s=0.05), _Collected()
    router.submit(_crops(2), got)
    wait_until(lambda: len(got.estimates()) == 2)  # the specialist answered at once
    assert got.estimates() == {"s:0:0": ["specialist"], "s:0:1": ["specialist"]}
    assert router.in_flight == 2  # the MLLM calls are still running, and counted
    release.set()
    wait_until(lambda: all(len(v) == 2 for v in got.estimates().values()))
    assert got.estimates() == {"s:0:0": ["specialist", "mllm"], "s:0:1": ["specialist", "mllm"]}
    counts = router.take_counts()
    assert counts["late:mllm"] == 2 and counts["fallback:overrun"] == 2 and router.in_flight == 0
    router.close()


def test_without_an_mllm_everything_goes_to_the_specialist_and_a_failing_pool_is_reported():
    router, got = _router(None), _Collected()
    router.submit(_crops(2), got)
    wait_until(lambda: len(got.estimates()) == 2)
    assert got.estimates() == {"s:0:0": ["specialist"], "s:0:1": ["specialist"]}
    router.close()

    async def broken(crops):
        raise RuntimeError("replica died")

    router, got = _router(None, specialist=broken), _Collected()
    router.submit(_crops(2), got)
    wait_until(lambda: got.calls)
    assert got.calls == [(["s:0:0", "s:0:1"], None)]  # no estimate: the track book counts them unanswered
    router.close()


@pytest.mark.parametrize("estimator", ["specialist", "routed"])
def test_the_application_has_no_replica_between_ingest_and_the_pools(estimator):
    """The built Serve graph: Api -> StreamIngest -> the pools, for both configurations; no
    deployment relays crops."""
    from tracklens.serve.app import build_app

    routed = {"type": "routed", "primary": {"type": "mllm", "backend": {"type": "openai", "base_url": "http://127.0.0.1:1/v1", "model": "m"}}}
    app = build_app(ServeConfig.model_validate({"estimator": routed if estimator == "routed" else {"type": "specialist"}}))

    def graph(node) -> dict:
        bound = node._bound_deployment
        children = [a for a in bound.init_args if hasattr(a, "_bound_deployment")]
        return {bound.name: [graph(c) for c in children]}

    pools = [{"SpecialistPool": []}] + ([{"MLLMPool": []}] if estimator == "routed" else [])
    assert graph(app) == {"Api": [{"StreamIngest": pools}]}
