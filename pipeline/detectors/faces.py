"""Face detectors: dlib HOG (default) and OpenCV Haar."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..config import DlibFaceDetectorConfig, HaarFaceDetectorConfig
from ..models import ModelCache
from ..types import FACE, Detections

__all__ = ["DlibFaceDetector", "HaarFaceDetector"]


class DlibFaceDetector:
    """dlib's frontal-face HOG+SVM detector (weights built into dlib).

    SVM margins become confidences through ``sigmoid(score_scale * margin)``: the decision
    boundary maps to 0.5 and a clear face (margin ~1) to ~0.9.
    """

    model_id = "dlib-hog-frontal"

    def __init__(self, config: DlibFaceDetectorConfig, models: ModelCache | None = None) -> None:
        import dlib

        self.config = config
        self._make = dlib.get_frontal_face_detector
        # One detector object per thread: a shared one crashes (it keeps scratch buffers).
        self._local = threading.local()
        # dlib releases the GIL while scanning, so frames of a batch run in parallel threads.
        threads = config.threads or min(4, os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="dlib-faces") if threads > 1 else None

    def detect(self, images: list[np.ndarray]) -> list[Detections]:
        if self._pool is None or len(images) < 2:
            return [self._detect_one(image) for image in images]
        return list(self._pool.map(self._detect_one, images))

    def _detect_one(self, image: np.ndarray) -> Detections:
        detector = getattr(self._local, "detector", None)
        if detector is None:
            detector = self._local.detector = self._make()
        rects, margins, _ = detector.run(np.ascontiguousarray(image), self.config.upsample, self.config.min_score)
        xyxy = np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects], np.float32).reshape(-1, 4)
        h, w = image.shape[:2]
        xyxy = np.clip(xyxy, 0, [w, h, w, h])
        conf = 1.0 / (1.0 + np.exp(-self.config.score_scale * np.asarray(margins, np.float32)))
        return Detections(xyxy, conf, np.full(len(xyxy), FACE))


class HaarFaceDetector:
    """OpenCV's ``haarcascade_frontalface_default`` (ships with opencv-python 4.x)."""

    model_id = "opencv-haar-frontalface"

    def __init__(self, config: HaarFaceDetectorConfig, models: ModelCache | None = None) -> None:
        import cv2

        self.config = config
        self._cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")

    def detect(self, images: list[np.ndarray]) -> list[Detections]:
        import cv2

        cfg = self.config
        out = []
        for image in images:
            gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
            found = self._cascade.detectMultiScale(
                gray, cfg.scale_factor, cfg.min_neighbors, minSize=(cfg.min_face_px, cfg.min_face_px)
            )
            xywh = np.asarray(found, np.float32).reshape(-1, 4)
            xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
            out.append(Detections(xyxy, np.full(len(xyxy), cfg.confidence), np.full(len(xyxy), FACE)))
        return out
