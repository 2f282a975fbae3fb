"""Frame sources: demux + decode + analysis fps cap. Files now; live sources slot in here."""

from __future__ import annotations

from pathlib import Path

from .base import FpsCap, FrameSource
from .file import FileSource, probe

__all__ = ["FileSource", "FpsCap", "FrameSource", "open_source", "probe"]


def open_source(uri: str | Path, stream: str = "video", fps: float | None = 10.0) -> FrameSource:
    """Open a source by URI. Plain paths and ``file://`` URIs are files."""
    text = str(uri)
    text = text.removeprefix("file://")
    return FileSource(text, stream=stream, fps=fps)
