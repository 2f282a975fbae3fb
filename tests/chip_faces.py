"""Real faces, one per image, for comparing age/gender chips across face detectors (the test
``test_specialist_chips.py`` and ``bench/chip_alignment.py``).

Sources, all public domain: scikit-image's ``lfw_subset`` (100 tightly cropped 25x25 gray faces
of 100 people from Labeled Faces in the Wild), its ``astronaut`` (Eileen Collins, NASA) and
matplotlib's ``grace_hopper.jpg`` (US Navy photo; matplotlib is installed with supervision).
Each face is drawn as several images: scaled to a random face height, turned in-plane by a few
degrees, mirrored or not, on a flat mid-gray surround (so every detector sees the same face with
context around it and nothing else).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from face_scenes import ASTRONAUT_FACE, lfw_faces, rgb

#: Face box of ``grace_hopper.jpg`` (512x600), as dlib's detector finds it.
HOPPER_FACE = (180.0, 139.0, 367.0, 326.0)


@dataclass(frozen=True)
class FaceImage:
    """One face in one image: ``(H, W, 3)`` RGB uint8, the source's name (``lfw17``,
    ``astronaut``, ``hopper``) and how it was drawn (face height in pixels, turn in degrees,
    mirrored)."""

    image: np.ndarray
    source: str
    face_px: float
    degrees: float
    mirrored: bool


def hopper() -> np.ndarray:
    """matplotlib's Grace Hopper portrait, ``(600, 512, 3)`` RGB uint8."""
    from matplotlib.cbook import get_sample_data
    from PIL import Image

    with Image.open(get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        return np.asarray(im.convert("RGB"))


def photos(lfw: range | list[int] = range(100)) -> list[tuple[str, np.ndarray, tuple[float, float, float, float]]]:
    """``(name, photo, face box xyxy)``: the LFW faces picked by ``lfw`` (the whole 25x25
    patch is the face), then the astronaut and Grace Hopper."""
    from skimage import data

    faces = lfw_faces()
    out = [(f"lfw{i}", faces[i], (0.0, 0.0, 25.0, 25.0)) for i in lfw]
    return out + [("astronaut", data.astronaut(), ASTRONAUT_FACE), ("hopper", hopper(), HOPPER_FACE)]


def draw(photo: np.ndarray, face, face_px: float, degrees: float, mirrored: bool) -> np.ndarray:
    """``photo`` scaled so its face is ``face_px`` tall, turned by ``degrees`` about the face
    centre, mirrored if asked, and cut to a square 3 face heights wide around the face (mid
    gray where the photo ends)."""
    import cv2

    photo = rgb(photo)
    if mirrored:
        photo = np.ascontiguousarray(photo[:, ::-1])
        face = (photo.shape[1] - face[2], face[1], photo.shape[1] - face[0], face[3])
    scale = face_px / (face[3] - face[1])
    size = (round(photo.shape[1] * scale), round(photo.shape[0] * scale))
    small = cv2.resize(photo, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    pad = int(face_px)
    canvas = cv2.copyMakeBorder(small, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(128, 128, 128))
    cx, cy = pad + (face[0] + face[2]) / 2 * scale, pad + (face[1] + face[3]) / 2 * scale
    turn = cv2.getRotationMatrix2D((cx, cy), degrees, 1.0)
    canvas = cv2.warpAffine(canvas, turn, (canvas.shape[1], canvas.shape[0]), borderValue=(128, 128, 128))
    half = int(1.5 * face_px)
    x0, y0 = max(0, int(cx) - half), max(0, int(cy) - half)
    return np.ascontiguousarray(canvas[y0 : int(cy) + half, x0 : int(cx) + half])


def face_set(lfw: range | list[int] = range(100), per_lfw: int = 4, per_photo: int = 24, seed: int = 0,
             face_px: tuple[float, float] = (40.0, 170.0), max_degrees: float = 8.0) -> list[FaceImage]:  # fmt: skip
    """Each source of :func:`photos` drawn ``per_lfw`` (LFW) or ``per_photo`` times, with a
    face height uniform in ``face_px``, a turn uniform in ``+-max_degrees`` and a coin flip
    for mirroring (one random stream per ``seed``)."""
    rng = np.random.default_rng(seed)
    out = []
    for name, photo, face in photos(lfw):
        for _ in range(per_lfw if name.startswith("lfw") else per_photo):
            px, deg = float(rng.uniform(*face_px)), float(rng.uniform(-max_degrees, max_degrees))
            flip = bool(rng.integers(2))
            out.append(FaceImage(draw(photo, face, px, deg, flip), name, px, deg, flip))
    return out
