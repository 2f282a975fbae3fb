"""Clips of people composed from real photos, for the tests of person ids across anchor flips
(``test_person_ids.py``).

People are whole photos (public domain): scikit-image's ``astronaut`` (Eileen Collins) and
matplotlib's ``grace_hopper.jpg``, portraits cut at the chest, as a camera sees a person close
up. They walk across the brick wall of ``face_scenes.wall``. What the detectors see is real;
what the tests control is *when* each is seen:

- :class:`DropoutPersonDetector` wraps the real person detector and drops the boxes on a given
  person in given frames (the detector missing them for a while);
- a person's face can be *hidden*: the face region is painted over with the wall behind it
  (a face turned away or covered; the body stays), so the real face detector finds no face.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from chip_faces import HOPPER_FACE, hopper
from face_scenes import ASTRONAUT_FACE, wall
from tracklens.pipeline.types import Detections, Frame


@dataclass
class Walker:
    """One photo crossing the frame: ``side`` px tall at ``(x0, y)`` in the first frame,
    moving ``dx`` px per frame; its face is hidden in the frames of ``hide_face``."""

    name: str
    photo: np.ndarray
    face: tuple[float, float, float, float]  # in the photo
    side: int
    x0: float
    y: int
    dx: float
    hide_face: set[int] = field(default_factory=set)

    def place(self, index: int) -> tuple[int, int, int, int]:
        """The photo's xyxy box in frame ``index`` (pixels)."""
        x = int(round(self.x0 + self.dx * index))
        w = round(self.photo.shape[1] * self.side / self.photo.shape[0])
        return x, self.y, x + w, self.y + self.side

    def face_box(self, index: int) -> np.ndarray:
        x0, y0, x1, y1 = self.place(index)
        s = self.side / self.photo.shape[0]
        f = self.face
        return np.array([x0 + f[0] * s, y0 + f[1] * s, x0 + f[2] * s, y0 + f[3] * s], np.float32)


def astronaut(side: int = 320, **kw) -> Walker:
    from skimage import data

    return Walker("astronaut", data.astronaut(), ASTRONAUT_FACE, side, **kw)


def grace_hopper(side: int = 320, **kw) -> Walker:
    return Walker("hopper", hopper(), HOPPER_FACE, side, **kw)


def compose(walkers: list[Walker], frames: int, fps: float = 10.0, width: int = 1280, height: int = 720) -> list[Frame]:
    """``frames`` frames at ``fps``; later walkers are drawn over earlier ones."""
    import cv2

    background = wall(width, height)
    scaled = {}
    out = []
    for i in range(frames):
        image = background.copy()
        for w in walkers:
            x0, y0, x1, y1 = w.place(i)
            if w.name not in scaled:
                scaled[w.name] = cv2.resize(w.photo, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
            photo = scaled[w.name]
            cx0, cx1 = max(0, x0), min(width, x1)
            cy0, cy1 = max(0, y0), min(height, y1)
            if cx1 > cx0 and cy1 > cy0:
                image[cy0:cy1, cx0:cx1] = photo[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
            if i in w.hide_face:  # the wall shows through where the face was, with a margin for hair and chin
                f = w.face_box(i)
                pad = 0.15 * (f[3] - f[1])
                fx0, fy0 = max(0, int(f[0] - pad)), max(0, int(f[1] - pad))
                fx1, fy1 = min(width, int(f[2] + pad)), min(height, int(f[3] + pad))
                image[fy0:fy1, fx0:fx1] = background[fy0:fy1, fx0:fx1]
        out.append(Frame("cam", i, i / fps, 0.0, image))
    return out


class DropoutPersonDetector:
    """The real person detector, blind to some people in some frames.

    Args:
        detector: the real detector.
        frames: the frames (``Frame``) it will see, by index, to know which image is which.
        dropouts: ``(walker, frame indices)``: in those frames every box whose centre lies in
            the walker's photo is dropped.
    """

    def __init__(self, detector, frames: list[Frame], dropouts: list[tuple[Walker, set[int]]]) -> None:
        self.detector = detector
        self.model_id = detector.model_id
        self._index = {id(f.image): f.index for f in frames}
        self._dropouts = dropouts

    def detect(self, images: list[np.ndarray]) -> list[Detections]:
        return [self._drop(image, found) for image, found in zip(images, self.detector.detect(images))]

    def detect_windows(self, images: list[np.ndarray], windows) -> list[Detections]:
        return [self._drop(image, found) for image, found in zip(images, self.detector.detect_windows(images, windows))]

    def _drop(self, image: np.ndarray, found: Detections) -> Detections:
        index = self._index[id(image)]
        keep = np.ones(len(found), bool)
        for walker, when in self._dropouts:
            if index in when:
                x0, y0, x1, y1 = walker.place(index)
                cx, cy = (found.xyxy[:, 0] + found.xyxy[:, 2]) / 2, (found.xyxy[:, 1] + found.xyxy[:, 3]) / 2
                keep &= ~((cx >= x0) & (cx <= x1) & (cy >= y0) & (cy <= y1))
        return found[keep]


def ids_by_walker(results, walkers: list[Walker]) -> tuple[dict[str, set[int]], set[int]]:
    """Which track ids each walker was given, and the ids that belong to no walker.

    A tracked person belongs to the walker whose photo holds its face centre, or without a face
    the point a sixth of the way down its box, at its centre (a head for both body boxes and
    boxes derived from a face); on two overlapping photos, the one drawn on top.
    """
    owned: dict[str, set[int]] = {w.name: set() for w in walkers}
    stray: set[int] = set()
    for r in results:
        for p in r.people:
            if p.face is not None:
                x, y = (p.face[0] + p.face[2]) / 2, (p.face[1] + p.face[3]) / 2
            else:
                x, y = (p.box[0] + p.box[2]) / 2, p.box[1] + (p.box[3] - p.box[1]) / 6
            owner = None
            for w in walkers:  # later walkers are drawn on top
                x0, y0, x1, y1 = w.place(r.frame.index)
                if x0 <= x <= x1 and y0 <= y <= y1:
                    owner = w.name
            if owner is None:
                stray.add(p.track_id)
            else:
                owned[owner].add(p.track_id)
    return owned, stray
