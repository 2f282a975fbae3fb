"""Video files through PyAV: any container and codec the bundled FFmpeg decodes."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError
from ..types import Frame
from .base import FpsCap, MonotonicClock, quarter_turns, upright

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
    """Width, height, nominal fps, duration (s) and codec of a file's first video stream.

    ``width`` and ``height`` are upright pixels, as :class:`FileSource` hands the frames on
    (a portrait phone video stored sideways reports its portrait size); ``rotation_deg`` is
    the counter-clockwise turn, 0, 90, 180 or 270, that makes the decoded pictures upright.
    The duration of a file whose time stamps restart (joined MPEG-TS files) may cover only
    part of it: FFmpeg estimates it from the first and last time stamps.
    """
    container = _open(Path(path))
    try:
        stream = container.streams.video[0]
        duration = float(stream.duration * stream.time_base) if stream.duration else None
        if duration is None and container.duration:
            duration = container.duration / 1_000_000
        width, height = stream.codec_context.width, stream.codec_context.height
        turns = quarter_turns(_first_rotation(container, stream))
        if turns % 2:
            width, height = height, width
        return {
            "width": width,
            "height": height,
            "rotation_deg": 90 * turns,
            "fps": float(stream.average_rate or stream.guessed_rate or 0) or None,
            "frames": stream.frames or None,
            "duration_s": duration,
            "codec": stream.codec_context.name,
        }
    finally:
        container.close()


def _first_rotation(container, stream) -> float:
    """The display rotation (degrees, see :func:`~.base.quarter_turns`) of the first frame.

    PyAV reads a stream's display matrix only from decoded frames, where FFmpeg copies it
    from the container (mp4/mov ``tkhd``, mkv projection): one frame is decoded for it. A
    file that decodes nothing reports 0 here; :class:`FileSource` reports the failure.
    """
    import av

    try:
        for frame in container.decode(stream):
            return frame.rotation
    except av.FFmpegError:
        pass
    return 0


class FileSource:
    """Decodes every frame of a file and hands on those the fps cap keeps.

    Frames are upright: a picture stored sideways or upside down (phone videos) is turned
    by its display matrix (quarter turns), so boxes downstream are in upright pixels. Frame
    times are presentation times in seconds, kept monotonic: after the time stamps jump back
    (MPEG-TS files joined byte-wise, an encoder restart) they go on from where they were
    (:class:`~.base.MonotonicClock`), so the whole file is analysed and the jump is logged.

    Args:
        path: video file (mp4, mkv, avi, ...).
        stream: stream id given to the frames.
        fps: analysis rate cap in frames per second (None: every frame).
        skip_through: frames up to this index are decoded (times and the fps cap stay as in
            a full run) but not handed on: a job taken over goes on after the last frame its
            snapshot saw.

    Raises:
        InputError: on construction for a missing, empty or unreadable file, and from
            iteration when the file is corrupt before any frame decodes. Corruption after
            some frames, or a file that ends well before the length its header declares (a
            truncated download with its index up front), ends the stream, keeping what was
            analysed, and is reported in ``error``.

    Attributes:
        decoded: frames decoded so far (analysed or not).
        timestamp_resets: backward jumps of the time stamps mended so far.
        error: why the stream ended early, or None.
        decode_s: seconds spent decoding (and converting the frames handed on) so far.
    """

    time_base = "media"  # frame times are seconds from the file's start

    def __init__(self, path: str | Path, stream: str = "video", fps: float | None = 10.0, skip_through: int = -1) -> None:
        self.path = Path(path)
        self.stream = stream
        self._cap_fps = fps
        self._skip_through = skip_through
        self._container = _open(self.path)
        video = self._container.streams.video[0]
        self._nominal = float(video.average_rate or video.guessed_rate or 0) or 30.0
        self._declared_frames = int(video.frames or 0)
        self._declared_s = float(video.duration * video.time_base) if video.duration else None
        self.decoded = 0
        self.timestamp_resets = 0
        self.error: str | None = None
        self.decode_s = 0.0
        self._stop = threading.Event()

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
        clock = MonotonicClock(1.0 / self._nominal)
        while not self._stop.is_set():
            t0 = time.perf_counter()
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
            pts = clock.seconds(float(frame.time) if frame.time is not None else None)
            if clock.resets > self.timestamp_resets:
                self._reset_seen(clock, index, pts)
            if not cap.keep(pts) or index <= self._skip_through:
                self.decode_s += time.perf_counter() - t0
                continue
            image = upright(frame.to_ndarray(format="rgb24"), frame.rotation)
            self.decode_s += time.perf_counter() - t0
            yield Frame(self.stream, index, pts, time.time(), image)
        if self._stop.is_set():
            return
        if self.decoded == 0:
            raise InputError(f"no frame could be decoded from {self.path}; is it truncated?")
        if self.error is None:
            self.error = self._shortfall(clock.last_s or 0.0)
            if self.error:
                log.info("%s: %s", self.path, self.error)

    def _reset_seen(self, clock: MonotonicClock, index: int, now_s: float) -> None:
        """Log a time stamp reset: the first as a warning (the user sees it once), later ones
        at info level (a file with broken time stamps would repeat it for every frame)."""
        self.timestamp_resets = clock.resets
        before, after = clock.last_reset
        level = logging.WARNING if clock.resets == 1 else logging.INFO
        log.log(level, "%s: time stamps jump back at frame %d (%.2f s -> %.2f s; joined recordings?); "
                "analysis goes on from %.2f s", self.path, index, before, after, now_s)  # fmt: skip

    def _shortfall(self, last_pts: float) -> str | None:
        """Why the decoded stream looks shorter than the header says, or None."""
        if self._declared_frames and self.decoded < self._declared_frames - 1:
            return f"the file ends after {self.decoded} of the {self._declared_frames} frames its header declares; it looks truncated"
        if self._declared_s and last_pts + 2.0 / self._nominal < self._declared_s - 0.1:
            return f"the file ends at {last_pts:.1f} s of the {self._declared_s:.1f} s its header declares; it looks truncated"
        return None

    def stop(self) -> None:
        """End iteration at the next decoded frame (from any thread): a job stopped while it
        skips to where its snapshot was does not decode the rest of that stretch first."""
        self._stop.set()

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
