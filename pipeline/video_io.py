"""Writing videos with PyAV (H.264 in mp4)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

__all__ = ["VideoWriter"]


class VideoWriter:
    """Encodes RGB ``(H, W, 3)`` uint8 frames to an H.264 mp4 at a fixed rate.

    Pictures are stored as given, with no display matrix: players show them exactly as the
    arrays are (the annotated video of a phone video is upright because its frames are).

    Args:
        path: output file; its folder is created.
        fps: frames per second.
        bitrate: target bits per second (a realistic camera stream is 2-8 Mb/s at 720p).
    """

    def __init__(self, path: str | Path, fps: float, bitrate: int = 4_000_000) -> None:
        import av

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), mode="w")
        self._rate = Fraction(fps).limit_denominator(1000)
        self._bitrate = bitrate
        self._stream = None

    def write(self, image: np.ndarray) -> None:
        import av

        if self._stream is None:
            h, w = image.shape[:2]
            self._stream = self._container.add_stream("libx264", rate=self._rate)
            self._stream.width, self._stream.height = w - w % 2, h - h % 2
            self._stream.pix_fmt = "yuv420p"
            self._stream.bit_rate = self._bitrate
            self._stream.options = {"preset": "veryfast"}
        h, w = self._stream.height, self._stream.width
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:h, :w]), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        """Flush the encoder and finish the container (idempotent; the container is closed
        even when the flush fails)."""
        container, self._container = self._container, None
        if container is None:
            return
        try:
            if self._stream is not None:
                for packet in self._stream.encode():
                    container.mux(packet)
        finally:
            container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
