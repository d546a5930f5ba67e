"""Shared fixtures: real traces from $TIDAL_TRACE_DIR (skipped with a message when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def trace_file(name: str) -> Path:
    """The real trace ``name`` (e.g. ``philly.csv``), or skip naming what is missing."""
    base = os.environ.get("TIDAL_TRACE_DIR")
    if not base:
        pytest.skip(f"needs {name}: $TIDAL_TRACE_DIR is not set")
    path = Path(base) / name
    if not path.is_file():
        pytest.skip(f"needs {name}: {path} does not exist")
    return path
