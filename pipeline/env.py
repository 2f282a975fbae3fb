"""The only module that reads environment variables (endpoints, paths and secrets)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["redis_url", "secret", "tracklens_home"]


def tracklens_home() -> Path:
    """Model cache root: ``$TRACKLENS_HOME``, default ``~/.cache/tracklens``."""
    return Path(os.environ.get("TRACKLENS_HOME") or Path.home() / ".cache" / "tracklens")


def redis_url() -> str | None:
    """``$TRACKLENS_REDIS_URL``, used when ``--redis-url`` is not given."""
    return os.environ.get("TRACKLENS_REDIS_URL") or None


def secret(name: str) -> str | None:
    """The value of the environment variable ``name`` (API keys named in configs)."""
    return os.environ.get(name) or None
