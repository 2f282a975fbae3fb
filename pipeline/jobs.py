"""One analysis of one source, start to end: the run loop that every front-end calls.

:class:`Analysis` checks everything it can before the first frame (output paths writable
and not the input, the video readable or the live stream reachable, the store reachable,
the models and the MLLM endpoint usable) and raises a :class:`~.errors.TracklensError`
naming the problem. :meth:`Analysis.run` then analyses, and on every exit path (end of
file, a file that breaks off, a live stream that gives up, a stop request, an output error,
a bug) ends the open tracks, writes them, finalises the annotated video and delivers the
store's buffered writes or counts them. Presentation (progress bars, tables, exit statuses)
belongs to the front-end.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .config import PipelineConfig
from .errors import OutputError
from .models import ModelCache
from .outputs import OutputLock, TrackLog, check_output_folder, check_video_output
from .runner import RunStats, StageSet, StreamAnalyzer, analyze
from .sources import file_path, is_live, open_source, probe
from .store import BufferedTrackStore, build_store
from .summary import TrackSummary
from .types import FrameResult
from .urls import redact_url

__all__ = ["Analysis", "JobResult"]


@dataclass
class JobResult:
    """What a run produced and what went wrong on the way (None / 0 when nothing did).

    Attributes:
        tracks: final summaries of the tracks, in the order they ended (as in tracks.jsonl).
        tracks_path: tracks.jsonl once it was made final (None when a write failed: the
            older tracks.jsonl, if any, was left in place).
        tracks_kept: after a failed write, the ``.partial`` holding the tracks written
            before it (None when there were none).
        annotated: the annotated video once it was finalised.
        stopped: the run was stopped by a request (signal) before the end of the video.
        source_error: the video broke off or ended short of its declared length, or the
            live stream gave up.
        output_error: an output could not be written; the run stopped there.
        store_undelivered: tracks whose latest state never reached the store.
        store_error: the store's last error, when some writes did not reach it.
        recovered_partial: an earlier run's unfinished tracks.jsonl, kept under this name.
    """

    stats: RunStats
    tracks: list[TrackSummary] = field(default_factory=list)
    tracks_path: Path | None = None
    tracks_kept: Path | None = None
    annotated: Path | None = None
    stopped: bool = False
    source_error: str | None = None
    output_error: str | None = None
    store_undelivered: int = 0
    store_error: str | None = None
    recovered_partial: Path | None = None

    @property
    def backend_failures(self) -> int:
        """Estimates that failed because the estimator's backend did (not refusals)."""
        return self.stats.invalid_reasons.get("backend error", 0)


class _EitherSet:
    """``is_set()`` of several events, so a run stops on a request or on its own failure."""

    def __init__(self, *events: threading.Event | None) -> None:
        self._events = [e for e in events if e is not None]

    def is_set(self) -> bool:
        return any(e.is_set() for e in self._events)


