"""Builders for hand-written snapshots, and the checks every produced plan must pass."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from tidal.core import (
    ClusterSnapshot,
    Fleet,
    JobSpec,
    JobState,
    JobView,
    Placement,
    Plan,
    Policy,
    Tier,
)

GIB = 1 << 30
NOW = 100_000.0
LONG = 1_000_000.0  # seconds of work: far more than any hold or grow threshold


def spec(
    job_id: str,
    tier: str = "standard",
    world: int = 1,
    *,
    submit: float = 0.0,
    tenant: str = "a",
    min_devices: int = 1,
    duration: float = LONG,
    ckpt_gib: int = 1,
    device_type: str = "gpu",
) -> JobSpec:
    return JobSpec(
        id=job_id,
        tenant=tenant,
        tier=Tier.parse(tier),
        world=world,
        submit_time=submit,
        device_type=device_type,
        min_devices=min_devices,
        work=duration * world,
        checkpoint_bytes=ckpt_gib * GIB,
    )


def running(
    s: JobSpec,
    placement: Mapping[str, int],
    *,
    placed_at: float = 0.0,
    attained: float = 0.0,
    done: float = 0.0,
    state: JobState = JobState.RUNNING,
    ckpt_at: float | None = None,
) -> JobView:
    return JobView(
        s, state, Placement.of(placement), done, attained, placed_at, ckpt_at, estimate=s.estimate
    )


def waiting(
    s: JobSpec,
    *,
    attained: float = 0.0,
    done: float = 0.0,
    state: JobState = JobState.PENDING,
    ckpt_at: float | None = None,
) -> JobView:
    return JobView(
        s,
        state,
        work_done=done,
        attained=attained,
        last_checkpoint_at=ckpt_at,
        estimate=s.estimate,
    )


def snap(
    jobs: Iterable[JobView],
    nodes: int = 1,
    per_node: int = 8,
    *,
    now: float = NOW,
    quotas: Mapping[str, int] | None = None,
    fleet: Fleet | None = None,
) -> ClusterSnapshot:
    return ClusterSnapshot(
        now=now,
        fleet=fleet or Fleet.uniform(nodes, per_node),
        jobs=tuple(jobs),
        quotas=dict(quotas or {}),
    )


def check(policy: Policy, snapshot: ClusterSnapshot) -> Plan:
    """Schedule and check what every plan must satisfy."""
    plan = policy.schedule(snapshot)
    plan.validate(snapshot)
    again = policy.schedule(snapshot)
    assert again == plan, "same snapshot, different plan"
    for view in snapshot.jobs:
        target = plan.target(view.id)
        if view.state is JobState.STOPPING:
            assert not target, f"stopping job {view.id} was placed"
            continue
        if target.size < view.spec.world:
            assert plan.reasons.get(view.id), f"job {view.id} is short without a reason"
    return plan


def sizes(plan: Plan, snapshot: ClusterSnapshot) -> dict[str, int]:
    return {v.id: plan.target(v.id).size for v in snapshot.jobs}


def actions(plan: Plan, snapshot: ClusterSnapshot) -> list[tuple[str, str]]:
    return [(type(a).__name__, a.job_id) for a in plan.diff(snapshot)]
