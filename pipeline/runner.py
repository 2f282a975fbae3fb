"""A stream in one process, with no Ray: the stream driver (:mod:`.driver`) with the estimator
called in line, its stats, and :func:`analyze`, a source run through it to the end.

``source -> [perception: detect -> associate -> track -> crops] -> estimate -> [track book:
fuse -> version -> store]``. The CLI's ``analyze``, the bench and most tests run this;
``serve/`` runs the same driver with the estimators in replica pools.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .config import PipelineConfig
from .detectors import Detector, build_detector
from .driver import InlineEstimates, StopFlag, StreamDriver
from .estimators import Estimator, build_estimator
from .models import ModelCache
from .perception import Perception, PerceptionBatch
from .sources import FrameSource
from .store import TrackStore
from .summary import TrackSummary
from .trackbook import TrackBook
from .types import Estimate, Frame, FrameResult

__all__ = ["RunStats", "StageSet", "StreamAnalyzer", "analyze"]


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
    """Frames analysed and seconds spent per part of the run."""

    frames_analysed: int = 0
    seconds: dict[str, float] = field(
        default_factory=lambda: {"decode": 0.0, "person": 0.0, "face": 0.0, "estimate": 0.0, "total": 0.0}
    )

    @property
    def overhead_s(self) -> float:
        """Everything but decode and model inference (association, tracking, crops, fusion, store)."""
        s = self.seconds
        return max(0.0, s["total"] - s["decode"] - s["person"] - s["face"] - s["estimate"])


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
        self.driver = StreamDriver(perception, book, InlineEstimates(stages.estimator.estimate, self._timed))

    @property
    def epoch(self) -> int:
        return self.driver.perception.epoch

    def process(self, frames: list[Frame]) -> list[FrameResult]:
        """Analyse a batch of consecutive frames of this stream."""
        batch = self.driver.step(frames)
        self.counted(batch)
        return batch.results

    def counted(self, batch: PerceptionBatch | None) -> None:
        """Count a step of the driver in the stats."""
        self.stats.seconds.update(self.driver.perception.seconds)
        self.stats.frames_analysed += 0 if batch is None else len(batch.results)

    def finish(self, estimate: bool = True) -> None:
        """End every open track (end of the source, a stop, an error) and write them all.

        ``estimate=False`` skips the estimator for the best crops of tracks that never got a
        request (when the estimator itself is what failed).
        """
        self.driver.finish(estimate=estimate)

    def summary(self, key: str) -> TrackSummary | None:
        """The current summary of an open track of this stream."""
        return self.driver.book.summary(key)

    def _timed(self, estimates: list[Estimate], seconds: float) -> None:
        self.stats.seconds["estimate"] += seconds


class _Never:
    def is_set(self) -> bool:
        return False


def analyze(
    source: FrameSource,
    analyzer: StreamAnalyzer,
    on_frame: Callable[[FrameResult], None] | None = None,
    stop: StopFlag | None = None,
) -> bool:
    """Run ``source`` through ``analyzer`` (:meth:`StreamDriver.run`) until it ends (True) or
    ``stop`` is set (False); its stats are in ``analyzer.stats``.

    On every exit path (end, stop, an exception) the open tracks are ended and written; the
    frames of an unfinished batch are dropped when ``stop`` is set, so a stop is prompt.
    """
    start = time.perf_counter()
    failed = True

    def on_batch(batch: PerceptionBatch | None) -> None:
        analyzer.counted(batch)
        if on_frame is not None and batch is not None:
            for result in batch.results:
                on_frame(result)

    try:
        ended = analyzer.driver.run(source, analyzer.config.detection.batch_frames, stop or _Never(), on_batch)
        failed = False
    finally:
        try:
            analyzer.finish(estimate=not failed)
        finally:
            analyzer.stats.seconds["total"] = time.perf_counter() - start
            analyzer.stats.seconds["decode"] = getattr(source, "decode_s", 0.0)
    return ended
