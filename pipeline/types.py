"""The typed objects that cross stage boundaries (see docs/architecture.md, Contracts)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "EXPRESSIONS",
    "Crop",
    "Detections",
    "Estimate",
    "Frame",
    "FrameResult",
    "Person",
    "TrackEvent",
    "TrackSpan",
    "TrackedPerson",
    "track_key",
]

#: The seven expression classes, in this order everywhere (probability vectors included).
EXPRESSIONS: tuple[str, ...] = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger")

PERSON, FACE = 0, 1
_CLASS_NAMES = ("person", "face")


def track_key(stream: str, epoch: int, track_id: int) -> str:
    """``{stream}:{epoch}:{track_id}``; the epoch changes when a tracker restarts without its snapshot."""
    return f"{stream}:{epoch}:{track_id}"


@dataclass(frozen=True)
class Frame:
    """One decoded frame.

    Attributes:
        stream: stream id.
        index: index of the frame in decode order (counting every decoded frame, not only
            the analysed ones).
        pts: presentation time in seconds from the stream start.
        wall_time: wall-clock time (Unix seconds) when the frame was decoded.
        image: ``(H, W, 3)`` uint8 **RGB**.
    """

    stream: str
    index: int
    pts: float
    wall_time: float
    image: np.ndarray

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels."""
        return int(self.image.shape[1]), int(self.image.shape[0])


