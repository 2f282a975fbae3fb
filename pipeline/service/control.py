"""The control plane in Redis: which streams should run, who runs them, how they are doing.

The API writes the desired streams and jobs; ingest replicas claim them with expiring leases
and renew those leases; the owner of a stream publishes its status and saves its perception
snapshot now and then, so that when it dies another replica takes over where it was. The API
answers from here, never from the replica that owns a stream. The records it keeps are typed in
:mod:`.records` (and importable from here).

**Fencing.** Every claim draws a token from the stream's counter (``fence:{id}``). An owner's
writes (status, snapshot, job result, and its track records, see
:class:`~tracklens.pipeline.store.base.Fence`) are Lua scripts that apply only while that
counter still holds the owner's token: once another replica has claimed the stream, a paused or
partitioned ex-owner can no longer overwrite anything, whatever its clock says. A lease that
lapsed while nobody claimed the stream (a Redis outage longer than a lease) is renewed in place
by its holder, since its token is still the latest.

**Generations.** Each added stream gets a fresh ``generation``: a stream deleted and added again
under the same name is a new stream, and the worker of the old one stops.

**Time** of leases and heartbeats is Redis's own (``TIME``), so replicas on machines whose clocks
differ agree; tests pass a ``clock`` to move it without sleeping.

Keys, under the store's prefix (default ``tl``)::

    tl:ctl:streams              hash  id -> StreamSpec JSON: what should be running
    tl:ctl:job:{id}             string StreamSpec JSON of a file job (expires after its end)
    tl:ctl:joblist              sorted set of job ids by creation time
    tl:ctl:lease:{id}           hash  owner, token, expires (ms)
    tl:ctl:fence:{id}           counter: the token of the stream's latest claim
    tl:ctl:replicas             sorted set: ingest replicas by heartbeat expiry (ms)
    tl:ctl:status:{id}          string StreamStatus JSON (expires unless refreshed)
    tl:ctl:snapshot:{id}        string Snapshot JSON: generation, token, perception state (a job's: its position)
    tl:ctl:result:{id}          string JobResult JSON
    tl:ctl:face:{track}         string JPEG of a track's best face (only if switched on; expires)
    tl:ctl:watch:{id}           string: someone watches the stream's preview (expires after ingest.preview_watch_s)
    tl:ctl:preview:{id}         string JPEG: the latest preview (expires after ingest.preview_watch_s)
    tl:ctl:metrics              hash  counters (crops routed per source, latency buckets)
    tl:ctl:inflight             hash  ingest replica -> its crops in the MLLM pool now
    tl:ctl:latency              list  recent frame -> estimate latencies, newest first
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from ..config import check_stream_id
from ..errors import StoreError, StoreUnavailableError
from ..store import Fence
from ..summary import JobResult
from ..urls import redact_url
from .records import (
    SNAPSHOT_VERSION,
    JobPosition,
    Owner,
    Snapshot,
    StreamOptions,
    StreamSpec,
    StreamState,
    StreamStatus,
    new_id,
)

__all__ = [
    "LATENCY_BUCKETS_S",
    "ControlPlane",
    "JobPosition",
    "Owner",
    "Snapshot",
    "StreamOptions",
    "StreamSpec",
    "SNAPSHOT_VERSION",
    "StreamState",
    "StreamStatus",
    "new_id",
]

#: Upper bounds of the frame -> estimate latency histogram, seconds.
LATENCY_BUCKETS_S = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
_LATENCY_SAMPLES = 20_000

# Every script takes the time as its last argument: milliseconds, or -1 for Redis's own clock.
_NOW = """
local function now_ms(arg)
  local t = tonumber(arg)
  if t >= 0 then return t end
  local r = redis.call('TIME')
  return tonumber(r[1]) * 1000 + math.floor(tonumber(r[2]) / 1000)
