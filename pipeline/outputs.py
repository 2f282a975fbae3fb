"""Output files of a run: checked before the first frame, written so that nothing is lost.

``tracks.jsonl`` is written as tracks end: each ended track's summary is appended to
``tracks.jsonl.partial`` and flushed, so a crash or a kill keeps every track ended so far;
:meth:`TrackLog.commit` then replaces an older ``tracks.jsonl`` by an atomic rename, so the
folder never holds a half-written file under the final name.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

from .errors import OutputError
from .summary import TrackSummary

__all__ = ["VIDEO_SUFFIXES", "TrackLog", "check_output_folder", "check_video_output", "partial_path"]

log = logging.getLogger(__name__)

#: Containers the annotated video can be written in (H.264 inside).
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv")


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


class TrackLog:
    """``tracks.jsonl`` appended as tracks end; see the module docstring.

    An earlier run's leftover ``.partial`` (a run that was killed) is kept under a
    time-stamped name rather than overwritten. After a failed write (disk full) the file is
    cut back to its last whole line and further writes are counted in :attr:`lost`.
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
        """Make the file final: fsync, then rename over ``tracks.jsonl``.

        Raises:
            OutputError: the file could not be synced or renamed (it stays as ``.partial``).
        """
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
            raise OutputError(self.error) from None
        return self.path
