"""The launcher's view of ``DIR/status.json`` (worker 0 of the runtime writes it while running).

The launcher writes the file itself only around the workers' lifetime: ``starting`` before
they run (so a stale final state of an earlier run is never mistaken for this run's), and a
final state when the workers ended without writing one.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

STATUS_FILE = "status.json"
TERMINAL_STATES = frozenset({"preempted", "succeeded", "failed"})
STATES = frozenset({"starting", "running", "checkpointing", *TERMINAL_STATES})


def read_status(directory: Path) -> dict[str, Any] | None:
    """The current status, or None when the file is absent or unreadable mid-replace."""
    try:
        raw = json.loads((directory / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None


def write_status(directory: Path, previous: Mapping[str, Any] | None, **changes: Any) -> None:
    """Write status.json atomically: ``previous`` fields, updated with ``changes``."""
    payload: dict[str, Any] = {
        "state": "starting",
        "step": 0,
        "epoch": 0,
        "world": None,
        "workers": None,
        "samples_per_s": 0.0,
        "last_checkpoint_step": None,
        "job_id": None,
    }
    if previous:
        payload.update(previous)
    payload.update(changes)
    payload["updated_at"] = time.time()
    path = directory / STATUS_FILE
    tmp = path.with_name(f".{STATUS_FILE}.launcher-{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, sort_keys=True))
    os.replace(tmp, path)
