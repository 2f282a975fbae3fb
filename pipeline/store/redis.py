"""Redis track store (redis-py): a hash per track, a sorted set and an event stream per stream.

Keys, under a configurable prefix (default ``tl``)::

    tl:track:{track key}          hash: version, summary (JSON), state (JSON); TTL once ended
    tl:stream:{stream}:tracks     sorted set of track keys by first_seen
    tl:stream:{stream}:events     stream (XADD): track, version, event
    tl:stream:{stream}:epoch      counter for tracker epochs

Each record is written by one Lua script, so the hash, the index and the events change
together or not at all, and a version not newer than the stored one changes nothing: a
retried write neither goes back in time nor duplicates its events. A record with a
:class:`~.base.Fence` is refused (and counted in :attr:`RedisTrackStore.refused`) once its
token is no longer the stream's latest claim: a stale owner cannot overwrite the new owner's
tracks.

Failures raise :class:`StoreUnavailableError` when the server cannot be reached for now
(refused or lost connection, timeout, still loading its data) and :class:`StoreError`
otherwise; :class:`~.buffered.BufferedTrackStore` keeps writes through the first kind.
"""

from __future__ import annotations

import json
import logging

from ..errors import StoreError, StoreUnavailableError
from ..summary import TrackSummary
from ..urls import redact_url
from .base import TrackRecord

__all__ = ["RedisTrackStore"]

log = logging.getLogger(__name__)

# KEYS: track, stream index, stream events, fence (or any key when unfenced);
# ARGV: version, summary, state, key, first_seen, ended, ttl, events maxlen, token ('' = unfenced), events...
# Returns 1 applied, 0 stale version (ignored), -1 refused: another owner has claimed the stream.
_PUT = """
if ARGV[9] ~= '' and redis.call('GET', KEYS[4]) ~= ARGV[9] then return -1 end
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '-1')
if current >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'summary', ARGV[2], 'state', ARGV[3])
redis.call('ZADD', KEYS[2], 'NX', ARGV[5], ARGV[4])
for i = 10, #ARGV do
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[8], '*', 'track', ARGV[4], 'version', ARGV[1], 'event', ARGV[i])
end
if ARGV[6] == '1' then redis.call('EXPIRE', KEYS[1], ARGV[7]) else redis.call('PERSIST', KEYS[1]) end
return 1
"""


class RedisTrackStore:
    """See the module docstring. ``url`` like ``redis://127.0.0.1:6379/0``.

    Raises:
        StoreUnavailableError: the server cannot be reached (checked on construction).
        StoreError: it refuses a call.
    """

    def __init__(
        self,
        url: str,
        prefix: str = "tl",
        ended_ttl_s: int = 7 * 24 * 3600,
        events_maxlen: int = 100_000,
        timeout_s: float = 3.0,
    ) -> None:
        import redis
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        self.url = redact_url(url)
        self._prefix = prefix
        self._ttl = ended_ttl_s
        self._maxlen = events_maxlen
        self.refused = 0  # writes refused by their fence (a stale owner's)
        # redis-py's default retries (10, backoff up to 1 s) would stall the pipeline for
        # seconds on every write while the server is down; outages are handled a layer up.
        retry = Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=1)
        try:
            self._client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s, retry=retry)
        except ValueError as err:
            raise StoreError(f"invalid Redis URL {self.url}: {err}") from None
        self._call(self._client.ping)
        self._put = self._client.register_script(_PUT)

    def _k(self, *parts: str) -> str:
        return ":".join((self._prefix, *parts))

    def _call(self, fn, *args):
        import redis

        try:
            return fn(*args)
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as err:
            raise StoreUnavailableError(f"cannot reach Redis at {self.url}: {_reason(err)}") from None
        except redis.RedisError as err:
            raise StoreError(f"Redis at {self.url} failed: {_reason(err)}") from None

    def next_epoch(self, stream: str) -> int:
        return int(self._call(self._client.incr, self._k("stream", stream, "epoch"))) - 1

    def put(self, records: list[TrackRecord]) -> int:
        if not records:
            return 0
        pipe = self._client.pipeline(transaction=False)
        for rec in records:
            events = self._k("stream", rec.stream, "events")
            keys = [self._k("track", rec.key), self._k("stream", rec.stream, "tracks"), events, rec.fence.key if rec.fence else events]
            args = [
                rec.version,
                rec.summary.model_dump_json(),
                json.dumps(rec.state),
                rec.key,
                rec.summary.first_seen,
                "1" if rec.ended else "0",
                self._ttl,
                self._maxlen,
                "" if rec.fence is None else rec.fence.token,
                *rec.events,
            ]
            self._put(keys=keys, args=args, client=pipe)
        outcomes = [int(x) for x in self._call(pipe.execute)]
        refused = [rec.key for rec, x in zip(records, outcomes) if x < 0]
        if refused:
            self.refused += len(refused)
            log.warning("refused %d track writes from a stale owner (another replica claimed the stream): %s",
                        len(refused), ", ".join(refused[:5]))  # fmt: skip
        return sum(x > 0 for x in outcomes)

    def get(self, key: str) -> TrackSummary | None:
        raw = self._call(self._client.hget, self._k("track", key), "summary")
        return None if raw is None else TrackSummary.model_validate_json(raw)

    def record(self, key: str) -> TrackRecord | None:
        version, summary, state = self._call(self._client.hmget, self._k("track", key), ["version", "summary", "state"])
        if version is None or summary is None:
            return None
        parsed = TrackSummary.model_validate_json(summary)
        return TrackRecord(key, parsed.stream, int(version), parsed, json.loads(state) if state else {})

    def tracks(self, stream: str) -> list[TrackSummary]:
        index = self._k("stream", stream, "tracks")
        keys = [k.decode() for k in self._call(self._client.zrange, index, 0, -1)]
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.hget(self._k("track", key), "summary")
        raws = self._call(pipe.execute) if keys else []
        expired = [k for k, raw in zip(keys, raws) if raw is None]
        if expired:
            self._call(self._client.zrem, index, *expired)
        return [TrackSummary.model_validate_json(raw) for raw in raws if raw is not None]

    def events(self, stream: str, count: int = 100) -> list[dict]:
        entries = self._call(self._client.xrevrange, self._k("stream", stream, "events"), "+", "-", count)
        out = []
        for entry_id, fields in reversed(entries):
            item = {k.decode(): v.decode() for k, v in fields.items()}
            out.append({"id": entry_id.decode(), "track": item["track"], "version": int(item["version"]), "event": item["event"]})
        return out

    def close(self) -> None:
        self._client.close()


def _reason(err: Exception) -> str:
    """The first line of a redis-py error, without the URL (which may carry a password)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text.rstrip(".")
