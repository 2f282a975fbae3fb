"""The typed objects that cross stage boundaries (see DESIGN.md, Contracts)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

__all__ = [
    "EXPRESSIONS",
    "Crop",
    "Detections",
    "Estimate",
    "Frame",
    "Person",
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
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray

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

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    @classmethod
    def merge(cls, parts: list[Detections]) -> Detections:
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.xyxy for p in parts]),
            np.concatenate([p.confidence for p in parts]),
            np.concatenate([p.class_id for p in parts]),
        )

    def __len__(self) -> int:
        return len(self.xyxy)

    def of_class(self, name: Literal["person", "face"]) -> Detections:
        keep = self.class_id == _CLASS_NAMES.index(name)
        return Detections(self.xyxy[keep], self.confidence[keep], self.class_id[keep])


@dataclass(frozen=True)
class Person:
    """One person seen in one frame, before tracking.

    ``box`` is the tracking anchor: the body box when the person detector saw one, otherwise a
    body box derived from the face (``derived_body=True``). ``face`` is the face box or None.
    """

    box: np.ndarray
    confidence: float
    face: np.ndarray | None
    face_confidence: float
    derived_body: bool


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
    """

    track: str
    time: float
    face: np.ndarray | None
    face_box: np.ndarray | None
    body: np.ndarray | None
    quality: float
    face_px: float = 0.0


@dataclass(frozen=True)
class Estimate:
    """One model's answer about one crop.

    ``expression`` is a probability vector over :data:`EXPRESSIONS`. Fields a model did not
    give are None. ``valid=False`` carries the ``reason`` (refusal, off-format, no face) and
    is never fused. ``model`` and ``prompt`` say exactly what produced it; ``face_px`` is the
    face height the answer was read from (0 without a face).
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
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.expression is not None and len(self.expression) != len(EXPRESSIONS):
            raise ValueError(f"expression needs {len(EXPRESSIONS)} probabilities, got {len(self.expression)}")
