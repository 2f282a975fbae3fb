"""The source interface every stage downstream relies on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from ..types import Frame

__all__ = ["FpsCap", "FrameSource"]


@runtime_checkable
class FrameSource(Protocol):
    """Yields analysed :class:`Frame` s in order.

    A file source ends when the file does; a live source (RTSP) reconnects on its own and
    ends only when closed, so stages never see the difference.
    """

    stream: str

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
