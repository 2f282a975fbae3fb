"""Ingest: the streams one process owns, each run by a :class:`.worker.StreamWorker`.

:class:`IngestNode` holds leases on up to ``max_streams`` of the desired streams and jobs in
the control plane, renews them, starts a worker for each stream it claims, and stops the
worker of a stream that was deleted or replaced by a new generation (which ends its tracks)
or whose lease it lost (which leaves them to the new owner). A lease that lapsed while Redis
was out of reach is renewed in place when nobody claimed the stream meanwhile (its token is
still the latest), so a Redis outage longer than a lease does not restart every stream.
"""

from __future__ import annotations

import logging
import math
import random
import threading
from collections.abc import Callable

from ..config import ServeConfig
from ..detectors import release_memory
from ..errors import StoreError
from ..store import FencedStore, TrackStore
from .control import ControlPlane, Owner
from .worker import StreamWorker, Submit, end_orphans

__all__ = ["IngestNode"]

log = logging.getLogger(__name__)


class IngestNode:
    """The streams of one process: claims, renewals, workers; see the module docstring.

    Args:
        config: the service configuration.
        detectors: ``(person, face)`` shared by every stream of the process.
        store, control: the track store and the control plane.
        submit: how crops get estimated.
        owner: this process, in statuses (its ``id`` in leases and heartbeats).
        estimators: ``mllm+specialist`` or ``specialist only``.
        after_tick: called after each round of the lease loop (the service publishes its
            routing counters there).
    """

    def __init__(self, config: ServeConfig, detectors, store: TrackStore, control: ControlPlane, submit: Submit,
                 owner: Owner, estimators: str, after_tick: Callable[[], None] | None = None) -> None:  # fmt: skip
        self.config, self.detectors = config, detectors
        self.store, self.control, self.submit = store, control, submit
        self.owner, self.estimators = owner, estimators
        self.after_tick = after_tick
        self.workers: dict[str, StreamWorker] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ingest-leases", daemon=True)

    def start(self) -> IngestNode:
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
                if self.after_tick is not None:
                    self.after_tick()
            except StoreError as err:
                log.warning("ingest %s: %s; retrying", self.owner, err)
            except Exception:
                log.exception("ingest %s: lease loop error", self.owner)
            self._stop.wait(self.config.ingest.renew_s * (0.8 + 0.4 * random.random()))

    def tick(self) -> None:
        """One round: drop finished workers, stop deleted streams (or those deleted and added
        again: another generation) and lost leases, renew the rest, claim free streams while
        this replica runs fewer than its share (the desired streams over the live replicas,
        at most ``max_streams``), so streams spread over the replicas' processes and cores."""
        cfg = self.config.ingest
        alive = self.control.heartbeat(self.owner.id, cfg.lease_s)
        specs = self.control.specs()
        for stream_id, worker in list(self.workers.items()):
            spec = specs.get(stream_id)
            if spec is None or spec.generation != worker.spec.generation:
                if worker.finished.is_set():  # its end is written (deleted, cancelled, or a job that completed)
                    del self.workers[stream_id]
                    if worker.spec.kind == "stream":
                        self.control.forget(stream_id, worker.token)
                    else:
                        self.control.release(stream_id, worker.token)
                    release_memory(self.detectors)  # the arenas grown for it, and its frames' heap pages, go back
                else:
                    worker.stop("end")
            elif not self.control.renew(stream_id, self.owner.id, worker.token, cfg.lease_s):
                log.warning("ingest %s: lost the lease of %s; leaving it to its new owner", self.owner, stream_id)
                worker.stop("handover")
                del self.workers[stream_id]
        for stream_id in self.control.retired() - set(specs) - set(self.workers):
            self._retire(stream_id)
        free = [s for s in specs.values() if s.id not in self.workers]
        random.shuffle(free)
        share = min(cfg.max_streams, math.ceil(len(specs) / max(1, alive)))
        for spec in free:
            if sum(not w.finished.is_set() for w in self.workers.values()) >= share:
                break
            token = self.control.claim(spec.id, self.owner.id, cfg.lease_s)
            if token is not None:
                log.info("ingest %s: runs %s %s (generation %s, token %d)", self.owner, spec.kind, spec.id, spec.generation, token)
                worker = StreamWorker(spec, self.config, self.detectors, self.store, self.control, self.submit,
                                      self.owner, self.estimators, token)  # fmt: skip
                self.workers[spec.id] = worker.start()

    def _retire(self, stream_id: str) -> None:
        """A deleted stream whose owner went before writing its end (its lease expired): end its
        open tracks under a claim of our own, then forget it. While the owner's lease holds,
        the owner does that itself."""
        token = self.control.claim(stream_id, self.owner.id, self.config.ingest.lease_s)
        if token is None:
            return
        ended = end_orphans(FencedStore(self.store, self.control.fence(stream_id, token)), stream_id, set())
        self.control.forget(stream_id, token)
        log.info("ingest %s: deleted stream %s had no owner left; ended its %d open tracks", self.owner, stream_id, ended)

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Hand every stream over (state saved, leases released) and stop."""
        self._stop.set()
        self._thread.join(timeout_s)
        for worker in self.workers.values():
            worker.stop("handover")
        for stream_id, worker in self.workers.items():
            worker.join(timeout_s)
            try:
                self.control.release(stream_id, worker.token)
            except StoreError:
                pass
        self.workers.clear()
