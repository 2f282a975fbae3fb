"""YuNet faces through libfacedetection's C entry point, loaded with ctypes.

The ``yuface`` package's own Python wrapper leaks ~36 KB per call (+53 MB over 1,500 calls),
which a camera running for days cannot afford; calling the library directly with one result
buffer per thread keeps memory flat. The library (weights compiled in) and the OpenMP
runtime it links against come from the model cache (``yunet``, ``yunet-openmp``).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..config import YunetFaceDetectorConfig
from ..errors import ModelError
from ..models import ModelCache
from ..types import FACE, Detections

__all__ = ["YunetFaceDetector"]

# facedetect_cnn(unsigned char* result, unsigned char* bgr, int width, int height, int step), C++-mangled
_ENTRY = "_Z14facedetect_cnnPhS_iii"
_BUFFER_BYTES = 0x20000  # the size the library's header asks for
_ROW = 16  # int16 per face: score x 100, x, y, w, h, 10 landmark coordinates, padding
_MAX_FACES = (_BUFFER_BYTES - 4) // (2 * _ROW)


class YunetFaceDetector:
    """Face boxes and 5 landmarks from YuNet (libfacedetection, BSD-3).

    Each image is scaled to at most ``max_width`` pixels wide, converted to BGR and scanned;
    boxes and landmarks come back in source pixels. The library keeps faces down to a score of
    ~0.2 and has already applied its own NMS (IoU 0.3); ``min_score`` is applied here. Images
    of one call run in parallel threads (ctypes releases the GIL), each thread with its own
    result buffer.
    """

    model_id = "yunet"

    def __init__(self, config: YunetFaceDetectorConfig, models: ModelCache) -> None:
        self.config = config
        self._openmp, self._scan_fn = _load(models.path("yunet"), models.path("yunet-openmp"), config.threads)
        self._local = threading.local()
        # The first call builds the library's global weight tables, which is not thread-safe.
        self._scan(np.zeros((64, 64, 3), np.uint8))
        workers = config.parallel_frames or min(4, os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="yunet") if workers > 1 else None

    def detect(self, images: list[np.ndarray]) -> list[Detections]:
        """One :class:`Detections` (with landmarks) per ``(H, W, 3)`` RGB uint8 image, same order."""
        if self._pool is None or len(images) < 2:
            return [self._detect_one(image) for image in images]
        return list(self._pool.map(self._detect_one, images))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> YunetFaceDetector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _detect_one(self, image: np.ndarray) -> Detections:
        import cv2

        h, w = image.shape[:2]
        scaled = image
        if w > self.config.max_width:
            size = (self.config.max_width, max(1, round(h * self.config.max_width / w)))
            scaled = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        rows = self._scan(np.ascontiguousarray(scaled[:, :, ::-1]))
        rows = rows[rows[:, 0] >= 100 * self.config.min_score]
        sx, sy = w / scaled.shape[1], h / scaled.shape[0]
        xywh = rows[:, 1:5].astype(np.float32) * np.array([sx, sy, sx, sy], np.float32)
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        xyxy = np.clip(xyxy, 0, np.array([w, h, w, h], np.float32))
        points = rows[:, 5:15].astype(np.float32).reshape(-1, 5, 2) * np.array([sx, sy], np.float32)
        conf = np.clip(rows[:, 0].astype(np.float32) / 100.0, 0.0, 1.0)
        return Detections(xyxy, conf, np.full(len(rows), FACE), points)

    def _scan(self, bgr: np.ndarray) -> np.ndarray:
        """Raw result rows ``(K, 16)`` int16 for a contiguous ``(H, W, 3)`` BGR uint8 image."""
        buffer = getattr(self._local, "buffer", None)
        if buffer is None:
            import ctypes

            buffer = self._local.buffer = ctypes.create_string_buffer(_BUFFER_BYTES)
            # OpenMP's thread count is a per-thread setting; OMP_NUM_THREADS only sets the
            # default once, when the first detector of the process loads the runtime.
            self._openmp.omp_set_num_threads(self.config.threads)
        count = np.frombuffer(buffer, np.int32, 1)  # a view: no copy of the 128 KB buffer
        count[0] = 0
        h, w = bgr.shape[:2]
        if not self._scan_fn(buffer, bgr.ctypes.data, w, h, w * 3):  # NULL: nothing was written
            return np.zeros((0, _ROW), np.int16)
        n = min(max(int(count[0]), 0), _MAX_FACES)
        return np.frombuffer(buffer, np.int16, n * _ROW, offset=4).reshape(n, _ROW).copy()


def _load(library: Path, openmp: Path, threads: int):
    """``(openmp runtime, facedetect_cnn)`` from the cached files.

    The library names its OpenMP runtime by soname and looks for it next to the wheel's
    layout; loading the cached runtime first by path satisfies that dependency (the dynamic
    linker matches already loaded libraries by soname), without a global symbol scope.
    """
    import ctypes

    # Read by the runtime once, when it loads; restored afterwards so that other OpenMP
    # libraries of the process keep their own settings. Passive waiting: spinning idle
    # threads would take the cores the other stages run on (+13 ms CPU per call measured).
    settings = {"OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    previous = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    try:
        runtime = ctypes.CDLL(str(openmp))
        lib = ctypes.CDLL(str(library))
        scan = getattr(lib, _ENTRY)
    except (OSError, AttributeError) as err:
        raise ModelError(
            f"cannot load {library} ({err}); the library is built for x86_64 Linux only; on such a machine "
            "run `tracklens models pull --force`"
        ) from None
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    scan.restype = ctypes.c_void_p
    scan.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]
    runtime.omp_set_num_threads.argtypes = [ctypes.c_int]
    runtime.omp_set_num_threads.restype = None
    return runtime, scan
