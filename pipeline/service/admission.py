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
from ..urls import excerpt, parse_url, shown_url

__all__ = ["admit_job_path", "admit_stream_url"]

_MAX_PATH_CHARS = 4096  # PATH_MAX on Linux
_DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "rtmp": 1935, "rtmps": 443, "http": 80, "https": 443}


def admit_stream_url(url: str, cfg: ApiConfig, check: bool = True, own: tuple[tuple[str, int], ...] = ()) -> str:
    """``url`` parsed strictly (:func:`~tracklens.pipeline.urls.parse_url`: no control
    characters or whitespace, a valid host and port, scheme in lower case) if a stream may be
    read from it; raises :class:`InputError` otherwise. A URL aimed at one of the service's
    own endpoints (``own``: its Redis, its API) is refused: no camera answers there. Only then,
    with ``check``, its host and port must accept a TCP connection; nothing is sent on it."""
    if scheme_of(url) in (None, "file"):
        raise InputError(f"{shown_url(url)}: a stream needs a URL ({', '.join(s + '://' for s in cfg.schemes)}); submit files as jobs")
    url = parse_url(url, tuple(cfg.schemes), "stream URL")
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or _DEFAULT_PORTS.get(parts.scheme)
    if any(port == own_port and _same_host(host, own_host) for own_host, own_port in own):
        raise InputError(f"{shown_url(url)} is one of this service's own endpoints, not a camera")
    if check and port:
        try:
            with socket.create_connection((host, port), timeout=cfg.connect_timeout_s):
                pass
        except OSError as err:
            why = "timed out" if isinstance(err, TimeoutError) else (err.strerror or str(err))
            raise InputError(f"{shown_url(url)}: cannot reach {host}:{port} ({why}); check the address, or send options.check=false") from None
    return url


def admit_job_path(path: str, cfg: ApiConfig) -> Path:
    """The resolved file ``path`` names if it lies inside a configured root; raises
    :class:`InputError` otherwise (control characters, too long, outside every root, missing,
    not a file, a symbolic link loop)."""
    if not cfg.file_roots:
        raise InputError("file jobs are disabled: the service has no api.file_roots configured")
    if len(path) > _MAX_PATH_CHARS:
        raise InputError(f"the path is {len(path)} characters long; at most {_MAX_PATH_CHARS} are accepted")
    scheme = scheme_of(path)
    if scheme not in (None, "file"):
        raise InputError(f"{shown_url(path)}: a job needs a file path (or file://), not a {excerpt(scheme, 20)}:// URL")
    if scheme == "file" and urlsplit(path).netloc not in ("", "localhost"):
        raise InputError("a file:// URL of a job names no host (file:///path or file://localhost/path)")
    raw = unquote(urlsplit(path).path) if scheme == "file" else path
    if not raw.isprintable():
        raise InputError(f"the path {excerpt(raw)} contains a control character")
    shown = excerpt(raw, 60)
    if not Path(raw).is_absolute():
        raise InputError(f"{shown}: give an absolute path inside {', '.join(str(r) for r in cfg.file_roots)}")
    try:
        resolved = Path(raw).resolve()
        roots = [Path(r).resolve() for r in cfg.file_roots]
        if not any(resolved.is_relative_to(root) for root in roots):
            raise InputError(f"{shown} is outside the folders this service may read ({', '.join(str(r) for r in roots)})")
        if not resolved.is_file():
            raise InputError(f"{shown}: no such file" if not resolved.exists() else f"{shown} is not a file")
    except (OSError, RuntimeError) as err:  # a symbolic link loop, a name too long for the file system
        why = getattr(err, "strerror", None) or str(err)
        raise InputError(f"{shown} cannot be resolved: {why}") from None
    return resolved


def _same_host(host: str, other: str) -> bool:
    """Whether two host names are one machine as far as a loopback check can tell."""
    loopback = ("localhost", "127.0.0.1", "::1", "0.0.0.0")
    return host == other or (host in loopback or host.startswith("127.")) and (other in loopback or other.startswith("127."))
