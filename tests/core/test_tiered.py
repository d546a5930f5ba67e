"""``tiered``: one table-driven test per rule."""

from __future__ import annotations

import random

import pytest

from tests.core.helpers import NOW, actions, check, running, sizes, snap, spec, waiting
from tidal.core import (
    ClusterSnapshot,
    JobState,
    Migrate,
    Placement,
    Plan,
    Resize,
    Start,
    Stop,
    make_policy,
)
from tidal.core.policies.tiered import TieredPolicy

OLD = NOW - 10_000  # placed long ago: past any minimum hold time
RECENT = NOW - 10  # placed just now: inside the minimum hold time


def tiered(**options: object) -> TieredPolicy:
    policy = make_policy("tiered", **options)
    assert isinstance(policy, TieredPolicy)
    return policy


def test_premium_starts_at_once_on_free_devices() -> None:
    s = snap([waiting(spec("p", "premium", 4)), running(spec("b", "basic", 2), {"n0": 2})])
    plan = check(tiered(), s)
    assert plan.target("p").size == 4 and plan.target("b").size == 2


@pytest.mark.parametrize(
    ("jobs", "premium_world", "expected", "reason_of"),
    [
        # Basic jobs give way before standard ones.
        (
            [("std", "standard", 4, 4), ("bas", "basic", 4, 4)],
            4,
            {"std": 4, "bas": 0},
            "bas",
        ),
        # Shrink an elastic victim before stopping anyone.
        (
            [("el", "basic", 4, 4), ("rigid", "basic", 4, 4)],
            2,
            {"el": 2, "rigid": 4},
            "el",
        ),
        # Standard jobs are taken from only when basic ones are not enough.
        (
            [("std", "standard", 4, 4), ("bas", "basic", 2, 2), ("bas2", "basic", 2, 2)],
            6,
            {"std": 2, "bas": 0, "bas2": 0},
            "std",
        ),
    ],
)
def test_premium_takes_basic_first_and_shrinks_before_stopping(
    jobs: list[tuple[str, str, int, int]],
    premium_world: int,
    expected: dict[str, int],
    reason_of: str,
) -> None:
    views = []
    for name, tier, world, held in jobs:
        min_devices = world if name == "rigid" else 1
        s_ = spec(name, tier, world, min_devices=min_devices)
        views.append(running(s_, {"n0": held}, placed_at=RECENT))  # pins do not stop premium
    views.append(waiting(spec("p", "premium", premium_world)))
    s = snap(views)
    plan = check(tiered(), s)
    got = sizes(plan, s)
    assert got["p"] == premium_world
    for name, size in expected.items():
        assert got[name] == size, (name, got)
    assert "for premium job p" in plan.reasons[reason_of]


def test_premium_is_never_preempted_shrunk_or_moved() -> None:
    rng = random.Random(3)
    policy = tiered()
    for trial in range(60):
        s = random_snapshot(rng, trial)
        plan = check(policy, s)
        for act in plan.diff(s):
            view = s.job(act.job_id)
            if view.spec.tier.value == "premium":
                assert isinstance(act, Start), act


def test_premium_waits_rather_than_taking_premium_devices() -> None:
    s = snap(
        [running(spec("p1", "premium", 8), {"n0": 8}), waiting(spec("p2", "premium", 4))],
        per_node=8,
    )
    plan = check(tiered(), s)
    assert plan.target("p1") == Placement.of({"n0": 8}) and not plan.target("p2")
    assert plan.reasons["p2"].startswith("waiting: premium jobs hold 8 of 8")


@pytest.mark.parametrize(
    ("premium_duration", "victim_placed", "killed"),
    [
        (60.0, NOW - 30, True),  # short premium job, victim barely started: kill it
        (60.0, NOW - 5000, False),  # the victim would lose too much: checkpoint it
        (50_000.0, NOW - 30, False),  # long premium job: a checkpoint's delay is harmless
    ],
)
def test_kill_or_checkpoint_the_victim(
    premium_duration: float, victim_placed: float, killed: bool
) -> None:
    s = snap(
        [
            running(spec("v", "basic", 8), {"n0": 8}, placed_at=victim_placed),
            waiting(spec("p", "premium", 8, duration=premium_duration)),
        ]
    )
    plan = check(tiered(), s)
    (stop, start) = plan.diff(s)
    assert isinstance(stop, Stop) and stop.checkpoint is not killed
    assert isinstance(start, Start) and start.job_id == "p"


