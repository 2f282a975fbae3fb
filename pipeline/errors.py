"""Errors that reach a user: each names what was wrong and, where there is one, the fix.

The CLI prints ``str(error)`` of these on one line and exits non-zero. Anything else is a
bug: the CLI still prints one line, and writes the traceback to a log file it names.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "InputError",
    "ModelError",
    "OutputError",
    "StoreError",
    "StoreUnavailableError",
    "TracklensError",
]


class TracklensError(Exception):
    """Base class of user-facing errors."""


class InputError(TracklensError):
    """A video, stream or manifest cannot be opened or read."""


class OutputError(TracklensError):
    """An output file or folder cannot be written (not writable, the input itself, disk full)."""


class ModelError(TracklensError):
    """A model file is missing, corrupt or cannot be loaded, or a model name is unknown."""


class ConfigError(TracklensError):
    """A configuration file or value is invalid."""


class StoreError(TracklensError):
    """The track store cannot be reached or refused a write."""


class StoreUnavailableError(StoreError):
    """The track store is unreachable for now (connection refused or lost, timeout, loading):
    a write may succeed when it is tried again."""