class Analysis:
    """Analysis of one video file or live stream into ``out_dir/tracks.jsonl`` (and the
    configured store). A live stream runs until it is stopped or gives up.

    Once built, it holds ``out_dir`` (:class:`~.outputs.OutputLock`) until :meth:`close`
    (the end of :meth:`run`): a second analysis into the same folder is refused.

    Args:
        video: path, ``file://`` URI, or a live stream URL (``rtsp://``...).
        config: the pipeline configuration (stream id, store, models...).
        out_dir: folder for tracks.jsonl.
        annotate: also write an annotated video here.
        models: the model cache (default: ``$TRACKLENS_HOME``).

    Raises:
        TracklensError: on construction, for anything that can be known before the first frame.
    """

    def __init__(
        self,
        video: str | Path,
        config: PipelineConfig,
        out_dir: Path,
        annotate: Path | None = None,
        models: ModelCache | None = None,
    ) -> None:
        self.config = config
        self.live = is_live(video)
        self.shown = redact_url(str(video))
        inputs = () if self.live else (file_path(video),)
        self.tracks_path = check_output_folder(Path(out_dir), "tracks.jsonl", inputs=inputs)
        self.annotate = check_video_output(Path(annotate), inputs=(*inputs, self.tracks_path)) if annotate else None
        self.info = {} if self.live else probe(inputs[0])
        self.store_url = redact_url(config.store.url) if config.store.type == "redis" else None
        self._opened: list = []
        try:
            self.store = self._own(build_store(config.store))
            self.stages = self._own(StageSet.build(config, models or ModelCache()))
            self.source = self._own(open_source(video, stream=config.stream, fps=config.source.fps, live=config.source.live))
            # Last, so a run refused for any other reason leaves the folder as it was; first in
            # line, so it is let go only after everything else has closed.
            self._opened.insert(0, OutputLock(self.tracks_path.parent))
        except BaseException:
            self.close()
            raise
        duration = self.info.get("duration_s")
        self.expected_frames = int(duration * self.source.analysis_fps) if duration else None

    def _own(self, resource):
        self._opened.append(resource)
        return resource

    def run(
        self, stop: threading.Event | None = None, on_frame: Callable[[FrameResult], None] | None = None
    ) -> JobResult:
        """Analyse the video until it ends or ``stop`` is set; then write and close everything.

        Output errors stop the run and are reported in the result; anything unexpected is
        re-raised after the outputs were written.
        """
        halt, finished = threading.Event(), threading.Event()
        log = TrackLog(self.tracks_path)
        result = JobResult(stats=RunStats(), recovered_partial=log.recovered)

        def track_ended(summary: TrackSummary) -> None:
            result.tracks.append(summary)
            self._guard(lambda: log.write(summary), result, halt)

        analyzer = StreamAnalyzer(
            self.config, self.stages, self.store, self.source.analysis_fps, self.config.stream, on_track_end=track_ended
        )
        result.stats = analyzer.stats
        annotator = None
        try:
            if self.annotate is not None:
                from .annotate import Annotator

                annotator = Annotator(self.annotate, self.source.analysis_fps, analyzer.summary)

            def frame_done(frame: FrameResult) -> None:
                if annotator is not None:
                    self._guard(lambda: annotator(frame), result, halt)
                if on_frame is not None:
                    on_frame(frame)

            either = _EitherSet(stop, halt)
            if self.live:  # a live source blocks while it reconnects: a stop must wake it
                threading.Thread(target=self._stop_when, args=(either, finished), daemon=True).start()
            analyze(self.source, analyzer, frame_done, stop=either)
        finally:
            finished.set()
            result.stopped = bool(stop is not None and stop.is_set())
            result.source_error = getattr(self.source, "error", None)
            if annotator is not None:
                result.annotated = self._guard(annotator.close, result, halt)
            result.tracks_path = self._guard(log.commit, result, halt)
            if result.tracks_path is None:
                result.tracks_kept = log.kept
                result.output_error = f"{result.output_error}; {log.kept_note()}"
            self.close()
            if isinstance(self.store, BufferedTrackStore):
                result.store_undelivered = self.store.undelivered
                result.store_error = self.store.stats.last_error if self.store.undelivered else None
        return result

    def _stop_when(self, stop: _EitherSet, done: threading.Event) -> None:
        while not done.wait(0.2):
            if stop.is_set():
                self.source.stop()
                return

    @staticmethod
    def _guard(action: Callable, result: JobResult, halt: threading.Event):
        """Run an output action; an :class:`OutputError` is recorded (the first one) and
        stops the run instead of unwinding through the analysis."""
        try:
            return action()
        except OutputError as err:
            result.output_error = result.output_error or str(err)
            halt.set()
            return None

    def close(self) -> None:
        """Close what was opened, newest first (the store next to last: it delivers buffered
        writes; the output folder's lock last); a resource that fails to close does not keep
        the others open."""
        failure = None
        while self._opened:
            try:
                self._opened.pop().close()
            except Exception as err:  # re-raised below, once everything else is closed
                failure = failure or err
        if failure is not None:
            raise failure