@pytest.mark.parametrize(("slack_margin", "killed"), [(1.0, False), (4.0, True)])
def test_slack_margin_distrusts_long_declarations(slack_margin: float, killed: bool) -> None:
    """A premium job declared at 200 s has 10.5 s of SLA slack, enough to wait for the
    victim's 6 s checkpoint; if it may be 4× shorter than declared, it has not."""
    s = snap(
        [
            running(spec("v", "basic", 8), {"n0": 8}, placed_at=NOW - 30),
            waiting(spec("p", "premium", 8, duration=200.0)),
        ]
    )
    plan = check(tiered(slack_margin=slack_margin), s)
    (stop, _) = plan.diff(s)
    assert isinstance(stop, Stop) and stop.checkpoint is not killed


def test_migration_lets_a_fragmented_premium_job_start() -> None:
    # 8 devices free in total, but 4 on each node: move the basic job to make a whole node.
    s = snap(
        [
            running(spec("x", "basic", 4, min_devices=4), {"n0": 4}, placed_at=RECENT),
            running(spec("y", "standard", 4, min_devices=4), {"n1": 4}, placed_at=RECENT),
            running(spec("z", "premium", 8), {"n2": 8}),
            waiting(spec("p", "premium", 8)),
        ],
        nodes=3,
    )
    plan = check(tiered(), s)
    acts = plan.diff(s)
    assert ("Migrate", "x") in actions(plan, s) or ("Migrate", "y") in actions(plan, s)
    (moved,) = [a for a in acts if isinstance(a, Migrate)]
    start = [a for a in acts if isinstance(a, Start)]
    assert start and start[0].job_id == "p" and start[0].placement.size == 8
    assert moved.old.nodes == start[0].placement.nodes  # it cleared the premium job's node
    assert "make room for premium job p" in plan.reasons[moved.job_id]
    assert plan.target("z") == Placement.of({"n2": 8})
    # Without migration the premium job takes a victim instead: the basic job.
    plan = check(tiered(migrate=False), s)
    assert plan.target("p").size == 8 and not plan.target("x")
    assert plan.reasons["x"] == "stopped for premium job p"


@pytest.mark.parametrize(
    ("quotas", "a_jobs", "b_jobs", "a_placed", "expected"),
    [
        # B is idle: A borrows the whole node.
        ({"a": 4, "b": 4}, 8, 0, OLD, {"a": 8, "b": 0}),
        # B comes back: A's borrowed devices are reclaimed.
        ({"a": 4, "b": 4}, 8, 4, OLD, {"a": 4, "b": 4}),
        # ...but not while A's jobs are inside their minimum hold time.
        ({"a": 4, "b": 4}, 8, 4, RECENT, {"a": 8, "b": 0}),
        # Unequal quotas.
        ({"a": 6, "b": 2}, 8, 8, OLD, {"a": 6, "b": 2}),
        # No quotas: fair shares among tenants with standard jobs.
        ({}, 8, 8, OLD, {"a": 4, "b": 4}),
        ({}, 8, 2, OLD, {"a": 6, "b": 2}),
    ],
)
def test_quotas_borrowing_and_reclaim(
    quotas: dict[str, int], a_jobs: int, b_jobs: int, a_placed: float, expected: dict[str, int]
) -> None:
    jobs = [
        running(spec(f"a{i}", tenant="a", submit=i), {"n0": 1}, placed_at=a_placed)
        for i in range(a_jobs)
    ]
    jobs += [waiting(spec(f"b{i}", tenant="b", submit=100 + i)) for i in range(b_jobs)]
    s = snap(jobs, quotas=quotas)
    plan = check(tiered(), s)
    got = {"a": 0, "b": 0}
    for view in s.jobs:
        got[view.spec.tenant] += plan.target(view.id).size
    assert got == expected
    for view in s.jobs:
        if view.spec.tenant == "b" and not plan.target(view.id):
            assert plan.reasons[view.id].startswith("waiting")


