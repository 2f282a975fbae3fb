"""Output files of a run: checked before the first frame, written so that nothing is lost.

``tracks.jsonl`` is written as tracks end: each ended track's summary is appended to
``tracks.jsonl.partial`` and flushed, so a crash or a kill keeps every track ended so far;
:meth:`TrackLog.commit` then replaces an older ``tracks.jsonl`` by an atomic rename, so the
folder never holds a half-written file under the final name. A log whose writing failed is
never committed: the older ``tracks.jsonl`` stays, and the tracks written before the failure
stay in the ``.partial``.

:class:`OutputLock` keeps two runs from writing into the same folder at once.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

from .errors import OutputError
from .locks import LockHeldError, ProcessLock
from .summary import TrackSummary

__all__ = [
    "LOCK_NAME", "VIDEO_SUFFIXES", "OutputLock", "TrackLog", "check_output_folder", "check_video_output", "partial_path",
]  # fmt: skip

log = logging.getLogger(__name__)

#: Containers the annotated video can be written in (H.264 inside).
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv")

#: The lock file a run holds in its output folder (see :class:`OutputLock`).
LOCK_NAME = ".tracklens.lock"


def _why(err: OSError) -> str:
    return err.strerror or str(err)


def _check_writable(folder: Path, what: str) -> None:
    """``folder`` can be created (or exists as a folder) and written; creates nothing."""
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"{what} {folder} cannot be made: {probe} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as err:
        raise OutputError(f"{what} {folder} is not writable: {_why(err)}") from None


def _same_file(a: Path, b: Path | None) -> bool:
    if b is None:
        return False
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def check_output_folder(folder: Path, name: str, inputs: tuple[Path, ...] = (), flag: str = "--out") -> Path:
    """Check ``folder`` exists or can be made, can be written, and return ``folder / name``.

    Raises:
        OutputError: ``folder`` is a file or not writable, ``folder / name`` is a folder, or
            it is one of ``inputs``.
    """
    _check_writable(folder, f"output folder ({flag})")
    target = folder / name
    if target.is_dir():
        raise OutputError(f"{target} is a folder; {flag} needs a folder where {name} can be written")
    for source in inputs:
        if _same_file(target, source):
            raise OutputError(f"{flag} {folder} would overwrite the input {source} with {name}")
    return target


def check_video_output(path: Path, inputs: tuple[Path, ...] = (), flag: str = "--annotate") -> Path:
    """Check an output video path before any work: known container, not an input, writable."""
    if path.is_dir():
        raise OutputError(f"{flag} {path} is a folder; give a file name such as {path / 'annotated.mp4'}")
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        shown = f"the extension {path.suffix!r}" if path.suffix else "a name without extension"
        raise OutputError(f"{flag} {path}: {shown} is not a video container I can write; use {', '.join(VIDEO_SUFFIXES)}")
    for source in inputs:
        if _same_file(path, source):
            raise OutputError(f"{flag} {path} is the input video; writing it would destroy the input: choose another file")
    _check_writable(path.parent, f"folder of {flag}")
    return path


def partial_path(path: Path) -> Path:
    """Where ``path`` is written before its final rename: same folder, same extension."""
    return path.with_name(f"{path.stem}.partial{path.suffix}")


class OutputLock:
    """An exclusive lock on an output folder, held from before the first write to the end of
    a run, so a second run with the same folder refuses instead of renaming the first one's
    live ``.partial`` as a crash leftover.

    A :class:`~.locks.ProcessLock` on :data:`LOCK_NAME` in the folder (created, with the
    folder, when missing): the kernel drops it when its owner dies, so a killed run never
    blocks the next one; :meth:`close` removes the file.

    Raises:
        OutputError: another process holds the folder (the message names its PID), or the
            lock file cannot be made.
    """

    def __init__(self, folder: Path, flag: str = "--out") -> None:
        self.path = folder / LOCK_NAME
        self._lock = ProcessLock(self.path, f"{flag} {folder}")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self._lock.acquire()
        except LockHeldError as err:
            raise OutputError(f"{err} (another tracklens run); wait until it ends or choose another folder") from None
        except OSError as err:
            raise OutputError(f"cannot lock the output folder {folder} ({flag}): {_why(err)}") from None

    def close(self) -> None:
        """Let go of the folder (the lock file goes with it)."""
        self._lock.release()

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TrackLog:
    """``tracks.jsonl`` appended as tracks end; see the module docstring.

    An earlier run's leftover ``.partial`` (a run that was killed) is kept under a
    time-stamped name rather than overwritten. After a failed write (disk full, a file size
    limit) the file is cut back to its last whole line, further writes are counted in
    :attr:`lost`, and :meth:`commit` leaves the older ``tracks.jsonl`` in place: the tracks
    written so far stay in the ``.partial`` (:attr:`kept`), which :meth:`kept_note` describes.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        self.recovered: Path | None = None
        try:
            if self.partial.exists():
                stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(self.partial.stat().st_mtime))
                self.recovered = self.partial.with_name(f"{self.partial.name}.{stamp}")
                os.replace(self.partial, self.recovered)
            self.partial.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.partial, "w", encoding="utf-8")
        except OSError as err:
            raise OutputError(f"cannot write {self.partial}: {_why(err)}") from None
        self.written = 0
        self.lost = 0
        self.error: str | None = None
        self.kept: Path | None = None
        self._good_bytes = 0

    def write(self, summary: TrackSummary) -> None:
        """Append one ended track and flush it to the OS.

        Raises:
            OutputError: on the first failed write (the file keeps every whole line).
        """
        if self._fh is None:
            self.lost += 1
            return
        try:
            self._fh.write(summary.model_dump_json() + "\n")
            self._fh.flush()
        except OSError as err:
            self.lost += 1
            self.error = f"cannot write {self.partial}: {_why(err)}"
            self._abandon()
            raise OutputError(self.error) from None
        except Exception:  # a bug: the line may be half written, so this file can no longer be final
            self.lost += 1
            self.error = f"writing {self.partial} failed"
            self._abandon()
            raise
        self._good_bytes = self._fh.tell()
        self.written += 1

    def _abandon(self) -> None:
        fh, self._fh = self._fh, None
        try:
            fh.close()
        except OSError:
            pass  # the data that failed to flush is the part being cut off below
        try:
            os.truncate(self.partial, self._good_bytes)
        except OSError as err:
            log.warning("could not cut %s back to its last whole line: %s", self.partial, _why(err))

    def commit(self) -> Path:
        """Make the file final: fsync, then rename over ``tracks.jsonl``; only when every
        track was written, since an incomplete file must not replace a complete older one.

        Raises:
            OutputError: a write failed before, or the file could not be synced or renamed;
                ``tracks.jsonl`` is untouched and the whole lines written stay in
                :attr:`kept` (None when there were none).
        """
        if self.error is not None:
            self._keep()
            raise OutputError(self.error)
        try:
            if self._fh is not None:
                self._fh.flush()
                os.fsync(self._fh.fileno())
                self._fh.close()
                self._fh = None
            os.replace(self.partial, self.path)
        except OSError as err:
            self.error = self.error or f"cannot finish {self.path}: {_why(err)}"
            if self._fh is not None:
                self._abandon()
            self._keep()
            raise OutputError(self.error) from None
        return self.path

    def _keep(self) -> None:
        """After a failure: the ``.partial`` stays when it holds a track, else it goes (an
        empty leftover would only be reported as a crash by the next run)."""
        if self._good_bytes > 0 and self.partial.exists():
            self.kept = self.partial
            return
        try:
            self.partial.unlink(missing_ok=True)
        except OSError:
            pass  # nothing in it; the next run keeps it under a time-stamped name

    def kept_note(self) -> str:
        """After a failed :meth:`commit`: where the tracks are, in words for the user."""
        old = f"{self.path} from before is unchanged" if self.path.exists() else f"{self.path} was not written"
        if self.kept is None:
            return f"{old} and no track could be saved"
        tracks = "track was" if self.written == 1 else "tracks were"
        return f"{old}; the {self.written} {tracks} written before the failure, kept in {self.kept}"
