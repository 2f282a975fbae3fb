"""The specialist: fast ONNX models for age, gender and expression, batched.

- age and gender: dlib-models' age predictor (81 classes, expected age over class ages) and
  gender classifier, on face chips aligned with dlib's 5-point landmarks exactly as they were
  trained (``get_face_chip_details`` with padding 0.2; 64 px for age, 32 px for gender). The
  shape predictor was trained from dlib HOG's face boxes and its points depend on the box it
  starts from, so the box a detector gives is first settled into the box dlib's detector would
  give for the same face (:func:`settle_face_shape`): chips from CenterFace, YuNet or dlib boxes
  then match (``bench/chip_alignment.py``);
- expression: fer's mini-Xception (FER2013), 64x64 gray, scaled to ``[-1, 1]``.
"""

from __future__ import annotations

import numpy as np

from ..config import SpecialistEstimatorConfig
from ..models import ModelCache
from ..onnx import load_session
from ..types import Crop, Estimate

__all__ = [
    "DLIB_BOX_FROM_POINTS",
    "OnnxSpecialistEstimator",
    "dlib_box_from_points",
    "point_frame",
    "settle_face_shape",
]

_AGE_CLASSES = np.array([0.25, *range(1, 81)], dtype=np.float64)
_CHIP_MEANS = np.array([122.781998, 117.000999, 104.297997], dtype=np.float32)
_CHIP_SCALE = 1.0 / 256.0
_CHIP_PADDING = 0.2
# fer's class order is angry, disgust, fear, happy, sad, surprise, neutral; this picks them in
# the order of EXPRESSIONS (neutral, happy, sad, surprise, fear, disgust, anger).
_FER_TO_OURS = np.array([6, 3, 4, 5, 2, 1, 0])
_FER_MARGIN = 0.1

#: dlib HOG's face box in the frame of dlib's own 5 points (see :func:`point_frame`): the box
#: centre is ``centre + s * (along * u + down * v)``, its side ``side * s``. Medians over 201
#: real faces that dlib's detector (upsample 1) found: 50 LFW people of scikit-image's subset
#: and matplotlib's Grace Hopper photo, drawn 40-170 px tall, turned up to 8 degrees, mirrored
#: or not (``tests/chip_faces.py``), each from dlib's detector box and the points the shape
#: predictor gives from that box. The spread (std 0.08, 0.11, 0.24) is mostly dlib's own: its
#: boxes move in steps of a HOG cell (1/10 of the box) and a pyramid level (x 6/5).
#: ``bench/chip_alignment.py`` re-fits and prints them.
DLIB_BOX_FROM_POINTS = (0.0079, 0.2498, 2.4593)
#: Settling steps at most; nearly every face reaches a fixed box or a short cycle in 2-5.
_SETTLE_STEPS = 8


