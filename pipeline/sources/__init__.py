"""Frame sources: demux + decode + analysis fps cap. Files now; live sources slot in here."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..errors import InputError
from ..urls import redact_url
from .base import FpsCap, FrameSource
from .file import FileSource, probe

__all__ = ["FileSource", "FpsCap", "FrameSource", "file_path", "open_source", "probe"]

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def file_path(uri: str | Path) -> Path:
    """The file a source URI names: a plain path or a ``file://`` URI.

    Raises:
        InputError: the URI names a network source (``rtsp://``, ``http://``...).
    """
    text = str(uri)
    match = _SCHEME.match(text)
    if match is None:
        return Path(text)
    scheme = match.group(1).lower()
    if scheme == "file":
        return Path(unquote(urlsplit(text).path))
    raise InputError(f"{redact_url(text)}: {scheme}:// sources are not supported here yet; give a video file")


def open_source(uri: str | Path, stream: str = "video", fps: float | None = 10.0) -> FrameSource:
    """Open a source by URI. Plain paths and ``file://`` URIs are files."""
    return FileSource(file_path(uri), stream=stream, fps=fps)
