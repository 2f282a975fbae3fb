"""Frame sources: demux + decode + analysis fps cap, for files and live streams."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..errors import InputError
from ..urls import excerpt, shown_url
from .base import FpsCap, FrameSource
from .file import FileSource, probe
from .live import LIVE_SCHEMES, LiveSource, LiveStats

__all__ = [
    "LIVE_SCHEMES",
    "FileSource",
    "FpsCap",
    "FrameSource",
    "LiveSource",
    "LiveStats",
    "file_path",
    "is_live",
    "open_source",
    "probe",
    "scheme_of",
]

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def scheme_of(uri: str | Path) -> str | None:
    """The URI's scheme in lower case (``rtsp``, ``file``...), or None for a plain path."""
    match = _SCHEME.match(str(uri))
    return None if match is None else match.group(1).lower()


def is_live(uri: str | Path) -> bool:
    """Whether ``uri`` names a live stream (see :data:`LIVE_SCHEMES`)."""
    return scheme_of(uri) in LIVE_SCHEMES


def file_path(uri: str | Path) -> Path:
    """The file a source URI names: a plain path or a ``file://`` URI.

    Raises:
        InputError: the URI has another scheme.
    """
    scheme = scheme_of(uri)
    if scheme is None:
        return Path(str(uri))
    if scheme == "file":
        return Path(unquote(urlsplit(str(uri)).path))
    shown = shown_url(str(uri))
    if scheme in LIVE_SCHEMES:
        raise InputError(f"{shown} is a live stream, not a file")
    raise InputError(f"{shown}: unknown scheme {excerpt(scheme, 20)}://; give a video file or a live stream ({', '.join(LIVE_SCHEMES)})")


def open_source(uri: str | Path, stream: str = "video", fps: float | None = 10.0, live=None) -> FrameSource:
    """Open a source by URI: plain paths and ``file://`` URIs are files; ``rtsp://``,
    ``rtmp://``, ``http(s)://``... are live streams (``live``: their ``LiveSourceConfig``),
    returned once their first frame has arrived.

    Raises:
        InputError: the file cannot be read, or the stream cannot be opened.
    """
    if is_live(uri):
        source = LiveSource(str(uri), stream=stream, fps=fps, config=live)
        try:
            source.wait_live()
        except BaseException:
            source.close()
            raise
        return source
    return FileSource(file_path(uri), stream=stream, fps=fps)