def test_basic_runs_only_on_what_is_left() -> None:
    """With strict tiers (``basic_lane=0``), a new standard job takes a basic job's device."""
    jobs = [running(spec(f"s{i}"), {"n0": 1}, placed_at=OLD) for i in range(6)]
    jobs += [running(spec(f"b{i}", "basic"), {"n0": 1}, placed_at=OLD) for i in range(2)]
    jobs += [waiting(spec("s-new", submit=50))]
    s = snap(jobs)
    plan = check(tiered(basic_lane=0), s)
    assert plan.target("s-new").size == 1
    assert sum(plan.target(f"b{i}").size for i in range(2)) == 1  # one basic job gave way


@pytest.mark.parametrize(
    ("placed_at", "premium", "preempted"),
    [
        (RECENT, False, False),  # inside min_hold: keeps its devices
        (OLD, False, True),  # past it: a job with less service takes over (LAS)
        (RECENT, True, True),  # premium work overrides the hold
    ],
)
def test_min_hold_prevents_thrashing(placed_at: float, premium: bool, preempted: bool) -> None:
    old = running(spec("old", world=8, min_devices=8), {"n0": 8}, placed_at=placed_at)
    old = type(old)(old.spec, old.state, old.placement, 0.0, 1e7, old.placed_at)  # much service
    new = waiting(spec("new", "premium" if premium else "standard", 8, submit=10))
    s = snap([old, new])
    plan = check(tiered(), s)
    assert (not plan.target("old")) is preempted
    assert bool(plan.target("new")) is preempted


def test_las_order_within_a_tier() -> None:
    """Least attained service first; among equals, first come first served."""
    fresh = waiting(spec("fresh", submit=500))
    served = waiting(spec("served", submit=1), attained=1e6, state=JobState.PREEMPTED)
    first = waiting(spec("first", submit=2))
    s = snap(
        [
            running(spec("r", world=7, min_devices=7), {"n0": 7}, placed_at=RECENT),
            fresh,
            served,
            first,
        ]
    )
    plan = check(tiered(), s)
    assert [j for j in ("fresh", "served", "first") if plan.target(j)] == ["first"]


@pytest.mark.parametrize(
    ("floor", "grace", "starved_runs"),
    [
        (0.0, 3_600, False),  # no floor: plain LAS, the fresh job keeps its devices
        (0.5, 3_600, True),  # below half of its asked-for device-time: goes first
        (0.5, 100_000, False),  # still inside the grace period
        (0.05, 3_600, False),  # above a low floor: LAS as usual
    ],
)
def test_share_floor_lifts_a_starved_job_above_las(
    floor: float, grace: float, starved_runs: bool
) -> None:
    """A standard job in the lowest service level, older than ``floor_grace``, whose
    attained share of W x age is below ``standard_floor`` goes ahead of every service level
    (and so preempts a job of a higher level that has had its share)."""
    fresh = running(
        spec("fresh", world=8, min_devices=8, submit=NOW - 20_000),
        {"n0": 8},
        placed_at=OLD,
        attained=8 * 20_000 * 0.6,
    )
    starved = waiting(
        spec("starved", world=8, min_devices=8, submit=NOW - 90_000),
        attained=120_000.0,  # lowest service level, a sixth of the device-time it asked for
        state=JobState.PREEMPTED,
    )
    plan = check(tiered(standard_floor=floor, floor_grace=grace), snap([fresh, starved]))
    assert bool(plan.target("starved")) is starved_runs
    assert bool(plan.target("fresh")) is not starved_runs


