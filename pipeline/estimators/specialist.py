"""The specialist: fast ONNX models for age, gender and expression, batched.

- age and gender: dlib-models' age predictor (81 classes, expected age over class ages) and
  gender classifier, on face chips aligned with dlib's 5-point landmarks exactly as they were
  trained (``get_face_chip_details`` with padding 0.2; 64 px for age, 32 px for gender);
- expression: fer's mini-Xception (FER2013), 64x64 gray, scaled to ``[-1, 1]``.
"""

from __future__ import annotations

import numpy as np

from ..config import SpecialistEstimatorConfig
from ..models import ModelCache
from ..onnx import load_session
from ..types import Crop, Estimate

__all__ = ["OnnxSpecialistEstimator"]

_AGE_CLASSES = np.array([0.25, *range(1, 81)], dtype=np.float64)
_CHIP_MEANS = np.array([122.781998, 117.000999, 104.297997], dtype=np.float32)
_CHIP_SCALE = 1.0 / 256.0
_CHIP_PADDING = 0.2
# fer's class order is angry, disgust, fear, happy, sad, surprise, neutral; this picks them in
# the order of EXPRESSIONS (neutral, happy, sad, surprise, fear, disgust, anger).
_FER_TO_OURS = np.array([6, 3, 4, 5, 2, 1, 0])
_FER_MARGIN = 0.1


class OnnxSpecialistEstimator:
    """List of crops in, list of estimates out (same length, same order)."""

    source = "specialist"

    def __init__(self, config: SpecialistEstimatorConfig, models: ModelCache) -> None:
        import dlib

        self.config = config
        self.model_id = "age-v1+gender-v1+fer-expression"
        self._age = load_session(models.path("age-v1"), config.threads)
        self._gender = load_session(models.path("gender-v1"), config.threads)
        self._expression = load_session(models.path("fer-expression"), config.threads)
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

    def _chips(self, crop: Crop) -> tuple[np.ndarray, np.ndarray]:
        import dlib

        face = np.ascontiguousarray(crop.face)
        x0, y0, x1, y1 = (int(round(v)) for v in crop.face_box)
        shape = self._landmarks(face, dlib.rectangle(x0, y0, max(x0 + 1, x1 - 1), max(y0 + 1, y1 - 1)))
        age = dlib.extract_image_chip(face, dlib.get_face_chip_details(shape, 64, _CHIP_PADDING))
        gender = dlib.extract_image_chip(face, dlib.get_face_chip_details(shape, 32, _CHIP_PADDING))
        return np.asarray(age), np.asarray(gender)

    @staticmethod
    def _run(session, x: np.ndarray) -> np.ndarray:
        return session.run(None, {session.get_inputs()[0].name: x})[0]


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
