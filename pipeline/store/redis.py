"""Redis track store (redis-py): a hash per track, a sorted set and an event stream per stream.

Keys, under a configurable prefix (default ``tl``)::

    tl:track:{track key}          hash: version, summary (JSON), state (JSON), counted; TTL once ended
    tl:track:{track key}:estimates list of the track's latest estimates (JSON), oldest first; TTL once ended
    tl:stream:{stream}:tracks     sorted set of track keys by first_seen
    tl:stream:{stream}:active     sorted set of the active ones by first_seen
    tl:stream:{stream}:events     stream (XADD): track, version, event
    tl:stream:{stream}:epoch      counter for tracker epochs
    tl:stream:{stream}:stats:{size}:{start}  hash: people, gender:*, age:*, expression:* (TTL stats_ttl_s)

Each record is written by one Lua script, so the hash, the indexes, the events, the history and
the demographic counts change together or not at all, and a version not newer than the stored
one changes nothing: a retried write neither goes back in time nor duplicates its events.

**Demographics** are counted as tracks end: the write that ends a track adds it to the counts of
the buckets (15 minutes, 1 hour, 1 day) holding its ``first_seen``, with its final labels, and
keeps in the track's hash what it counted (``counted``). A later write of the ended track (a
late estimate changed a label) moves the count from the old labels to the new ones, and a write
that makes it active again (a take-over that resumed it) takes it back out: a track is in the
counts exactly once while it is ended, whichever replica writes it, however often a write is
retried. Active tracks are counted at read time from the ``active`` index. A record with a
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

from ..demographics import BucketCounts, bucket_starts, count, tally_marker
from ..errors import StoreError, StoreUnavailableError
from ..summary import EstimatePoint, TrackSummary
from ..urls import redact_url
from .base import TrackRecord

__all__ = ["RedisTrackStore"]

log = logging.getLogger(__name__)

# KEYS: track, stream index, stream events, fence (or any key when unfenced), active index, history;
# ARGV: version, summary, state, key, first_seen, ended, ttl, events maxlen, token ('' = unfenced),
#       tally marker ('' = not counted), stats key prefix, stats ttl, estimates kept, number of events,
#       events..., estimates...
# Returns 1 applied, 0 stale version (ignored), -1 refused: another owner has claimed the stream.
_PUT = """
if ARGV[9] ~= '' and redis.call('GET', KEYS[4]) ~= ARGV[9] then return -1 end
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '-1')
if current >= tonumber(ARGV[1]) then return 0 end
local counted = redis.call('HGET', KEYS[1], 'counted')
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'summary', ARGV[2], 'state', ARGV[3])
redis.call('ZADD', KEYS[2], 'NX', ARGV[5], ARGV[4])
local n = tonumber(ARGV[14])
for i = 15, 14 + n do
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[8], '*', 'track', ARGV[4], 'version', ARGV[1], 'event', ARGV[i])
end
if #ARGV > 14 + n then
  for i = 15 + n, #ARGV do redis.call('RPUSH', KEYS[6], ARGV[i]) end
  redis.call('LTRIM', KEYS[6], -tonumber(ARGV[13]), -1)
end
local function tally(marker, delta)
  local t, g, a, e = string.match(marker, '^(-?%d+)|([^|]*)|([^|]*)|([^|]*)$')
  for _, size in ipairs({900, 3600, 86400}) do
    local bucket = ARGV[11] .. ':' .. size .. ':' .. string.format('%d', math.floor(tonumber(t) / size) * size)
    redis.call('HINCRBY', bucket, 'people', delta)
    redis.call('HINCRBY', bucket, 'gender:' .. g, delta)
    redis.call('HINCRBY', bucket, 'age:' .. a, delta)
    redis.call('HINCRBY', bucket, 'expression:' .. e, delta)
    redis.call('EXPIRE', bucket, ARGV[12])
  end
end
if (counted or '') ~= ARGV[10] then
  if counted then tally(counted, -1) end
  if ARGV[10] ~= '' then
    tally(ARGV[10], 1)
    redis.call('HSET', KEYS[1], 'counted', ARGV[10])
  else
    redis.call('HDEL', KEYS[1], 'counted')
  end
