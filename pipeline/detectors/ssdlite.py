"""SSDLite-MobileNetV2 person detector on onnxruntime, with optional tiling."""

from __future__ import annotations

import numpy as np

from ..config import SsdliteDetectorConfig
from ..models import ModelCache
from ..onnx import load_session, shrink_arena
from ..types import PERSON, Detections
from .nms import nms

__all__ = ["SsdlitePersonDetector", "tile_windows"]

_INPUT = 300  # the graph's own resize target; resizing first lets tiles share one batch
# Windows per call on CPU. onnxruntime's arena keeps the largest call's buffers for good, about
# 27 MB a window: 4 queued frames of tiled scans (20 windows) held 530 MB. On one thread calls
# of 5 were no slower per window than calls of 20 or 40 (the pipeline's person stage took 12%
# less time), so the cap costs no speed.
_CPU_MAX_WINDOWS = 5


def tile_windows(width: int, height: int, grid: int, overlap: float) -> list[tuple[int, int, int, int]]:
    """The full frame, then a ``grid x grid`` set of overlapping windows, as xyxy ints."""
    windows = [(0, 0, width, height)]
    if grid <= 1:
        return windows
    tile_w = width / (grid - (grid - 1) * overlap)
    tile_h = height / (grid - (grid - 1) * overlap)
    for row in range(grid):
        for col in range(grid):
            x0 = col * tile_w * (1 - overlap)
            y0 = row * tile_h * (1 - overlap)
            windows.append((int(x0), int(y0), min(width, int(round(x0 + tile_w))), min(height, int(round(y0 + tile_h)))))
    return windows


class SsdlitePersonDetector:
    """Person boxes from the TF Object Detection API SSDLite graph converted to ONNX.

    The graph resizes its input to 300x300, so a person a few dozen pixels tall in a 720p
    frame all but disappears; tiling (``tile_grid: 2``) looks again at four overlapping
    windows. Boxes from a tile that touch an inner tile edge are dropped: that person is cut,
    and another window sees all of them.
    """

    def __init__(self, config: SsdliteDetectorConfig, models: ModelCache) -> None:
        self.config = config
        self.model_id = config.model
        self._session = load_session(models.path(config.model), config.threads)
        self._input = self._session.get_inputs()[0].name
        on_gpu = self._session.get_providers()[0] != "CPUExecutionProvider"
        self._max_windows = None if on_gpu else _CPU_MAX_WINDOWS

    def release_memory(self) -> None:
        """Return the onnxruntime arena's peak buffers (see :func:`~..onnx.shrink_arena`)."""
        shrink_arena(self._session, {self._input: np.zeros((1, 8, 8, 3), np.uint8)})

    def detect(self, images: list[np.ndarray]) -> list[Detections]:
        """Person boxes of each ``(H, W, 3)`` RGB uint8 image (full frame and tiles), in source pixels."""
        return self.detect_windows(images, [None] * len(images))

    def detect_windows(self, images: list[np.ndarray], windows: list[np.ndarray | None]) -> list[Detections]:
        """Like :meth:`detect`, but each image is scanned in its own ``(K, 4)`` xyxy windows
        (which may include the full frame, or be none at all) instead of the full frame and its
        tiles (None: those). Everything goes in one batched call. Boxes that touch a window's
        inner edge are dropped: the person is cut there, and another window sees them whole."""
        import cv2

        cfg = self.config
        batch, owners = [], []
        for i, (image, extra) in enumerate(zip(images, windows)):
            h, w = image.shape[:2]
            if extra is None:
                wins = tile_windows(w, h, cfg.tile_grid, cfg.tile_overlap)
            else:
                wins = [tuple(int(v) for v in box) for box in np.asarray(extra).reshape(-1, 4)]
            for x0, y0, x1, y1 in wins:
                if x1 - x0 < 8 or y1 - y0 < 8:
                    continue
                batch.append(cv2.resize(image[y0:y1, x0:x1], (_INPUT, _INPUT), interpolation=cv2.INTER_AREA))
                owners.append((i, (x0, y0, x1, y1)))
        if not batch:
            return [Detections.empty() for _ in images]
        scores, boxes = [], []
        step = self._max_windows or len(batch)
        for start in range(0, len(batch), step):
            _, got_scores, got_boxes, _ = self._session.run(None, {self._input: np.stack(batch[start : start + step])})
            scores.extend(got_scores)
            boxes.extend(got_boxes)
        found: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in images]
        for (i, (x0, y0, x1, y1)), s, b in zip(owners, scores, boxes):
            keep = s >= cfg.min_score
            s, b = s[keep], b[keep]
            # boxes are normalised [ymin, xmin, ymax, xmax] within the window
            xyxy = np.stack([b[:, 1] * (x1 - x0) + x0, b[:, 0] * (y1 - y0) + y0,
                             b[:, 3] * (x1 - x0) + x0, b[:, 2] * (y1 - y0) + y0], axis=1)  # fmt: skip
            h, w = images[i].shape[:2]
            if (x0, y0, x1, y1) != (0, 0, w, h):
                xyxy, s = _drop_cut(xyxy, s, (x0, y0, x1, y1), w, h)
            found[i].append((xyxy, s))
        out = []
        for parts in found:
            if not parts:
                out.append(Detections.empty())
                continue
            xyxy = np.concatenate([p[0] for p in parts]).astype(np.float32)
            conf = np.concatenate([p[1] for p in parts]).astype(np.float32)
            size_ok = np.minimum(xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]) >= cfg.min_box_px
            xyxy, conf = xyxy[size_ok], conf[size_ok]
            keep = nms(xyxy, conf, cfg.nms_iou)
            out.append(Detections(xyxy[keep], conf[keep], np.full(len(keep), PERSON)))
        return out


def _drop_cut(xyxy: np.ndarray, scores: np.ndarray, win: tuple[int, int, int, int], w: int, h: int):
    x0, y0, x1, y1 = win
    margin = 2.0
    cut = np.zeros(len(xyxy), dtype=bool)
    if x0 > 0:
        cut |= xyxy[:, 0] <= x0 + margin
    if y0 > 0:
        cut |= xyxy[:, 1] <= y0 + margin
    if x1 < w:
        cut |= xyxy[:, 2] >= x1 - margin
    if y1 < h:
        cut |= xyxy[:, 3] >= y1 - margin
    return xyxy[~cut], scores[~cut]