def test_share_floor_follows_the_clock_for_unchanged_views() -> None:
    """The same views, later: the starved job's grace period is over and it goes first
    (the policy reuses its per-view bookkeeping between rounds, but not a stale floor)."""
    from dataclasses import replace

    fresh = running(
        spec("fresh", world=8, min_devices=8, submit=NOW - 20_000),
        {"n0": 8},
        placed_at=OLD,
        attained=96_000.0,
    )
    starved = waiting(
        spec("starved", world=8, min_devices=8, submit=NOW - 90_000),
        attained=120_000.0,
        state=JobState.PREEMPTED,
    )
    policy = tiered(standard_floor=0.5, floor_grace=100_000)
    s = snap([fresh, starved])
    assert not check(policy, s).target("starved")
    assert check(policy, replace(s, now=NOW + 20_000)).target("starved")
    assert not check(policy, s).target("starved")


@pytest.mark.parametrize(
    ("standard_yield", "attained", "winner"),
    [
        (0.0, 9_000.0, "std"),  # off: standard before basic, always
        (0.8, 9_000.0, "basic"),  # 90 % of what it asked for: slack, queues with basic
        (0.8, 5_000.0, "std"),  # 50 %: no slack, keeps its standard priority
    ],
)
def test_standard_with_sla_slack_yields_idle_devices_to_basic(
    standard_yield: float, attained: float, winner: str
) -> None:
    """One idle device, a waiting standard job that has had ``attained`` of the 10,000
    device-seconds it asked for, and a fresh basic job."""
    s = snap(
        [
            running(spec("r", world=7, min_devices=7), {"n0": 7}, placed_at=RECENT),
            waiting(spec("std", submit=NOW - 10_000), attained=attained, state=JobState.PREEMPTED),
            waiting(spec("basic", "basic", submit=NOW - 10)),
        ]
    )
    plan = check(tiered(standard_yield=standard_yield, basic_lane=0), s)
    assert [j for j in ("std", "basic") if plan.target(j)] == [winner]


@pytest.mark.parametrize(
    ("margin", "share", "long_left", "expected"),
    [
        # Off: plain tiers and LAS; the standard job runs, the long basic job waits.
        (None, 0.25, 900_000.0, {"std": 8, "long": 0}),
        # On: the basic job with the longest time left runs at full size first.
        (0.0, 0.5, 900_000.0, {"long": 4, "std": 4}),
        # Less than `critical_min` left: it cannot push the last finish out, so LAS rules.
        (0.0, 0.5, 50_000.0, {"std": 8, "long": 0}),
        # Critical jobs together take at most `critical_share` of the room.
        (0.0, 0.25, 900_000.0, {"std": 8, "long": 0}),
    ],
)
def test_critical_path_job_runs_before_las_and_tiers(
    margin: float | None, share: float, long_left: float, expected: dict[str, int]
) -> None:
    """A basic job with far more time left than anyone else (``critical_margin``) runs
    ahead of a standard job that LAS and the tiers would put first, so that the
    longest job does not decide when the backlog is done."""
    long = waiting(
        spec("long", "basic", 4, min_devices=4, duration=long_left + 100_000),
        attained=400_000.0,
        done=100_000.0 * 4,
        state=JobState.PREEMPTED,
    )
    std = running(spec("std", world=8, min_devices=4, duration=200_000), {"n0": 8}, placed_at=OLD)
    policy = tiered(critical_margin=margin, critical_share=share)
    plan = check(policy, snap([long, std]))
    assert {j: plan.target(j).size for j in expected} == expected


