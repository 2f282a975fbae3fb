"""A stream in one process, with no Ray: the stream driver (:mod:`.driver`) with the estimator
called in line, and the run loop over a source.

``source -> [perception: detect -> associate -> track -> crops] -> estimate -> [track book:
fuse -> version -> store]``. The CLI's ``analyze``, the bench and most tests run this;
``serve/`` runs the same driver with the estimators in replica pools.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from .config import PipelineConfig
from .detectors import Detector, build_detector
from .driver import InlineEstimates, StreamDriver
from .estimators import Estimator, build_estimator
from .models import ModelCache
from .perception import Perception
from .sources import FrameSource
from .store import TrackStore
from .summary import TrackSummary
from .trackbook import TrackBook
from .types import Estimate, Frame, FrameResult

__all__ = ["RunStats", "StageSet", "StopFlag", "StreamAnalyzer", "analyze"]


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


@dataclass
class RunStats:
    """Counts and seconds spent per part of the run."""

    frames_analysed: int = 0
    estimates: int = 0
    invalid: int = 0
    invalid_reasons: Counter = field(default_factory=Counter)
    by_source: Counter = field(default_factory=Counter)
    seconds: dict[str, float] = field(
        default_factory=lambda: {"decode": 0.0, "person": 0.0, "face": 0.0, "estimate": 0.0, "total": 0.0}
    )

    @property
    def overhead_s(self) -> float:
        """Everything but decode and model inference (association, tracking, crops, fusion, store)."""
        s = self.seconds
        return max(0.0, s["total"] - s["decode"] - s["person"] - s["face"] - s["estimate"])

    def count(self, estimates: list[Estimate]) -> None:
        for est in estimates:
            self.estimates += 1
            self.by_source[est.source] += 1
            if not est.valid:
                self.invalid += 1
                self.invalid_reasons[(est.reason or "invalid").split(":")[0]] += 1


class StreamAnalyzer:
    """One stream in one process: the :class:`~.driver.StreamDriver` with the estimator called
    in line, and the run's stats.

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
        on_track_end: Callable[[TrackSummary], None] | None = None,
    ) -> None:
        self.config = config
        self.stream = stream or config.stream
        self.stats = RunStats()
        perception = Perception(config, stages.person, stages.face, self.stream, store.next_epoch(self.stream), analysis_fps)
        book = TrackBook(self.stream, config.aggregation, store, on_track_end=on_track_end)
        self.driver = StreamDriver(perception, book, InlineEstimates(stages.estimator.estimate, self._counted))

    @property
    def epoch(self) -> int:
        return self.driver.perception.epoch

    def process(self, frames: list[Frame]) -> list[FrameResult]:
        """Analyse a batch of consecutive frames of this stream."""
        batch = self.driver.step(frames)
        self.stats.seconds.update(self.driver.perception.seconds)
        self.stats.frames_analysed += len(frames)
        return batch.results

    def finish(self, estimate: bool = True) -> None:
        """End every open track (end of the source, a stop, an error) and write them all.

        ``estimate=False`` skips the estimator for the best crops of tracks that never got a
        request (when the estimator itself is what failed).
        """
        self.driver.finish(estimate=estimate)

    def summary(self, key: str) -> TrackSummary | None:
        """The current summary of an open track of this stream."""
        return self.driver.book.summary(key)

    def _counted(self, estimates: list[Estimate], seconds: float) -> None:
        self.stats.seconds["estimate"] += seconds
        self.stats.count(estimates)


class StopFlag(Protocol):
    """Anything with ``is_set()``: a ``threading.Event``, or several combined."""

    def is_set(self) -> bool: ...


def analyze(
    source: FrameSource,
    analyzer: StreamAnalyzer,
    on_frame: Callable[[FrameResult], None] | None = None,
    stop: StopFlag | None = None,
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