@dataclass(frozen=True)
class Detections:
    """Boxes of one frame as a struct of arrays.

    Attributes:
        xyxy: ``(N, 4)`` float32 boxes in source pixels.
        confidence: ``(N,)`` float32 in ``[0, 1]``.
        class_id: ``(N,)`` int64, ``0`` person and ``1`` face.
        landmarks: ``(N, 5, 2)`` float32 ``(x, y)`` points in source pixels, or None when the
            detector gives none (persons, dlib, Haar). Face points in this order: the eye on
            the image's left, the other eye, the nose tip, the mouth corner on the image's
            left, the other mouth corner. A row is NaN where its box came without points
            (after merging detections that have points with detections that have none).
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    landmarks: np.ndarray | None = None

    def __post_init__(self) -> None:
        xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        conf = np.asarray(self.confidence, dtype=np.float32).reshape(-1)
        cls = np.asarray(self.class_id, dtype=np.int64).reshape(-1)
        if not len(xyxy) == len(conf) == len(cls):
            raise ValueError(f"Detections: {len(xyxy)} boxes, {len(conf)} confidences, {len(cls)} classes")
        if not np.isfinite(xyxy).all() or (xyxy[:, 2:] < xyxy[:, :2]).any():
            raise ValueError("Detections: boxes must be finite xyxy with x2 >= x1 and y2 >= y1")
        if ((conf < 0) | (conf > 1)).any():
            raise ValueError("Detections: confidence must lie in [0, 1]")
        if ((cls != PERSON) & (cls != FACE)).any():
            raise ValueError("Detections: class_id must be 0 (person) or 1 (face)")
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "confidence", conf)
        object.__setattr__(self, "class_id", cls)
        if self.landmarks is not None:
            points = np.asarray(self.landmarks, dtype=np.float32)
            if points.shape != (len(xyxy), 5, 2):
                raise ValueError(f"Detections: landmarks must be ({len(xyxy)}, 5, 2), got {points.shape}")
            if np.isinf(points).any():
                raise ValueError("Detections: landmarks must be finite (NaN marks a box without points)")
            object.__setattr__(self, "landmarks", points)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    @classmethod
    def merge(cls, parts: list[Detections]) -> Detections:
        """All boxes of ``parts`` in order. Landmarks are kept when any non-empty part has
        them; rows of parts without points become NaN."""
        if not parts:
            return cls.empty()
        landmarks = None
        if any(p.landmarks is not None and len(p) for p in parts):
            missing = [np.full((len(p), 5, 2), np.nan, np.float32) for p in parts]
            landmarks = np.concatenate([m if p.landmarks is None else p.landmarks for p, m in zip(parts, missing)])
        return cls(
            np.concatenate([p.xyxy for p in parts]),
            np.concatenate([p.confidence for p in parts]),
            np.concatenate([p.class_id for p in parts]),
            landmarks,
        )

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: np.ndarray | slice | int) -> Detections:
        """The rows picked by a boolean mask, an index array, a slice or one index (landmarks too)."""
        if isinstance(index, (int, np.integer)):
            index = np.array([index])
        points = None if self.landmarks is None else self.landmarks[index]
        return Detections(self.xyxy[index], self.confidence[index], self.class_id[index], points)

    def shifted(self, dx: float, dy: float) -> Detections:
        """The same detections moved by ``(dx, dy)`` pixels (boxes and landmarks), e.g. from a
        crop's coordinates into the frame's."""
        points = None if self.landmarks is None else self.landmarks + np.array([dx, dy], np.float32)
        return Detections(self.xyxy + np.array([dx, dy, dx, dy], np.float32), self.confidence, self.class_id, points)

    def of_class(self, name: Literal["person", "face"]) -> Detections:
        return self[self.class_id == _CLASS_NAMES.index(name)]


@dataclass(frozen=True)
class Person:
    """One person seen in one frame, before tracking.

    ``box`` is the tracking anchor: the body box when the person detector saw one, otherwise a
    body box derived from the face (``derived_body=True``). ``face`` is the face box or None;
    ``face_landmarks`` its ``(5, 2)`` points in source pixels when the face detector gives them
    (order as in :class:`Detections`).
    """

    box: np.ndarray
    confidence: float
    face: np.ndarray | None
    face_confidence: float
    derived_body: bool
    face_landmarks: np.ndarray | None = None


@dataclass(frozen=True)
class TrackedPerson:
    """One tracked person in one analysed frame.

    Attributes:
        key: track key ``{stream}:{epoch}:{track_id}``.
        track_id: the tracker's id (unique within the stream's epoch).
        box: ``(4,)`` xyxy tracking anchor in source pixels (body, or derived from the face).
        face: ``(4,)`` xyxy face box, or None.
    """

    key: str
    track_id: int
    box: np.ndarray
    face: np.ndarray | None


@dataclass(frozen=True)
class FrameResult:
    """What perception made of one analysed frame."""

    frame: Frame
    people: list[TrackedPerson]


@dataclass(frozen=True)
class TrackSpan:
    """When a track was first and last seen (stream seconds) and in how many analysed frames."""

    key: str
    first_seen: float
    last_seen: float
    frames: int


@dataclass(frozen=True)
class TrackEvent:
    """A track's lifecycle: ``start`` once it is confirmed, ``end`` once the tracker lost it for
    good (or the stream stopped)."""

    kind: Literal["start", "end"]
    span: TrackSpan


@dataclass(frozen=True)
class Crop:
    """Pixels of one person chosen for estimation.

    Attributes:
        track: track key.
        time: frame pts in seconds.
        face: RGB face image with margin, or None.
        face_box: ``(4,)`` xyxy of the tight face box inside ``face`` (None with ``face``).
        body: RGB body image, or None.
        quality: selection score in ``[0, 1]``.
        face_px: height of the tight face box in source pixels (0 without a face).
        reason: why it was asked about (the request policy, :mod:`~tracklens.pipeline.crops`):
            ``first``, ``confirm``, ``uncertain:<fields>``, ``better crop``, ``expression
            refresh``, ``last look`` (a track that ended before its first request).
    """

    track: str
    time: float
    face: np.ndarray | None
    face_box: np.ndarray | None
    body: np.ndarray | None
    quality: float
    face_px: float = 0.0
    reason: str = ""


@dataclass(frozen=True)
class Estimate:
    """One model's answer about one crop.

    ``expression`` is a probability vector over :data:`EXPRESSIONS`. Fields a model did not
    give are None. ``valid=False`` carries the ``reason`` (refusal, off-format, no face) and
    is never fused. ``model`` and ``prompt`` say exactly what produced it; ``face_px`` is the
    face height the answer was read from (0 without a face).

    What the MLLM said and how: ``mode`` (``constrained``, ``scored`` or ``free``; None for the
    specialist), ``raw`` (its text answer, at most 500 characters; None for scored answers),
    ``refusal`` (an invalid answer that was a refusal). ``primary_failure``: on an answer of the
    fallback, why the primary gave none (its invalid answer's reason, or the router's:
    ``backpressure``, ``overrun``, ``failure``).
    """

    track: str
    time: float
    source: Literal["mllm", "specialist"]
    model: str
    age: float | None = None
    age_std: float | None = None
    p_female: float | None = None
    expression: tuple[float, ...] | None = None
    quality: float = 1.0
    valid: bool = True
    reason: str | None = None
    prompt: str | None = None
    face_px: float = 0.0
    mode: Literal["constrained", "scored", "free"] | None = None
    raw: str | None = None
    refusal: bool = False
    primary_failure: str | None = None

    def __post_init__(self) -> None:
        if self.expression is not None and len(self.expression) != len(EXPRESSIONS):
            raise ValueError(f"expression needs {len(EXPRESSIONS)} probabilities, got {len(self.expression)}")
