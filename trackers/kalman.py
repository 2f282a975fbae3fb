"""Constant-velocity Kalman filter over boxes, batched over tracks.

State per track: ``[cx, cy, w, h, vcx, vcy, vw, vh]`` in pixels and pixels per frame.
Measurement: ``[cx, cy, w, h]``. Noise scales with the box height, so a large (near)
person is allowed to move more pixels per frame than a small (far) one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BoxKalmanFilter", "cxcywh_to_xyxy", "xyxy_to_cxcywh"]


def xyxy_to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    """``(N, 4)`` xyxy -> ``(N, 4)`` center x, center y, width, height."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    wh = boxes[:, 2:] - boxes[:, :2]
    return np.concatenate([boxes[:, :2] + wh / 2.0, wh], axis=1)


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """``(N, 4)`` center x, center y, width, height -> ``(N, 4)`` xyxy."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    half = boxes[:, 2:] / 2.0
    return np.concatenate([boxes[:, :2] - half, boxes[:, :2] + half], axis=1)


@dataclass(frozen=True)
class BoxKalmanFilter:
    """Kalman filter with a constant-velocity model on ``cx, cy, w, h``.

    Args:
        std_position: position noise as a fraction of box height per frame.
        std_velocity: velocity noise as a fraction of box height per frame.
    """

    std_position: float = 1.0 / 20.0
    std_velocity: float = 1.0 / 160.0

    @property
    def _motion(self) -> np.ndarray:
        motion = np.eye(8)
        motion[:4, 4:] = np.eye(4)
        return motion

    def initiate(self, measurement: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Start tracks from ``(N, 4)`` cxcywh measurements; returns means ``(N, 8)``, covs ``(N, 8, 8)``."""
        measurement = np.asarray(measurement, dtype=np.float64).reshape(-1, 4)
        n = len(measurement)
        mean = np.concatenate([measurement, np.zeros((n, 4))], axis=1)
        h = measurement[:, 3]
        std = np.stack(
            [
                2 * self.std_position * h,
                2 * self.std_position * h,
                2 * self.std_position * h,
                2 * self.std_position * h,
                10 * self.std_velocity * h,
                10 * self.std_velocity * h,
                10 * self.std_velocity * h,
                10 * self.std_velocity * h,
            ],
            axis=1,
        )
        cov = np.zeros((n, 8, 8))
        idx = np.arange(8)
        cov[:, idx, idx] = std**2
        return mean, cov

    def predict(self, mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Advance ``(N, 8)`` means and ``(N, 8, 8)`` covariances by one frame."""
        if len(mean) == 0:
            return mean, cov
        h = mean[:, 3]
        std = np.concatenate(
            [np.repeat((self.std_position * h)[:, None], 4, 1), np.repeat((self.std_velocity * h)[:, None], 4, 1)],
            axis=1,
        )
        motion = self._motion
        mean = mean @ motion.T
        cov = motion @ cov @ motion.T
        idx = np.arange(8)
        cov[:, idx, idx] += std**2
        return mean, cov

    def update(
        self, mean: np.ndarray, cov: np.ndarray, measurement: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Correct ``(N, 8)`` states with ``(N, 4)`` cxcywh measurements, row by row."""
        if len(mean) == 0:
            return mean, cov
        h = mean[:, 3]
        r = (self.std_position * h) ** 2
        proj = np.eye(4, 8)
        innovation_cov = proj @ cov @ proj.T
        idx = np.arange(4)
        innovation_cov[:, idx, idx] += r[:, None]
        cross = cov @ proj.T  # (N, 8, 4)
        gain = np.linalg.solve(innovation_cov, np.transpose(cross, (0, 2, 1)))  # (N, 4, 8)
        gain = np.transpose(gain, (0, 2, 1))
        innovation = measurement - mean[:, :4]
        mean = mean + np.einsum("nij,nj->ni", gain, innovation)
        cov = cov - gain @ innovation_cov @ np.transpose(gain, (0, 2, 1))
        return mean, cov
