"""Where to look: whole scans now and then, in between only where faces and people can be.

Faces

Scanning a 720p frame for faces down to 40 px is the most expensive step of the pipeline
(dlib HOG upsampled once: ~0.18 s on two cores). Faces do not appear out of nowhere: they
belong to people the person detector sees this frame, or to people already tracked. So a
full scan runs every ``full_scan_interval_s`` seconds (which bounds how late a new face-only
person is found), and the frames in between scan only the head region of each detected
person and a window around each tracked face.

People: the person detector sees 300x300 pixels, so small people need tiles (the full frame plus
a 2x2 grid: five inferences a frame, the largest cost of the pipeline once faces are cheap). A
tiled scan runs every ``full_scan_interval_s``; in between, only where tracked people are: the
full frame for big ones, a window around each small one.
"""

from __future__ import annotations

import numpy as np

from ...trackers import iou_matrix
from ..config import FaceScheduleConfig, PersonScheduleConfig
from ..types import Detections
from .nms import nms

__all__ = ["FaceScanPlanner", "PersonScanPlanner", "detect_in_regions", "merge_overlapping"]

_HEAD_SHARE = 0.4  # the head lies in the top 40% of a person box


class FaceScanPlanner:
    """Per-stream decisions: ``None`` (scan the whole frame) or the regions to scan."""

    def __init__(self, config: FaceScheduleConfig) -> None:
        self.config = config
        self._last_full = float("-inf")

    def regions(self, time: float, persons: Detections, faces: np.ndarray, width: int, height: int) -> np.ndarray | None:
        """Regions ``(K, 4)`` xyxy for the frame at ``time`` (seconds), or None for a full scan.

        Args:
            persons: this frame's person detections.
            faces: ``(M, 4)`` last known face boxes of the stream's open tracks.
        """
        cfg = self.config
        if cfg.full_scan_interval_s == 0 or time - self._last_full >= cfg.full_scan_interval_s - 1e-6:
            self._last_full = time
            return None
        heads = [[x0, y0, x1, y0 + _HEAD_SHARE * (y1 - y0)] for x0, y0, x1, y1 in persons.xyxy]
        return np.concatenate([self._fit(np.asarray(heads, np.float32), width, height), self.regions_around(faces, width, height)])

    def regions_around(self, faces: np.ndarray, width: int, height: int) -> np.ndarray:
        """Windows around ``(M, 4)`` face boxes, ``roi_margin`` face sizes on each side."""
        faces = np.asarray(faces, np.float32).reshape(-1, 4)
        m = self.config.roi_margin * np.maximum(faces[:, 2] - faces[:, 0], faces[:, 3] - faces[:, 1])[:, None]
        return self._fit(np.concatenate([faces[:, :2] - m, faces[:, 2:] + m], axis=1), width, height)

    def _fit(self, boxes: np.ndarray, width: int, height: int) -> np.ndarray:
        """At least ``min_roi_px`` on each side, inside the frame, whole pixels."""
        cfg = self.config
        boxes = boxes.reshape(-1, 4)
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        half = np.maximum((boxes[:, 2:] - boxes[:, :2]) / 2, cfg.min_roi_px / 2)
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        return np.clip(np.round(boxes), 0, [width, height, width, height]).astype(np.float32)


class PersonScanPlanner:
    """Per-stream decisions for the person detector: ``None`` (a tiled scan: the full frame and
    its tiles) or the windows to scan, which may include the full frame or be empty."""

    def __init__(self, config: PersonScheduleConfig) -> None:
        self.config = config
        self._last_full = float("-inf")

    def windows(self, time: float, tracked: np.ndarray, width: int, height: int) -> np.ndarray | None:
        """Windows ``(K, 4)`` xyxy for the frame at ``time``, or None for a tiled scan.

        Between tiled scans only tracked people are looked for: the full frame when one of
        them is big (``small_share`` of the frame height or more), a window around each small
        one; with nobody tracked nothing is scanned (a newcomer is found by the next tiled
        scan, at most ``full_scan_interval_s`` later).

        Args:
            tracked: ``(M, 4)`` boxes of the stream's tracked people in the last analysed frame.
        """
        cfg = self.config
        due = cfg.full_scan_interval_s == 0 or time - self._last_full >= cfg.full_scan_interval_s - 1e-6
        boxes = np.asarray(tracked, np.float32).reshape(-1, 4)
        is_small = (boxes[:, 3] - boxes[:, 1]) < cfg.small_share * height
        small = boxes[is_small]
        if due or len(small) > cfg.max_windows:
            self._last_full = time
            return None
        size = np.maximum(small[:, 2:] - small[:, :2], cfg.min_window_px / (1 + 2 * cfg.window_margin))
        centre = (small[:, :2] + small[:, 2:]) / 2
        half = size * (0.5 + cfg.window_margin)
        half = np.repeat(half.max(axis=1, keepdims=True), 2, axis=1)  # square: the detector's input is square
        found = np.concatenate([centre - half, centre + half], axis=1)
        if not is_small.all():
            found = np.concatenate([np.array([[0, 0, width, height]], np.float32), found])
        return merge_overlapping(np.clip(np.round(found), 0, [width, height, width, height]).astype(np.float32))


def merge_overlapping(boxes: np.ndarray, min_iou: float = 0.3) -> np.ndarray:
    """Replace boxes that overlap by ``min_iou`` or more with their union, until none do,
    so one face seen through two hints is scanned once."""
    boxes = [b for b in np.asarray(boxes, np.float32).reshape(-1, 4)]
    merged = True
    while merged and len(boxes) > 1:
        merged = False
        iou = iou_matrix(np.stack(boxes), np.stack(boxes))
        np.fill_diagonal(iou, 0.0)
        i, j = np.unravel_index(np.argmax(iou), iou.shape)
        if iou[i, j] >= min_iou:
            union = np.concatenate([np.minimum(boxes[i][:2], boxes[j][:2]), np.maximum(boxes[i][2:], boxes[j][2:])])
            boxes = [b for k, b in enumerate(boxes) if k not in (i, j)] + [union]
            merged = True
    return np.asarray(boxes, np.float32).reshape(-1, 4)


def detect_in_regions(detector, image: np.ndarray, regions: np.ndarray, nms_iou: float = 0.4) -> Detections:
    """Run ``detector`` on each region of ``image`` (one batched call) and map boxes and
    landmarks back to frame pixels."""
    crops, offsets = [], []
    for x0, y0, x1, y1 in merge_overlapping(regions).astype(int):
        if x1 - x0 >= 8 and y1 - y0 >= 8:
            crops.append(image[y0:y1, x0:x1])
            offsets.append((x0, y0))
    if not crops:
        return Detections.empty()
    found = detector.detect(crops)
    merged = Detections.merge([det.shifted(x0, y0) for det, (x0, y0) in zip(found, offsets)])
    return merged[nms(merged.xyxy, merged.confidence, nms_iou)]