end
if ARGV[6] == '1' then
  redis.call('ZREM', KEYS[5], ARGV[4])
  redis.call('EXPIRE', KEYS[1], ARGV[7])
  redis.call('EXPIRE', KEYS[6], ARGV[7])
else
  redis.call('ZADD', KEYS[5], ARGV[5], ARGV[4])
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[6])
end
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
        stats_ttl_s: int = 400 * 24 * 3600,
        estimates_kept: int = 100,
    ) -> None:
        import redis
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        self.url = redact_url(url)
        self._prefix = prefix
        self._ttl = ended_ttl_s
        self._maxlen = events_maxlen
        self._stats_ttl = stats_ttl_s
        self._kept = estimates_kept
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
            index = self._k("stream", rec.stream)
            keys = [self._k("track", rec.key), f"{index}:tracks", f"{index}:events", rec.fence.key if rec.fence else f"{index}:events",
                    f"{index}:active", self._k("track", rec.key, "estimates")]  # fmt: skip
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
                tally_marker(rec.summary) if rec.ended else "",
                f"{index}:stats",
                self._stats_ttl,
                self._kept,
                len(rec.events),
                *rec.events,
                *(point.model_dump_json() for point in rec.estimates),
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

    def tracks(self, stream: str, newest: int | None = None) -> list[TrackSummary]:
        if newest is not None and newest <= 0:
            return []
        return self._summaries(self._k("stream", stream, "tracks"), -newest if newest else 0)

    def active(self, stream: str) -> list[TrackSummary]:
        return self._summaries(self._k("stream", stream, "active"), 0)

    def _summaries(self, index: str, first: int) -> list[TrackSummary]:
        """The summaries of the tracks in a sorted-set index (from rank ``first``); members
        whose track has expired are dropped from the index."""
        return self._fetch([k.decode() for k in self._call(self._client.zrange, index, first, -1)], index)

    def _fetch(self, keys: list[str], index: str | None) -> list[TrackSummary]:
        """The summaries of ``keys``; those whose track expired are left out (and dropped from
        ``index``)."""
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.hget(self._k("track", key), "summary")
        raws = self._call(pipe.execute) if keys else []
        expired = [k for k, raw in zip(keys, raws) if raw is None]
        if expired and index is not None:
            self._call(self._client.zrem, index, *expired)
        return [TrackSummary.model_validate_json(raw) for raw in raws if raw is not None]

    def estimates(self, key: str) -> list[EstimatePoint]:
        raws = self._call(self._client.lrange, self._k("track", key, "estimates"), 0, -1)
        return [EstimatePoint.model_validate_json(raw) for raw in raws]

    def demographics(self, stream: str, bucket_s: int, start: float, end: float) -> list[BucketCounts]:
        """The kept counts of the buckets (one hash each, read in one round trip), plus the
        stream's active tracks (read from their own index, never the ended ones)."""
        starts = bucket_starts(bucket_s, start, end)
        # The counts and the active index in one transaction: a track that ends meanwhile is
        # either in the counts or among the active tracks, never in both or neither.
        pipe = self._client.pipeline(transaction=True)
        for s in starts:
            pipe.hgetall(self._k("stream", stream, "stats", str(bucket_s), str(s)))
        pipe.zrange(self._k("stream", stream, "active"), 0, -1)
        *raws, members = self._call(pipe.execute)
        buckets = []
        for s, raw in zip(starts, raws):
            bucket = BucketCounts(start=s)
            for field, value in raw.items():
                dimension, _, label = field.decode().partition(":")
                if dimension == "people":
                    bucket.people = int(value)
                elif dimension in ("gender", "age", "expression"):
                    counts = getattr(bucket, dimension)
                    counts[label] = counts.get(label, 0) + int(value)
            buckets.append(bucket)
        active = count(self._fetch([m.decode() for m in members], None), bucket_s, start, end)
        for bucket, extra in zip(buckets, active):
            bucket.merge(extra)
        return buckets

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
