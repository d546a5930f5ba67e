"""Each baseline's defining behaviour."""

from __future__ import annotations

import pytest

from tests.core.helpers import NOW, actions, check, running, snap, spec, waiting
from tidal.core import JobState, Stop, make_policy


def test_fifo_blocks_behind_the_head_of_the_queue() -> None:
    s = snap(
        [
            running(spec("r", world=6, min_devices=6), {"n0": 6}),
            waiting(spec("head", world=4, submit=1)),
            waiting(spec("small", world=1, submit=2)),
        ]
    )
    plan = check(make_policy("fifo"), s)
    assert not plan.target("head") and not plan.target("small")  # 2 free, nobody starts
    assert "head of the FIFO queue" in plan.reasons["head"]
    assert plan.reasons["small"] == "waiting: behind head in the FIFO queue"


def test_fifo_starts_in_order_at_full_size_and_never_preempts() -> None:
    s = snap(
        [
            running(spec("old", "basic", 4), {"n0": 4}),
            waiting(spec("p", "premium", 4, submit=5)),
            waiting(spec("s", world=8, submit=1)),
        ]
    )
    plan = check(make_policy("fifo"), s)
    assert plan.target("old").size == 4 and not plan.target("s") and not plan.target("p")


@pytest.mark.parametrize(
    ("duration", "starts"),
    [
        (500.0, True),  # done before the head's reservation at t+1000: backfilled
        (5000.0, False),  # would still hold devices the head needs: waits
    ],
)
def test_backfill_never_delays_the_reservation(duration: float, starts: bool) -> None:
    s = snap(
        [
            running(spec("r", world=4, min_devices=4, duration=1000.0), {"n0": 4}),
            waiting(spec("head", world=8, submit=1)),
            waiting(spec("b", world=2, submit=2, duration=duration)),
        ]
    )
    plan = check(make_policy("fifo-backfill"), s)
    assert not plan.target("head")
    assert bool(plan.target("b")) is starts
    if not starts:
        assert "would delay the reservation of head" in plan.reasons["b"]
    # Plain FIFO starts neither.
    assert not check(make_policy("fifo"), s).target("b")


def test_backfill_uses_devices_the_reservation_does_not_need() -> None:
    # Head needs 8 on one node; n1 will free first, so n0's spare devices can be used
    # even by a long job.
    s = snap(
        [
            running(spec("r0", world=4, min_devices=4, duration=9000.0), {"n0": 4}),
            running(spec("r1", world=4, min_devices=4, duration=1000.0), {"n1": 4}),
            waiting(spec("head", world=8, submit=1)),
            waiting(spec("long", world=4, submit=2, duration=50_000.0)),
        ],
        nodes=2,
    )
    plan = check(make_policy("fifo-backfill"), s)
    assert plan.target("long").nodes == ("n0",)


def test_priority_kill_preempts_lower_tiers_and_loses_progress() -> None:
    s = snap(
        [
            running(spec("b", "basic", 4), {"n0": 4}, done=3000.0),
            running(spec("s", "standard", 4), {"n0": 4}),
            waiting(spec("p", "premium", 4)),
            waiting(spec("s2", "standard", 4)),  # same tier as s: may not preempt it
        ]
    )
    plan = check(make_policy("priority-kill"), s)
    assert plan.target("p").size == 4 and not plan.target("b") and plan.target("s").size == 4
    assert not plan.target("s2")
    stops = [a for a in plan.diff(s) if isinstance(a, Stop)]
    assert [(a.job_id, a.checkpoint) for a in stops] == [("b", False)]
    assert plan.reasons["b"] == "killed for premium job p (loses progress)"


def test_priority_kill_picks_the_node_with_the_least_important_victims() -> None:
    s = snap(
        [
            running(spec("s0", "standard", 8), {"n0": 8}),
            running(spec("b1", "basic", 8), {"n1": 8}),
            waiting(spec("p", "premium", 8)),
        ],
        nodes=2,
    )
    plan = check(make_policy("priority-kill"), s)
    assert plan.target("p").nodes == ("n1",) and plan.target("s0").size == 8


