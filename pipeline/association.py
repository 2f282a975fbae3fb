"""Face<->body association: one face per person, one person per face, in one frame.

A face with no body around it is still a person: its tracking anchor is a body box derived
from the face, so close-up cameras and people the person detector misses are tracked too.
"""

from __future__ import annotations

import numpy as np

from ..trackers.matching import assign
from .config import AssociationConfig
from .types import Detections, Person

__all__ = ["associate", "body_from_face"]

#: A face box with at least this share of its area inside a more confident face box is the same
#: head found twice (CenterFace's NMS, at IoU 0.3, keeps a half-face box inside a whole one): it
#: is dropped, or it could win the body over the real face and push that face out as a second,
#: face-anchored person, a fragment track beside the real one.
_SAME_HEAD_INSIDE = 0.6


def body_from_face(face: np.ndarray, width: int, height: int, cfg: AssociationConfig) -> np.ndarray:
    """A body box for an ``(4,)`` xyxy face: centred under it, clipped to the frame."""
    fw, fh = face[2] - face[0], face[3] - face[1]
    cx = (face[0] + face[2]) / 2
    bw = fw * cfg.body_from_face_width
    top = face[1] - 0.5 * fh
    box = np.array([cx - bw / 2, top, cx + bw / 2, top + fh * cfg.body_from_face_height], dtype=np.float32)
    return np.clip(box, 0, [width, height, width, height]).astype(np.float32)


def associate(persons: Detections, faces: Detections, width: int, height: int, cfg: AssociationConfig) -> list[Person]:
    """Pair faces with person boxes; unpaired faces become face-anchored persons.

    A pair needs at least ``min_inside`` of the face's area inside the body and the face
    centre in the top ``max_center_depth`` of the body; among candidates the assignment
    prefers faces fully inside and high up. A face mostly inside a more confident face is the
    same head found twice and is dropped first.
    """
    faces = faces[_distinct_heads(faces)]
    pb, fb = persons.xyxy, faces.xyxy
    matched_face = np.full(len(pb), -1)
    unmatched_faces = np.arange(len(fb))
    if len(pb) and len(fb):
        lt = np.maximum(fb[:, None, :2], pb[None, :, :2])
        rb = np.minimum(fb[:, None, 2:], pb[None, :, 2:])
        inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
        face_area = np.maximum(np.prod(fb[:, 2:] - fb[:, :2], axis=1), 1e-6)
        inside = inter / face_area[:, None]
        body_h = np.maximum(pb[:, 3] - pb[:, 1], 1e-6)
        depth = ((fb[:, 1] + fb[:, 3]) / 2)[:, None] - pb[None, :, 1]
        depth = depth / body_h[None, :]
        ok = (inside >= cfg.min_inside) & (depth >= 0) & (depth <= cfg.max_center_depth)
        cost = np.where(ok, (1.0 - inside) + 0.5 * depth, 10.0)
        pairs, unmatched_faces, _ = assign(cost, max_cost=2.0)
        matched_face[pairs[:, 1]] = pairs[:, 0]
    out = []
    for p in range(len(pb)):
        f = matched_face[p]
        out.append(
            Person(
                box=pb[p],
                # a clear face vouches for a faint body (small or partly hidden people)
                confidence=float(max(persons.confidence[p], 0.0 if f < 0 else faces.confidence[f])),
                face=None if f < 0 else fb[f],
                face_confidence=0.0 if f < 0 else float(faces.confidence[f]),
                derived_body=False,
                face_landmarks=None if f < 0 else _points(faces, f),
            )
        )
    for f in unmatched_faces:
        out.append(
            Person(
                box=body_from_face(fb[f], width, height, cfg),
                confidence=float(faces.confidence[f]),
                face=fb[f],
                face_confidence=float(faces.confidence[f]),
                derived_body=True,
                face_landmarks=_points(faces, f),
            )
        )
    return out


def _distinct_heads(faces: Detections) -> np.ndarray:
    """Boolean mask of the faces that are not mostly inside a more confident face."""
    fb = faces.xyxy
    if len(fb) < 2:
        return np.ones(len(fb), bool)
    lt = np.maximum(fb[:, None, :2], fb[None, :, :2])
    rb = np.minimum(fb[:, None, 2:], fb[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    inside = inter / np.maximum(np.prod(fb[:, 2:] - fb[:, :2], axis=1), 1e-6)[:, None]  # [i, j]: share of i inside j
    conf, order = faces.confidence, np.arange(len(fb))
    # [i, j]: j is the better box; on a tie the earlier one stays
    better = (conf[None, :] > conf[:, None]) | ((conf[None, :] == conf[:, None]) & (order[None, :] < order[:, None]))
    np.fill_diagonal(inside, 0.0)
    return ~((inside >= _SAME_HEAD_INSIDE) & better).any(axis=1)


def _points(faces: Detections, index: int) -> np.ndarray | None:
    """The face's landmarks, or None when the detector gave none (or this box came without)."""
    if faces.landmarks is None or np.isnan(faces.landmarks[index]).any():
        return None
    return faces.landmarks[index]
