"""What a simulation measured: per-job outcomes, summary metrics, utilization over time.

Definitions (also in ``docs/simulator.md``):

- JCT = finish − submit; queueing delay = first start − submit (completed jobs only);
- makespan = last finish − first submit;
- utilization = device-time held by jobs (any state that holds devices) / (capacity ×
  makespan); ``useful_utilization`` counts only device-time that produced kept work
  (held − lost);
- attainment of a job = device-time it held / (W × (finish − submit)); ``premium_sla_met``
  and ``standard_sla_met`` are the shares of completed premium jobs with attainment ≥ 0.95
  and of standard jobs with attainment ≥ 0.70 (``None`` when there are none);
- lost device-time = device-time held without progress (checkpoints, restarts) plus the
  device-time that produced work a kill threw away.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Final

from tidal.core import StateChange, Tier

PREMIUM_SLA = 0.95
STANDARD_SLA = 0.70


@dataclass(slots=True, init=False, unsafe_hash=True)
class JobResult:
    """One job's outcome (immutable; built natively when compiled, see "Value types" in
    docs/architecture.md)."""

    id: Final[str]
    tenant: Final[str]
    tier: Final[Tier]
    world: Final[int]
    submit: Final[float]
    first_start: Final[float | None]
    finish: Final[float | None]
    held_s: Final[float]
    running_s: Final[float]
    lost_s: Final[float]
    preemptions: Final[int]
    resizes: Final[int]
    migrations: Final[int]

    def __init__(
        self,
        *,
        id: str,
        tenant: str,
        tier: Tier,
        world: int,
        submit: float,
        first_start: float | None,
        finish: float | None,
        held_s: float,
        running_s: float,
        lost_s: float,
        preemptions: int,
        resizes: int,
        migrations: int,
    ) -> None:
        self.id = id
        self.tenant = tenant
        self.tier = tier
        self.world = world
        self.submit = submit
        self.first_start = first_start
        self.finish = finish
        self.held_s = held_s
        self.running_s = running_s
        self.lost_s = lost_s
        self.preemptions = preemptions
        self.resizes = resizes
        self.migrations = migrations

    @property
    def completed(self) -> bool:
        return self.finish is not None

    @property
    def jct(self) -> float | None:
        return None if self.finish is None else self.finish - self.submit

    @property
    def queue(self) -> float | None:
        return None if self.first_start is None else self.first_start - self.submit

    @property
    def attainment(self) -> float | None:
        """Device-time held over device-time asked for (W × life); 1.0 for a zero-length life."""
        if self.finish is None:
            return None
        asked = self.world * (self.finish - self.submit)
        return 1.0 if asked <= 0 else self.held_s / asked


@dataclass(frozen=True, slots=True)
class SimMetrics:
    """One policy's summary. ``to_dict`` gives the ``--json`` object, keys in this order."""

    policy: str
    jobs: int
    completed: int
    avg_jct_s: float | None
    p50_jct_s: float | None
    p99_jct_s: float | None
    avg_queue_s: float | None
    makespan_s: float
    utilization: float
    useful_utilization: float
    premium_sla_met: float | None
    standard_sla_met: float | None
    premium_preemptions: int
    preemptions: int
    premium_migrations: int
    resizes: int
    migrations: int
    lost_device_s: float
    rounds: int
    wall_s: float

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float):
                value = round(value, 6 if f.name.endswith(("utilization", "_met")) else 3)
            out[f.name] = value
        return out


@dataclass(frozen=True, slots=True)
class SimResult:
    """Everything one simulation produced."""

    metrics: SimMetrics
    jobs: tuple[JobResult, ...]
    capacity: int
    usage_times: tuple[float, ...]
    usage_devices: tuple[int, ...]
    events: tuple[StateChange, ...] = ()

    @property
    def policy(self) -> str:
        return self.metrics.policy

    def to_dict(self) -> dict[str, Any]:
        return self.metrics.to_dict()

    def job(self, job_id: str) -> JobResult:
        for job in self.jobs:
            if job.id == job_id:
                return job
        raise KeyError(job_id)

    def utilization_series(self, bins: int = 200) -> tuple[tuple[float, float], ...]:
        """``(bin start, mean share of devices held)`` over ``bins`` equal slices of the run."""
        times, counts = self.usage_times, self.usage_devices
        if not times or self.capacity <= 0 or bins < 1:
            return ()
        start = times[0]
        end = max(times[-1], max((j.finish or 0.0) for j in self.jobs) if self.jobs else start)
        if end <= start:
            return ((start, counts[-1] / self.capacity),)
        width = (end - start) / bins
        area = [0.0] * bins
        for i, t0 in enumerate(times):
            t1 = times[i + 1] if i + 1 < len(times) else end
            level = counts[i]
            if level == 0 or t1 <= t0:
                continue
            b = min(int((t0 - start) / width), bins - 1)
            while t0 < t1 and b < bins:
                edge = start + (b + 1) * width
                step = min(t1, edge) - t0
                area[b] += level * step
                t0 += step
                b += 1
        cap = self.capacity * width
        return tuple((start + b * width, area[b] / cap) for b in range(bins))


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0–100) with linear interpolation, as numpy's default."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(
    policy: str,
    jobs: Sequence[JobResult],
    capacity: int,
    rounds: int,
    wall_s: float,
) -> SimMetrics:
    done = [j for j in jobs if j.finish is not None]
    jcts = [j.finish - j.submit for j in done if j.finish is not None]
    queues = [j.first_start - j.submit for j in done if j.first_start is not None]
    if jobs:
        first = min(j.submit for j in jobs)
        last = max((j.finish for j in done if j.finish is not None), default=first)
        makespan = last - first
    else:
        makespan = 0.0
    held = sum(j.held_s for j in jobs)
    useful = sum(j.held_s - j.lost_s for j in jobs)
    denom = capacity * makespan
    return SimMetrics(
        policy=policy,
        jobs=len(jobs),
        completed=len(done),
        avg_jct_s=sum(jcts) / len(jcts) if jcts else None,
        p50_jct_s=percentile(jcts, 50),
        p99_jct_s=percentile(jcts, 99),
        avg_queue_s=sum(queues) / len(queues) if queues else None,
        makespan_s=makespan,
        utilization=held / denom if denom > 0 else 0.0,
        useful_utilization=useful / denom if denom > 0 else 0.0,
        premium_sla_met=_share_met(done, Tier.PREMIUM, PREMIUM_SLA),
        standard_sla_met=_share_met(done, Tier.STANDARD, STANDARD_SLA),
        premium_preemptions=sum(j.preemptions for j in jobs if j.tier is Tier.PREMIUM),
        preemptions=sum(j.preemptions for j in jobs),
        premium_migrations=sum(j.migrations for j in jobs if j.tier is Tier.PREMIUM),
        resizes=sum(j.resizes for j in jobs),
        migrations=sum(j.migrations for j in jobs),
        lost_device_s=sum(j.lost_s for j in jobs),
        rounds=rounds,
        wall_s=wall_s,
    )


def _share_met(done: Sequence[JobResult], tier: Tier, threshold: float) -> float | None:
    of_tier = [j.attainment for j in done if j.tier is tier]
    if not of_tier:
        return None
    # A tiny tolerance so that float sums of exactly-met shares count as met.
    met = sum(1 for a in of_tier if a is not None and a >= threshold - 1e-9)
    return met / len(of_tier)
