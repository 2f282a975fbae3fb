"""Frames composed from real photos, with the true face boxes, for face detector tests and
the bench (``bench/face_detectors.py``).

Sources, all bundled with scikit-image (public domain): ``astronaut`` (a frontal smiling
face), ``camera`` (a man in profile behind a camera), ``lfw_subset`` (100 tightly cropped
25x25 gray faces from Labeled Faces in the Wild, then 100 patches without a face) and
``brick`` as the wall everything hangs on. Face boxes are xyxy in pixels, set by hand on the
original photos.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Hand-set face boxes in the original 512x512 photos.
ASTRONAUT_FACE = (176.0, 60.0, 270.0, 178.0)
CAMERAMAN_FACE = (180.0, 105.0, 258.0, 192.0)


@dataclass
class Scene:
    """One composed ``(H, W, 3)`` RGB uint8 frame and its true faces ``(K, 4)`` xyxy, with a
    label per face (e.g. its height in pixels or its turn angle)."""

    image: np.ndarray
    faces: list[tuple[float, float, float, float]] = field(default_factory=list)
    labels: list[object] = field(default_factory=list)

    def add_face(self, box, label) -> None:
        self.faces.append(tuple(float(v) for v in box))
        self.labels.append(label)


def wall(width: int = 1280, height: int = 720) -> np.ndarray:
    """The brick wall, tinted and tiled to ``(height, width, 3)`` RGB uint8."""
    from skimage import data

    brick = data.brick().astype(np.float32)
    reps = (-(-height // brick.shape[0]), -(-width // brick.shape[1]))
    gray = np.tile(brick, reps)[:height, :width]
    return np.clip(gray[..., None] * np.array([0.8, 0.68, 0.6], np.float32) + 25, 0, 255).astype(np.uint8)


def rgb(image: np.ndarray) -> np.ndarray:
    """Gray (float in [0, 1] or uint8) or RGB to RGB uint8."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(image * 255.0, 0, 255).astype(np.uint8)
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image


def paste(frame: np.ndarray, photo: np.ndarray, x: int, y: int, scale: float, face=None):
    """Paste ``photo`` scaled by ``scale`` with its top-left corner at ``(x, y)`` (cut at the
    frame's edges); returns ``face`` (xyxy in the photo) mapped into the frame, or None."""
    import cv2

    h, w = photo.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = cv2.resize(rgb(photo), size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    fh, fw = frame.shape[:2]
    x1, y1 = min(fw, x + size[0]), min(fh, y + size[1])
    frame[y:y1, x:x1] = small[: y1 - y, : x1 - x]
    if face is None:
        return None
    sx, sy = size[0] / w, size[1] / h
    return (x + face[0] * sx, y + face[1] * sy, x + face[2] * sx, y + face[3] * sy)


def lfw_faces(count: int = 100) -> list[np.ndarray]:
    """The first ``count`` LFW faces of scikit-image's subset, 25x25 RGB uint8."""
    from skimage import data

    return [rgb(f) for f in data.lfw_subset()[:count]]


def lfw_non_faces(count: int = 100) -> list[np.ndarray]:
    """Patches of the same subset that hold no face, 25x25 RGB uint8."""
    from skimage import data

    return [rgb(f) for f in data.lfw_subset()[100 : 100 + count]]


def small_faces_scene(sizes=(15, 20, 30, 60), lfw_per_size: int = 4, seed: int = 0) -> Scene:
    """A 1280x720 wall with, per face height in ``sizes``: the whole astronaut photo scaled so
    her face is that tall, and ``lfw_per_size`` LFW faces scaled to that height. Labels are
    ``("astronaut" | "lfw", height_px)``."""
    from skimage import data

    rng = np.random.default_rng(seed)
    faces = lfw_faces()
    scene = Scene(wall())
    astronaut = data.astronaut()
    face_h = ASTRONAUT_FACE[3] - ASTRONAUT_FACE[1]
    x = 20
    for size in sizes:
        scale = size / face_h
        scene.add_face(paste(scene.image, astronaut, x, 20, scale, ASTRONAUT_FACE), ("astronaut", size))
        x += round(512 * scale) + 40
    for row, size in enumerate(sizes):
        y = 400 + sum(s + 30 for s in sizes[:row])
        for k, i in enumerate(rng.choice(len(faces), lfw_per_size, replace=False)):
            fx = 40 + k * (size + 60) + row * 7
            box = paste(scene.image, faces[i], fx, y, size / 25, (0, 0, 25, 25))
            scene.add_face(box, ("lfw", size))
    return scene


def rotated(photo: np.ndarray, face, degrees: float) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """``photo`` turned in-plane by ``degrees`` (counter-clockwise) about the face centre, its
    corners filled with mid gray (reflected borders would mirror the face into them), and the
    upright box around the turned face box."""
    import cv2

    cx, cy = (face[0] + face[2]) / 2, (face[1] + face[3]) / 2
    turn = cv2.getRotationMatrix2D((cx, cy), degrees, 1.0)
    out = cv2.warpAffine(rgb(photo), turn, (photo.shape[1], photo.shape[0]), borderValue=(128, 128, 128))
    corners = np.array([[face[0], face[1], 1], [face[2], face[1], 1], [face[0], face[3], 1], [face[2], face[3], 1]])
    moved = corners @ turn.T
    return out, (*moved.min(axis=0), *moved.max(axis=0))


def random_scene(items, seed: int, width: int = 1280, height: int = 720, gap: int = 12) -> Scene:
    """Items ``(photo, face or None, scale, label)`` pasted on the wall at random places where
    they do not overlap, largest first (an item that finds no place after 2,000 tries is left
    out: keep the items' total area well under the frame's)."""
    rng = np.random.default_rng(seed)
    scene = Scene(wall(width, height))
    taken: list[tuple[int, int, int, int]] = []
    for photo, face, scale, label in sorted(items, key=lambda item: -item[0].size * item[2] ** 2):
        w, h = round(photo.shape[1] * scale), round(photo.shape[0] * scale)
        for _ in range(2000):
            x, y = int(rng.integers(0, max(1, width - w))), int(rng.integers(0, max(1, height - h)))
            if all(x + w + gap <= a or a2 + gap <= x or y + h + gap <= b or b2 + gap <= y for a, b, a2, b2 in taken):
                taken.append((x, y, x + w, y + h))
                box = paste(scene.image, photo, x, y, scale, face)
                if box is not None:
                    scene.add_face(box, label)
                break
    return scene


def match(found: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, int]:
    """Which true faces were found, and how many found boxes are on no true face.

    A box is on a true face when its centre lies inside the true box and its height is within
    half to twice the true height (detectors disagree on how much forehead and chin a face
    box holds, most at small sizes).

    Returns:
        ``hit (K,)`` bool per true face, and the number of false boxes.
    """
    found = np.asarray(found, np.float32).reshape(-1, 4)
    truth = np.asarray(truth, np.float32).reshape(-1, 4)
    cx, cy = (found[:, 0] + found[:, 2]) / 2, (found[:, 1] + found[:, 3]) / 2
    h = found[:, 3] - found[:, 1]
    th = truth[:, 3] - truth[:, 1]
    on = (
        (cx[:, None] >= truth[None, :, 0]) & (cx[:, None] <= truth[None, :, 2])
        & (cy[:, None] >= truth[None, :, 1]) & (cy[:, None] <= truth[None, :, 3])
        & (h[:, None] >= 0.5 * th[None, :]) & (h[:, None] <= 2.0 * th[None, :])
    )  # fmt: skip
    return on.any(axis=0), int((~on.any(axis=1)).sum())