@pytest.mark.parametrize(
    ("by_remaining", "running_left", "winner"),
    [
        # Off: the lowest LAS level is first come, first served; the running job keeps on.
        (False, 4_000_000.0, "old"),
        # On: the job with much less work left goes first, even past a running one.
        (True, 4_000_000.0, "short"),
        # On, but less than twice as much work left: the running job keeps its devices.
        (True, 1_500_000.0, "old"),
    ],
)
def test_lowest_level_by_declared_work_left(
    by_remaining: bool, running_left: float, winner: str
) -> None:
    """Two basic jobs in the lowest service level want the same 8 devices: ``old`` runs
    with ``running_left`` device-seconds of work left, ``short`` (submitted later) waits
    with 1,000,000. With ``lowest_by_remaining`` the lowest level is ordered by work left,
    one sub-level per doubling, running jobs first within a sub-level."""
    old = running(
        spec("old", "basic", 8, min_devices=8, duration=running_left / 8 + 100_000),
        {"n0": 8},
        placed_at=OLD,
        attained=800_000.0,
        done=800_000.0,
    )
    short = waiting(
        spec("short", "basic", 8, min_devices=8, submit=10.0, duration=1_000_000 / 8 + 50_000),
        attained=400_000.0,
        done=400_000.0,
        state=JobState.PREEMPTED,
    )
    plan = check(tiered(lowest_by_remaining=by_remaining), snap([old, short]))
    assert [j for j in ("old", "short") if plan.target(j)] == [winner]


@pytest.mark.parametrize(
    ("basic_lane", "basic_attained", "winner"),
    [
        (0, 0.0, "std"),  # off: basic jobs run only on what standard work leaves
        (1, 0.0, "basic"),  # a fresh basic job queues with standard ones, by LAS
        (1, 10_000.0, "std"),  # past the first LAS level: back behind standard work
        (3, 10_000.0, "basic"),  # a wider lane: still with standard jobs at level 1
    ],
)
def test_young_basic_jobs_queue_with_standard_ones(
    basic_lane: int, basic_attained: float, winner: str
) -> None:
    """8 devices, held by a standard job in the lowest LAS level past its minimum hold;
    a basic job asks for all 8. With ``basic_lane`` = N, a basic job in the first N LAS
    levels ranks with standard jobs of its level, so it goes before the long one."""
    std = running(
        spec("std", world=8, min_devices=8, duration=100_000),
        {"n0": 8},
        placed_at=OLD,
        attained=200_000.0,
        done=200_000.0,
    )
    basic = waiting(
        spec("basic", "basic", 8, min_devices=8, submit=NOW - 50_000, duration=10_000),
        attained=basic_attained,
        done=basic_attained,
        state=JobState.PREEMPTED if basic_attained else JobState.PENDING,
    )
    plan = check(tiered(basic_lane=basic_lane), snap([std, basic]))
    assert [j for j in ("std", "basic") if plan.target(j)] == [winner]


@pytest.mark.parametrize("basic_first", [True, False])
def test_lane_basic_jobs_queue_behind_standard_jobs_of_their_level(basic_first: bool) -> None:
    """Room for one of two fresh 8-device jobs at the same LAS level: the standard one
    starts, whichever was submitted first."""
    early, late = NOW - 600, NOW - 300
    std = waiting(spec("std", world=8, min_devices=8, submit=late if basic_first else early))
    basic = waiting(spec("basic", "basic", 8, min_devices=8, submit=early if basic_first else late))
    plan = check(tiered(), snap([std, basic]))
    assert plan.target("std").size == 8 and not plan.target("basic")


def idle_devices(plan: Plan, s: ClusterSnapshot) -> dict[str, int]:
    """Per node, devices free now that the plan leaves unassigned.

    New placements may reuse devices that stopped or shrunk jobs release (their start just
    waits for the release), but not those a *moving* job leaves: it holds them while it
    checkpoints, and ``tiered`` keeps them out of the round on purpose.
    """
    held = {n.name: 0 for n in s.fleet.nodes}
    new = dict.fromkeys(held, 0)
    released = dict.fromkeys(held, 0)
    for view in s.jobs:
        current = view.placement.as_dict() if view.state.holds_devices else {}
        target = {} if view.state is JobState.STOPPING else plan.target(view.id).as_dict()
        moving = bool(target) and any(c > current.get(n, 0) for n, c in target.items())
        for node in set(target) | set(current):
            held[node] += current.get(node, 0)
            new[node] += max(0, target.get(node, 0) - current.get(node, 0))
            if not moving:
                released[node] += max(0, current.get(node, 0) - target.get(node, 0))
    return {
        n.name: n.devices - held[n.name] - max(0, new[n.name] - released[n.name])
        for n in s.fleet.nodes
    }