end
"""
# KEYS: lease, fence; ARGV: owner, lease ms, now -> the new token, or 0 while another holds it
_CLAIM = _NOW + """
local now = now_ms(ARGV[3])
if tonumber(redis.call('HGET', KEYS[1], 'expires') or '0') > now then return 0 end
local token = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'token', token, 'expires', now + tonumber(ARGV[2]))
return token
"""
# KEYS: lease, fence; ARGV: owner, token, lease ms, now -> 1 while nobody claimed since token
_RENEW = _NOW + """
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'token', ARGV[2], 'expires', now_ms(ARGV[4]) + tonumber(ARGV[3]))
return 1
"""
# KEYS: fence, then keys to delete; ARGV: token
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
for i = 2, #KEYS do redis.call('DEL', KEYS[i]) end
return 1
"""
# KEYS: fence, target; ARGV: token, value, px (0: no expiry)
_FENCED_SET = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[3]) > 0 then redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) else redis.call('SET', KEYS[2], ARGV[2]) end
return 1
"""
# KEYS: fence, result, status, streams, job spec, snapshot; ARGV: token, result, status, px, id
_FINISH_JOB = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[4])
redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
redis.call('HDEL', KEYS[4], ARGV[5])
redis.call('PEXPIRE', KEYS[5], ARGV[4])
redis.call('DEL', KEYS[6])
return 1
"""
# KEYS: streams, lease, result, status, job spec; ARGV: id, result, status, px, now
# -> 0 not running (ended), 1 its owner will end it, 2 ended here (nobody had claimed it)
_CANCEL_JOB = _NOW + """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
if tonumber(redis.call('HGET', KEYS[2], 'expires') or '0') > now_ms(ARGV[5]) then return 1 end
redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[4])
redis.call('SET', KEYS[4], ARGV[3], 'PX', ARGV[4])
redis.call('PEXPIRE', KEYS[5], ARGV[4])
return 2
"""
# KEYS: streams, job spec, job list; ARGV: id, spec JSON, created_at, is a job -> 0 if the id is taken
_ADD = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[4] == '1' then
  redis.call('SET', KEYS[2], ARGV[2])
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
end
return 1
"""
# KEYS: streams, retired; ARGV: id -> 1 when it was asked for (it is then retired until its end is written)
_REMOVE = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""
# KEYS: fence, retired, then keys to delete; ARGV: token, id
_FORGET = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
for i = 3, #KEYS do redis.call('DEL', KEYS[i]) end
redis.call('SREM', KEYS[2], ARGV[2])
return 1
"""
# KEYS: replicas; ARGV: owner, ttl ms, now -> replicas alive
_HEARTBEAT = _NOW + """
local now = now_ms(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return redis.call('ZCARD', KEYS[1])
"""
# KEYS: replicas; ARGV: now -> replicas alive
_ALIVE = _NOW + """
return redis.call('ZCOUNT', KEYS[1], '(' .. now_ms(ARGV[1]), '+inf')
"""


