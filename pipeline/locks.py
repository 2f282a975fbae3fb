"""Locks held for the life of a process: one ``tracklens serve`` per ``TRACKLENS_HOME``, one
run per output folder.

``fcntl.flock`` on a file: the kernel releases it however the holder ends (exit, crash,
``kill -9``), so a dead holder never blocks the next start, and there is no stale lock to clean.
The holder writes its PID into the file so that a refused start can say who holds it, and
removes the file when it lets go (while still holding it, so no one else can be holding it).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from pathlib import Path

from .errors import TracklensError

__all__ = ["LockHeldError", "ProcessLock"]

log = logging.getLogger(__name__)


class LockHeldError(TracklensError):
    """Another live process holds the lock; ``pid`` is its PID when it had written it."""

    def __init__(self, message: str, pid: int | None) -> None:
        super().__init__(message)
        self.pid = pid


class ProcessLock:
    """An exclusive, non-blocking lock on ``path`` (made 0600 if missing).

    Args:
        path: the lock file.
        what: how messages name what is locked (``TRACKLENS_HOME /x``).
    """

    def __init__(self, path: Path, what: str) -> None:
        self.path, self.what = path, what
        self._fd: int | None = None
        self.held = False

    def acquire(self) -> ProcessLock:
        """Take the lock. On a file system without locks (some network mounts) it goes on
        unlocked, says so in the log, and :attr:`held` stays False.

        Raises:
            LockHeldError: another process holds it (the message names its PID).
            OSError: the file cannot be made or opened.
        """
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read_pid(fd)
                os.close(fd)
                holder = f"process {pid}" if pid else "another process (its PID not written yet)"
                raise LockHeldError(f"{self.what} is in use by {holder}", pid) from None
            except OSError as err:
                os.close(fd)
                if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP):
                    raise
                log.warning("cannot lock %s (%s): a second process would not be refused", self.path, err.strerror)
                return self
            # The previous holder removes the file as it lets go: if it did so between our open
            # and our lock, we hold a file nobody else will ever see; open it again.
            try:
                if os.path.samestat(os.fstat(fd), os.stat(self.path)):
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd, self.held = fd, True
        return self

    def release(self) -> None:
        """Remove the file while still holding it, then unlock."""
        fd, self._fd, self.held = self._fd, None, False
        if fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass  # a file left behind holds no lock: the next holder takes it over
        os.close(fd)

    def __enter__(self) -> ProcessLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
