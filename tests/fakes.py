"""Fakes the tests share: scripted detectors, a recording estimator, a scripted source, a
store that fails on demand."""

from __future__ import annotations

import numpy as np
from tracklens.pipeline.errors import StoreUnavailableError
from tracklens.pipeline.store import MemoryTrackStore
from tracklens.pipeline.types import EXPRESSIONS, FACE, Detections, Estimate, Frame


class ScriptedDetector:
    """Returns the boxes a script gives for each frame (keyed by the frame's first pixel)."""

    model_id = "scripted"

    def __init__(self, script: dict[int, list[list[float]]], cls: int) -> None:
        self.script, self.cls = script, cls

    def detect(self, images):
        out = []
        for image in images:
            boxes = np.array(self.script.get(int(image[0, 0, 0]) + 256 * int(image[0, 0, 1]), []), np.float32).reshape(-1, 4)
            out.append(Detections(boxes, np.full(len(boxes), 0.9), np.full(len(boxes), self.cls)))
        return out


class BlobFaceDetector:
    """Finds the pure-white squares the test source draws as faces (works on any crop)."""

    model_id = "blobs"

    def __init__(self) -> None:
        self.pixels_scanned = 0

    def detect(self, images):
        from scipy import ndimage

        out = []
        for image in images:
            self.pixels_scanned += image.shape[0] * image.shape[1]
            labels, _ = ndimage.label((image == 255).all(axis=2))
            boxes = [[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in ndimage.find_objects(labels)]
            boxes = np.array(boxes, np.float32).reshape(-1, 4)
            out.append(Detections(boxes, np.full(len(boxes), 0.9), np.full(len(boxes), FACE)))
        return out


class RecordingEstimator:
    """Answers every crop the same (30 years, female, happy) and records the track keys;
    raises on call number ``fail_on_call`` (1-based) when given."""

    source, model_id = "specialist", "recorder"

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.seen: list[str] = []
        self.calls = 0
        self.fail_on_call = fail_on_call

    def estimate(self, crops):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError("estimator crashed")
        self.seen += [c.track for c in crops]
        happy = tuple(0.9 if n == "happy" else 0.1 / 6 for n in EXPRESSIONS)
        return [Estimate(c.track, c.time, "specialist", self.model_id, age=30.0, age_std=3.0, p_female=0.9,
                         expression=happy, quality=0.8, face_px=c.face_px) for c in crops]  # fmt: skip


class ListSource:
    """Gray frames with the faces of the script drawn as white squares; frame i is stamped
    into pixel (0, 0) for the scripted person detector."""

    stream = "cam"
    analysis_fps = 10.0

    def __init__(self, n: int, faces: dict[int, list[list[float]]]) -> None:
        self.n, self.faces = n, faces
        self.closed = False

    def __iter__(self):
        for i in range(self.n):
            image = np.full((480, 640, 3), 60, np.uint8)
            for x0, y0, x1, y1 in self.faces.get(i, []):
                image[int(y0) : int(y1), int(x0) : int(x1)] = 255
            image[0, 0, 0], image[0, 0, 1] = i % 256, i // 256
            yield Frame("cam", i, i / 10.0, 0.0, image)

    def close(self) -> None:
        self.closed = True


def walking_script(frames: range, x: float) -> tuple[dict, dict]:
    """A person box and its face moving right by 2 px a frame, for ``frames``."""
    people = {i: [[x + 2 * i, 100, x + 2 * i + 80, 400]] for i in frames}
    faces = {i: [[x + 2 * i + 20, 110, x + 2 * i + 60, 150]] for i in frames}
    return people, faces


class FlakyStore(MemoryTrackStore):
    """An in-memory store whose writes fail while :attr:`down` is True, like Redis restarting."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.attempts = 0

    def put(self, records):
        self.attempts += 1
        if self.down:
            raise StoreUnavailableError("cannot reach Redis at redis://test: Connection refused")
        return super().put(records)
