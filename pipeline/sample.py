"""The demo video: a real photo of a person crossing a real background, as a camera sees it.

The person is scikit-image's ``astronaut`` (NASA portrait of Eileen Collins, public domain),
scaled to at most a quarter of the frame width; the background is scikit-image's ``brick``
wall (public domain), tinted and tiled to fill the frame. The photo moves left to right with
a little vertical bob, and the video is H.264 at a realistic camera bitrate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .video_io import VideoWriter

__all__ = ["make_sample_video", "sample_positions"]


def _background(width: int, height: int) -> np.ndarray:
    import cv2
    from skimage import data

    brick = data.brick()  # (512, 512) uint8 gray
    reps = (int(np.ceil(height / brick.shape[0])), int(np.ceil(width / brick.shape[1])))
    wall = np.tile(brick, reps)[:height, :width].astype(np.float32)
    tint = np.array([0.85, 0.72, 0.62], np.float32)  # warm plaster under indoor light
    rgb = np.clip(wall[..., None] * tint[None, None, :] * 0.9 + 20, 0, 255).astype(np.uint8)
    return cv2.GaussianBlur(rgb, (3, 3), 0)


def sample_positions(seconds: float = 8.0, fps: float = 25.0, width: int = 1280, height: int = 720, person_px: int = 300) -> list[tuple[int, int]]:
    """Top-left corner ``(x, y)`` of the photo in each frame of :func:`make_sample_video`."""
    frames = int(round(seconds * fps))
    x_start, x_end = 40, width - person_px - 40
    y_base = (height - person_px) // 2
    out = []
    for i in range(frames):
        t = i / max(frames - 1, 1)
        x = int(round(x_start + (x_end - x_start) * t))
        y = int(round(y_base + 12 * np.sin(2 * np.pi * 1.5 * t * seconds / 4)))
        out.append((x, y))
    return out


def make_sample_video(
    path: str | Path, seconds: float = 8.0, fps: float = 25.0, width: int = 1280, height: int = 720, person_px: int = 300
) -> Path:
    """Write the sample video; returns its path. ``person_px`` is the photo's side in pixels."""
    import cv2
    from skimage import data

    if person_px * 4 > width:
        raise ValueError("the person must be at most a quarter of the frame width")
    person = cv2.resize(data.astronaut(), (person_px, person_px), interpolation=cv2.INTER_AREA)
    background = _background(width, height)
    with VideoWriter(path, fps) as writer:
        for x, y in sample_positions(seconds, fps, width, height, person_px):
            frame = background.copy()
            frame[y : y + person_px, x : x + person_px] = person
            writer.write(frame)
    return Path(path)
