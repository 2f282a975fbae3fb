"""Sections of the live service (``tracklens serve``): ingest, router, replica pools, HTTP API.

The service runs the same stages as ``tracklens analyze`` (the rest of :class:`ServeConfig` is
the pipeline's config); these sections size and bound what runs around them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator

from .base import Section as _Section

__all__ = ["ApiConfig", "IngestConfig", "MllmPoolConfig", "PoolConfig", "Resources", "RouterConfig"]

_RESOURCE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
#: Ray's own resources: asked for with num_cpus / num_gpus, or not custom at all.
_RAY_RESOURCES = frozenset({"CPU", "GPU", "memory", "object_store_memory"})


def _check_resources(value: dict[str, float]) -> dict[str, float]:
    """Custom Ray resources as Ray accepts them for a replica: names of letters, digits, ``_``
    and ``-``, none of Ray's own; amounts above 0, at most 4 decimals, whole above 1."""
    for name, amount in value.items():
        if not _RESOURCE_NAME.fullmatch(name):
            raise ValueError(f"resource name {name[:40]!r} must be 1-64 of A-Z a-z 0-9 _ -, starting with a letter")
        if name in _RAY_RESOURCES:
            raise ValueError(f"{name} is Ray's own resource, not a node role (set num_cpus / num_gpus)")
        if not 0 < amount <= 10_000:
            raise ValueError(f"{name}: {amount} must be above 0 and at most 10000")
        if round(amount, 4) != amount:
            raise ValueError(f"{name}: {amount} has more than 4 decimals (Ray's precision)")
        if amount > 1 and amount != int(amount):
            raise ValueError(f"{name}: {amount} must be a whole number when above 1 (Ray's rule)")
    return value


#: Custom Ray resources a replica asks for, by name: replicas only run on nodes that offer them
#: (``ray start --resources '{"ingest": 4}'``), which is how they land on the nodes meant for
#: them. ``tracklens serve`` without ``--address`` offers them on its own Ray.
Resources = Annotated[dict[str, float], AfterValidator(_check_resources)]


class IngestConfig(_Section):
    """``StreamIngest`` replicas: each runs perception and the track book of the streams it
    holds a lease on. A replica that stops renewing loses its streams after ``lease_s`` and
    another replica takes them over from their last snapshot."""

    replicas: int = Field(1, ge=1, description="ingest replicas (processes)")
    num_cpus: float = Field(0.5, gt=0, description="Ray CPUs reserved per replica")
    resources: Resources = Field(
        default_factory=lambda: {"ingest": 0.01}, description="custom Ray resources per replica: the nodes it may run on"
    )
    max_streams: int = Field(4, ge=1, description="streams one replica runs at most")
    lease_s: float = Field(6.0, gt=0, description="a stream's lease; unrenewed for this long, it moves")
    renew_s: float = Field(1.0, gt=0, description="how often leases are renewed and free streams claimed")
    snapshot_s: float = Field(2.0, gt=0, description="how often a stream's perception state is saved for a take-over")
    status_s: float = Field(1.0, gt=0, description="how often a stream's status is published")
    end_grace_s: float = Field(30.0, gt=0, description="longest wait for a track's outstanding estimates once it ended")
    estimate_timeout_s: float = Field(60.0, gt=0, description="a crop batch unanswered for this long is given up")
    store_face_crops: bool = Field(False, description="keep each track's best face crop (JPEG) in Redis, with the track's TTL")
    previews: bool = Field(True, description="live previews for the console while someone watches; false: never render a frame")
    preview_width_px: int = Field(640, ge=64, le=3840, description="preview width at most (the frame's aspect ratio is kept)")
    preview_fps: float = Field(2.0, gt=0, le=10, description="previews rendered per second while watched")
    preview_watch_s: float = Field(5.0, gt=0, le=60, description="a viewer's request keeps previews coming this long; "
                                   "the latest preview expires after it too")  # fmt: skip

    @field_validator("renew_s")
    @classmethod
    def _renew_within_lease(cls, value: float, info) -> float:
        lease = info.data.get("lease_s")
        if lease is not None and value * 2 > lease:
            raise ValueError(f"must be at most half of lease_s ({lease}) so a lease is renewed before it expires")
        return value


