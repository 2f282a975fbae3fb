"""Stop requests from the process manager or the keyboard, handled between frames.

SIGTERM (docker, systemd, Kubernetes) and SIGINT (Ctrl-C) both become a stop request: the
run loop sees it before its next frame, ends and writes the open tracks, finalises its
outputs and exits. Nothing is raised inside the work, so no write is cut in half, and further
signals during that shutdown are counted, not obeyed: a second Ctrl-C cannot abort the
writing of what was analysed.

The handlers stay after the run, until the process exits: a signal that arrives while it
prints its report, closes a progress bar or tears the interpreter down is counted too. Had the
handlers that were there before come back (``KeyboardInterrupt``, an exception of the CLI's
own), such a signal would raise inside whatever ran then, often a destructor or a ``finally``
block, and print a traceback over the report.
"""

from __future__ import annotations

import signal
import threading

__all__ = ["StopSignals"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Context manager: from entry on, SIGINT and SIGTERM set :attr:`event` instead of
    interrupting. Must be entered on the main thread (where Python runs signal handlers).

    Leaving the block does not bring the earlier handlers back (see the module docstring);
    a caller that goes on with other work after the block calls :meth:`restore`.

    Attributes:
        event: set by the first signal; pass it to the run loop as its ``stop``.
        signum: the first signal received, or None.
        repeats: signals received after the first.
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None
        self.repeats = 0
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame) -> None:
        if self.signum is None:
            self.signum = signum
            self.event.set()
        else:
            self.repeats += 1

    @property
    def name(self) -> str | None:
        """``SIGINT`` or ``SIGTERM`` once one arrived."""
        return None if self.signum is None else signal.Signals(self.signum).name

    @property
    def exit_status(self) -> int:
        """The shell's convention for a process ended by the signal: 128 + its number."""
        return 128 + (self.signum or 0)

    def __enter__(self) -> StopSignals:
        for sig in _SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        """Keeps the handlers: the process is on its way out (see the module docstring)."""

    def restore(self) -> None:
        """Put the handlers that were there before back (for a process that goes on)."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
