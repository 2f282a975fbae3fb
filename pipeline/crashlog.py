"""Where the traceback of an unexpected error goes: a log file, never the user's terminal."""

from __future__ import annotations

import os
import platform
import tempfile
import time
import traceback
from pathlib import Path

from .env import log_dir

__all__ = ["write_crash_log"]


def write_crash_log(err: BaseException, argv: list[str]) -> Path | str:
    """Write ``err``'s traceback with the command line and versions; returns the file.

    Tries ``$TRACKLENS_LOG_DIR`` (default ``$TRACKLENS_HOME/logs``) first, then the temp folder; if neither can be written,
    returns a note saying so.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("tracklens")
    except PackageNotFoundError:
        ours = "not installed"
    text = (
        f"tracklens {ours}, Python {platform.python_version()}, {platform.platform()}\n"
        f"command: tracklens {' '.join(argv)}\n\n" + "".join(traceback.format_exception(err))
    )
    name = f"tracklens-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log"
    for folder in (log_dir(), Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            path.write_text(text)
            return path
        except OSError:
            continue
    return "nowhere: no writable log folder (set TRACKLENS_HOME)"
