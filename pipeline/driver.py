"""The stream driver: every stream's loop, between its source, its perception and its track book.

``frames -> perception -> (start/end events, crops) -> estimates -> track book -> store``.
The CLI's ``analyze``, the bench, file jobs and the service's streams all run this one driver
(:meth:`StreamDriver.run` feeds it a source); only how crops get estimated differs, behind
:data:`Submit`: in line in one process (:class:`InlineEstimates`: the answers are there by the
next settle), on replica pools in the service (the answers come back later, on another thread,
possibly in parts, possibly more than one per crop: the track book fuses late estimates).
"""

from __future__ import annotations

import queue
import time
from collections import Counter
from collections.abc import Callable
from typing import Protocol

from .perception import Perception, PerceptionBatch
from .sources import FrameSource, LiveSource
from .store import TrackRecord
from .trackbook import TrackBook
from .types import Crop, Estimate, Frame

__all__ = ["Deliver", "InlineEstimates", "StopFlag", "StreamDriver", "Submit"]

#: ``deliver(crops, estimates)``: one estimate per crop of this part, or None when the part got
#: no answer; may be called from any thread, once or more per submitted batch.
Deliver = Callable[[list[Crop], list[Estimate] | None], None]
#: ``submit(crops, deliver)``: send crops for estimation; returns at once or after answering.
Submit = Callable[[list[Crop], Deliver], None]


class StopFlag(Protocol):
    """Anything with ``is_set()``: a ``threading.Event``, or several combined."""

    def is_set(self) -> bool: ...


class InlineEstimates:
    """``submit`` for one process: the estimator answers in line, before ``submit`` returns.

    Args:
        estimate: the estimator's ``estimate`` (list of crops in, list of estimates out).
        on_estimates: called with each batch's estimates and the seconds it took (stats).
    """

    def __init__(self, estimate: Callable[[list[Crop]], list[Estimate]],
                 on_estimates: Callable[[list[Estimate], float], None] | None = None) -> None:  # fmt: skip
        self.estimate, self.on_estimates = estimate, on_estimates

    def __call__(self, crops: list[Crop], deliver: Deliver) -> None:
        t0 = time.perf_counter()
        estimates = self.estimate(crops)
        if len(estimates) != len(crops):
            raise RuntimeError(f"estimator returned {len(estimates)} estimates for {len(crops)} crops")
        if self.on_estimates is not None:
            self.on_estimates(estimates, time.perf_counter() - t0)
        deliver(crops, estimates)


class StreamDriver:
    """One stream's perception and track book, and the estimates between them.

    Args:
        perception: the stream's perception (detect, associate, track, crops).
        book: the stream's track book.
        submit: how crops get estimated.
        on_requested: called with the crops of each request (the service keeps face crops).
        on_applied: called with the estimates applied at each settle (the service measures
            their latency).

    Attributes:
        tracks_ended: tracks whose end was written.
        answered: estimates applied, per source (``mllm``, ``specialist``).
        invalid: estimates applied that were not usable, per reason (its part before a colon:
            ``refusal``, ``off-format``, ``backend error``...).
    """

    def __init__(
        self,
        perception: Perception,
        book: TrackBook,
        submit: Submit,
        on_requested: Callable[[list[Crop]], None] | None = None,
        on_applied: Callable[[list[Estimate]], None] | None = None,
    ) -> None:
        self.perception, self.book, self.submit = perception, book, submit
        self.on_requested, self.on_applied = on_requested, on_applied
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.tracks_ended = 0
        self.answered: Counter = Counter()
        self.invalid: Counter = Counter()

    def run(self, source: FrameSource, batch_frames: int, stop: StopFlag,
            on_batch: Callable[[PerceptionBatch | None], None] | None = None) -> bool:  # fmt: skip
        """Feed ``source`` through the driver until it ends (True) or ``stop`` is set (False).

        A file's frames go in batches of ``batch_frames``; at a stop, the frames of an
        unfinished batch are dropped, so a stop is prompt. A live source's frames go as they
        come (up to ``batch_frames`` at once); while none come for half a second, the estimates
        that came back are applied all the same. ``on_batch`` is called after each step with
        its batch (None after a step without frames). The tracks still open are left open:
        the caller ends them (:meth:`finish`) or hands them over.
        """
        done = on_batch or (lambda batch: None)
        if isinstance(source, LiveSource):
            while not stop.is_set():
                frames = source.read(batch_frames, timeout_s=0.5)
                if not frames and source.done:
                    return True
                if frames:
                    done(self.step(frames))
                else:
                    self.settle()
                    done(None)
            return False
        frames: list[Frame] = []
        for frame in source:
            if stop.is_set():
                return False
            frames.append(frame)
            if len(frames) >= batch_frames:
                done(self.step(frames))
                frames = []
        if frames and not stop.is_set():
            done(self.step(frames))
        return not stop.is_set()

    def step(self, frames: list[Frame]) -> PerceptionBatch:
        """Analyse consecutive frames: perception, their events to the book, their crops out
        for estimates, then whatever estimates have come back."""
        batch = self.perception.process(frames)
        self._take(batch, estimate=True)
        self.settle()
        return batch

    def settle(self, final: bool = False) -> list[TrackRecord]:
        """Apply the estimates that came back since the last settle, then write what changed
        (every open track, ended, with ``final``); returns the records written."""
        applied = []
        while True:
            try:
                crops, estimates = self.inbox.get_nowait()
            except queue.Empty:
                break
            if estimates is None:
                self.book.unanswered(crops)
                continue
            for key, needs in self.book.apply(estimates).items():
                self.perception.set_needs(key, needs)
            for est in estimates:
                self.answered[est.source] += 1
                if not est.valid:
                    self.invalid[(est.reason or "invalid").split(":")[0]] += 1
            applied += estimates
        if applied and self.on_applied is not None:
            self.on_applied(applied)
        records = self.book.flush(final=final)
        self.tracks_ended += sum(1 for r in records if r.ended)
        return records

    def finish(self, grace_s: float = 0.0, estimate: bool = True, sleep: Callable[[float], None] = time.sleep) -> None:
        """End every open track (the source ended, a stop, a deletion), wait up to ``grace_s``
        for the estimates still out, and write everything. ``estimate=False`` sends no last
        crops (when the estimator itself is what failed)."""
        self._take(self.perception.finish(), estimate=estimate)
        deadline = time.monotonic() + grace_s
        while len(self.book) and time.monotonic() < deadline:
            self.settle()
            sleep(0.05)
        self.settle(final=True)

    def _take(self, batch: PerceptionBatch, estimate: bool) -> None:
        self.book.observe(batch.events, batch.seen.values())
        if estimate and batch.crops:
            self.book.requested(batch.crops)
            if self.on_requested is not None:
                self.on_requested(batch.crops)
            self.submit(batch.crops, lambda crops, estimates: self.inbox.put((crops, estimates)))
