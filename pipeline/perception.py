"""Perception, per stream: detect -> associate -> track -> choose crops -> lifecycle events.

No estimator and no store: what leaves a batch of frames is the frames' tracked people, the
tracks that started or ended, and the crops due for estimation. The track book
(``trackbook.py``) takes it from there, in the same process (``runner.py``) or in the
service's ingest replica with the estimates coming back later (``serve/``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..trackers import ByteTrackConfig, ByteTrackTracker
from .association import associate
from .config import PipelineConfig
from .crops import CropSelector
from .detectors import Detector
from .detectors.schedule import FaceScanPlanner, PersonScanPlanner, detect_in_regions
from .types import Crop, Detections, Frame, FrameResult, TrackedPerson, TrackEvent, TrackSpan, track_key

__all__ = ["Perception", "PerceptionBatch"]

_SNAPSHOT_VERSION = 2


@dataclass
class PerceptionBatch:
    """What a batch of frames produced, in order.

    Attributes:
        results: one per analysed frame.
        events: ``start`` and ``end`` of tracks, in the order they happened.
        seen: the latest span of every track seen in the batch.
        crops: crops due for estimation, including the best crop of a track that ended
            before it was ever asked about.
    """

    results: list[FrameResult] = field(default_factory=list)
    events: list[TrackEvent] = field(default_factory=list)
    seen: dict[str, TrackSpan] = field(default_factory=dict)
    crops: list[Crop] = field(default_factory=list)


class Perception:
    """One stream's perception state over shared detectors.

    Args:
        config: the pipeline configuration (tracker, association, crops, face schedule).
        person, face: the detectors (shared by every stream of a process).
        stream: stream id; epoch: the tracker epoch of its track keys.
        analysis_fps: rate of the frames it will see.
        snapshot: continue from :meth:`snapshot` (a restarted or taken-over stream): same
            track ids, same crop budgets.
    """

    def __init__(
        self,
        config: PipelineConfig,
        person: Detector,
        face: Detector,
        stream: str,
        epoch: int,
        analysis_fps: float,
        snapshot: dict | None = None,
    ) -> None:
        self.config = config
        self.person, self.face = person, face
        self.stream, self.epoch = stream, epoch
        self.crops = CropSelector(config.crops)
        self.face_planner = FaceScanPlanner(config.detection.face_schedule)
        self.person_planner = PersonScanPlanner(config.detection.person_schedule)
        self.seconds = {"person": 0.0, "face": 0.0}  # time spent in each detector
        self._people = np.zeros((0, 4), np.float32)  # boxes of the people tracked in the last frame
        self._spans: dict[str, TrackSpan] = {}  # open tracks
        self._last_face: dict[str, np.ndarray] = {}  # open track -> its last seen face box
        self._prev_faces = np.zeros((0, 4), np.float32)  # every face of the previous frame
        if snapshot is None:
            tc = config.tracker.model_dump(exclude={"type"})
            self.tracker = ByteTrackTracker(ByteTrackConfig(**tc), frame_rate=analysis_fps)
        else:
            self._restore(snapshot)

    @property
    def open_tracks(self) -> list[TrackSpan]:
        return list(self._spans.values())

    def process(self, frames: list[Frame]) -> PerceptionBatch:
        """Analyse a batch of consecutive frames of this stream."""
        t0 = time.perf_counter()
        persons = self._detect_persons(frames)
        t1 = time.perf_counter()
        faces = self._detect_faces(frames, persons)
        self.seconds["person"] += t1 - t0
        self.seconds["face"] += time.perf_counter() - t1
        batch = PerceptionBatch()
        for frame, p, f in zip(frames, persons, faces):
            batch.results.append(self._track_frame(frame, p, f, batch))
        return batch

    def finish(self) -> PerceptionBatch:
        """End every open track (end of the source, or a stop): their events and last crops."""
        batch = PerceptionBatch()
        for key in sorted(self._spans):
            self._end(key, batch)
        return batch

    def set_needs(self, key: str, needs: frozenset[str]) -> None:
        """The fields the track book is still unsure of for this track (the request policy
        asks again only for those; empty: settled)."""
        self.crops.set_needs(key, needs)

    def _detect_persons(self, frames: list[Frame]) -> list[Detections]:
        """Tiled scans on the frames the planner picks; the others, the full frame and windows
        around the small people tracked at the start of the batch (one batched call)."""
        images = [f.image for f in frames]
        if not hasattr(self.person, "detect_windows"):
            return self.person.detect(images)
        plans = [self.person_planner.windows(f.pts, self._people, *f.size) for f in frames]
        return self.person.detect_windows(images, plans)

    def _detect_faces(self, frames: list[Frame], persons: list[Detections]) -> list[Detections]:
        """Full scans on the frames the planner picks (one batched call); the other frames,
        in order, scan only around people and around the faces of the frame before."""
        tracked = np.array(list(self._last_face.values()), np.float32).reshape(-1, 4)
        plans = [self.face_planner.regions(f.pts, p, tracked, *f.size) for f, p in zip(frames, persons)]
        full = [i for i, plan in enumerate(plans) if plan is None]
        faces: list = [None] * len(frames)
        for i, found in zip(full, self.face.detect([frames[i].image for i in full])):
            faces[i] = found
        previous = self._prev_faces
        for i, plan in enumerate(plans):
            if plan is not None:
                # faces of the frame before keep tentative (not yet confirmed) tracks going
                extra = self.face_planner.regions_around(previous, *frames[i].size)
                faces[i] = detect_in_regions(self.face, frames[i].image, np.concatenate([plan, extra]))
            previous = faces[i].xyxy
        self._prev_faces = previous
        return faces

    def _track_frame(self, frame: Frame, persons: Detections, faces: Detections, batch: PerceptionBatch) -> FrameResult:
        w, h = frame.size
        people = associate(persons, faces, w, h, self.config.association)
        boxes = np.array([p.box for p in people], np.float32).reshape(-1, 4)
        scores = np.array([p.confidence for p in people], np.float32)
        out = self.tracker.update(boxes, scores)
        seen, tracked = [], []
        for track_id, det in zip(out.track_ids, out.det_index):
            key = track_key(self.stream, self.epoch, int(track_id))
            old = self._spans.get(key)
            span = TrackSpan(key, frame.pts if old is None else old.first_seen, frame.pts, 1 if old is None else old.frames + 1)
            self._spans[key] = batch.seen[key] = span
            if old is None:
                batch.events.append(TrackEvent("start", span))
            person = people[det]
            seen.append((key, person))
            tracked.append(TrackedPerson(key, int(track_id), person.box, person.face))
            if person.face is not None:
                self._last_face[key] = person.face
        alive = {track_key(self.stream, self.epoch, i) for i in self.tracker.active_ids}
        for key in sorted(set(self._spans) - alive):
            self._end(key, batch)
        batch.crops.extend(self.crops.offer(frame.image, frame.pts, seen))
        self._people = np.array([p.box for p in tracked], np.float32).reshape(-1, 4)
        return FrameResult(frame, tracked)

    def _end(self, key: str, batch: PerceptionBatch) -> None:
        span = self._spans.pop(key)
        self._last_face.pop(key, None)
        batch.events.append(TrackEvent("end", span))
        crop = self.crops.finish(key)
        if crop is not None:
            batch.crops.append(crop)

    def snapshot(self) -> dict:
        """Everything a restarted stream needs to go on with the same track keys, as
        JSON-compatible data: tracker, crop budgets, open tracks and their last faces."""
        return {
            "version": _SNAPSHOT_VERSION,
            "stream": self.stream,
            "epoch": self.epoch,
            "tracker": self.tracker.snapshot(),
            "crops": self.crops.snapshot(),
            "spans": [[s.key, s.first_seen, s.last_seen, s.frames] for s in self._spans.values()],
            "last_face": {key: box.tolist() for key, box in self._last_face.items()},
        }

    def _restore(self, snapshot: dict) -> None:
        if snapshot.get("version") != _SNAPSHOT_VERSION or snapshot.get("stream") != self.stream:
            raise ValueError(f"not a perception snapshot of stream {self.stream!r} (version {_SNAPSHOT_VERSION})")
        self.epoch = int(snapshot["epoch"])
        self.tracker = ByteTrackTracker.restore(snapshot["tracker"])
        self.crops.restore(snapshot["crops"])
        self._spans = {key: TrackSpan(key, float(a), float(b), int(n)) for key, a, b, n in snapshot["spans"]}
        self._last_face = {key: np.asarray(box, np.float32) for key, box in snapshot["last_face"].items()}
