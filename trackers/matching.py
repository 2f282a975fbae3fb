"""Box overlap and linear assignment helpers for the trackers."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["assign", "iou_matrix", "top_aligned_iou"]


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``(N, 4)`` and ``(M, 4)`` xyxy boxes -> ``(N, M)``."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def top_aligned_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``(N, 4)`` and ``(M, 4)`` xyxy boxes, each pair first cut to the height
    of the shorter box, measured down from each box's own top edge -> ``(N, M)``.

    For person boxes the top edge is the head and the bottom is whatever is visible: a body box
    ends where the legs leave the frame or go behind something, a box derived from a face ends
    where a guess puts the feet. Two boxes of one person that differ only in how far down they
    reach score 1 here (plain IoU: the ratio of their heights); boxes of equal height score
    exactly their IoU. A box that covers only the lower part of another (legs, a torso without
    its head) scores low, where plain IoU scores it as well as the whole body.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    wa, wb = np.clip(a[:, 2] - a[:, 0], 0, None), np.clip(b[:, 2] - b[:, 0], 0, None)
    ha, hb = np.clip(a[:, 3] - a[:, 1], 0, None), np.clip(b[:, 3] - b[:, 1], 0, None)
    height = np.minimum(ha[:, None], hb[None, :])
    overlap_x = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    overlap_y = np.clip(height - np.abs(a[:, None, 1] - b[None, :, 1]), 0, None)
    inter = overlap_x * overlap_y
    union = (wa[:, None] + wb[None, :]) * height - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def assign(cost: np.ndarray, max_cost: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimum-cost one-to-one assignment, keeping only pairs with ``cost <= max_cost``.

    Returns ``(pairs (K, 2), unmatched_rows, unmatched_cols)``.
    """
    rows, cols = cost.shape
    if rows == 0 or cols == 0:
        return np.empty((0, 2), dtype=int), np.arange(rows), np.arange(cols)
    # Costs above the gate are made prohibitive rather than removed, so the solver
    # never trades a good pair for a gated one.
    gated = np.where(cost <= max_cost, cost, max_cost + 1e6)
    r, c = linear_sum_assignment(gated)
    keep = gated[r, c] <= max_cost
    pairs = np.stack([r[keep], c[keep]], axis=1)
    unmatched_rows = np.setdiff1d(np.arange(rows), pairs[:, 0])
    unmatched_cols = np.setdiff1d(np.arange(cols), pairs[:, 1])
    return pairs, unmatched_rows, unmatched_cols
