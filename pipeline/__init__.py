"""In-process pipeline stages (no Ray): sources, detectors, association, crops, estimators,
aggregation, store and the runner that composes them. Heavy libraries (onnxruntime, dlib,
PyAV, redis) are imported where they are used, not here."""

from .config import PipelineConfig, load_config
from .errors import ConfigError, InputError, ModelError, StoreError, TracklensError
from .types import EXPRESSIONS, Crop, Detections, Estimate, Frame, Person, track_key

__all__ = [
    "EXPRESSIONS",
    "ConfigError",
    "Crop",
    "Detections",
    "Estimate",
    "Frame",
    "InputError",
    "ModelError",
    "Person",
    "PipelineConfig",
    "StoreError",
    "TracklensError",
    "load_config",
    "track_key",
]
