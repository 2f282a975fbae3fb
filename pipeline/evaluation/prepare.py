"""Manifest rows made ready for the estimators: the image read, the face found, the crop cut.

Each row's face comes from one of four places, and the row records which (``FACE_OUTCOMES``):

- ``face_given``: the manifest's ``face_box``;
- ``face_detected``: the face detector found it in the image (the largest face);
- ``face_detected_padded``: the detector found nothing readable in the image, but found the
  face once the image had a border of ``PAD_SHARE`` of its larger side on every side. Face
  detectors are trained on faces with context around them and miss a face that fills the whole
  photo (a face-crop data set); the border gives back that context. The box is mapped back and
  clipped to the image;
- ``face_unreadable``: a box was given or found, but ``pipeline.crops.cut_crop`` judged it
  unreadable (too small, detected with too little confidence, landmarks not where a face has
  them), so the crop has no face;
- ``no_face``: nothing found, even padded; the crop has no face.

The last two are never replaced by a guess: the estimators get the body crop alone, and the
outcome is counted in the report and written in the predictions file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import CropConfig
from ..crops import cut_crop
from ..types import Crop, Detections, Person
from .manifest import Sample

__all__ = ["FACE_OUTCOMES", "PADDED_MAX_PX", "PAD_GRAY", "PAD_SHARE", "FoundFace", "RowCrop", "build_crops", "find_face", "recut"]

FACE_OUTCOMES: tuple[str, ...] = ("face_given", "face_detected", "face_detected_padded", "face_unreadable", "no_face")

#: Border added on each side before the second face scan, as a share of the image's larger side
#: (0.5: the face then fills about half of each side, a framing every detector here handles).
PAD_SHARE = 0.5
#: The border is flat mid-gray: it has no edges or texture, so it cannot draw a face or stretch
#: hair and skin into streaks as a replicated border does (dlib misses the astronaut's inner
#: face with a replicated border and finds it with a gray one).
PAD_GRAY = 128
#: The padded image is scaled down to at most this many pixels on its larger side, so a big photo
#: does not cost a huge scan; the face it looks for (about half of it) still spans ~320 px. With
#: the astronaut's face crops scaled 1-8x, CenterFace, dlib, Haar and YuNet find the same
#: readable faces at 640 as at 1280.
PADDED_MAX_PX = 640


@dataclass(frozen=True)
class FoundFace:
    """A face box in the image's pixels.

    Attributes:
        box: ``(4,)`` float32 xyxy in image pixels.
        confidence: detector confidence in ``[0, 1]`` (1 for a given box).
        landmarks: ``(5, 2)`` float32 ``(x, y)`` points in image pixels, or None.
        padded: found in the padded image (then ``box`` is clipped to the image).
    """

    box: np.ndarray
    confidence: float
    landmarks: np.ndarray | None = None
    padded: bool = False


@dataclass(frozen=True)
class RowCrop:
    """One manifest row made ready: the crop the estimators see and how its face was found.

    Attributes:
        crop: the crop, or None for an invalid row.
        face: one of :data:`FACE_OUTCOMES`, or None for an invalid row.
        found: the face box used (or, for ``face_unreadable``, the one rejected), or None.
        invalid: why the row cannot be evaluated (image unreadable, box outside the image).
    """

    crop: Crop | None
    face: str | None = None
    found: FoundFace | None = None
    invalid: str | None = None


#: Pillow's modes for one channel of 16 bits; a 16-bit grey PNG opens as one of them.
_GREY16_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def _load_rgb(path: Path) -> np.ndarray:
    """The image as RGB uint8; raises ``ValueError`` with a reason when it cannot be read.

    16-bit grey images are scaled from their real depth to 8 bits: Pillow's own conversion
    clips each value to 255, which turns a 16-bit photo white.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode in _GREY16_MODES or (im.mode == "I" and im.format == "PNG"):
                grey = np.asarray(im).astype(np.float32) / 257.0  # 65535 -> 255
                return np.repeat(np.clip(np.rint(grey), 0, 255).astype(np.uint8)[..., None], 3, axis=2)
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise ValueError(f"image not found: {path}") from None
    except UnidentifiedImageError:
        raise ValueError(f"not an image file: {path}") from None
    except (OSError, SyntaxError) as err:  # PIL raises SyntaxError for some broken headers
        raise ValueError(f"image cannot be read: {path} ({err})") from None


def _outside(box: np.ndarray | None, width: int, height: int) -> bool:
    return box is not None and bool((box[:2] < -0.5).any() or box[2] > width + 0.5 or box[3] > height + 0.5)


def _largest(found: Detections) -> FoundFace | None:
    if not len(found):
        return None
    areas = np.prod(found.xyxy[:, 2:] - found.xyxy[:, :2], axis=1)
    if areas.max() <= 0:
        return None
    i = int(np.argmax(areas))
    points = None if found.landmarks is None or np.isnan(found.landmarks[i]).any() else found.landmarks[i]
    return FoundFace(found.xyxy[i], float(found.confidence[i]), points)


