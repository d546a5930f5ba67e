"""Error family of :mod:`tidal.sim`. Messages name the bad value and where it came from."""

from __future__ import annotations


class SimError(ValueError):
    """Base of every error raised by :mod:`tidal.sim`."""


class TraceError(SimError):
    """A trace file is missing, unreadable or malformed."""


class PolicyActionError(SimError):
    """A policy asked for something the simulated fleet cannot do (a bug in the policy)."""
