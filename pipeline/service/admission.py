"""What the API accepts as a stream or a job, checked before anything is stored.

Stream URLs must use a configured scheme (rtsp, rtsps, rtmp, http, https by default) and, when
asked, their host must answer a TCP connect now. Job paths must be video files inside one of
the configured ``file_roots`` (after resolving ``..`` and symbolic links), so the API cannot be
used to read arbitrary files of the server. Every refusal is an :class:`InputError` with one
line saying why, credentials redacted.
"""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..config import ApiConfig
from ..errors import InputError
from ..sources import scheme_of
from ..urls import redact_url

__all__ = ["admit_job_path", "admit_stream_url"]

_DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "rtmp": 1935, "rtmps": 443, "http": 80, "https": 443}


def admit_stream_url(url: str, cfg: ApiConfig, check: bool = True) -> str:
    """``url`` if a stream may be read from it; raises :class:`InputError` otherwise."""
    shown = redact_url(url)
    scheme = scheme_of(url)
    if scheme is None or scheme == "file":
        raise InputError(f"{shown}: a stream needs a URL ({', '.join(s + '://' for s in cfg.schemes)}); submit files as jobs")
    if scheme not in cfg.schemes:
        raise InputError(f"{shown}: the scheme {scheme}:// is not allowed; allowed: {', '.join(cfg.schemes)}")
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError as err:
        raise InputError(f"{shown} is not a valid URL: {err}") from None
    if not host:
        raise InputError(f"{shown} names no host")
    if check and port:
        try:
            with socket.create_connection((host, port), timeout=cfg.connect_timeout_s):
                pass
        except OSError as err:
            why = "timed out" if isinstance(err, TimeoutError) else (err.strerror or str(err))
            raise InputError(f"{shown}: cannot reach {host}:{port} ({why}); check the address, or send options.check=false") from None
    return url


def admit_job_path(path: str, cfg: ApiConfig) -> Path:
    """The resolved file ``path`` names if it lies inside a configured root; raises
    :class:`InputError` otherwise (outside every root, missing, not a file)."""
    if not cfg.file_roots:
        raise InputError("file jobs are disabled: the service has no api.file_roots configured")
    scheme = scheme_of(path)
    if scheme not in (None, "file"):
        raise InputError(f"{redact_url(path)}: a job needs a file path (or file://), not a {scheme}:// URL")
    raw = Path(unquote(urlsplit(path).path) if scheme == "file" else path)
    if not raw.is_absolute():
        raise InputError(f"{path}: give an absolute path inside {', '.join(str(r) for r in cfg.file_roots)}")
    resolved = raw.resolve()
    roots = [Path(r).resolve() for r in cfg.file_roots]
    if not any(resolved.is_relative_to(root) for root in roots):
        raise InputError(f"{path} is outside the folders this service may read ({', '.join(str(r) for r in roots)})")
    if not resolved.is_file():
        raise InputError(f"{path}: no such file" if not resolved.exists() else f"{path} is not a file")
    return resolved
