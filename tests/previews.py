"""What the preview tests share: a raw frame from a real camera, and how much annotation a
preview holds compared with that un-annotated frame."""

from __future__ import annotations

import numpy as np


def grab_frame(url: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """One decoded RGB frame of an RTSP camera (``size``: resized to ``(width, height)``)."""
    import av
    import cv2

    with av.open(url, options={"rtsp_transport": "tcp", "timeout": "5000000"}, timeout=(10.0, 10.0)) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="rgb24")
    return frame if size is None else cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def decode_jpeg(data: bytes) -> np.ndarray:
    import cv2

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, f"not an image ({len(data)} bytes starting {data[:8]!r})"
    return image[:, :, ::-1]


def annotation_pixels(preview: np.ndarray, raw: np.ndarray, tolerance: int = 40) -> int:
    """Pixels of the box colours (supervision's default palette, one colour per track id) that
    ``preview`` has beyond what the un-annotated ``raw`` frame of the same size has: the
    boxes and label backgrounds drawn on it (the largest excess over the palette's colours)."""
    import supervision as sv

    assert preview.shape == raw.shape, (preview.shape, raw.shape)
    best = 0
    for color in sv.ColorPalette.DEFAULT.colors:
        rgb = np.array(color.as_rgb(), np.int16)
        near = lambda image: int((np.abs(image.astype(np.int16) - rgb) <= tolerance).all(axis=2).sum())  # noqa: E731
        best = max(best, near(preview) - near(raw))
    return best