class RouterConfig(_Section):
    """The route each ingest replica takes for its crops: the MLLM pool while it has room, the
    specialist pool otherwise.

    A crop goes to the specialist when the MLLM pool rejects it (back-pressure: its queue is
    full; the next crops try the MLLM again, so the pool stays busy and autoscales on that
    demand), when the MLLM does not answer within ``latency_budget_s`` (its later answer is
    still fused), when the call fails, or when the answer is invalid. After an overrun or a
    failure, the replica keeps to the specialist for ``cooldown_s`` (doubling up to
    ``max_cooldown_s`` while the pool keeps failing), then tries the MLLM again: it does not
    flap on every batch.
    """

    latency_budget_s: float = Field(10.0, gt=0, description="past this the specialist answers; the MLLM's later answer still counts")
    cooldown_s: float = Field(2.0, gt=0)
    max_cooldown_s: float = Field(30.0, gt=0)
    max_in_flight: int = Field(0, ge=0, description="crops in the MLLM pool at once; 0 = what the pool's limits admit")
    first_looks_tracked: int = Field(100_000, ge=1, description="track keys remembered as already seen by the MLLM")


class PoolConfig(_Section):
    """A replica pool of one estimator: its size, resources and limits."""

    num_replicas: int | Literal["auto"] = Field(1, description="a number, or auto (autoscaling)")
    min_replicas: int = Field(1, ge=0, description="autoscaling bounds")
    max_replicas: int = Field(4, ge=1)
    target_ongoing_requests: float = Field(4.0, gt=0, description="autoscaling target per replica")
    upscale_delay_s: float = Field(30.0, ge=0, description="autoscaling: how long demand must stay high before replicas are added")
    downscale_delay_s: float = Field(600.0, ge=0, description="autoscaling: how long demand must stay low before replicas go")
    num_cpus: float = Field(0.25, gt=0)
    num_gpus: float = Field(0.0, ge=0, description="GPUs per replica (e.g. 1 for the MLLM on a GPU node)")
    resources: Resources = Field(default_factory=dict, description="custom Ray resources per replica: the nodes it may run on")
    max_ongoing_requests: int = Field(16, ge=1, description="calls a replica takes at once")
    max_queued_requests: int = Field(16, ge=-1, description="crops queued at each caller past that (-1: no limit); more are refused")

    @field_validator("max_queued_requests")
    @classmethod
    def _queue_limit(cls, value: int) -> int:
        if value == 0:
            raise ValueError("must be -1 (no limit) or at least 1 (Ray Serve has no zero-length queue)")
        return value


class MllmPoolConfig(PoolConfig):
    """The MLLM pool: single crops batched by Ray Serve (``@ray.serve.batch``) up to the MLLM
    estimator's own ``batch_size``, waiting at most ``batch_wait_timeout_s`` to fill a batch."""

    batch_wait_timeout_s: float = Field(0.05, ge=0)


class ApiConfig(_Section):
    """The HTTP API (FastAPI ingress on Ray Serve's proxy)."""

    host: str = Field("127.0.0.1", description="0.0.0.0 to listen on every interface")
    port: int = Field(8000, ge=1, le=65535)
    num_cpus: float = Field(0.1, gt=0)
    resources: Resources = Field(default_factory=dict, description="custom Ray resources of the API replica (default: any node)")
    proxy_location: Literal["HeadOnly", "EveryNode"] = Field(
        "HeadOnly", description="tracklens serve: Serve's HTTP proxy on the head node only, or on every node (a RayService sets its own)"
    )
    api_key_env: str | None = Field("TRACKLENS_API_KEY", description="environment variable holding the API key")
    api_key_file: Path | None = Field(None, description="or a file holding it; with a key, every endpoint but /healthz needs it")
    schemes: tuple[str, ...] = Field(("rtsp", "rtsps", "rtmp", "http", "https"), description="stream URL schemes accepted")
    file_roots: tuple[Path, ...] = Field((), description="folders whose videos may be analysed (jobs, file streams)")
    check_reachable: bool = Field(True, description="refuse a stream whose host does not answer (TCP connect)")
    connect_timeout_s: float = Field(2.0, gt=0)
    retry_after_s: int = Field(10, ge=1, description="Retry-After of 503 answers")
    max_body_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024, description="larger request bodies get 413 unread")

    @field_validator("schemes")
    @classmethod
    def _lower_case(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(scheme.lower() for scheme in value)
