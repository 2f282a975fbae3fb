"""Errors that reach a user: each names what was wrong and, where there is one, the fix.

The CLI prints ``str(error)`` of these on one line and exits non-zero; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["ConfigError", "InputError", "ModelError", "StoreError", "TracklensError"]


class TracklensError(Exception):
    """Base class of user-facing errors."""


class InputError(TracklensError):
    """A video or stream cannot be opened or decoded."""


class ModelError(TracklensError):
    """A model file is missing, corrupt or cannot be loaded."""


class ConfigError(TracklensError):
    """A configuration file or value is invalid."""


class StoreError(TracklensError):
    """The track store cannot be reached or refused a write."""
