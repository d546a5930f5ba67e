"""Scheduling policies, each registered by name in :mod:`tidal.core.policy`."""
