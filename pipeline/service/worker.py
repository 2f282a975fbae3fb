"""A stream worker: one stream or file job on its own thread, run by perception and its
track book (see :mod:`.ingest` for who starts and stops it).

A worker never waits for estimates: it hands crop batches to ``submit`` and takes the answers
from its inbox on the next step, whenever they come. Every ``snapshot_s`` it saves its
perception state, so the replica that takes a stream over goes on with the same track keys;
tracks open in Redis that the snapshot no longer knows are ended then, so none stays
``active`` forever.

Every write of a worker (tracks, status, snapshots, a job's result) carries the ``token`` of
its claim: once another replica has claimed the stream, the store refuses them, and the worker
stops at its next control-plane write without writing anything more.
"""

from __future__ import annotations

import logging
import threading
import time

from ..config import ServeConfig
from ..detectors import Detector
from ..driver import StreamDriver, Submit
from ..errors import StoreError, TracklensError
from ..jobs import open_file
from ..perception import Perception, PerceptionBatch
from ..sources import FileSource, LiveSource
from ..store import FencedStore, TrackRecord, TrackStore
from ..summary import JobResult
from ..trackbook import TrackBook
from ..types import Crop, Estimate, FrameResult
from .control import ControlPlane, JobPosition, Owner, Snapshot, StreamSpec, StreamStatus

__all__ = ["StreamWorker", "Submit", "end_orphans"]

log = logging.getLogger(__name__)



def end_orphans(store: TrackStore, stream_id: str, keep: set[str]) -> int:
    """End the stream's tracks the store has as active, but for ``keep`` (the open tracks of
    the state its new owner carries on); returns how many were ended. ``store`` is fenced by
    the caller's claim: a stale owner's ending is refused."""
    records = []
    for summary in store.active(stream_id):
        if summary.state == "active" and summary.track not in keep:
            record = store.record(summary.track)
            if record is not None:
                ended = summary.model_copy(update={"state": "ended"})
                records.append(TrackRecord(record.key, record.stream, record.version + 1, ended, record.state, ("end",)))
    if records:
        store.put(records)
        log.info("stream %s: ended %d tracks its owner left open", stream_id, len(records))
    return len(records)


