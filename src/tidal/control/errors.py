"""The control plane's error family: every error :mod:`tidal.control` raises on purpose is one
of these. Messages name the bad value. The REST API maps each class to one HTTP status."""

from __future__ import annotations

__all__ = [
    "AuthError",
    "ConflictError",
    "ControlError",
    "ForbiddenError",
    "JobIdTakenError",
    "NotFoundError",
    "SettingsError",
    "StaleChangeError",
    "StoreError",
]


class ControlError(Exception):
    """Base of every error raised by :mod:`tidal.control` on purpose."""


class SettingsError(ControlError):
    """The control plane's settings (flags, ``TIDAL_*`` environment, file) are invalid."""


class StoreError(ControlError):
    """The store cannot be opened or migrated, or holds something it should not."""


class NotFoundError(ControlError, LookupError):
    """No such job, node or tenant, or one the caller may not see (HTTP 404)."""

    def __str__(self) -> str:  # LookupError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class ConflictError(ControlError):
    """The request contradicts the current state: cancelling a finished job, adding a
    tenant that exists (HTTP 409)."""


class JobIdTakenError(ConflictError):
    """A new job's id is already in the store (another process minted it)."""


class StaleChangeError(ConflictError):
    """A recorded state change expected the job in a state it is no longer in: someone
    else changed it first. Re-read the job and decide again."""


class AuthError(ControlError):
    """A request carries no token, or one that matches no tenant (HTTP 401)."""


class ForbiddenError(ControlError):
    """The caller's token is valid but may not do this: only an admin may (HTTP 403)."""
