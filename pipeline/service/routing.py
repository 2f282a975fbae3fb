"""The router's decisions: which crops go to the MLLM pool, which to the specialist.

The MLLM gets crops while it has room: fewer than ``capacity`` of the router's crops in the
pool at once. When a batch has more crops than room, tracks the MLLM has never answered for go
first (a track's first MLLM look matters more than a refresh). A crop the pool pushes back
(its queue is full) goes to the specialist, and the next crops are offered to the MLLM again:
the pool stays busy and its queue full, which is the demand its autoscaler sees. When the MLLM
runs over the latency budget or fails, the router sheds: every crop goes to the specialist for
a cooldown, which doubles while the trouble goes on and resets after a clean MLLM batch (one
with neither trouble nor back-pressure), so the route does not flap batch by batch on a pool
that is unwell. No Ray here: the deployment in
``serve/`` calls this.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable

from ..config import RouterConfig

__all__ = ["RouteDecider"]


class RouteDecider:
    """See the module docstring.

    Args:
        cfg: router settings.
        capacity: crops the MLLM pool admits at once (replicas x max_ongoing + max_queued),
            used when ``cfg.max_in_flight`` is 0; 0 here means there is no MLLM at all.
        clock: monotonic seconds.

    Attributes:
        in_flight: crops sent to the MLLM and not yet back.
        troubles: back-pressure, overrun and failure events seen (only overruns and failures
            shed).
    """

    def __init__(self, cfg: RouterConfig, capacity: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.capacity = (cfg.max_in_flight or capacity) if capacity else 0
        self.clock = clock
        self.in_flight = 0
        self.troubles: Counter = Counter()
        self._cooldown = cfg.cooldown_s
        self._shed_until = 0.0
        self._answered: OrderedDict[str, None] = OrderedDict()

    @property
    def shedding(self) -> bool:
        """True while every crop goes to the specialist after trouble."""
        return self.clock() < self._shed_until

    def plan(self, tracks: list[str]) -> list[bool]:
        """For each crop (by track key), True if it goes to the MLLM. The chosen ones count as
        in flight until :meth:`done`."""
        room = 0 if self.shedding else max(0, self.capacity - self.in_flight)
        if room == 0:
            return [False] * len(tracks)
        first_looks = sorted(range(len(tracks)), key=lambda i: tracks[i] in self._answered)  # stable: order kept within
        chosen = set(first_looks[:room])
        self.in_flight += len(chosen)
        return [i in chosen for i in range(len(tracks))]

    def done(self, sent: int, answered: Iterable[str], trouble: str | None = None) -> None:
        """``sent`` crops came back; ``answered`` are the tracks the MLLM gave a valid estimate
        for; ``trouble`` is the batch's worst: ``failure``, ``overrun`` or ``backpressure``."""
        self.in_flight = max(0, self.in_flight - sent)
        for key in answered:
            self._answered[key] = None
            self._answered.move_to_end(key)
        while len(self._answered) > self.cfg.first_looks_tracked:
            self._answered.popitem(last=False)
        if trouble is not None:
            self.troubles[trouble] += 1
        if trouble in ("overrun", "failure"):
            self._shed_until = self.clock() + self._cooldown
            self._cooldown = min(self.cfg.max_cooldown_s, self._cooldown * 2)
        elif trouble is None and sent:  # a clean batch (back-pressure neither sheds nor clears the trouble)
            self._cooldown = self.cfg.cooldown_s