def assert_work_conserving(plan: Plan, s: ClusterSnapshot) -> None:
    if any(
        "being released" in r or "fragmented" in r
        for j, r in plan.reasons.items()
        if s.job(j).spec.tier.value == "premium"
    ):
        return  # free devices are kept for a premium job about to start
    idle = idle_devices(plan, s)
    for view in s.jobs:
        if view.state is JobState.STOPPING or "premium job" in plan.reasons.get(view.id, ""):
            continue
        target = plan.target(view.id)
        have = target.size
        bigger = [p for p in view.spec.sizes if p > have]
        held = view.placement.size if view.state.holds_devices else 0
        if not bigger or (held and have >= held and (view.placed_at or 0) > s.now - 900):
            continue  # inside its minimum hold time a running job is not resized to grow
        if have and len(target.parts) == 1:
            ((node, _),) = target.parts
            in_place = idle[node] >= bigger[0] - have
        else:
            in_place = False
        elsewhere = any(free >= bigger[0] for free in idle.values())
        assert not (in_place or elsewhere), (view.id, have, idle, plan.reasons.get(view.id))


@pytest.mark.parametrize(
    "jobs",
    [
        # An elastic job grows into free devices.
        [running(spec("e", world=8), {"n0": 4}, placed_at=OLD)],
        # Waiting jobs start at a smaller allowed size rather than leave devices idle.
        [running(spec("r", world=6, min_devices=6), {"n0": 6}), waiting(spec("w", world=8))],
        # Basic jobs soak up what standard ones leave.
        [running(spec("s", world=2, min_devices=2), {"n0": 2}), waiting(spec("b", "basic", 6))],
    ],
)
def test_work_conservation(jobs: list[object]) -> None:
    s = snap(jobs)  # type: ignore[arg-type]
    plan = check(tiered(), s)
    assert_work_conserving(plan, s)
    assert sum(plan.target(v.id).size for v in s.jobs) == 8


def test_work_conservation_on_random_fleets() -> None:
    rng = random.Random(11)
    policy = tiered()
    for trial in range(60):
        s = random_snapshot(rng, trial, stopping=False)
        assert_work_conserving(check(policy, s), s)


def test_a_job_near_its_end_is_not_resized_to_grow() -> None:
    short = running(spec("e", world=8, duration=100.0), {"n0": 4}, placed_at=OLD)
    plan = check(tiered(), snap([short]))
    assert plan.target("e").size == 4
    assert plan.reasons["e"] == "running on 4 of 8 devices: no more free"


def test_shrunk_reason_names_the_premium_job() -> None:
    s = snap([running(spec("e", world=8), {"n0": 8}), waiting(spec("j-17", "premium", 4))])
    plan = check(tiered(), s)
    assert plan.reasons["e"] == "shrunk 8→4 for premium job j-17"
    (resize, start) = plan.diff(s)
    assert isinstance(resize, Resize) and resize.new.size == 4
    assert isinstance(start, Start)


def test_stopping_jobs_keep_their_devices_and_premium_waits_for_them() -> None:
    s = snap(
        [
            running(spec("leaving", "basic", 8), {"n0": 8}, state=JobState.STOPPING),
            waiting(spec("p", "premium", 8)),
            waiting(spec("b", "basic", 1)),
        ]
    )
    plan = check(tiered(), s)
    assert not plan.target("p") and not plan.target("b")
    assert "being released" in plan.reasons["p"]