def find_face(image: np.ndarray, detector, padded: bool = False) -> FoundFace | None:
    """The largest face the detector finds in ``image`` (``(H, W, 3)`` RGB uint8), or None.

    ``padded``: scan the image inside a flat gray border of ``PAD_SHARE`` of its larger side
    on every side (scaled down to ``PADDED_MAX_PX`` if larger); the box is mapped back to the
    image's pixels and clipped to it (landmarks are mapped back, not clipped).
    """
    if not padded:
        return _largest(detector.detect([image])[0])
    import cv2

    h, w = image.shape[:2]
    pad = int(np.ceil(PAD_SHARE * max(h, w)))
    framed = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(PAD_GRAY,) * 3)
    scale = min(1.0, PADDED_MAX_PX / max(framed.shape[:2]))
    if scale < 1.0:
        size = (max(1, round(framed.shape[1] * scale)), max(1, round(framed.shape[0] * scale)))
        framed = cv2.resize(framed, size, interpolation=cv2.INTER_AREA)
    found = detector.detect([framed])[0]
    points = None if found.landmarks is None else found.landmarks / scale - pad
    xyxy = np.clip(found.xyxy / scale - pad, 0, [w, h, w, h])
    face = _largest(Detections(xyxy, found.confidence, found.class_id, points))
    return None if face is None else FoundFace(face.box, face.confidence, face.landmarks, padded=True)


def _cut(image: np.ndarray, index: int, body: np.ndarray, face: FoundFace | None, cfg: CropConfig) -> Crop:
    person = Person(
        body, 1.0, None if face is None else face.box, 0.0 if face is None else face.confidence, False,
        face_landmarks=None if face is None else face.landmarks,
    )  # fmt: skip
    return cut_crop(image, 0.0, f"eval:{index}", person, 1.0, cfg)


def _prepare(image: np.ndarray, index: int, sample: Sample, face_detector, cfg: CropConfig) -> RowCrop:
    h, w = image.shape[:2]
    body = sample.body_box if sample.body_box is not None else np.array([0, 0, w, h], np.float32)
    if sample.face_box is not None:
        given = FoundFace(sample.face_box, 1.0)
        crop = _cut(image, index, body, given, cfg)
        return RowCrop(crop, "face_given" if crop.face is not None else "face_unreadable", given)
    rejected = None
    if face_detector is not None:
        for padded in (False, True):
            face = find_face(image, face_detector, padded)
            if face is None:
                continue
            crop = _cut(image, index, body, face, cfg)
            if crop.face is not None:
                return RowCrop(crop, "face_detected_padded" if padded else "face_detected", face)
            rejected = rejected or face
    return RowCrop(_cut(image, index, body, None, cfg), "no_face" if rejected is None else "face_unreadable", rejected)


def build_crops(samples: list[Sample], face_detector, crop_cfg: CropConfig, start: int = 0) -> list[RowCrop]:
    """One :class:`RowCrop` per sample, same order; ``start``: the index of the first sample
    in the whole manifest, when the rows come a chunk at a time (crops are keyed by it).

    A missing face box is detected (the largest face; the image padded when the plain scan
    finds no readable face; see the module docstring), a missing body box is the whole image.
    ``face_detector`` None: rows without a face box get ``no_face``. Invalid rows (the image
    cannot be read, a given box is not inside the image) carry their reason instead of a crop.
    """
    out: list[RowCrop] = []
    for i, sample in enumerate(samples):
        try:
            image = _load_rgb(sample.image)
        except ValueError as err:
            out.append(RowCrop(None, invalid=str(err)))
            continue
        h, w = image.shape[:2]
        bad = [name for name, box in (("face_box", sample.face_box), ("body_box", sample.body_box)) if _outside(box, w, h)]
        if bad:
            box = sample.face_box if bad[0] == "face_box" else sample.body_box
            out.append(RowCrop(None, invalid=f"{bad[0]} {[round(float(v), 1) for v in box]} is not inside the {w}x{h} image"))
            continue
        out.append(_prepare(image, start + i, sample, face_detector, crop_cfg))
    return out


def recut(sample: Sample, row: RowCrop, index: int, crop_cfg: CropConfig) -> Crop:
    """The crop :func:`build_crops` made for ``sample`` (``row``, at ``index`` in the
    manifest), cut again from its image with the face it found: the same crop, for passes over
    more rows than fit in memory as crops (fine-tuning reads each row once per epoch).

    Raises:
        ValueError: the row is invalid, or its image can no longer be read.
    """
    if row.crop is None and row.face is None:
        raise ValueError(f"row {index} is invalid: {row.invalid}")
    image = _load_rgb(sample.image)
    h, w = image.shape[:2]
    body = sample.body_box if sample.body_box is not None else np.array([0, 0, w, h], np.float32)
    face = None if row.face in ("face_unreadable", "no_face") else row.found
    return _cut(image, index, body, face, crop_cfg)
