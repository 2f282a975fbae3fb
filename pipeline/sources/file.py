"""Video files through PyAV: any container and codec the bundled FFmpeg decodes."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError
from ..types import Frame
from .base import FpsCap

__all__ = ["FileSource", "probe"]

log = logging.getLogger(__name__)


def _open(path: Path):
    import av

    if not path.exists():
        raise InputError(f"video file not found: {path}")
    if not path.is_file():
        raise InputError(f"not a regular file: {path}")
    if path.stat().st_size == 0:
        raise InputError(f"video file is empty: {path}")
    try:
        container = av.open(str(path), mode="r")
    except av.FFmpegError as err:
        raise InputError(f"cannot read {path} as a video ({_reason(err)}); is it truncated or not a video?") from None
    if not container.streams.video:
        container.close()
        raise InputError(f"{path} holds no video stream")
    return container


def _reason(err: Exception) -> str:
    text = getattr(err, "strerror", None) or str(err)
    return text.split(";")[0].strip().rstrip(".")


def probe(path: str | Path) -> dict:
    """Width, height, nominal fps, duration (s) and codec of a file's first video stream."""
    container = _open(Path(path))
    try:
        stream = container.streams.video[0]
        duration = float(stream.duration * stream.time_base) if stream.duration else None
        if duration is None and container.duration:
            duration = container.duration / 1_000_000
        return {
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "fps": float(stream.average_rate or stream.guessed_rate or 0) or None,
            "frames": stream.frames or None,
            "duration_s": duration,
            "codec": stream.codec_context.name,
        }
    finally:
        container.close()


class FileSource:
    """Decodes every frame of a file and hands on those the fps cap keeps.

    Args:
        path: video file (mp4, mkv, avi, ...).
        stream: stream id given to the frames.
        fps: analysis rate cap in frames per second (None: every frame).

    Raises:
        InputError: on construction for a missing, empty or unreadable file, and from
            iteration when the file is corrupt before any frame decodes. Corruption after
            some frames, or a file that ends well before the length its header declares (a
            truncated download with its index up front), ends the stream, keeping what was
            analysed, and is reported in ``error``.
    """

    def __init__(self, path: str | Path, stream: str = "video", fps: float | None = 10.0) -> None:
        self.path = Path(path)
        self.stream = stream
        self._cap_fps = fps
        self._container = _open(self.path)
        video = self._container.streams.video[0]
        self._nominal = float(video.average_rate or video.guessed_rate or 0) or 30.0
        self._declared_frames = int(video.frames or 0)
        self._declared_s = float(video.duration * video.time_base) if video.duration else None
        self.decoded = 0
        self.error: str | None = None

    @property
    def nominal_fps(self) -> float:
        return self._nominal

    @property
    def analysis_fps(self) -> float:
        return min(self._nominal, self._cap_fps) if self._cap_fps else self._nominal

    def __iter__(self) -> Iterator[Frame]:
        import av

        cap = FpsCap(self._cap_fps)
        video = self._container.streams.video[0]
        video.thread_type = "AUTO"
        frames = self._container.decode(video)
        last_pts = 0.0
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                break
            except av.FFmpegError as err:
                if self.decoded == 0:
                    raise InputError(f"cannot decode {self.path}: {_reason(err)}") from None
                self.error = f"decoding stopped after {self.decoded} frames: {_reason(err)}"
                log.info("%s: %s", self.path, self.error)
                break
            index = self.decoded
            self.decoded += 1
            pts = float(frame.time) if frame.time is not None else index / self._nominal
            last_pts = pts
            if not cap.keep(pts):
                continue
            yield Frame(self.stream, index, pts, time.time(), frame.to_ndarray(format="rgb24"))
        if self.decoded == 0:
            raise InputError(f"no frame could be decoded from {self.path}; is it truncated?")
        if self.error is None:
            self.error = self._shortfall(last_pts)
            if self.error:
                log.info("%s: %s", self.path, self.error)

    def _shortfall(self, last_pts: float) -> str | None:
        """Why the decoded stream looks shorter than the header says, or None."""
        if self._declared_frames and self.decoded < self._declared_frames - 1:
            return f"the file ends after {self.decoded} of the {self._declared_frames} frames its header declares; it looks truncated"
        if self._declared_s and last_pts + 2.0 / self._nominal < self._declared_s - 0.1:
            return f"the file ends at {last_pts:.1f} s of the {self._declared_s:.1f} s its header declares; it looks truncated"
        return None

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