class OnnxSpecialistEstimator:
    """List of crops in, list of estimates out (same length, same order).

    ``settle_steps``: settling steps of :func:`settle_face_shape` (0: the points from the
    crop's face box alone, as the chips were made before; for comparisons).
    """

    source = "specialist"

    def __init__(self, config: SpecialistEstimatorConfig, models: ModelCache) -> None:
        import dlib

        self.config = config
        self.model_id = "age-v1+gender-v1+fer-expression"
        self._age = load_session(models.path("age-v1"), config.threads)
        self._gender = load_session(models.path("gender-v1"), config.threads)
        self._expression = load_session(models.path("fer-expression"), config.threads)
        self.settle_steps = _SETTLE_STEPS
        landmarks = models.path("face-landmarks-5")
        try:
            self._landmarks = dlib.shape_predictor(str(landmarks))
        except RuntimeError as err:
            from ..errors import ModelError

            raise ModelError(f"cannot load model file {landmarks}: {err}; run `tracklens models pull --force`") from None

    def estimate(self, crops: list[Crop]) -> list[Estimate]:
        with_face = [i for i, c in enumerate(crops) if c.face is not None and c.face_box is not None]
        out: list[Estimate | None] = [None] * len(crops)
        for i, crop in enumerate(crops):
            if i not in with_face:
                out[i] = Estimate(crop.track, crop.time, "specialist", self.model_id, quality=crop.quality,
                                  valid=False, reason="no face in crop")  # fmt: skip
        for start in range(0, len(with_face), self.config.batch_size):
            chunk = with_face[start : start + self.config.batch_size]
            for i, est in zip(chunk, self._estimate_faces([crops[i] for i in chunk])):
                out[i] = est
        assert all(e is not None for e in out)
        return out  # type: ignore[return-value]

    def _estimate_faces(self, crops: list[Crop]) -> list[Estimate]:
        age_chips, gender_chips, expr_inputs = [], [], []
        for crop in crops:
            age_chip, gender_chip = self._chips(crop)
            age_chips.append(age_chip)
            gender_chips.append(gender_chip)
            expr_inputs.append(_expression_input(crop))
        age_p = self._run(self._age, _chip_tensor(age_chips))
        gender_p = self._run(self._gender, _chip_tensor(gender_chips))
        expr_p = self._run(self._expression, np.stack(expr_inputs))[:, _FER_TO_OURS]
        estimates = []
        for k, crop in enumerate(crops):
            mean = float(age_p[k] @ _AGE_CLASSES)
            spread = float(np.sqrt(max(age_p[k] @ (_AGE_CLASSES - mean) ** 2, 0.0)))
            readable = crop.face_px >= self.config.min_expression_face_px
            expression = expr_p[k] / expr_p[k].sum()
            estimates.append(
                Estimate(
                    track=crop.track,
                    time=crop.time,
                    source="specialist",
                    model=self.model_id,
                    age=mean,
                    age_std=max(spread, 1.0),
                    p_female=float(gender_p[k, 0]),
                    expression=tuple(float(x) for x in expression) if readable else None,
                    quality=crop.quality,
                    face_px=crop.face_px,
                )
            )
        return estimates

    def face_points(self, crop: Crop) -> np.ndarray:
        """dlib's 5 points the age/gender chips of ``crop`` are aligned on: ``(5, 2)`` float
        ``(x, y)`` in the pixels of ``crop.face`` (two corners of each eye, then the base of
        the nose). ``crop`` must have a face."""
        face = np.ascontiguousarray(crop.face)
        return _shape_points(settle_face_shape(self._landmarks, face, crop.face_box, self.settle_steps))

    def _chips(self, crop: Crop) -> tuple[np.ndarray, np.ndarray]:
        import dlib

        face = np.ascontiguousarray(crop.face)
        shape = settle_face_shape(self._landmarks, face, crop.face_box, self.settle_steps)
        age = dlib.extract_image_chip(face, dlib.get_face_chip_details(shape, 64, _CHIP_PADDING))
        gender = dlib.extract_image_chip(face, dlib.get_face_chip_details(shape, 32, _CHIP_PADDING))
        return np.asarray(age), np.asarray(gender)

    @staticmethod
    def _run(session, x: np.ndarray) -> np.ndarray:
        return session.run(None, {session.get_inputs()[0].name: x})[0]