def test_parameters_are_validated() -> None:
    with pytest.raises(ValueError, match="min_hold must be >= 0 seconds, got -1"):
        TieredPolicy(min_hold=-1)
    with pytest.raises(ValueError, match="increasing"):
        TieredPolicy(las_thresholds=(100.0, 10.0))
    with pytest.raises(ValueError, match="tick must be > 0"):
        TieredPolicy(tick=0)
    with pytest.raises(ValueError, match=r"slack_margin must be >= 1, got 0\.5"):
        TieredPolicy(slack_margin=0.5)
    with pytest.raises(ValueError, match="round_interval must be >= 0 seconds"):
        TieredPolicy(round_interval=-5)
    assert TieredPolicy(round_interval=30).round_interval == 30
    with pytest.raises(ValueError, match="standard_yield must be in"):
        TieredPolicy(standard_yield=2)
    with pytest.raises(ValueError, match="basic_lane must be between 0 and 3"):
        TieredPolicy(basic_lane=4)
    with pytest.raises(ValueError, match="critical_margin must be"):
        TieredPolicy(critical_margin=-1)
    with pytest.raises(ValueError, match="critical_share in"):
        TieredPolicy(critical_share=1.5)
    with pytest.raises(ValueError, match="standard_floor and basic_floor must be in"):
        TieredPolicy(basic_floor=1.5)


def random_snapshot(rng: random.Random, seed: int, stopping: bool = True) -> ClusterSnapshot:
    """A busy random fleet: every tier, elastic and rigid jobs, pins, a few stopping."""
    from tidal.core import Fleet
    from tidal.core.packing import FreePool

    fleet = Fleet.uniform(rng.randint(2, 6), 8)
    pool = FreePool(fleet)
    jobs = []
    for k in range(rng.randint(3, 30)):
        tier = rng.choice(["premium", "standard", "standard", "basic"])
        world = rng.choice([1, 1, 2, 4, 8, 16])
        s_ = spec(
            f"j{k}",
            tier,
            world,
            submit=rng.uniform(0, NOW),
            tenant=rng.choice("abc"),
            min_devices=rng.choice([1, world]),
        )
        size = rng.choice(s_.sizes) if rng.random() < 0.7 else 0
        placement = pool.allocate(size, "gpu") if size else Placement()
        if placement:
            state = JobState.STOPPING if stopping and rng.random() < 0.1 else JobState.RUNNING
            jobs.append(
                running(
                    s_,
                    placement.as_dict(),
                    placed_at=rng.choice([OLD, RECENT]),
                    attained=rng.uniform(0, 1e5),
                    state=state,
                )
            )
        else:
            jobs.append(waiting(s_, attained=rng.choice([0.0, rng.uniform(0, 1e5)])))
    quotas = {"a": 8, "b": 4} if seed % 2 else {}
    return snap(jobs, fleet=fleet, quotas=quotas)


def test_growth_never_preempts() -> None:
    # An elastic standard job past its hold could use 8 devices, but basic jobs hold 4 of
    # them: it grows only into what is free.
    jobs = [
        running(spec("e", world=8), {"n0": 4}, placed_at=OLD, attained=10.0),
        running(spec("b0", "basic"), {"n0": 1}, placed_at=OLD, attained=1e7),
        running(spec("b1", "basic"), {"n0": 1}, placed_at=OLD, attained=1e7),
    ]
    s = snap(jobs)
    plan = check(tiered(), s)
    assert plan.target("b0").size == 1 and plan.target("b1").size == 1
    assert plan.target("e").size == 4  # 2 free devices: no allowed size between 4 and 8


@pytest.mark.parametrize(
    ("duration", "waits"),
    [
        (100_000.0, True),  # can afford the few seconds: waits for the stopping job
        (30.0, False),  # cannot: takes a victim (killed: it barely started) instead
    ],
)
def test_premium_waits_for_stopping_devices_only_if_it_can_afford_to(
    duration: float, waits: bool
) -> None:
    s = snap(
        [
            running(spec("leaving", "basic"), {"n0": 1}, state=JobState.STOPPING),
            running(spec("fresh", "basic", 7, min_devices=7), {"n0": 7}, placed_at=NOW - 5),
            waiting(spec("p", "premium", 1, duration=duration)),
        ]
    )
    plan = check(tiered(), s)
    assert bool(plan.target("fresh")) is waits
    assert bool(plan.target("p")) is not waits
    if not waits:
        assert "fresh" in plan.kill