def test_priority_kill_does_not_skip_the_queue_without_preempting() -> None:
    s = snap([running(spec("p0", "premium", 8), {"n0": 8}), waiting(spec("b", "basic", 1))])
    plan = check(make_policy("priority-kill"), s)
    assert not plan.target("b") and "no lower-priority jobs" in plan.reasons["b"]


@pytest.mark.parametrize(
    ("attained", "demoted"),
    [
        (1000.0, False),  # still in the top queue: FIFO within it, no preemption
        (4000.0, True),  # past 3250 device-seconds: queue 1, preempted by a fresh job
    ],
)
def test_tiresias_demotes_by_attained_service(attained: float, demoted: bool) -> None:
    s = snap(
        [
            running(spec("r", world=8, submit=5), {"n0": 8}, attained=attained),
            waiting(spec("new", world=8, submit=10)),
        ]
    )
    plan = check(make_policy("tiresias"), s)
    assert (not plan.target("r")) is demoted
    assert bool(plan.target("new")) is demoted
    if demoted:
        assert plan.reasons["r"].startswith("preempted")
        assert next(a for a in plan.diff(s) if isinstance(a, Stop)).checkpoint


def test_tiresias_is_tier_blind_and_counts_device_seconds() -> None:
    # 2 devices for 2000 s = 4000 device-seconds: demoted, even though it is premium.
    s = snap(
        [
            running(spec("p", "premium", 2), {"n0": 2}, attained=4000.0),
            running(spec("x", world=6, min_devices=6), {"n0": 6}, attained=0.0),
            waiting(spec("b", "basic", 2, submit=50)),
        ]
    )
    plan = check(make_policy("tiresias"), s)
    assert not plan.target("p") and plan.target("b").size == 2


def test_tiresias_starvation_knob_promotes_long_waiters() -> None:
    starved = waiting(
        spec("old", world=8, submit=0),
        attained=8 * 1000.0,  # 1000 s executed; queue 2
        state=JobState.PREEMPTED,
        ckpt_at=NOW - 5000.0,  # waiting 5000 s since it stopped
    )
    fresh = waiting(spec("new", world=8, submit=NOW - 10))
    s = snap([starved, fresh])
    assert check(make_policy("tiresias"), s).target("new")
    plan = check(make_policy("tiresias", promote_knob=4.0), s)
    assert plan.target("old") and not plan.target("new")


@pytest.mark.parametrize(
    ("placed_at", "sliced"),
    [(NOW - 100, False), (NOW - 700, True)],  # quantum 600 s
)
def test_gandiva_time_slices_after_a_quantum(placed_at: float, sliced: bool) -> None:
    s = snap(
        [
            running(spec("r", world=8), {"n0": 8}, placed_at=placed_at),
            waiting(spec("w", world=8, submit=NOW - 50)),
        ]
    )
    plan = check(make_policy("gandiva"), s)
    assert bool(plan.target("w")) is sliced
    assert (not plan.target("r")) is sliced
    if sliced:
        assert actions(plan, s) == [("Stop", "r"), ("Start", "w")]


def test_gandiva_round_robin_serves_the_longest_waiting_first() -> None:
    s = snap(
        [
            waiting(spec("a", world=8, submit=10), state=JobState.PREEMPTED, ckpt_at=NOW - 50),
            waiting(spec("b", world=8, submit=20), state=JobState.PREEMPTED, ckpt_at=NOW - 900),
        ]
    )
    plan = check(make_policy("gandiva"), s)
    assert plan.target("b") and not plan.target("a")


@pytest.mark.parametrize("name", ["fifo", "fifo-backfill", "priority-kill", "tiresias", "gandiva"])
def test_baselines_run_jobs_only_at_full_size(name: str) -> None:
    s = snap(
        [
            running(spec("r", world=6, min_devices=6), {"n0": 6}, placed_at=NOW),
            waiting(spec("e", world=4)),  # elastic, but baselines do not shrink it to fit
        ]
    )
    plan = check(make_policy(name), s)
    assert not plan.target("e")
