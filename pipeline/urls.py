"""URLs as users give them: parsed strictly before anything touches them, and never shown whole.

A URL given to the service or the CLI reaches other programs: ffmpeg's RTSP client writes its
path into request lines, redis-py and httpx open connections with it. A carriage return or line
feed inside it once made the RTSP client speak to the service's own Redis, which ran the
injected lines as commands. :func:`parse_url` therefore refuses every control character,
whitespace, percent-encoded control characters, non-ASCII outside the host, a malformed host or
port and an over-long URL, before a socket is opened; it returns the URL with its scheme in
lower case and its host in ASCII (IDNA).

Anything shown back (errors, statuses, listings, logs) goes through :func:`redact_url` (user
name, password and credential-like query parameters become ``***``) and :func:`excerpt`
(printable, one line, at most a few dozen characters).
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .errors import InputError

__all__ = ["MAX_URL_CHARS", "excerpt", "parse_url", "quoted", "redact_url", "shown_url"]

#: Longest URL accepted (RTSP cameras and CDNs stay far below; browsers cap near this).
MAX_URL_CHARS = 2048

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_PERCENT_CONTROL = re.compile(r"%(?:[01][0-9A-Fa-f]|7[Ff])")
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
#: Query parameters whose values are secrets (compared in lower case, ``-`` read as ``_``).
_SECRET_PARAMS = frozenset(
    ("password", "passwd", "pass", "pwd", "secret", "token", "access_token", "auth", "authorization", "key",
     "apikey", "api_key", "sig", "signature", "credential", "credentials", "x_amz_signature", "x_amz_credential")
)  # fmt: skip


def excerpt(text: str, limit: int = 60) -> str:
    """``text`` made safe to quote in a one-line message: control and other unprintable
    characters escaped (``\\r``, ``\\x00``), cut to ``limit`` characters with the length of the
    rest said (``... (+1234 characters)``)."""
    shown = text[:limit].encode("unicode_escape").decode("ascii") if not text[:limit].isprintable() else text[:limit]
    return shown if len(text) <= limit else f"{shown}... (+{len(text) - limit} characters)"


def quoted(value: object, limit: int = 60) -> str:
    """``repr(value)`` as an error quotes it: whole when short, else an excerpt (a runaway
    argument or a pasted file is never echoed back whole)."""
    text = repr(value)
    return text if len(text) <= limit else excerpt(text, limit)


def redact_url(url: str) -> str:
    """``url`` with its user name and password, and the values of credential-like query
    parameters (``password``, ``token``, ``key``, ``sig``...), replaced by ``***``.

    ``rtsp://admin:pw@10.0.0.5/live?token=x&ch=1`` -> ``rtsp://***@10.0.0.5/live?token=***&ch=1``.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = f"***@{parts.netloc.rsplit('@', 1)[1]}" if "@" in parts.netloc else parts.netloc
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_is_secret(name) for name, _ in pairs):
            query = urlencode([(name, "***" if _is_secret(name) else value) for name, value in pairs], safe="*/:")
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _is_secret(name: str) -> bool:
    return name.lower().replace("-", "_") in _SECRET_PARAMS


def shown_url(url: str, limit: int = 80) -> str:
    """How a URL appears in messages: redacted, then cut to a short printable excerpt."""
    return excerpt(redact_url(url), limit)


def parse_url(url: str, schemes: tuple[str, ...], what: str = "URL", max_chars: int = MAX_URL_CHARS) -> str:
    """``url`` checked strictly and normalised: scheme in lower case, host in ASCII (IDNA).

    Args:
        url: as the user gave it.
        schemes: accepted schemes, lower case (``("rtsp", "rtsps", ...)``).
        what: how messages name it (``stream URL``, ``Redis URL``).
        max_chars: longest accepted.

    Raises:
        InputError: one line naming the first problem, quoting at most a redacted excerpt.
    """
    if not isinstance(url, str):
        raise InputError(f"the {what} must be a string")
    if not url:
        raise InputError(f"the {what} is empty")
    if len(url) > max_chars:
        raise InputError(f"the {what} is {len(url)} characters long; at most {max_chars} are accepted")
    for i, char in enumerate(url):
        if char.isspace() or unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp", "Zs"):
            kind = "whitespace" if char.isspace() and char not in "\r\n\t\v\f" else "a control character"
            raise InputError(f"the {what} contains {kind} ({excerpt(char)}) at position {i}; nothing was connected to")
    if _PERCENT_CONTROL.search(url):
        raise InputError(f"the {what} contains a percent-encoded control character ({_PERCENT_CONTROL.search(url).group()})")
    match = _SCHEME.match(url)
    if match is None:
        raise InputError(f"the {what} {shown_url(url)} has no scheme (expected {', '.join(s + '://' for s in schemes)})")
    scheme = match.group(1).lower()
    if scheme not in schemes:
        raise InputError(f"the scheme {excerpt(scheme, 20)}:// is not allowed for the {what}; allowed: {', '.join(schemes)}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as err:
        raise InputError(f"the {what} {shown_url(url)} is malformed: {err}") from None
    if port == 0:
        raise InputError(f"the {what} {shown_url(url)} has port 0")
    userinfo, _, hostport = parts.netloc.rpartition("@")
    host = _ascii_host(parts.hostname or "", what, shown_url(url))
    rest = url[len(match.group(0)) + len(parts.netloc) :]
    if not rest.isascii() or not userinfo.isascii():
        raise InputError(f"the {what} {shown_url(url)} has non-ASCII characters outside its host; percent-encode them")
    shown_host = f"[{host}]" if ":" in host else host
    netloc = (f"{userinfo}@" if "@" in parts.netloc else "") + shown_host + (f":{port}" if port is not None else "")
    return f"{scheme}://{netloc}{rest}"


def _ascii_host(host: str, what: str, shown: str) -> str:
    """The host as it goes on the wire: an IP address, or a DNS name in ASCII (IDNA)."""
    if not host:
        raise InputError(f"the {what} {shown} names no host")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        ascii_host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise InputError(f"the {what} {shown} has a host that is not a valid domain name") from None
    labels = ascii_host.rstrip(".").split(".")
    if len(ascii_host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise InputError(f"the {what} {shown} has a host that is not a valid domain name or IP address")
    return ascii_host
