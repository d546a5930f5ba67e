"""Building blocks for hand-worked simulator tests."""

from __future__ import annotations

import math

from tidal.core import JobSpec, Placement, Tier
from tidal.sim import CostModel


def job(
    job_id: str,
    world: int,
    seconds: float,
    submit: float = 0.0,
    tier: Tier = Tier.STANDARD,
    tenant: str = "t",
) -> JobSpec:
    """A job that needs ``seconds`` at its full size ``world``."""
    return JobSpec(
        id=job_id, tenant=tenant, tier=tier, world=world, submit_time=submit, work=seconds * world
    )


def on(node: str, count: int, *more: tuple[str, int]) -> Placement:
    return Placement.of([(node, count), *more])


def costs(checkpoint: float = 0.0, restart: float = 0.0, **extra: float) -> CostModel:
    """Fixed checkpoint and restart times, free bandwidth, no splicing overhead."""
    return CostModel(
        checkpoint_fixed_s=checkpoint,
        write_bandwidth=math.inf,
        restart_fixed_s=restart,
        read_bandwidth=math.inf,
        splice_overhead=extra.pop("splice_overhead", 0.0),
        scaling_efficiency=extra.pop("scaling_efficiency", 1.0),
        resize_extra_s=extra.pop("resize_extra_s", 0.0),
    )
