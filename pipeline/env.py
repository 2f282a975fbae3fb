"""The only module that reads environment variables (endpoints, paths and secrets)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["log_dir", "redis_url", "secret", "tracklens_home"]


def tracklens_home() -> Path:
    """Model cache root: ``$TRACKLENS_HOME``, default ``~/.cache/tracklens``."""
    return Path(os.environ.get("TRACKLENS_HOME") or Path.home() / ".cache" / "tracklens")


def log_dir() -> Path:
    """Where tracebacks of unexpected errors are written: ``$TRACKLENS_LOG_DIR``, default
    ``$TRACKLENS_HOME/logs``."""
    return Path(os.environ.get("TRACKLENS_LOG_DIR") or tracklens_home() / "logs")


def redis_url() -> str | None:
    """``$TRACKLENS_REDIS_URL``, used when ``--redis-url`` is not given."""
    return os.environ.get("TRACKLENS_REDIS_URL") or None


def secret(name: str) -> str | None:
    """The value of the environment variable ``name`` (API keys named in configs)."""
    return os.environ.get(name) or None
