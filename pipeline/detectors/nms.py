"""Greedy non-maximum suppression."""

from __future__ import annotations

import numpy as np

from ...trackers import iou_matrix

__all__ = ["nms"]


def nms(xyxy: np.ndarray, scores: np.ndarray, iou_thresh: float) -> np.ndarray:
    """Indices of the boxes kept, highest score first."""
    order = np.argsort(-scores, kind="stable")
    if len(order) == 0:
        return order
    iou = iou_matrix(xyxy[order], xyxy[order])
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for rank in range(len(order)):
        if suppressed[rank]:
            continue
        keep.append(order[rank])
        suppressed |= iou[rank] > iou_thresh
    return np.asarray(keep, dtype=np.int64)
