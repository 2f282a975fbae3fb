"""URLs as users give them: credentials never leave in logs, statuses or errors."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

__all__ = ["redact_url"]


def redact_url(url: str) -> str:
    """``url`` with any user name and password replaced by ``***``; other text unchanged.

    ``rtsp://admin:pw@10.0.0.5/live`` -> ``rtsp://***@10.0.0.5/live``.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))
