"""The base of every config section, the merge of a partial config into the defaults, and
the validators of values that several sections share."""

from __future__ import annotations

import re
import types
from typing import Annotated, Union, get_args, get_origin
from urllib.parse import parse_qs, urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict

from ..urls import excerpt, quoted, redact_url

__all__ = ["MissingTypeError", "RedisUrl", "Section", "StreamId", "check_redis_url", "check_stream_id", "over_defaults"]


class Section(BaseModel):
    """A config section: unknown keys are errors, values are frozen and finite."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class MissingTypeError(ValueError):
    """A section whose ``type`` cannot be taken from the defaults; the message names the key."""


def over_defaults(model: type[BaseModel], data: dict) -> dict:
    """``data`` (a partial config, as read from YAML) made ready to validate as ``model`` over
    its defaults, section by section: any subset of a section may be given.

    A section given without ``type`` is of the default section's type; a section of the
    default's type keeps the default's explicitly set values that it does not give (the
    service's one-thread detectors stay one-thread when another detector key is set). A
    section of another type starts from that type's own defaults.

    Raises:
        MissingTypeError: a section without ``type`` whose type cannot be the default's: it
            has no default, or it sets a key the default's type does not have.
    """
    return _merged(model, model(), data, "")


def _merged(model: type[BaseModel], default: BaseModel | None, data: dict, where: str) -> dict:
    out = dict(data)
    for name, field in model.model_fields.items():
        given, members = data.get(name), _sections(field.annotation)
        if not isinstance(given, dict) or not members:
            continue
        current = getattr(default, name) if default is not None else field.default
        current = current if isinstance(current, BaseModel) else None
        key, section = f"{where}{name}", members[0]
        if len(members) > 1:
            given, section = _typed(members, current, given, key)
            if section is None:
                continue  # an unknown type: validation names it with the types there are
        if type(current) is not section:
            current = None
        out[name] = _merged(section, current, given, key + ".")
    if default is not None:
        for name in default.model_fields_set - set(data):
            out[name] = getattr(default, name)
    return out


def _typed(members: tuple, current: BaseModel | None, given: dict, key: str) -> tuple[dict, type | None]:
    """The section's config class by its ``type``, with ``type`` filled in from ``current``."""
    tags = {m.model_fields["type"].default: m for m in members}
    if "type" in given:
        tag = given["type"]
        return given, tags.get(tag) if isinstance(tag, str) else None
    choices = ", ".join(tags)
    if current is None:
        raise MissingTypeError(f"{key}.type is missing: set it to one of {choices}")
    unknown = sorted(set(given) - set(type(current).model_fields))
    if unknown:
        raise MissingTypeError(
            f"{key}.type is missing and {excerpt(str(unknown[0]))!r} is not a setting of the default type "
            f"{current.type}: set {key}.type to one of {choices}"
        )
    return {**given, "type": current.type}, type(current)


def _sections(annotation) -> tuple[type[BaseModel], ...]:
    """The config classes a field holds: one for a plain section, several for a ``type`` union
    (each with a ``type`` field), none for a value."""
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, types.UnionType):
        members = tuple(m for arg in get_args(annotation) for m in _sections(arg))
        return members if all("type" in m.model_fields for m in members) else ()
    return (annotation,) if isinstance(annotation, type) and issubclass(annotation, BaseModel) else ()


_STREAM_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_stream_id(value: str) -> str:
    """A stream id: 1-64 letters, digits, ``.``, ``_`` or ``-``, starting with a letter or
    digit (it is part of track keys ``{stream}:{epoch}:{id}`` and of Redis keys)."""
    if not _STREAM_ID.fullmatch(value):
        raise ValueError(
            f"stream id {quoted(value)} must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return value


def check_redis_url(url: str) -> str:
    """``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` or ``unix:///path[?db=N]``.

    redis-py reads a database that is not a number as db 0; that would write where the user
    did not ask, so it is an error here.
    """
    shown = excerpt(redact_url(url), 80)
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
            raise ValueError(
                f"Redis database {quoted(db)} in {shown} is not a number (redis://host:port/DB, DB = 0, 1, ...)"
            )
    return url


StreamId = Annotated[str, AfterValidator(check_stream_id)]
RedisUrl = Annotated[str, AfterValidator(check_redis_url)]