def point_frame(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """A face's own frame from dlib's 5 points ``(5, 2)`` ``(x, y)`` pixels.

    Returns ``(centre, u, v, s)``: the centre is the mean of the two eye centres and the nose
    point; ``v`` the unit vector from the eye line towards the nose (down the face); ``u`` the
    unit vector a quarter turn from ``v`` (the image's right on an upright face); ``s`` the
    distance between the eye centres in pixels. All of it turns and scales with the face.
    """
    points = np.asarray(points, np.float64)
    eye_a, eye_b, nose = (points[0] + points[1]) / 2, (points[2] + points[3]) / 2, points[4]
    eye_line = eye_b - eye_a
    s = float(np.linalg.norm(eye_line))
    v = np.array([-eye_line[1], eye_line[0]]) / max(s, 1e-9)
    if (nose - (eye_a + eye_b) / 2) @ v < 0:
        v = -v
    u = np.array([v[1], -v[0]])
    return (eye_a + eye_b + nose) / 3, u, v, s


def dlib_box_from_points(points: np.ndarray, params: tuple[float, float, float] = DLIB_BOX_FROM_POINTS) -> np.ndarray:
    """The square xyxy box (pixels) dlib's HOG detector gives, on average, for a face whose
    5 dlib points are ``points`` ``(5, 2)``; ``params``: ``(along, down, side)`` of
    :data:`DLIB_BOX_FROM_POINTS`."""
    centre, u, v, s = point_frame(points)
    along, down, side = params
    c = centre + s * (along * u + down * v)
    half = side * s / 2
    return np.array([c[0] - half, c[1] - half, c[0] + half, c[1] + half])


def settle_face_shape(predictor, image: np.ndarray, box: np.ndarray, max_steps: int = _SETTLE_STEPS):
    """dlib's 5-point shape of the face in ``box`` (xyxy pixels of ``image``, RGB uint8), as if
    the box had come from dlib's own detector.

    The shape predictor starts from a box and its points shift with it: CenterFace's and YuNet's
    boxes are ~10% taller and ~8% narrower than dlib's, which moved the chips by ~1 px of 64
    and the age answer by more than a year on half of the faces. So the box is replaced by the
    dlib box of the points it gave (:func:`dlib_box_from_points`), again and again, until the
    integer box repeats; in a short cycle the first box of the cycle in sort order is taken, so
    that every start that ends in the same cycle gives the same points. Each step is one more
    shape-predictor pass: settling adds ~1 ms a face on one core. A step whose box is far from
    the given one (a bad first fit: a face turned away, a back of a head) or that leaves the
    image stops the settling, and the points from the given box are used, as before; so does a
    given box at the image's edge (a face cut by the frame: its box is clipped). ``max_steps``
    0: the points from the given box alone.

    Returns dlib's ``full_object_detection``.
    """
    import dlib

    def run(key):  # key: xyxy, right and bottom exclusive as the detectors give them; dlib's rectangle includes its own
        x0, y0, x1, y1 = key
        return predictor(image, dlib.rectangle(x0, y0, max(x0 + 1, x1 - 1), max(y0 + 1, y1 - 1)))

    start = _int_box(box)
    shapes = {start: run(start)}
    history = [start]
    height, width = image.shape[:2]
    if start[0] <= 1 or start[1] <= 1 or start[2] >= width - 1 or start[3] >= height - 1:
        return shapes[start]  # a face cut by the image's edge: its box is clipped, not a detector's box of the face
    for _ in range(max_steps):
        key = _int_box(dlib_box_from_points(_shape_points(shapes[history[-1]])))
        if not _near(key, start) or key[0] < 0 or key[1] < 0 or key[2] > width or key[3] > height:
            return shapes[start]
        if key in shapes:
            cycle = history[history.index(key):]
            return shapes[min(cycle)]
        shapes[key] = run(key)
        history.append(key)
    return shapes[history[-1]]


def _int_box(box) -> tuple[int, int, int, int]:
    return tuple(int(round(float(v))) for v in box)  # type: ignore[return-value]


def _near(box: tuple[int, ...], start: tuple[int, ...]) -> bool:
    """Whether a settled box is still about the given face: its centre inside the given box
    and its size within half to twice the given box's mean side."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side, given = box[2] - box[0], ((start[2] - start[0]) + (start[3] - start[1])) / 2
    return start[0] <= cx <= start[2] and start[1] <= cy <= start[3] and 0.5 * given <= side <= 2.0 * given


def _shape_points(shape) -> np.ndarray:
    return np.array([[p.x, p.y] for p in shape.parts()], np.float64)


def _chip_tensor(chips: list[np.ndarray]) -> np.ndarray:
    x = (np.stack(chips).astype(np.float32) - _CHIP_MEANS) * _CHIP_SCALE
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _expression_input(crop: Crop) -> np.ndarray:
    import cv2

    h, w = crop.face.shape[:2]
    x0, y0, x1, y1 = crop.face_box
    mx, my = _FER_MARGIN * (x1 - x0), _FER_MARGIN * (y1 - y0)
    x0, y0 = max(0, int(x0 - mx)), max(0, int(y0 - my))
    x1, y1 = min(w, int(x1 + mx)), min(h, int(y1 + my))
    gray = cv2.cvtColor(crop.face[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY)
    gray = cv2.resize(gray, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32)
    return ((gray / 255.0 - 0.5) * 2.0)[:, :, None]
