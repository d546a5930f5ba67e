"""A seeded synthetic trace with Philly-like job sizes and durations, for the demo and tests.

Sizes follow the Philly job mix (93 % single-device jobs, then 2, 4, 8, 16 and 32 devices);
durations are log-normal around Philly's median (about 19 minutes) with a heavy tail,
clipped to ``[min_duration, max_duration]``. Arrivals are a Poisson process scaled so that
the offered load over the arrival span is ``load`` × ``capacity`` devices. Tiers, tenants
and checkpoint sizes follow the same rules as :func:`tidal.sim.load_trace`.
"""

from __future__ import annotations

import math
import random

from tidal.core import JobSpec
from tidal.sim.errors import SimError
from tidal.sim.trace import DEFAULT_TIER_SHARES, default_checkpoint_bytes, tier_for

# (world size, share of jobs) in philly.csv, rounded; sizes above 32 are folded into 32.
PHILLY_SIZES: tuple[tuple[int, float], ...] = (
    (1, 0.932),
    (2, 0.022),
    (4, 0.023),
    (8, 0.020),
    (16, 0.0024),
    (32, 0.0006),
)
PHILLY_MEDIAN_DURATION_S = 1144.0


def synthetic_trace(
    jobs: int = 1000,
    *,
    seed: int = 0,
    capacity: int = 64,
    load: float = 0.9,
    tenants: int = 4,
    median_duration: float = PHILLY_MEDIAN_DURATION_S,
    sigma: float = 2.0,
    min_duration: float = 30.0,
    max_duration: float = 2 * 86400.0,
    max_world: int = 32,
) -> list[JobSpec]:
    """``jobs`` jobs offering ``load`` of ``capacity`` devices, deterministic in ``seed``."""
    if jobs < 1:
        raise SimError(f"synthetic trace needs at least one job, got {jobs}")
    if capacity < 1 or load <= 0 or tenants < 1 or max_world < 1:
        raise SimError(
            f"synthetic trace: capacity ({capacity}), load ({load}), tenants ({tenants}) and "
            f"max_world ({max_world}) must be positive"
        )
    if not 0 < min_duration <= max_duration:
        raise SimError(
            f"synthetic trace: need 0 < min_duration <= max_duration, got "
            f"{min_duration} and {max_duration}"
        )
    rng = random.Random(f"tidal-synthetic:{seed}")
    sizes = [w for w, _ in PHILLY_SIZES if w <= max_world] or [1]
    weights = [s for w, s in PHILLY_SIZES if w <= max_world] or [1.0]
    tenant_weights = [1.0 / (i + 1) for i in range(tenants)]
    mu = math.log(median_duration)

    worlds = rng.choices(sizes, weights, k=jobs)
    durations = [
        min(max_duration, max(min_duration, round(rng.lognormvariate(mu, sigma))))
        for _ in range(jobs)
    ]
    owners = rng.choices(range(tenants), tenant_weights, k=jobs)
    gaps = [rng.expovariate(1.0) for _ in range(jobs)]

    total_work = sum(w * d for w, d in zip(worlds, durations, strict=True))
    span = total_work / (capacity * load)
    scale = span / (sum(gaps) - gaps[0] or 1.0)
    out: list[JobSpec] = []
    t = 0.0
    for i in range(jobs):
        if i:
            t += gaps[i] * scale
        job_id = f"syn-{i:06d}"
        out.append(
            JobSpec(
                id=job_id,
                tenant=f"t{owners[i]}",
                tier=tier_for(job_id, seed, DEFAULT_TIER_SHARES),
                world=worlds[i],
                submit_time=round(t, 3),
                work=float(durations[i] * worlds[i]),
                checkpoint_bytes=default_checkpoint_bytes(worlds[i]),
            )
        )
    return out
