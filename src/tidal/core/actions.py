"""What a plan asks the world to do. The simulator and the live executor apply the same ones."""

from __future__ import annotations

from dataclasses import dataclass

from tidal.core.placement import Placement


@dataclass(frozen=True, slots=True)
class Start:
    """Start (or resume from its last checkpoint) a job that holds no devices."""

    job_id: str
    placement: Placement
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Stop:
    """Release a job's devices. With ``checkpoint`` it stops at a consistent cut and keeps
    its progress; without, it is killed and restarts from scratch (baselines only)."""

    job_id: str
    placement: Placement
    checkpoint: bool = True
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Resize:
    """Change a running job's device count (its node set may change too)."""

    job_id: str
    old: Placement
    new: Placement
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Migrate:
    """Move a running job to other nodes, keeping its device count."""

    job_id: str
    old: Placement
    new: Placement
    reason: str = ""


Action = Start | Stop | Resize | Migrate

# The order a plan's actions are applied in: free devices before taking them.
_APPLY_ORDER = {Stop: 0, Resize: 1, Migrate: 2, Start: 3}


def apply_order(action: Action) -> tuple[int, int, str]:
    """Sort key: stops, then shrinks, migrations, grows, and starts; by job id within each."""
    kind = _APPLY_ORDER[type(action)]
    grow = 0
    if isinstance(action, Resize) and action.new.size > action.old.size:
        grow = 1
        kind = 2
    return (kind, grow, action.job_id)
