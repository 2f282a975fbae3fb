"""The base of every config section, and the validators of values that several sections share."""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import parse_qs, urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict

from ..urls import redact_url

__all__ = ["RedisUrl", "Section", "StreamId", "check_redis_url", "check_stream_id"]


class Section(BaseModel):
    """A config section: unknown keys are errors, values are frozen and finite."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


_STREAM_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_stream_id(value: str) -> str:
    """A stream id: 1-64 letters, digits, ``.``, ``_`` or ``-``, starting with a letter or
    digit (it is part of track keys ``{stream}:{epoch}:{id}`` and of Redis keys)."""
    if not _STREAM_ID.fullmatch(value):
        raise ValueError(
            f"stream id {value!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return value


def check_redis_url(url: str) -> str:
    """``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` or ``unix:///path[?db=N]``.

    redis-py reads a database that is not a number as db 0; that would write where the user
    did not ask, so it is an error here.
    """
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as err:
        raise ValueError(f"Redis URL {shown} is malformed: {err}") from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"Redis URL {shown} must start with redis://, rediss:// or unix://")
    dbs = parse_qs(parts.query).get("db", [])
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError(f"Redis URL {shown} names no socket path (unix:///path/to/redis.sock)")
    else:
        if not parts.hostname:
            raise ValueError(f"Redis URL {shown} names no host (redis://HOST:PORT/DB)")
        if port == 0:
            raise ValueError(f"Redis URL {shown} has port 0")
        if parts.path.strip("/"):
            dbs.append(parts.path.strip("/"))
    for db in dbs:
        if not db.isdigit():
            raise ValueError(f"Redis database {db!r} in {shown} is not a number (redis://host:port/DB, DB = 0, 1, ...)")
    return url


StreamId = Annotated[str, AfterValidator(check_stream_id)]
RedisUrl = Annotated[str, AfterValidator(check_redis_url)]


