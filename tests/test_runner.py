"""The runner's track lifecycle, with scripted detections and a recording estimator."""

from __future__ import annotations

import numpy as np
from tracklens.pipeline.config import PipelineConfig
from tracklens.pipeline.runner import StageSet, StreamAnalyzer, analyze
from tracklens.pipeline.store import MemoryTrackStore
from tracklens.pipeline.types import EXPRESSIONS, FACE, PERSON, Detections, Estimate, Frame


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
    source, model_id = "specialist", "recorder"

    def __init__(self) -> None:
        self.seen: list[str] = []

    def estimate(self, crops):
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

    def __iter__(self):
        for i in range(self.n):
            image = np.full((480, 640, 3), 60, np.uint8)
            for x0, y0, x1, y1 in self.faces.get(i, []):
                image[int(y0) : int(y1), int(x0) : int(x1)] = 255
            image[0, 0, 0], image[0, 0, 1] = i % 256, i // 256
            yield Frame("cam", i, i / 10.0, 0.0, image)


def _script(frames: range, x: float) -> tuple[dict, dict]:
    people = {i: [[x + 2 * i, 100, x + 2 * i + 80, 400]] for i in frames}
    faces = {i: [[x + 2 * i + 20, 110, x + 2 * i + 60, 150]] for i in frames}
    return people, faces


def test_track_lifecycle_events_and_final_estimates():
    pa, fa = _script(range(40), 50)
    pb, fb = _script(range(10, 15), 400)  # a short visit: confirmed, then gone
    people = {i: pa.get(i, []) + pb.get(i, []) for i in range(40)}
    faces = {i: fa.get(i, []) + fb.get(i, []) for i in range(40)}
    config = PipelineConfig.model_validate(
        {"stream": "cam", "crops": {"first_after_s": 0.3, "refresh_s": 1.0}, "tracker": {"min_hits": 3, "lost_track_buffer": 30}}
    )
    estimator = RecordingEstimator()
    stages = StageSet(ScriptedDetector(people, PERSON), BlobFaceDetector(), estimator)
    store = MemoryTrackStore()
    analyzer = StreamAnalyzer(config, stages, store, 10.0, stream="cam")
    analyze(ListSource(40, faces), analyzer)

    tracks = {t["track"]: t for t in store.tracks("cam")}
    assert set(tracks) == {"cam:0:1", "cam:0:2"}
    long, short = tracks["cam:0:1"], tracks["cam:0:2"]
    assert long["first_seen"] == 0.2 and long["last_seen"] == 3.9 and long["frames"] == 38
    assert short["state"] == long["state"] == "ended"
    # the short track ended (lost buffer: 10 frames at 10 fps) long before the file did
    events = [(e["track"], e["event"]) for e in store.events("cam")]
    assert events.index(("cam:0:2", "end")) < events.index(("cam:0:1", "end"))
    assert events[0] == ("cam:0:1", "start")
    # long: first request 0.3 s after confirmation, a refresh a second later, then it is
    # confident (age standard error 1/sqrt(2 * 0.8 / 3^2) = 2.37 < 4, both labels set) and
    # is not asked again; short: vanished before its first request was due, so its best crop
    # was sent when it ended
    assert estimator.seen.count("cam:0:1") == 2 and estimator.seen.count("cam:0:2") == 1
    assert long["age"] == {"mean": 30.0, "std": 2.37, "n": 2}
    assert long["gender"]["label"] == "female" and long["expression"]["label"] == "happy"
    assert short["age"]["mean"] is None and short["age"]["n"] == 1  # one estimate is not enough
    assert analyzer.summaries() == [long, short]
    assert store.state("cam:0:1")["age_n"] == 2


def test_a_track_that_ends_before_its_first_request_still_gets_estimated():
    pb, fb = _script(range(5), 300)
    config = PipelineConfig.model_validate({"crops": {"first_after_s": 5.0}, "tracker": {"min_hits": 2}})
    estimator = RecordingEstimator()
    stages = StageSet(ScriptedDetector(pb, PERSON), BlobFaceDetector(), estimator)
    analyzer = StreamAnalyzer(config, stages, MemoryTrackStore(), 10.0, stream="cam")
    analyze(ListSource(8, fb), analyzer)
    assert estimator.seen == ["cam:0:1"]


def test_face_only_people_are_followed_between_full_scans_on_a_fraction_of_the_pixels():
    """No person detections at all: the face is found by a full scan, then in windows
    around where it was, frame after frame, and the track never breaks."""
    faces = {i: [[100 + 8 * i, 200, 150 + 8 * i, 250]] for i in range(30)}
    config = PipelineConfig.model_validate({"detection": {"face_schedule": {"full_scan_interval_s": 1.0}}})
    detector = BlobFaceDetector()
    stages = StageSet(ScriptedDetector({}, PERSON), detector, RecordingEstimator())
    analyzer = StreamAnalyzer(config, stages, MemoryTrackStore(), 10.0, stream="cam")
    analyze(ListSource(30, faces), analyzer)
    (track,) = analyzer.summaries()
    assert track["frames"] == 28  # every frame from confirmation (min_hits 3) to the end
    full_scans = 3  # at 0, 1 and 2 s
    assert detector.pixels_scanned < 0.3 * 30 * 480 * 640
    assert detector.pixels_scanned > full_scans * 480 * 640
