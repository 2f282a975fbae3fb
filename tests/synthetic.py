"""Synthetic multi-person sequences with ground truth, for tracker tests.

People walk at constant velocity with small accelerations; detections get box noise,
random misses, low scores while partly occluded, full occlusion gaps and false positives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Sequence:
    gt: list[tuple[np.ndarray, np.ndarray]]  # per frame: (ids (K,), xyxy (K, 4))
    dets: list[tuple[np.ndarray, np.ndarray]]  # per frame: (xyxy (N, 4), scores (N,))


def make_sequence(
    seed: int,
    people: int = 6,
    frames: int = 150,
    width: int = 1280,
    height: int = 720,
    miss_rate: float = 0.05,
    occlusions: int = 2,
    false_positives: float = 0.3,
) -> Sequence:
    rng = np.random.default_rng(seed)
    h = rng.uniform(90, 200, people)
    w = h * rng.uniform(0.35, 0.5, people)
    pos = np.stack([rng.uniform(0, width, people), rng.uniform(height * 0.2, height * 0.8, people)], 1)
    vel = rng.normal(0, 4, (people, 2)) * np.array([1.0, 0.3])
    start = rng.integers(0, frames // 3, people)
    end = np.minimum(frames, start + rng.integers(frames // 2, frames, people))
    gaps = []
    for _ in range(occlusions):
        who = int(rng.integers(people))
        t0 = int(rng.integers(start[who] + 10, max(start[who] + 11, end[who] - 20)))
        gaps.append((who, t0, t0 + int(rng.integers(4, 12))))
    gt, dets = [], []
    for t in range(frames):
        vel += rng.normal(0, 0.15, vel.shape)
        pos += vel
        ids, boxes, dboxes, dscores = [], [], [], []
        for p in range(people):
            if not start[p] <= t < end[p]:
                continue
            cx, cy = pos[p]
            box = np.array([cx - w[p] / 2, cy - h[p] / 2, cx + w[p] / 2, cy + h[p] / 2])
            if box[2] < 0 or box[0] > width or box[3] < 0 or box[1] > height:
                continue
            ids.append(p)
            boxes.append(box)
            hidden = any(g[0] == p and g[1] <= t < g[2] for g in gaps)
            partly = any(g[0] == p and (g[1] - 3 <= t < g[1] or g[2] <= t < g[2] + 3) for g in gaps)
            if hidden or rng.random() < miss_rate:
                continue
            noise = rng.normal(0, 0.03, 4) * np.array([w[p], h[p], w[p], h[p]])
            dboxes.append(box + noise)
            dscores.append(rng.uniform(0.15, 0.45) if partly else rng.uniform(0.6, 0.95))
        for _ in range(rng.poisson(false_positives)):
            x, y = rng.uniform(0, width - 60), rng.uniform(0, height - 120)
            dboxes.append(np.array([x, y, x + rng.uniform(20, 60), y + rng.uniform(40, 120)]))
            dscores.append(rng.uniform(0.1, 0.55))
        gt.append((np.array(ids, dtype=np.int64), np.array(boxes).reshape(-1, 4)))
        dets.append((np.array(dboxes).reshape(-1, 4), np.array(dscores)))
    return Sequence(gt, dets)