class StreamWorker:
    """One stream or job, on its own thread; see the module docstring.

    Args:
        spec: what to run.
        config: the service configuration.
        person, face: detectors shared by the process's streams.
        store: the track store; control: the control plane.
        submit: how crops get estimated.
        owner: this process (in statuses).
        estimators: ``mllm+specialist`` or ``specialist only``, for the status.
        token: the claim this worker runs under (:meth:`ControlPlane.claim`).
    """

    def __init__(
        self,
        spec: StreamSpec,
        config: ServeConfig,
        detectors: tuple[Detector, Detector],
        store: TrackStore,
        control: ControlPlane,
        submit: Submit,
        owner: Owner,
        estimators: str,
        token: int,
    ) -> None:
        self.spec, self.config = spec, config
        self.person, self.face = detectors
        self.token = token
        self.store = FencedStore(store, control.fence(spec.id, token))
        self.control, self.submit = control, submit
        self.owner, self.estimators = owner, estimators
        self.finished = threading.Event()
        self._mode: str | None = None  # "end" (deleted), "handover" (lease lost, shutdown), "fenced" (another owner has it)
        self._source = None
        self._status = StreamStatus(id=spec.id, kind=spec.kind, generation=spec.generation, state="connecting", owner=owner,
                                    estimators=estimators)  # fmt: skip
        self._thread = threading.Thread(target=self._main, name=f"ingest-{spec.id}", daemon=True)
        self._recent: list[tuple[float, int]] = []  # (time, frames analysed) for the fps figure
        self.driver: StreamDriver | None = None
        self._control_down = False
        self._renderer = None  # the preview renderer, made when someone first watches
        self._next_preview = self._next_status = self._next_snapshot = 0.0
        self._stopping = threading.Event()  # set with _mode: the driver's loop ends
        self._started = time.monotonic()
        self._job = JobPosition()  # a file job: where it starts (after its snapshot's frame when taken over)
        self._last_frame = -1  # the index of the last frame analysed

    def start(self) -> StreamWorker:
        self._thread.start()
        return self

    def stop(self, mode: str) -> None:
        """``end``: end every track and write them (the stream was deleted, or the job
        cancelled); ``handover``: save the state and leave the tracks to the next owner."""
        self._halt(self._mode or mode)

    def _halt(self, mode: str) -> None:
        self._mode = mode
        self._stopping.set()
        source = self._source
        if source is not None:  # a live source blocked on its camera, a file skipping to its snapshot's frame
            source.stop()

    def join(self, timeout_s: float | None = None) -> None:
        self._thread.join(timeout_s)

    # -- the thread ---------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            self._run()
        except (TracklensError, OSError) as err:
            self._fail(str(err))
        except Exception as err:  # a bug: the stream says so instead of hanging silently
            log.exception("stream %s failed", self.spec.id)
            self._fail(f"internal error: {type(err).__name__}: {err}")
        finally:
            if self._source is not None:
                self._source.close()
            self.finished.set()

    def _fail(self, error: str) -> None:
        log.warning("stream %s failed: %s", self.spec.id, error)
        self._status = self._status.model_copy(update={"state": "failed", "last_error": error, "updated_at": time.time()})
        try:
            if self.spec.kind == "job":
                result = self._result("failed", error)
                self.control.finish_job(self.spec.id, result, self._status, self.config.store.ended_ttl_s, self.token)
            else:
                self.control.publish(self._status, None, self.token)
        except StoreError as err:
            log.warning("stream %s: could not record the failure: %s", self.spec.id, err)

    def _open(self, fps: float | None):
        if self.spec.kind == "job":  # the CLI's way into a file; after the saved frame for a job taken over
            source, expected = open_file(self.spec.url, self.spec.id, fps, skip_through=self._job.frame)
            self._status = self._status.model_copy(update={"state": "running", "frames_expected": expected})
            return source
        return LiveSource(self.spec.url, stream=self.spec.id, fps=fps, config=self.config.source.live)

    def _run(self) -> None:
        cfg = self.config
        saved = self.control.load_snapshot(self.spec.id, self.spec.generation)
        if saved is not None and self.spec.kind == "job":
            if saved.job is None:  # it does not say where in the file it was (an older tracklens): start afresh
                saved = None
            else:
                self._job = saved.job
                self._status = self._status.model_copy(update={"frames_analysed": saved.job.frames_analysed})
        self._source = source = self._open(self.spec.options.fps or cfg.source.fps)
        if self._stopping.is_set():  # stopped while it opened
            source.stop()
        snapshot = None if saved is None else saved.state
        epoch = int(snapshot["epoch"]) if snapshot else self.store.next_epoch(self.spec.id)
        perception = Perception(cfg, self.person, self.face, self.spec.id, epoch, source.analysis_fps, snapshot=snapshot)
        book = TrackBook(self.spec.id, cfg.aggregation, self.store, end_grace_s=cfg.ingest.end_grace_s)
        if snapshot is not None:
            book.resume(perception.open_tracks)
            log.info("stream %s: taken over from its snapshot (%d open tracks)", self.spec.id, len(perception.open_tracks))
        # tracks left open by an owner that died (after its snapshot, or of an older generation
        # of this id that was deleted and added again): nobody else will end them
        end_orphans(self.store, self.spec.id, {span.key for span in perception.open_tracks})
        faces = self._keep_faces if cfg.ingest.store_face_crops else None
        # frame -> estimate latency is measurable when frame times are wall-clock seconds
        latency = self._latencies if source.time_base == "wall" else None
        self.driver = StreamDriver(perception, book, self.submit, on_requested=faces, on_applied=latency)
        self.driver.tracks_ended = self._job.tracks_ended  # a job taken over: its tallies so far
        self.driver.answered.update(self._job.answered)
        self.driver.invalid.update(self._job.invalid)
        self._publish()  # running (a job taken over may first skip a long stretch of its file)
        self.driver.run(source, cfg.detection.batch_frames, self._stopping, self._tick)
        if self._mode == "fenced":
            log.warning("stream %s: another replica has claimed it; this worker stops without writing more", self.spec.id)
            return
        if self._mode == "handover":
            self.driver.settle()
            self._save_snapshot()
            return
        self._end_all()
        if self.spec.kind == "job":
            state = "cancelled" if self._mode == "end" else "failed" if source.error else "done"
            self._status = self._status.model_copy(update={"state": state, "progress": 1.0 if state == "done" else None,
                                                           "last_error": source.error, "updated_at": time.time()})  # fmt: skip
            result = self._result(state, source.error)
            self._quietly(self.control.finish_job, self.spec.id, result, self._status, cfg.store.ended_ttl_s, self.token)
        elif self._mode is None:  # the live source gave up
            self._fail(source.error or "the stream ended")

    def _tick(self, batch: PerceptionBatch | None) -> None:
        """After each step of the driver: count, preview, and now and then publish the status
        and save the snapshot."""
        if batch is not None and batch.results:
            self._count(len(batch.results))
            self._last_frame = batch.results[-1].frame.index
            self._preview(batch.results[-1])
        now = time.monotonic()
        if now >= self._next_status:
            self._publish()
            self._next_status = now + self.config.ingest.status_s
        if now >= self._next_snapshot:
            self._save_snapshot()
            self._next_snapshot = now + self.config.ingest.snapshot_s

    def _latencies(self, estimates: list[Estimate]) -> None:
        """Frame -> estimate latencies of a live stream, once the estimates are applied."""
        self._quietly(self.control.observe_latencies, [time.time() - e.time for e in estimates])

    def _end_all(self) -> None:
        """End every open track, wait (up to ``end_grace_s``) for outstanding estimates, write."""
        self.driver.finish(grace_s=self.config.ingest.end_grace_s)
        self._publish(state="stopped" if self.spec.kind == "stream" else None)

    def _preview(self, result: FrameResult) -> None:
        """While someone watches the stream (asked within ``preview_watch_s``), render its latest
        analysed frame as a preview, at most ``preview_fps`` times a second; otherwise nothing
        is drawn, encoded or stored (one Redis read per period asks whether anyone watches)."""
        cfg = self.config.ingest
        now = time.monotonic()
        if not cfg.previews or self.spec.kind != "stream" or now < self._next_preview:
            return
        self._next_preview = now + 1.0 / cfg.preview_fps
        try:
            if not self.control.watched(self.spec.id):
                return
        except StoreError:
            return  # Redis is away: the status writes say so; no preview meanwhile
        try:
            if self._renderer is None:
                from ..preview import PreviewRenderer

                self._renderer = PreviewRenderer(self.driver.book.summary, cfg.preview_width_px)
            jpeg = self._renderer.render(result)
        except Exception:  # a bug in drawing must not stop the analysis: the stream goes on without previews
            log.exception("stream %s: rendering a preview failed; previews are off for this stream", self.spec.id)
            self._next_preview = float("inf")
            return
        self._quietly(self.control.save_preview, self.spec.id, jpeg, cfg.preview_watch_s, self.token)

    def _keep_faces(self, crops: list[Crop]) -> None:
        import cv2

        for crop in crops:
            if crop.face is not None:
                ok, jpeg = cv2.imencode(".jpg", crop.face[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
                if ok:
                    self._quietly(self.control.save_face, crop.track, jpeg.tobytes(), self.config.store.ended_ttl_s)

    # -- status ---------------------------------------------------------------------------------

    def _count(self, n: int) -> None:
        now = time.monotonic()
        total = self._status.frames_analysed + n
        self._recent = [(t, f) for t, f in self._recent if now - t <= 5.0] + [(now, total)]
        self._status = self._status.model_copy(update={"frames_analysed": total})

    def _publish(self, state: str | None = None) -> None:
        status = self._status
        update: dict = {"updated_at": time.time(), "tracks_active": 0 if self.driver is None else len(self.driver.book)}
        if len(self._recent) >= 2:
            (t0, f0), (t1, f1) = self._recent[0], self._recent[-1]
            update["fps"] = round((f1 - f0) / (t1 - t0), 2) if t1 > t0 else 0.0
        source = self._source
        if isinstance(source, LiveSource):
            live = source.stats
            update.update(state=live.state, frames_decoded=live.frames_decoded, frames_dropped=live.frames_dropped,
                          queued_frames=source.queued, reconnects=live.reconnects, last_error=live.last_error)  # fmt: skip
        elif isinstance(source, FileSource):
            update["frames_decoded"] = source.decoded
            if status.frames_expected:
                update["progress"] = round(min(1.0, status.frames_analysed / status.frames_expected), 3)
        if state is not None:
            update["state"] = state
        self._status = status.model_copy(update=update)
        self._quietly(self.control.publish, self._status, 3 * self.config.ingest.lease_s, self.token)

    def _seconds(self) -> float:
        """How long the job has run, under every owner."""
        return self._job.seconds + time.monotonic() - self._started

    def _result(self, state: str, error: str | None) -> JobResult:
        """The job's result: its driver's tallies, or those of its earlier owners when it
        failed before its driver started."""
        tallies = self.driver if self.driver is not None else self._job
        return JobResult.of(tallies, state, self._status.frames_analysed, self._seconds(), error=error)

    def _save_snapshot(self) -> None:
        job = None
        if self.spec.kind == "job":
            driver = self.driver
            job = JobPosition(frame=max(self._last_frame, self._job.frame), frames_analysed=self._status.frames_analysed,
                              tracks_ended=driver.tracks_ended, answered=dict(driver.answered), invalid=dict(driver.invalid),
                              seconds=round(self._seconds(), 2))  # fmt: skip
        snapshot = Snapshot(generation=self.spec.generation, token=self.token, state=self.driver.perception.snapshot(), job=job)
        self._quietly(self.control.save_snapshot, self.spec.id, snapshot)

    def _quietly(self, call, *args) -> None:
        """A control-plane write (status, snapshot, result, metrics) that may fail while Redis
        is down: the stream goes on (its track writes are buffered by the store) and the next
        period writes again; the outage is logged once. A fenced write that was refused
        (``False``: another replica has claimed the stream) stops the worker."""
        try:
            written = call(*args)
        except StoreError as err:
            if not self._control_down:
                log.warning("stream %s: %s; status and snapshots wait for Redis", self.spec.id, err)
            self._control_down = True
        else:
            self._control_down = False
            if written is False:
                self._halt("fenced")