class ControlPlane:
    """See the module docstring. Every failure to reach Redis raises
    :class:`StoreUnavailableError`, other Redis errors :class:`StoreError`.

    Args:
        url: the Redis URL.
        prefix: the store's key prefix.
        timeout_s: connect and read timeout of one call.
        clock: seconds since the epoch for leases and heartbeats; None: Redis's own clock.
    """

    def __init__(self, url: str, prefix: str = "tl", timeout_s: float = 3.0, clock: Callable[[], float] | None = None) -> None:
        import redis
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        self.shown = redact_url(url)
        self.prefix = prefix
        self._p = f"{prefix}:ctl"
        self._clock = clock
        retry = Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=1)
        self.client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s, retry=retry)
        script = self.client.register_script
        self._claim, self._renew, self._release = script(_CLAIM), script(_RENEW), script(_RELEASE)
        self._fenced_set, self._finish_job, self._add = script(_FENCED_SET), script(_FINISH_JOB), script(_ADD)
        self._heartbeat, self._alive, self._cancel_job = script(_HEARTBEAT), script(_ALIVE), script(_CANCEL_JOB)
        self._remove, self._forget = script(_REMOVE), script(_FORGET)

    @classmethod
    def from_config(cls, store, clock: Callable[[], float] | None = None) -> ControlPlane:
        """The control plane of a ``store`` config section (:class:`RedisStoreConfig`)."""
        return cls(store.connect_url(), store.prefix, store.timeout_s, clock)

    def _call(self, fn, *args, **kwargs):
        import redis

        try:
            return fn(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as err:
            raise StoreUnavailableError(f"cannot reach Redis at {self.shown}: {str(err).splitlines()[0]}") from None
        except redis.RedisError as err:
            raise StoreError(f"Redis at {self.shown} failed: {str(err).splitlines()[0]}") from None

    def _now_ms(self) -> int:
        return -1 if self._clock is None else int(self._clock() * 1000)

    def _k(self, part: str, stream_id: str) -> str:
        return f"{self._p}:{part}:{stream_id}"

    def ping(self) -> None:
        self._call(self.client.ping)

    def close(self) -> None:
        self.client.close()

    # -- desired state ------------------------------------------------------------------------

    def add(self, spec: StreamSpec) -> StreamSpec | None:
        """Ask for ``spec`` to run, as a new generation; the stored spec, or None when its id
        is taken (by a stream, or by a job still on record)."""
        check_stream_id(spec.id)
        spec = spec.model_copy(update={"generation": uuid.uuid4().hex[:12]})
        keys = [f"{self._p}:streams", self._k("job", spec.id), f"{self._p}:joblist"]
        args = [spec.id, spec.model_dump_json(), spec.created_at, "1" if spec.kind == "job" else "0"]
        return spec if self._call(self._add, keys=keys, args=args) else None

    def remove(self, stream_id: str) -> bool:
        """Stop asking for a stream or job to run (its owner ends it); False if it was not running.
        The id stays *retired* until its end is written (:meth:`forget`): should its owner be
        gone, another ingest replica ends its open tracks (:meth:`retired`)."""
        return bool(self._call(self._remove, keys=[f"{self._p}:streams", f"{self._p}:retired"], args=[stream_id]))

    def retired(self) -> set[str]:
        """Deleted streams whose end nobody has written yet."""
        return {i.decode() for i in self._call(self.client.smembers, f"{self._p}:retired")}

    def specs(self) -> dict[str, StreamSpec]:
        raw = self._call(self.client.hgetall, f"{self._p}:streams")
        return {k.decode(): StreamSpec.model_validate_json(v) for k, v in raw.items()}

    def spec(self, stream_id: str) -> StreamSpec | None:
        raw = self._call(self.client.hget, f"{self._p}:streams", stream_id)
        return None if raw is None else StreamSpec.model_validate_json(raw)

    def job(self, job_id: str) -> StreamSpec | None:
        """A file job on record: running, or ended less than its retention ago."""
        raw = self._call(self.client.get, self._k("job", job_id))
        return None if raw is None else StreamSpec.model_validate_json(raw)

    def jobs(self) -> list[StreamSpec]:
        """Every job on record, oldest first (those whose record expired are dropped from the list)."""
        ids = [i.decode() for i in self._call(self.client.zrange, f"{self._p}:joblist", 0, -1)]
        raws = self._call(self.client.mget, [self._k("job", i) for i in ids]) if ids else []
        gone = [i for i, raw in zip(ids, raws) if raw is None]
        if gone:
            self._call(self.client.zrem, f"{self._p}:joblist", *gone)
        return [StreamSpec.model_validate_json(raw) for raw in raws if raw is not None]

    # -- leases and fencing ---------------------------------------------------------------------

    def fence(self, stream_id: str, token: int) -> Fence:
        """What an owner's track writes carry: the stream's claim counter and its token."""
        return Fence(self._k("fence", stream_id), token)

    def claim(self, stream_id: str, owner: str, lease_s: float) -> int | None:
        """Take a stream whose lease is free or expired; its new token, or None."""
        keys = [self._k("lease", stream_id), self._k("fence", stream_id)]
        token = self._call(self._claim, keys=keys, args=[owner, int(lease_s * 1000), self._now_ms()])
        return int(token) or None

    def renew(self, stream_id: str, owner: str, token: int, lease_s: float) -> bool:
        """Extend the lease while nobody has claimed the stream since ``token`` (also when it
        lapsed meanwhile); False: another owner has it."""
        keys = [self._k("lease", stream_id), self._k("fence", stream_id)]
        return bool(self._call(self._renew, keys=keys, args=[owner, token, int(lease_s * 1000), self._now_ms()]))

    def release(self, stream_id: str, token: int) -> None:
        """Give the lease up (only if ``token`` still holds it)."""
        self._call(self._release, keys=[self._k("fence", stream_id), self._k("lease", stream_id)], args=[token])

    def forget(self, stream_id: str, token: int) -> None:
        """A deleted stream's owner is done: drop its lease, status and snapshot (only if
        ``token`` still holds it)."""
        keys = [self._k("fence", stream_id), f"{self._p}:retired",
                *(self._k(part, stream_id) for part in ("lease", "status", "snapshot", "preview"))]  # fmt: skip
        self._call(self._forget, keys=keys, args=[token, stream_id])

    def owner(self, stream_id: str) -> str | None:
        """Who holds the stream's lease now (None: nobody, or it expired)."""
        owner, expires = self._call(self.client.hmget, self._k("lease", stream_id), ["owner", "expires"])
        if owner is None:
            return None
        now = self._clock() * 1000 if self._clock is not None else _redis_ms(self._call(self.client.time))
        return owner.decode() if int(expires) > now else None

    def heartbeat(self, owner: str, ttl_s: float) -> int:
        """``owner`` (an ingest replica) is alive for the next ``ttl_s`` seconds; returns how
        many replicas are alive."""
        return int(self._call(self._heartbeat, keys=[f"{self._p}:replicas"], args=[owner, int(ttl_s * 1000), self._now_ms()]))

    def live_replicas(self) -> int:
        """Ingest replicas whose heartbeat has not expired (one sorted set, not a key scan)."""
        return int(self._call(self._alive, keys=[f"{self._p}:replicas"], args=[self._now_ms()]))

    # -- status, snapshots, results (fenced: the owner's token must still be the latest) --------

    def publish(self, status: StreamStatus, ttl_s: float | None, token: int) -> bool:
        """Publish an owner's status; False (nothing written) once another owner has the stream."""
        keys = [self._k("fence", status.id), self._k("status", status.id)]
        return bool(self._call(self._fenced_set, keys=keys, args=[token, status.model_dump_json(), int((ttl_s or 0) * 1000)]))

    def status(self, stream_id: str, generation: str | None = None) -> StreamStatus | None:
        """The latest status (of ``generation`` only, when given)."""
        raw = self._call(self.client.get, self._k("status", stream_id))
        status = None if raw is None else StreamStatus.model_validate_json(raw)
        return None if status is None or (generation is not None and status.generation != generation) else status

    def save_snapshot(self, stream_id: str, snapshot: Snapshot) -> bool:
        """Save a stream's perception state; False (nothing written) once another owner has it."""
        keys = [self._k("fence", stream_id), self._k("snapshot", stream_id)]
        return bool(self._call(self._fenced_set, keys=keys, args=[snapshot.token, snapshot.model_dump_json(), 0]))

    def load_snapshot(self, stream_id: str, generation: str) -> Snapshot | None:
        """The stream's latest snapshot, if it belongs to ``generation``."""
        raw = self._call(self.client.get, self._k("snapshot", stream_id))
        if raw is None:
            return None
        try:
            snapshot = Snapshot.model_validate_json(raw)
        except ValueError:  # saved by a version before snapshots were versioned: start afresh
            return None
        return snapshot if snapshot.version == SNAPSHOT_VERSION and snapshot.generation == generation else None

    def finish_job(self, job_id: str, result: JobResult, status: StreamStatus, retention_s: float, token: int) -> bool:
        """Record a job's end (kept for ``retention_s``, its spec too) and stop asking for it
        to run; False (nothing written) once another owner has it."""
        keys = [self._k("fence", job_id), self._k("result", job_id), self._k("status", job_id), f"{self._p}:streams",
                self._k("job", job_id), self._k("snapshot", job_id)]  # fmt: skip
        args = [token, result.model_dump_json(exclude=JobResult.LOCAL), status.model_dump_json(), int(retention_s * 1000), job_id]
        return bool(self._call(self._finish_job, keys=keys, args=args))

    def cancel_job(self, spec: StreamSpec, retention_s: float) -> bool:
        """Stop a job: its owner ends it (tracks so far ended, result ``cancelled``); one that
        nobody has claimed yet is recorded as cancelled at once. False when it had already
        ended."""
        result = JobResult(state="cancelled", error="cancelled before it started")
        status = StreamStatus(id=spec.id, kind="job", generation=spec.generation, state="cancelled")
        keys = [f"{self._p}:streams", self._k("lease", spec.id), self._k("result", spec.id), self._k("status", spec.id),
                self._k("job", spec.id)]  # fmt: skip
        args = [spec.id, result.model_dump_json(exclude=JobResult.LOCAL), status.model_dump_json(), int(retention_s * 1000),
                self._now_ms()]  # fmt: skip
        return bool(self._call(self._cancel_job, keys=keys, args=args))

    def result(self, job_id: str) -> JobResult | None:
        raw = self._call(self.client.get, self._k("result", job_id))
        return None if raw is None else JobResult.model_validate_json(raw)

    def save_face(self, track: str, jpeg: bytes, ttl_s: float) -> None:
        """A track's best face crop (only when ``ingest.store_face_crops`` is on)."""
        self._call(self.client.set, f"{self._p}:face:{track}", jpeg, px=int(ttl_s * 1000))

    def face(self, track: str) -> bytes | None:
        return self._call(self.client.get, f"{self._p}:face:{track}")

    # -- live previews (rendered only while someone watches; never kept longer) ------------------

    def watch(self, stream_id: str, watch_s: float) -> bytes | None:
        """A viewer asks for a stream's preview: the stream is marked watched for ``watch_s``
        (its owner renders previews meanwhile); returns the latest preview, None before the
        first one."""
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self._k("watch", stream_id), b"1", px=max(1, int(watch_s * 1000)))
        pipe.get(self._k("preview", stream_id))
        return self._call(pipe.execute)[1]

    def watched(self, stream_id: str) -> bool:
        """Whether a viewer asked for the stream's preview within the last ``watch_s``."""
        return bool(self._call(self.client.exists, self._k("watch", stream_id)))

    def save_preview(self, stream_id: str, jpeg: bytes, ttl_s: float, token: int) -> bool:
        """An owner's latest preview, kept ``ttl_s``; False (nothing written) once another owner
        has the stream."""
        keys = [self._k("fence", stream_id), self._k("preview", stream_id)]
        return bool(self._call(self._fenced_set, keys=keys, args=[token, jpeg, max(1, int(ttl_s * 1000))]))

    # -- metrics --------------------------------------------------------------------------------

    def count(self, counts: dict[str, int]) -> None:
        """Add to named counters (``routed:mllm``...)."""
        if counts:
            pipe = self.client.pipeline(transaction=False)
            for name, n in counts.items():
                pipe.hincrby(f"{self._p}:metrics", name, n)
            self._call(pipe.execute)

    def set_in_flight(self, owner: str, crops: int) -> None:
        """Crops an ingest replica has in the MLLM pool now (summed over live replicas)."""
        self._call(self.client.hset, f"{self._p}:inflight", owner, crops)

    def in_flight(self) -> int:
        """Crops in the MLLM pool, summed over the ingest replicas whose heartbeat is alive;
        the entries of dead replicas are dropped."""
        raw = self._call(self.client.hgetall, f"{self._p}:inflight")
        now = self._clock() * 1000 if self._clock is not None else _redis_ms(self._call(self.client.time))
        alive = {m.decode() for m in self._call(self.client.zrangebyscore, f"{self._p}:replicas", f"({now}", "+inf")}
        dead = [k for k in raw if k.decode() not in alive]
        if dead:
            self._call(self.client.hdel, f"{self._p}:inflight", *dead)
        return sum(int(v) for k, v in raw.items() if k.decode() in alive)

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


def _redis_ms(time_reply) -> float:
    seconds, micros = time_reply
    return int(seconds) * 1000 + int(micros) / 1000
