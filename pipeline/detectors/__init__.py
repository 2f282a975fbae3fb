"""Person and face detectors behind a registry keyed by the config's ``type``.

Backends are imported on first use, so importing the pipeline pulls in neither onnxruntime
nor dlib.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
from typing import Protocol

import numpy as np

from ..models import ModelCache
from ..types import Detections

__all__ = ["DETECTORS", "Detector", "build_detector", "release_memory"]

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, glibc's <malloc.h>

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
    _fix_heap_thresholds()
    module, name = DETECTORS[config.type]
    cls = getattr(importlib.import_module(module, __name__), name)
    return cls(config, models)


def release_memory(detectors) -> None:
    """Once a stream is gone: each detector that has ``release_memory()`` hands back its
    onnxruntime arena's peak buffers, then the C heap returns its free pages to the OS.

    Both keep what a busy moment took: the arenas the largest calls (several streams at once,
    frames queued behind), glibc's heaps (one per thread that allocated: decode threads,
    stream threads) what was freed, for reuse; decoded frames (2.7 MB each at 720p) end there,
    and only ``malloc_trim`` gives those pages back. Best effort: it never raises.
    """
    for detector in detectors:
        release = getattr(detector, "release_memory", None)
        if release is None:
            continue
        try:
            release()
        except Exception as err:  # onnxruntime raises its own untyped errors; memory stays, streams go on
            log.warning("%s kept its buffers: %s", type(detector).__name__, err)
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim this way
        pass


def _fix_heap_thresholds() -> None:
    """Fixed glibc thresholds for a process that runs detectors (process-wide; idempotent).

    glibc adapts them to the largest block freed: once a few frames and arena regions (up to
    32 MB) have come and gone, blocks that size come from the per-thread heaps, and each heap
    keeps a free top of up to twice that (64 MB), which ``malloc_trim`` leaves alone (it trims
    only the main heap's top). Over rounds of adding and deleting three streams, an ingest
    process kept 60 MB, then up to 170 MB more than before its first stream; with these,
    15-28 MB, flat. Blocks of 16 MB or more get their own mappings, returned when freed; a
    heap's free top over 128 kB (glibc's default) goes back at once. Frames/s unchanged
    within noise.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return
    mallopt(_M_MMAP_THRESHOLD, 16 << 20)
    mallopt(_M_TRIM_THRESHOLD, 128 << 10)
