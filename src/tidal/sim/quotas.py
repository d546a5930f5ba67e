"""The rule that gives trace tenants quotas, since traces carry none."""

from __future__ import annotations

from collections.abc import Iterable

from tidal.core import Fleet, JobSpec, Tier


def proportional_quotas(jobs: Iterable[JobSpec], fleet: Fleet) -> dict[str, int]:
    """Each tenant is guaranteed the share of the fleet its non-basic jobs' work is of all
    non-basic work (rounded down); tenants with no such work get no quota."""
    work: dict[str, float] = {}
    for spec in jobs:
        if spec.tier is not Tier.BASIC:
            work[spec.tenant] = work.get(spec.tenant, 0.0) + spec.work
    total = sum(work.values())
    if total <= 0:
        return {}
    capacity = fleet.capacity
    return {tenant: int(capacity * w / total) for tenant, w in sorted(work.items()) if w > 0}
