"""The source interface every stage downstream relies on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from ..types import Frame

__all__ = ["FpsCap", "FrameSource", "MonotonicClock", "quarter_turns", "upright"]


@runtime_checkable
class FrameSource(Protocol):
    """Yields analysed :class:`Frame` s in order.

    A file source ends when the file does; a live source (RTSP) reconnects on its own and
    ends only when closed, so stages never see the difference.
    """

    stream: str
    #: What frame times (``Frame.pts``, and so crop and estimate times) count: ``media`` seconds
    #: from the file's start, or ``wall`` clock seconds (live streams: a camera's own time stamps
    #: restart at every reconnect).
    time_base: Literal["media", "wall"]

    @property
    def analysis_fps(self) -> float:
        """Rate of the frames handed on (after the cap), frames per second."""
        ...

    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...


class FpsCap:
    """Chooses which decoded frames to hand on so their rate stays at or below ``fps``.

    Works on presentation times, so variable-frame-rate inputs are thinned evenly.
    """

    def __init__(self, fps: float | None) -> None:
        self._period = 0.0 if not fps else 1.0 / fps
        # A quarter period of slack absorbs timestamp jitter and source rates that are not
        # a multiple of the cap (25 fps thinned to 10 keeps frames 0.08 s and 0.12 s apart).
        self._slack = self._period / 4
        self._next = float("-inf")

    def keep(self, pts: float) -> bool:
        if pts < self._next - self._slack:
            return False
        scheduled = self._next + self._period
        # Step on the schedule so the average rate is exact; after a gap, restart from here.
        self._next = scheduled if scheduled > pts else pts + self._period
        return True


def quarter_turns(rotation_deg: float) -> int:
    """A display rotation as counter-clockwise quarter turns in ``0..3``.

    ``rotation_deg`` follows FFmpeg's display matrix (PyAV's ``VideoFrame.rotation``): the
    angle in degrees by which a decoded picture is turned counter-clockwise to be shown
    upright; a portrait phone video typically says -90 (turn clockwise). Angles that are not a
    multiple of 90 round to the nearest quarter turn.
    """
    return round(rotation_deg / 90.0) % 4


def upright(image: np.ndarray, rotation_deg: float) -> np.ndarray:
    """``image`` (``(H, W, C)``, as decoded) turned the way players show it.

    Returns the image itself when there is nothing to turn, else a C-contiguous copy (the
    detectors and OpenCV want contiguous rows): ``(W, H, C)`` for a quarter turn either way.
    """
    turns = quarter_turns(rotation_deg)
    return image if turns == 0 else np.ascontiguousarray(np.rot90(image, turns))


class MonotonicClock:
    """Analysis times that never go back, from presentation times that may.

    Byte-wise concatenated MPEG-TS files, an encoder restart and the 33-bit PTS wrap (every
    26.5 h) make the presentation time jump back. The fps cap would drop every frame until
    the old time came round again, and tracks would end before they began; so after any step
    that does not go forward, times go on one frame period after the last one, shifted by a
    fixed offset from then on. Forward gaps are kept as they are (a paused recording).

    Args:
        period_s: seconds between frames at the nominal rate: the step taken at a reset and
            for frames without a time stamp.

    Attributes:
        resets: backward (or standing) steps mended so far.
        last_reset: ``(before_s, after_s)``: the presentation times either side of the last
            reset, as the file gives them; None before the first.
    """

    def __init__(self, period_s: float) -> None:
        self._period = period_s
        self._offset = 0.0
        self._last: float | None = None
        self._last_raw: float | None = None
        self.resets = 0
        self.last_reset: tuple[float, float] | None = None

    @property
    def last_s(self) -> float | None:
        """The last time handed out (seconds), or None before the first frame."""
        return self._last

    def seconds(self, pts_s: float | None) -> float:
        """The analysis time (seconds) of the next frame, whose presentation time is
        ``pts_s`` (None when the frame has none)."""
        if pts_s is None:
            now = 0.0 if self._last is None else self._last + self._period
        else:
            now = pts_s + self._offset
            if self._last is not None and now <= self._last:
                self.resets += 1
                self.last_reset = (self._last_raw if self._last_raw is not None else self._last, pts_s)
                self._offset = self._last + self._period - pts_s
                now = self._last + self._period
            self._last_raw = pts_s
        self._last = now
        return now
