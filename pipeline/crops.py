"""Crop selection: the best crops of each track, and a request policy that stops when it is sure.

Each frame offers every tracked person; the selector keeps the best-scoring candidate since
the track's last request and releases it when the policy says a request is due:

- the **first** request ``first_after_s`` after the track is confirmed;
- a second one ``confirm_after_s`` later, to **confirm** the first;
- then only while a field is **uncertain** (the track book says which: age spread, gender
  log-odds, expression flat), when a **better crop** appears (``better_crop_factor`` times the
  best one asked about), or, for a settled track, every ``expression_refresh_s`` (expressions
  change; age and gender do not);
- never more than one per ``refresh_s``, 2 + ``per_minute`` per tracked minute, nor
  ``max_requests`` in all.

Each crop released says why (``Crop.reason``). With the MLLM, this policy decides how many
people one replica serves: a request every 1.5 s is 40 per track-minute; this asks 2 per new
track and at most 3 per track-minute after that.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .config import CropConfig
from .types import Crop, Person

__all__ = ["CropSelector", "cut_crop", "face_quality", "readable_face"]

_SHARPNESS_REF = 120.0  # Laplacian variance of a sharp 64 px face; the sharpness term is 0.5 there


def readable_face(person: Person, cfg: CropConfig) -> bool:
    """Whether age, gender and expression may be read from this person's face.

    Detectors also box the back of a head, a blurred blob or a face too small to read; such a
    box still anchors and tracks the person, but no estimate is made from it. A readable face
    is at least ``min_face_px`` tall, detected with confidence ``min_face_score`` or more, and,
    when the detector gives landmarks, has them where a face has them: inside the box (with a
    little slack), and the mouth on the far side of the eye line from the forehead (in the
    face's own frame, so tilted faces pass).
    """
    face = person.face
    if face is None or face[3] - face[1] < cfg.min_face_px or person.face_confidence < cfg.min_face_score:
        return False
    points = person.face_landmarks
    if points is None:
        return True
    w, h = face[2] - face[0], face[3] - face[1]
    slack = 0.1 * np.array([w, h])
    if ((points < face[:2] - slack) | (points > face[2:] + slack)).any():
        return False
    eyes, mouth = (points[0] + points[1]) / 2, (points[3] + points[4]) / 2
    eye_line = points[1] - points[0]
    down = np.array([-eye_line[1], eye_line[0]])  # the eye line turned a quarter: image y grows downwards
    return bool(np.linalg.norm(eye_line) > 0 and (mouth - eyes) @ down > 0.15 * h * np.linalg.norm(eye_line))


def face_quality(image: np.ndarray, face: np.ndarray, confidence: float, cfg: CropConfig) -> float:
    """Score in ``[0, 1]``: detector confidence x size term x sharpness term."""
    import cv2

    x0, y0, x1, y1 = _int_box(face, image.shape)
    height = face[3] - face[1]
    if height < cfg.min_face_px or x1 <= x0 or y1 <= y0:
        return 0.0
    size_term = min(1.0, height / cfg.good_face_px)
    gray = cv2.cvtColor(cv2.resize(image[y0:y1, x0:x1], (64, 64), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    sharp = float(cv2.Laplacian(gray, cv2.CV_32F).var())
    sharp_term = sharp / (sharp + _SHARPNESS_REF)
    return float(confidence * size_term * (0.5 + 0.5 * sharp_term))


def _int_box(box: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    h, w = shape[:2]
    x0, y0 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    x1, y1 = min(w, int(np.ceil(box[2]))), min(h, int(np.ceil(box[3])))
    return x0, y0, x1, y1


#: The fields the track book still lacks for a track (all of them until it has said).
_ALL_FIELDS = frozenset(("age", "gender", "expression"))


@dataclass
class _Budget:
    confirmed_at: float
    last_request: float | None = None
    requests: int = 0
    needs: frozenset = _ALL_FIELDS
    asked_quality: float = 0.0  # the best crop quality asked about so far
    best: Crop | None = None


class CropSelector:
    """Per-stream crop selection and request policy; one instance per stream."""

    def __init__(self, config: CropConfig) -> None:
        self.config = config
        self._tracks: dict[str, _Budget] = {}

    def offer(self, image: np.ndarray, time: float, people: list[tuple[str, Person]]) -> list[Crop]:
        """Consider this frame's tracked ``(track key, person)`` pairs; return the crops now due."""
        due = []
        for key, person in people:
            budget = self._tracks.setdefault(key, _Budget(confirmed_at=time))
            if budget.requests + 1 > self._allowed(budget, time) + 1e-9:
                budget.best = None
                continue
            quality = self._quality(image, person)
            if budget.best is None or quality > budget.best.quality:
                budget.best = cut_crop(image, time, key, person, quality, self.config)
            if budget.best.face is None and self.config.require_face:
                continue
            reason = self._reason(budget, time)
            if reason is not None:
                due.append(self._release(budget, time, reason))
        return due

    def _allowed(self, budget: _Budget, time: float) -> float:
        """Requests the track may have had by ``time``: 2, then ``per_minute`` more a minute
        since it was confirmed (and ``max_requests`` in all)."""
        minutes = max(0.0, time - budget.confirmed_at) / 60.0
        return min(self.config.max_requests, 2 + self.config.per_minute * minutes)

    def _reason(self, budget: _Budget, time: float) -> str | None:
        """Why a request is due now, or None."""
        cfg = self.config
        if budget.last_request is None:
            return "first" if time - budget.confirmed_at >= cfg.first_after_s else None
        since = time - budget.last_request
        if budget.requests == 1:
            return "confirm" if since >= cfg.confirm_after_s else None
        if since < cfg.refresh_s:
            return None
        if budget.needs:
            return "uncertain:" + ",".join(sorted(budget.needs))
        if budget.best.quality >= cfg.better_crop_factor * budget.asked_quality:
            return "better crop"
        if since >= cfg.expression_refresh_s:
            return "expression refresh"
        return None

    def finish(self, key: str) -> Crop | None:
        """The track ended: its pending best crop if it never got a request, then forget it."""
        budget = self._tracks.pop(key, None)
        if budget is None or budget.best is None or budget.requests > 0:
            return None
        if budget.best.face is None and self.config.require_face:
            return None
        return replace(budget.best, reason="last look")

    def snapshot(self) -> dict[str, list]:
        """The budgets of open tracks as JSON-compatible data (pending best crops are not kept:
        a restored stream collects new ones)."""
        return {key: [b.confirmed_at, b.last_request, b.requests, sorted(b.needs), b.asked_quality] for key, b in self._tracks.items()}

    def restore(self, data: dict[str, list]) -> None:
        """Continue the budgets of :meth:`snapshot` (same track keys, same request counts)."""
        self._tracks = {key: _Budget(float(c), None if r is None else float(r), int(n), frozenset(f), float(q))
                        for key, (c, r, n, f, q) in data.items()}  # fmt: skip

    def set_needs(self, key: str, needs: frozenset) -> None:
        """The fields the track book is still unsure of for this track (empty: settled)."""
        if key in self._tracks:
            self._tracks[key].needs = frozenset(needs)

    def _release(self, budget: _Budget, time: float, reason: str) -> Crop:
        crop = replace(budget.best, reason=reason)
        budget.best = None
        budget.last_request = time
        budget.requests += 1
        budget.asked_quality = max(budget.asked_quality, crop.quality)
        return crop

    def _quality(self, image: np.ndarray, person: Person) -> float:
        if not readable_face(person, self.config):
            # body-only crops (and faces that cannot be read) rank below any readable face
            return 0.1 * person.confidence
        return face_quality(image, person.face, person.face_confidence, self.config)


def cut_crop(image: np.ndarray, time: float, key: str, person: Person, quality: float, cfg: CropConfig) -> Crop:
    """Copy the face (with margin; None when it is not :func:`readable_face`) and body pixels."""
    import cv2

    face = face_box = None
    face_px = 0.0
    if readable_face(person, cfg):
        f = person.face
        fw, fh = f[2] - f[0], f[3] - f[1]
        m = cfg.face_margin
        x0, y0, x1, y1 = _int_box(np.array([f[0] - m * fw, f[1] - m * fh, f[2] + m * fw, f[3] + m * fh]), image.shape)
        face = image[y0:y1, x0:x1].copy()
        face_box = np.array([f[0] - x0, f[1] - y0, f[2] - x0, f[3] - y0], dtype=np.float32)
        face_px = float(fh)
    x0, y0, x1, y1 = _int_box(person.box, image.shape)
    body = image[y0:y1, x0:x1]
    scale = cfg.max_body_px / max(body.shape[:2]) if body.size else 1.0
    if scale < 1.0:
        size = (max(1, int(body.shape[1] * scale)), max(1, int(body.shape[0] * scale)))
        body = cv2.resize(body, size, interpolation=cv2.INTER_AREA)
    body = body.copy() if body.size else None
    return Crop(track=key, time=time, face=face, face_box=face_box, body=body, quality=quality, face_px=face_px)
