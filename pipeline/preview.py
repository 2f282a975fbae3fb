"""Live previews: the latest analysed frame of a stream, downscaled, annotated, as a JPEG.

The service's ingest worker renders one only while someone watches the stream (a viewer's
request marks it watched for a few seconds) and only a few times a second; the control plane
keeps the latest one under a key that expires soon after, so no frame is ever stored for
longer than a viewer needs it (see :meth:`~.service.control.ControlPlane.save_preview`).
"""

from __future__ import annotations

from collections.abc import Callable

from .annotate import FrameDrawer
from .summary import TrackSummary
from .types import FrameResult

__all__ = ["PreviewRenderer"]


class PreviewRenderer:
    """Renders :class:`FrameResult` s as preview JPEGs with the ``--annotate`` drawer.

    Args:
        lookup: track key -> current summary (the labels).
        width_px: the preview's width at most; a narrower frame keeps its size (never enlarged);
            the height follows the frame's aspect ratio.
        quality: JPEG quality, 1-100.
    """

    def __init__(self, lookup: Callable[[str], TrackSummary | None], width_px: int = 640, quality: int = 80) -> None:
        self.width_px, self.quality = width_px, quality
        self._drawer = FrameDrawer(lookup, text_scale=0.5)

    def render(self, result: FrameResult) -> bytes:
        """The JPEG of ``result``: resized first, then drawn, so labels stay legible."""
        import cv2

        image = result.frame.image
        height, width = image.shape[:2]
        scale = min(1.0, self.width_px / width)
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            scale = size[0] / width
        scene = self._drawer.draw(image, result.people, scale)
        ok, jpeg = cv2.imencode(".jpg", scene[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise ValueError(f"could not encode a {scene.shape[1]}x{scene.shape[0]} preview as JPEG")
        return jpeg.tobytes()
