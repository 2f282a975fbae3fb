"""The control plane in Redis: which streams should run, who runs them, how they are doing.

The API writes the desired streams and jobs; ingest replicas claim them with expiring leases
and renew those leases; the owner of a stream publishes its status and saves its perception
snapshot now and then, so that when it dies another replica takes over where it was. The API
answers from here, never from the replica that owns a stream.

Keys, under the store's prefix (default ``tl``)::

    tl:ctl:streams              hash  id -> StreamSpec JSON: what should be running
    tl:ctl:jobs                 hash  id -> StreamSpec JSON of every file job (kept)
    tl:ctl:lease:{id}           string owner, expiring (PX)
    tl:ctl:replica:{owner}      string, expiring: the ingest replicas alive
    tl:ctl:status:{id}          string StreamStatus JSON (expires unless refreshed)
    tl:ctl:snapshot:{id}        string perception snapshot JSON
    tl:ctl:result:{id}          string JobResult JSON
    tl:ctl:face:{track}         string JPEG of a track's best face (only if switched on; expires)
    tl:ctl:metrics              hash  counters (crops routed per source, latency buckets)
    tl:ctl:latency              list  recent frame -> estimate latencies, newest first
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..config import check_stream_id
from ..errors import StoreError, StoreUnavailableError
from ..urls import redact_url

__all__ = ["LATENCY_BUCKETS_S", "ControlPlane", "JobResult", "StreamOptions", "StreamSpec", "StreamStatus", "new_id"]

#: Upper bounds of the frame -> estimate latency histogram, seconds.
LATENCY_BUCKETS_S = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
_LATENCY_SAMPLES = 20_000

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def new_id(kind: str) -> str:
    """A fresh id usable as a stream id: ``s-1a2b3c4d`` for streams, ``j-...`` for jobs."""
    return f"{kind[0]}-{uuid.uuid4().hex[:8]}"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Model):
    """Per-stream settings a client may give."""

    fps: float | None = Field(None, gt=0, le=60, description="analysis rate cap; default: the service's")
    check: bool = Field(True, description="refuse the stream if its host does not answer now")


class StreamSpec(_Model):
    """What should run: a live stream (until deleted) or a file job (until its end).

    ``url`` is kept as given, credentials included (the ingest needs them); everything shown
    to clients goes through :meth:`public`.
    """

    id: str
    kind: Literal["stream", "job"]
    url: str
    name: str | None = None
    options: StreamOptions = StreamOptions()
    created_at: float = Field(default_factory=time.time)

    def public(self) -> dict:
        return {**self.model_dump(), "url": redact_url(self.url)}


class StreamStatus(_Model):
    """How a stream or job is doing, as its owner last published it."""

    id: str
    kind: Literal["stream", "job"] = "stream"
    state: str = Field("pending", description="pending, connecting, live, reconnecting, running, done, failed, stopped")
    owner: str | None = None
    fps: float = Field(0.0, description="frames analysed per second, recently")
    frames_decoded: int = 0
    frames_analysed: int = 0
    frames_dropped: int = 0
    queued_frames: int = Field(0, description="frames decoded and waiting for analysis (live streams)")
    reconnects: int = 0
    last_error: str | None = None
    tracks_active: int = 0
    estimators: str = Field("specialist only", description="which estimators answer: mllm+specialist, or specialist only")
    frames_expected: int | None = Field(None, description="jobs: frames the file should give")
    progress: float | None = Field(None, description="jobs: share done, 0-1")
    updated_at: float = Field(default_factory=time.time)


class JobResult(_Model):
    """The end of a file job."""

    state: Literal["done", "failed", "stopped"]
    tracks: int = 0
    frames: int = 0
    seconds: float = 0.0
    error: str | None = None


class ControlPlane:
    """See the module docstring. Every failure to reach Redis raises
    :class:`StoreUnavailableError`, other Redis errors :class:`StoreError`."""

    def __init__(self, url: str, prefix: str = "tl", timeout_s: float = 3.0) -> None:
        import redis
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        self.shown = redact_url(url)
        self._p = f"{prefix}:ctl"
        retry = Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=1)
        self.client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s, retry=retry)
        self._renew = self.client.register_script(_RENEW)
        self._release = self.client.register_script(_RELEASE)

    def _call(self, fn, *args, **kwargs):
        import redis

        try:
            return fn(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as err:
            raise StoreUnavailableError(f"cannot reach Redis at {self.shown}: {str(err).splitlines()[0]}") from None
        except redis.RedisError as err:
            raise StoreError(f"Redis at {self.shown} failed: {str(err).splitlines()[0]}") from None

    def ping(self) -> None:
        self._call(self.client.ping)

    def close(self) -> None:
        self.client.close()

    # -- desired state ------------------------------------------------------------------------

    def add(self, spec: StreamSpec) -> bool:
        """Ask for ``spec`` to run; False when its id is taken."""
        check_stream_id(spec.id)
        pipe = self.client.pipeline(transaction=True)
        pipe.hsetnx(f"{self._p}:streams", spec.id, spec.model_dump_json())
        if spec.kind == "job":
            pipe.hsetnx(f"{self._p}:jobs", spec.id, spec.model_dump_json())
        return bool(self._call(pipe.execute)[0])

    def remove(self, stream_id: str) -> bool:
        """Stop asking for a stream to run (its owner ends it); False if it was not running."""
        return bool(self._call(self.client.hdel, f"{self._p}:streams", stream_id))

    def specs(self) -> dict[str, StreamSpec]:
        raw = self._call(self.client.hgetall, f"{self._p}:streams")
        return {k.decode(): StreamSpec.model_validate_json(v) for k, v in raw.items()}

    def spec(self, stream_id: str) -> StreamSpec | None:
        raw = self._call(self.client.hget, f"{self._p}:streams", stream_id)
        return None if raw is None else StreamSpec.model_validate_json(raw)

    def job(self, job_id: str) -> StreamSpec | None:
        raw = self._call(self.client.hget, f"{self._p}:jobs", job_id)
        return None if raw is None else StreamSpec.model_validate_json(raw)

    # -- leases ---------------------------------------------------------------------------------

    def claim(self, stream_id: str, owner: str, lease_s: float) -> bool:
        return bool(self._call(self.client.set, f"{self._p}:lease:{stream_id}", owner, nx=True, px=int(lease_s * 1000)))

    def renew(self, stream_id: str, owner: str, lease_s: float) -> bool:
        return bool(self._call(self._renew, keys=[f"{self._p}:lease:{stream_id}"], args=[owner, int(lease_s * 1000)]))

    def release(self, stream_id: str, owner: str) -> None:
        self._call(self._release, keys=[f"{self._p}:lease:{stream_id}"], args=[owner])

    def owner(self, stream_id: str) -> str | None:
        raw = self._call(self.client.get, f"{self._p}:lease:{stream_id}")
        return None if raw is None else raw.decode()

    def heartbeat(self, owner: str, ttl_s: float) -> None:
        """``owner`` (an ingest replica) is alive for the next ``ttl_s`` seconds."""
        self._call(self.client.set, f"{self._p}:replica:{owner}", "1", px=int(ttl_s * 1000))

    def live_replicas(self) -> int:
        """Ingest replicas whose heartbeat has not expired."""
        return sum(1 for _ in self._call(self.client.scan_iter, f"{self._p}:replica:*", count=100))

    # -- status, snapshots, results ---------------------------------------------------------------

    def publish(self, status: StreamStatus, ttl_s: float | None) -> None:
        key = f"{self._p}:status:{status.id}"
        if ttl_s is None:
            self._call(self.client.set, key, status.model_dump_json())
        else:
            self._call(self.client.set, key, status.model_dump_json(), px=int(ttl_s * 1000))

    def status(self, stream_id: str) -> StreamStatus | None:
        raw = self._call(self.client.get, f"{self._p}:status:{stream_id}")
        return None if raw is None else StreamStatus.model_validate_json(raw)

    def forget(self, stream_id: str) -> None:
        """Drop a deleted stream's status, snapshot and lease."""
        keys = [f"{self._p}:{part}:{stream_id}" for part in ("status", "snapshot", "lease")]
        self._call(self.client.delete, *keys)

    def save_snapshot(self, stream_id: str, snapshot: dict, writer: str | None = None) -> None:
        """Save a stream's perception state; ``writer`` names the worker that saved it (see
        :meth:`snapshot_writer`)."""
        self._call(self.client.set, f"{self._p}:snapshot:{stream_id}", json.dumps({**snapshot, "writer": writer}))

    def load_snapshot(self, stream_id: str) -> dict | None:
        raw = self._call(self.client.get, f"{self._p}:snapshot:{stream_id}")
        return None if raw is None else json.loads(raw)

    def snapshot_writer(self, stream_id: str) -> str | None:
        """The worker that saved the stream's latest snapshot (None when there is none)."""
        snapshot = self.load_snapshot(stream_id)
        return None if snapshot is None else snapshot.get("writer")

    def finish_job(self, job_id: str, result: JobResult, status: StreamStatus, retention_s: float) -> None:
        """Record a job's end (kept for ``retention_s``) and stop asking for it to run."""
        ms = int(retention_s * 1000)
        pipe = self.client.pipeline(transaction=True)
        pipe.set(f"{self._p}:result:{job_id}", result.model_dump_json(), px=ms)
        pipe.set(f"{self._p}:status:{job_id}", status.model_dump_json(), px=ms)
        pipe.hdel(f"{self._p}:streams", job_id)
        pipe.delete(f"{self._p}:snapshot:{job_id}")
        self._call(pipe.execute)

    def result(self, job_id: str) -> JobResult | None:
        raw = self._call(self.client.get, f"{self._p}:result:{job_id}")
        return None if raw is None else JobResult.model_validate_json(raw)

    def save_face(self, track: str, jpeg: bytes, ttl_s: float) -> None:
        """A track's best face crop (only when ``ingest.store_face_crops`` is on)."""
        self._call(self.client.set, f"{self._p}:face:{track}", jpeg, px=int(ttl_s * 1000))

    def face(self, track: str) -> bytes | None:
        return self._call(self.client.get, f"{self._p}:face:{track}")

    # -- metrics --------------------------------------------------------------------------------

    def count(self, counts: dict[str, int]) -> None:
        """Add to named counters (``routed:mllm``...)."""
        if counts:
            pipe = self.client.pipeline(transaction=False)
            for name, n in counts.items():
                pipe.hincrby(f"{self._p}:metrics", name, n)
            self._call(pipe.execute)

    def set_gauge(self, name: str, value: float) -> None:
        """Set a named gauge (``gauge:{name}`` in the metrics hash)."""
        self._call(self.client.hset, f"{self._p}:metrics", f"gauge:{name}", value)

    def observe_latencies(self, seconds: list[float]) -> None:
        """Frame -> estimate-in-Redis latencies: histogram counters and recent samples."""
        if not seconds:
            return
        pipe = self.client.pipeline(transaction=False)
        for s in seconds:
            bucket = next((b for b in LATENCY_BUCKETS_S if s <= b), "+Inf")
            pipe.hincrby(f"{self._p}:metrics", f"latency_le:{bucket}", 1)
            pipe.hincrbyfloat(f"{self._p}:metrics", "latency_sum", s)
            pipe.hincrby(f"{self._p}:metrics", "latency_count", 1)
        pipe.lpush(f"{self._p}:latency", *[f"{s:.4f}" for s in seconds])
        pipe.ltrim(f"{self._p}:latency", 0, _LATENCY_SAMPLES - 1)
        self._call(pipe.execute)

    def metrics(self) -> dict[str, float]:
        raw = self._call(self.client.hgetall, f"{self._p}:metrics")
        return {k.decode(): float(v) for k, v in raw.items()}

    def latencies(self, n: int = _LATENCY_SAMPLES) -> list[float]:
        """The most recent latency samples, newest first."""
        return [float(x) for x in self._call(self.client.lrange, f"{self._p}:latency", 0, n - 1)]
