"""Composes the stages for one stream in one process, with no Ray.

``source -> detect -> associate -> track -> crops -> estimate -> aggregate -> store``.
The CLI's ``analyze`` and most tests run this; ``serve/`` wires the same stage objects into
Ray Serve deployments.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from ..trackers import ByteTrackConfig, ByteTrackTracker
from .aggregation import TrackAggregate, fuse, is_confident, summarize
from .association import associate
from .config import PipelineConfig
from .crops import CropSelector
from .detectors import Detector, build_detector
from .detectors.schedule import FaceScanPlanner, detect_in_regions
from .estimators import Estimator, build_estimator
from .models import ModelCache
from .sources import FrameSource
from .store import TrackRecord, TrackStore
from .types import Crop, Estimate, Frame, track_key

__all__ = ["FrameResult", "RunStats", "StageSet", "StreamAnalyzer", "analyze"]


@dataclass
class StageSet:
    """The model-backed stages, built once and shared by every stream of a process."""

    person: Detector
    face: Detector
    estimator: Estimator

    @classmethod
    def build(cls, config: PipelineConfig, models: ModelCache) -> StageSet:
        return cls(
            person=build_detector(config.detection.person, models),
            face=build_detector(config.detection.face, models),
            estimator=build_estimator(config.estimator, models),
        )

    def close(self) -> None:
        """Release what the stages hold (thread pools, HTTP clients, sessions)."""
        for stage in (self.person, self.face, self.estimator):
            close = getattr(stage, "close", None)
            if close is not None:
                close()


@dataclass(frozen=True)
class FrameResult:
    """What one analysed frame produced: ``(track key, track id, box, face box or None)``."""

    frame: Frame
    tracks: list[tuple[str, int, np.ndarray, np.ndarray | None]]


@dataclass
class RunStats:
    """Counts and seconds spent per part of the run."""

    frames_analysed: int = 0
    estimates: int = 0
    invalid: int = 0
    invalid_reasons: Counter = field(default_factory=Counter)
    seconds: dict[str, float] = field(default_factory=lambda: {"decode": 0.0, "detect": 0.0, "estimate": 0.0, "total": 0.0})

    @property
    def overhead_s(self) -> float:
        """Everything but decode and model inference."""
        s = self.seconds
        return max(0.0, s["total"] - s["decode"] - s["detect"] - s["estimate"])


@dataclass
class _Track:
    key: str
    first_seen: float
    last_seen: float
    frames: int = 0
    version: int = 0
    agg: TrackAggregate = field(default_factory=TrackAggregate)
    ended: bool = False
    events: list[str] = field(default_factory=lambda: ["start"])


class StreamAnalyzer:
    """One stream's per-stream state (tracker, crop budgets, aggregates) over shared stages.

    ``on_track_end`` is called with the final summary of each track once its end has been
    handed to the store (``tracks.jsonl`` is written from it, as tracks end).
    """

    def __init__(
        self,
        config: PipelineConfig,
        stages: StageSet,
        store: TrackStore,
        analysis_fps: float,
        stream: str | None = None,
        on_track_end: Callable[[dict], None] | None = None,
    ) -> None:
        self.config = config
        self.on_track_end = on_track_end
        self.stream = stream or config.stream
        self.stages = stages
        self.store = store
        self.epoch = store.next_epoch(self.stream)
        tc = config.tracker.model_dump(exclude={"type"})
        self.tracker = ByteTrackTracker(ByteTrackConfig(**tc), frame_rate=analysis_fps)
        self.crops = CropSelector(config.crops)
        self.face_planner = FaceScanPlanner(config.detection.face_schedule)
        self.stats = RunStats()
        self._tracks: dict[str, _Track] = {}
        self._open: set[str] = set()  # keys of tracks not yet ended
        self._ended_unwritten: set[str] = set()  # ended since the last flush
        self._last_face: dict[str, np.ndarray] = {}  # open track -> its last seen face box
        self._prev_faces = np.zeros((0, 4), np.float32)  # every face of the previous frame
        self._final_crops: list[Crop] = []  # best crops of tracks that ended before any request

    def process(self, frames: list[Frame]) -> list[FrameResult]:
        """Analyse a batch of consecutive frames of this stream."""
        t0 = time.perf_counter()
        images = [f.image for f in frames]
        persons = self.stages.person.detect(images)
        faces = self._detect_faces(frames, persons)
        self.stats.seconds["detect"] += time.perf_counter() - t0
        results, due = [], []
        for frame, p, f in zip(frames, persons, faces):
            result, crops = self._track_frame(frame, p, f)
            results.append(result)
            due.extend(crops)
        self._estimate(due)
        self._flush()
        self.stats.frames_analysed += len(frames)
        return results

    def _detect_faces(self, frames: list[Frame], persons: list) -> list:
        """Full scans on the frames the planner picks (one batched call); the other frames,
        in order, scan only around people and around the faces of the frame before."""
        tracked = np.array(list(self._last_face.values()), np.float32).reshape(-1, 4)
        plans = [self.face_planner.regions(f.pts, p, tracked, *f.size) for f, p in zip(frames, persons)]
        full = [i for i, plan in enumerate(plans) if plan is None]
        faces: list = [None] * len(frames)
        for i, found in zip(full, self.stages.face.detect([frames[i].image for i in full])):
            faces[i] = found
        previous = self._prev_faces
        for i, plan in enumerate(plans):
            if plan is not None:
                # faces of the frame before keep tentative (not yet confirmed) tracks going
                extra = self.face_planner.regions_around(previous, *frames[i].size)
                faces[i] = detect_in_regions(self.stages.face, frames[i].image, np.concatenate([plan, extra]))
            previous = faces[i].xyxy
        self._prev_faces = previous
        return faces

    def finish(self, estimate: bool = True) -> None:
        """End every open track (end of file, stop, error) and write the final state.

        ``estimate=False`` skips the estimator for the best crops of tracks that never got a
        request (when the estimator itself is what failed).
        """
        for key in sorted(self._open):
            self._end(key)
        if not estimate:
            self._final_crops = []
        self._flush()

    def summaries(self) -> list[dict]:
        """Track summaries (DESIGN.md schema), oldest first."""
        return [self._summary(t) for t in sorted(self._tracks.values(), key=lambda t: (t.first_seen, t.key))]

    def summary(self, key: str) -> dict | None:
        """The current summary of one track of this stream."""
        track = self._tracks.get(key)
        return None if track is None else self._summary(track)

    def _track_frame(self, frame: Frame, persons, faces) -> tuple[FrameResult, list[Crop]]:
        w, h = frame.size
        people = associate(persons, faces, w, h, self.config.association)
        boxes = np.array([p.box for p in people], np.float32).reshape(-1, 4)
        scores = np.array([p.confidence for p in people], np.float32)
        out = self.tracker.update(boxes, scores)
        seen = []
        for track_id, det in zip(out.track_ids, out.det_index):
            key = track_key(self.stream, self.epoch, int(track_id))
            track = self._tracks.get(key)
            if track is None:
                track = self._tracks[key] = _Track(key, frame.pts, frame.pts)
                self._open.add(key)
            track.last_seen = frame.pts
            track.frames += 1
            seen.append((key, people[det]))
            if people[det].face is not None:
                self._last_face[key] = people[det].face
        alive = {track_key(self.stream, self.epoch, i) for i in self.tracker.active_ids}
        for key in sorted(self._open - alive):
            self._end(key)
        due = self.crops.offer(frame.image, frame.pts, seen)
        tracks = [(k, int(i), p.box, p.face) for (k, p), i in zip(seen, out.track_ids)]
        return FrameResult(frame, tracks), due

    def _end(self, key: str) -> None:
        track = self._tracks[key]
        self._open.discard(key)
        self._last_face.pop(key, None)
        self._ended_unwritten.add(key)
        track.ended = True
        track.events.append("end")
        crop = self.crops.finish(key)
        if crop is not None:
            self._final_crops.append(crop)

    def _estimate(self, crops: list[Crop]) -> None:
        if not crops:
            return
        t0 = time.perf_counter()
        estimates = self.stages.estimator.estimate(crops)
        self.stats.seconds["estimate"] += time.perf_counter() - t0
        if len(estimates) != len(crops):
            raise RuntimeError(f"estimator returned {len(estimates)} estimates for {len(crops)} crops")
        for est in estimates:
            self._apply(est)

    def _apply(self, est: Estimate) -> None:
        self.stats.estimates += 1
        if not est.valid:
            self.stats.invalid += 1
            self.stats.invalid_reasons[(est.reason or "invalid").split(":")[0]] += 1
        track = self._tracks.get(est.track)
        if track is None:
            return
        track.agg = fuse(track.agg, est, self.config.aggregation, self.config.estimator.age_error_years)
        if not track.events:
            track.events.append("estimate")
        if is_confident(track.agg, self.config.aggregation):
            self.crops.mark_confident(est.track)

    def _flush(self) -> None:
        crops, self._final_crops = self._final_crops, []
        self._estimate(crops)
        records = []
        keys, self._ended_unwritten = sorted(self._open | self._ended_unwritten), set()
        for key in keys:
            track = self._tracks[key]
            track.version += 1
            summary = self._summary(track)
            records.append(TrackRecord(track.key, self.stream, track.version, summary, track.agg.to_dict(), tuple(track.events)))
            track.events = []
        self.store.put(records)
        if self.on_track_end is not None:
            for record in records:
                if record.ended and "end" in record.events:
                    self.on_track_end(record.summary)

    def _summary(self, track: _Track) -> dict:
        return {
            "track": track.key,
            "stream": self.stream,
            "first_seen": round(track.first_seen, 3),
            "last_seen": round(track.last_seen, 3),
            "frames": track.frames,
            "state": "ended" if track.ended else "active",
            **summarize(track.agg, self.config.aggregation),
        }


def analyze(
    source: FrameSource,
    analyzer: StreamAnalyzer,
    on_frame: Callable[[FrameResult], None] | None = None,
    stop: threading.Event | None = None,
) -> RunStats:
    """Run ``source`` through ``analyzer`` until it ends or ``stop`` is set; returns its stats.

    On every exit path (end, stop, an exception) the open tracks are ended and written; the
    frames of an unfinished batch are dropped when ``stop`` is set, so a stop is prompt.
    """
    start = time.perf_counter()
    failed = True
    try:
        batch: list[Frame] = []
        for frame in _timed(iter(source), analyzer.stats):
            if stop is not None and stop.is_set():
                batch = []
                break
            batch.append(frame)
            if len(batch) >= analyzer.config.detection.batch_frames:
                _emit(analyzer.process(batch), on_frame)
                batch = []
        if batch:
            _emit(analyzer.process(batch), on_frame)
        failed = False
    finally:
        try:
            analyzer.finish(estimate=not failed)
        finally:
            analyzer.stats.seconds["total"] = time.perf_counter() - start
    return analyzer.stats


def _emit(results: list[FrameResult], on_frame: Callable[[FrameResult], None] | None) -> None:
    if on_frame is not None:
        for r in results:
            on_frame(r)


def _timed(frames: Iterator[Frame], stats: RunStats) -> Iterator[Frame]:
    while True:
        t0 = time.perf_counter()
        try:
            frame = next(frames)
        except StopIteration:
            return
        finally:
            stats.seconds["decode"] += time.perf_counter() - t0
        yield frame
