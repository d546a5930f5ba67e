"""Error family of :mod:`tidal.core`. Messages name the bad value."""

from __future__ import annotations


class CoreError(ValueError):
    """Base of every error raised by :mod:`tidal.core`."""


class SpecError(CoreError):
    """A job spec, node or fleet description is invalid."""


class PlanError(CoreError):
    """A plan is inconsistent with the snapshot it was made for."""


class TransitionError(CoreError):
    """A job state change that the lifecycle does not allow."""


class UnknownPolicyError(CoreError, KeyError):
    """No policy is registered under the requested name."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""
