"""The launcher's error family: every error :mod:`tidal.launch` raises on purpose is one of these."""

from __future__ import annotations

__all__ = ["LaunchError", "LaunchRefused", "StatusFormatError", "WorldMismatch"]


class LaunchError(Exception):
    """Base of all errors raised by :mod:`tidal.launch` on purpose."""


class LaunchRefused(LaunchError):
    """The supervisor refuses to start the job (exit status 2): a bad argument, a checkpoint
    directory in use, a world size that does not match the checkpoint. Nothing was started
    and ``status.json`` was not touched."""


class WorldMismatch(LaunchRefused):
    """The checkpoint directory holds a checkpoint of another logical world size W."""


class StatusFormatError(LaunchError):
    """``status.json`` does not follow the schema; the message names the field."""
