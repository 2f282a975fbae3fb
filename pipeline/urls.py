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
from urllib.parse import urlsplit

from .errors import InputError

__all__ = ["MAX_URL_CHARS", "excerpt", "parse_url", "quoted", "redact_url", "shown_url"]

#: Longest URL accepted (RTSP cameras and CDNs stay far below; browsers cap near this).
MAX_URL_CHARS = 2048

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_PERCENT_CONTROL = re.compile(r"%(?:[01][0-9A-Fa-f]|7[Ff])")
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
#: Words that make a query or fragment parameter a secret when its name contains one of them
#: (compared in lower case): ``password``, ``auth_token``, ``X-Amz-Security-Token``, ``api-key``...
_SECRET_WORDS = ("pass", "pwd", "secret", "token", "key", "sig", "auth", "cred", "session")
_PARAM = re.compile(r"([^&;=#?]+)=([^&;#]*)")


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
    """``url`` with its user name and password, and the values of secret-looking parameters in
    its query or fragment (a name containing ``pass``, ``token``, ``key``, ``sig``, ``auth``,
    ``secret``...), replaced by ``***``.

    ``rtsp://admin:pw@10.0.0.5/live?token=x&ch=1`` -> ``rtsp://***@10.0.0.5/live?token=***&ch=1``.
    Done on the text, not on a parse, so that a malformed URL leaks nothing either: everything
    between ``://`` and the last ``@`` is user information (a password with an unencoded
    ``#``, ``?`` or ``/`` included).
    """
    head, sep, rest = url.partition("://")
    if not sep:
        return url
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    cut = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    tail = _PARAM.sub(lambda m: f"{m.group(1)}=***" if _is_secret(m.group(1)) else m.group(0), rest[cut:])
    return f"{head}://{rest[:cut]}{tail}"


def _is_secret(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


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
    except ValueError as err:
        raise InputError(f"the {what} {shown_url(url)} is malformed: {str(err)[:80]}") from None
    if "@" in url[len(match.group(0)) :] and "@" not in parts.netloc:
        raise InputError(
            f"the {what} {shown_url(url)} has an '@' after its host: percent-encode '#', '?' and '/' in a user name or "
            "password, and '@' in a path (%40)"
        )
    try:
        port = parts.port
    except ValueError:
        raise InputError(f"the {what} {shown_url(url)} has a port that is not a number in 1-65535") from None
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
    last = host.rstrip(".").rsplit(".", 1)[-1]
    if last.isdigit() or last.lower().startswith("0x"):  # 127.1, 0x7f.1, 2130706433: IPv4 in legacy forms
        raise InputError(f"the {what} {shown} has a host that is not a valid IP address (write it as four decimal numbers)")
    try:
        ascii_host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise InputError(f"the {what} {shown} has a host that is not a valid domain name") from None
    labels = ascii_host.rstrip(".").split(".")
    if len(ascii_host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise InputError(f"the {what} {shown} has a host that is not a valid domain name or IP address")
    return ascii_host
