"""One analysis of one video, start to end, and how it ended: every front-end runs this.

A :class:`~.summary.JobResult` is how any analysis of a video ended: the CLI's ``analyze``
reports one, and a file job of the service records one (``GET /v1/jobs/{id}``). A video file is
opened for either by :func:`open_file` (probed first, so its length gives the progress; a job taken over
goes on after the last frame its snapshot saw), and fed to the stream driver by
:meth:`~.driver.StreamDriver.run`, as a live stream is.

:class:`Analysis` (the CLI's run) checks everything it can before the first frame (output
paths writable and not the input, the video readable or the live stream reachable, the store
reachable, the models and the MLLM endpoint usable) and raises a
:class:`~.errors.TracklensError` naming the problem. :meth:`Analysis.run` then analyses, and on
every exit path (end of file, a file that breaks off, a live stream that gives up, a stop
request, an output error, a bug) ends the open tracks, writes them, finalises the annotated
video and delivers the store's buffered writes or counts them. Presentation (progress bars,
tables, exit statuses) belongs to the front-end.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from .config import PipelineConfig
from .errors import OutputError
from .models import ModelCache
from .outputs import OutputLock, TrackLog, check_output_folder, check_video_output
from .runner import StageSet, StreamAnalyzer, analyze
from .sources import FileSource, file_path, is_live, open_source, probe
from .store import BufferedTrackStore, build_store
from .summary import JobResult, TrackSummary
from .types import FrameResult
from .urls import redact_url

__all__ = ["Analysis", "JobResult", "open_file"]


def open_file(video: str | Path, stream: str, fps: float | None, skip_through: int = -1) -> tuple[FileSource, int | None]:
    """A video file opened for analysis, and the frames it should give (None: its length is
    unknown). ``skip_through``: the index of the last frame already analysed (a job taken
    over); the frames up to it are decoded, not handed on.

    Raises:
        InputError: the file is missing or cannot be read as a video.
    """
    path = file_path(video)
    duration = probe(path).get("duration_s")
    source = FileSource(path, stream=stream, fps=fps, skip_through=skip_through)
    return source, int(duration * source.analysis_fps) if duration else None


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
        self.store_url = redact_url(config.store.url) if config.store.type == "redis" else None
        self.expected_frames: int | None = None
        self._opened: list = []
        try:
            if not self.live:  # a file that cannot be read is refused before any model loads
                self.source, self.expected_frames = open_file(inputs[0], config.stream, config.source.fps)
                self._own(self.source)
            self.store = self._own(build_store(config.store))
            self.stages = self._own(StageSet.build(config, models or ModelCache()))
            if self.live:
                self.source = self._own(open_source(video, stream=config.stream, fps=config.source.fps, live=config.source.live))
            # Last, so a run refused for any other reason leaves the folder as it was; first in
            # line, so it is let go only after everything else has closed.
            self._opened.insert(0, OutputLock(self.tracks_path.parent))
        except BaseException:
            self.close()
            raise

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
        halt = threading.Event()
        log = TrackLog(self.tracks_path)
        summaries: list[TrackSummary] = []
        output_error: list[str] = []  # the first one stops the run

        def guard(action: Callable):
            """Run an output action; an :class:`OutputError` is recorded (the first one) and
            stops the run instead of unwinding through the analysis."""
            try:
                return action()
            except OutputError as err:
                output_error.append(str(err))
                halt.set()
                return None

        def track_ended(summary: TrackSummary) -> None:
            summaries.append(summary)
            guard(lambda: log.write(summary))

        analyzer = StreamAnalyzer(
            self.config, self.stages, self.store, self.source.analysis_fps, self.config.stream, on_track_end=track_ended
        )
        annotator = None
        try:
            if self.annotate is not None:
                from .annotate import Annotator

                annotator = Annotator(self.annotate, self.source.analysis_fps, analyzer.summary)

            def frame_done(frame: FrameResult) -> None:
                if annotator is not None:
                    guard(lambda: annotator(frame))
                if on_frame is not None:
                    on_frame(frame)

            analyze(self.source, analyzer, frame_done, stop=_EitherSet(stop, halt))
        finally:
            outputs: dict = {"recovered_partial": log.recovered, "summaries": summaries}
            if annotator is not None:
                outputs["annotated"] = guard(annotator.close)
            outputs["tracks_path"] = guard(log.commit)
            if outputs["tracks_path"] is None:
                outputs["tracks_kept"] = log.kept
                output_error[:1] = [f"{output_error[0] if output_error else None}; {log.kept_note()}"]
            self.close()
            if isinstance(self.store, BufferedTrackStore) and self.store.undelivered:
                outputs.update(store_undelivered=self.store.undelivered, store_error=self.store.stats.last_error)
            error = getattr(self.source, "error", None)
            stopped = stop is not None and stop.is_set()
            state = "stopped" if stopped else "failed" if error or output_error else "done"
            result = JobResult.of(analyzer.driver, state, analyzer.stats.frames_analysed, analyzer.stats.seconds["total"],
                                  error=error, output_error=output_error[0] if output_error else None, **outputs)  # fmt: skip
        return result

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
