"""Person and face detectors behind a registry keyed by the config's ``type``.

Backends are imported on first use, so importing the pipeline pulls in neither onnxruntime
nor dlib.
"""

from __future__ import annotations

import importlib
from typing import Protocol

import numpy as np

from ..models import ModelCache
from ..types import Detections

__all__ = ["DETECTORS", "Detector", "build_detector"]

#: ``type`` -> (module, class)
DETECTORS: dict[str, tuple[str, str]] = {
    "ssdlite": (".ssdlite", "SsdlitePersonDetector"),
    "dlib_hog": (".faces", "DlibFaceDetector"),
    "haar": (".faces", "HaarFaceDetector"),
    "yunet": (".yunet", "YunetFaceDetector"),
    "centerface": (".centerface", "CenterfaceFaceDetector"),
}


class Detector(Protocol):
    model_id: str

    def detect(self, images: list[np.ndarray]) -> list[Detections]:
        """One :class:`Detections` per ``(H, W, 3)`` RGB uint8 image, same order."""
        ...


def build_detector(config, models: ModelCache) -> Detector:
    module, name = DETECTORS[config.type]
    cls = getattr(importlib.import_module(module, __name__), name)
    return cls(config, models)
