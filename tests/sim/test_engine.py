"""Tiny hand-written traces whose answers can be worked out on paper."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tidal.core import EMPTY, ClusterSnapshot, Fleet, JobState, Placement, Tier
from tidal.sim import CostModel, PolicyActionError, SimError, simulate

from .helpers import costs, job, on
from .policies import GangFifo, Scripted

ONE_NODE = Fleet.uniform(1, 4)


def test_two_jobs_fifo_exact_jcts() -> None:
    # a runs 0..100 on all 4 devices; b arrives at 10, waits, runs 100..150.
    jobs = [job("a", 4, 100.0), job("b", 4, 50.0, submit=10.0)]
    result = simulate(jobs, ONE_NODE, GangFifo(), CostModel.zero())
    a, b = result.job("a"), result.job("b")
    assert (a.first_start, a.finish, b.first_start, b.finish) == (0.0, 100.0, 100.0, 150.0)
    m = result.metrics
    assert m.completed == 2
    assert m.avg_jct_s == pytest.approx(120.0)  # (100 + 140) / 2
    assert m.p50_jct_s == pytest.approx(120.0)
    assert m.p99_jct_s == pytest.approx(100 + 0.99 * 40)
    assert m.avg_queue_s == pytest.approx(45.0)  # (0 + 90) / 2
    assert m.makespan_s == pytest.approx(150.0)
    assert m.utilization == pytest.approx(1.0)  # 4 × 150 device-s held of 4 × 150
    assert m.lost_device_s == 0.0
    # attainment: a held 400 of 4 × 100; b held 200 of 4 × 140
    assert a.attainment == pytest.approx(1.0)
    assert b.attainment == pytest.approx(200 / 560)
    assert m.standard_sla_met == pytest.approx(0.5)
    assert m.premium_sla_met is None


def _preempt_a_for_b(snapshot: ClusterSnapshot) -> dict[str, Placement]:
    if "b" in snapshot:
        return {"a": EMPTY, "b": on("n0", 2)}
    return {"a": on("n0", 2)}


def test_checkpointed_preemption_exact_lost_time() -> None:
    # a (W=2, 100 s) runs 0..30; b arrives at 30 and takes the node. a checkpoints 30..40
    # holding its devices (b's start is deferred until they are free); b runs 40..90; a
    # restarts 90..110 and runs its remaining 70 s, 110..180.
    fleet = Fleet.uniform(1, 2)
    jobs = [job("a", 2, 100.0), job("b", 2, 50.0, submit=30.0, tier=Tier.PREMIUM)]
    result = simulate(jobs, fleet, Scripted(_preempt_a_for_b), costs(checkpoint=10, restart=20))
    a, b = result.job("a"), result.job("b")
    assert a.finish == pytest.approx(180.0)
    assert (b.first_start, b.finish) == (40.0, 90.0)
    assert a.preemptions == 1 and b.preemptions == 0
    assert a.running_s == pytest.approx(200.0)
    assert a.lost_s == pytest.approx(2 * (10 + 20))
    assert a.held_s == pytest.approx(260.0)
    m = result.metrics
    assert m.lost_device_s == pytest.approx(60.0)
    assert m.preemptions == 1 and m.premium_preemptions == 0
    # b waited 10 of its 60 s of life: 100 device-s held of 120 asked, under 95 %
    assert b.attainment == pytest.approx(100 / 120)
    assert m.premium_sla_met == 0.0
    assert m.utilization == pytest.approx((260 + 100) / (2 * 180))


def test_a_stop_past_its_grace_is_a_kill() -> None:
    # As above, but a may take only 4 s to stop while its checkpoint takes 10: it is killed
    # at 34, losing the 60 device-s it did since its start; b starts then (34..84); a
    # restarts 84..104 from scratch and runs 104..204.
    fleet = Fleet.uniform(1, 2)
    jobs = [job("a", 2, 100.0), job("b", 2, 50.0, submit=30.0, tier=Tier.PREMIUM)]
    result = simulate(
        jobs,
        fleet,
        Scripted(_preempt_a_for_b),
        costs(checkpoint=10, restart=20),
        stop_grace=4.0,
        record_events=True,
    )
    a, b = result.job("a"), result.job("b")
    assert (b.first_start, b.finish) == (34.0, 84.0)
    assert a.finish == pytest.approx(204.0)
    assert a.held_s == pytest.approx(2 * 34 + 2 * 120)
    assert a.running_s == pytest.approx(60 + 200)
    assert a.lost_s == pytest.approx(308 - 260 + 60)
    stopped = [e for e in result.events if e.job_id == "a" and e.new is JobState.PREEMPTED]
    assert [(e.at, e.reason) for e in stopped] == [(34.0, "stopped")]
    with pytest.raises(SimError, match="stop_grace must be a number of seconds >= 0"):
        simulate(jobs, fleet, Scripted(_preempt_a_for_b), stop_grace=-1.0)


def test_kill_loses_progress_and_restart_time() -> None:
    # a is killed at 30 (60 device-s of work lost), b runs 30..80 at once, a restarts from
    # scratch 80..100 (restart 20 s) and runs all 100 s, 100..200.
    fleet = Fleet.uniform(1, 2)
    jobs = [job("a", 2, 100.0), job("b", 2, 50.0, submit=30.0)]
    policy = Scripted(_preempt_a_for_b, checkpoint_on_stop=False)
    result = simulate(jobs, fleet, policy, costs(checkpoint=10, restart=20))
    a, b = result.job("a"), result.job("b")
    assert (b.first_start, b.finish) == (30.0, 80.0)
    assert a.finish == pytest.approx(200.0)
    assert a.lost_s == pytest.approx(60 + 40)
    assert a.running_s == pytest.approx(260.0)
    assert result.metrics.lost_device_s == pytest.approx(100.0)
    # 400 device-s held over 2 devices × 200 s; 100 of them produced nothing kept
    assert result.metrics.utilization == pytest.approx(1.0)
    assert result.metrics.useful_utilization == pytest.approx(0.75)


@pytest.mark.parametrize(
    ("extra", "duration"),
    [
        ({}, 200.0),  # P = W/2 with efficiency 1: twice as long
        ({"splice_overhead": 0.25}, 250.0),
        ({"scaling_efficiency": 0.5}, 400.0),
    ],
)
def test_half_size_speed(extra: dict[str, float], duration: float) -> None:
    policy = Scripted(lambda s: {"a": on("n0", 2)} if "a" in s else {})
    result = simulate([job("a", 4, 100.0)], ONE_NODE, policy, costs(**extra))
    a = result.job("a")
    assert a.finish == pytest.approx(duration)
    assert a.attainment == pytest.approx(0.5)  # 2 of the 4 devices it asked for
    assert result.metrics.standard_sla_met == 0.0


def test_full_size_is_full_speed_even_with_overheads() -> None:
    policy = Scripted(lambda s: {"a": on("n0", 4)} if "a" in s else {})
    result = simulate([job("a", 4, 100.0)], ONE_NODE, policy, CostModel())
    assert result.job("a").finish == pytest.approx(100.0)


def _shrink_a_for_z(snapshot: ClusterSnapshot) -> dict[str, Placement]:
    if "z" in snapshot:
        return {"a": on("n0", 2), "z": on("n0", 2)}
    return {}


def test_resize_pauses_for_checkpoint_and_restart() -> None:
    # a (W=4, 400 device-s) runs at 4 for 0..50 (200 done); shrinks at 50: checkpoint
    # 50..60 on its 4 devices, restart 60..80 on 2, then 200 left at rate 2: 80..180.
    # z takes the 2 freed devices when they are free, at 60, and runs 60..70.
    jobs = [job("a", 4, 100.0), job("z", 2, 10.0, submit=50.0, tier=Tier.BASIC)]
    first = Scripted(lambda s: {"a": on("n0", 4)} if s.job("a").state is JobState.PENDING else {})

    def script(snapshot: ClusterSnapshot) -> dict[str, Placement]:
        return {**first._script(snapshot), **_shrink_a_for_z(snapshot)} if "a" in snapshot else {}

    result = simulate(jobs, ONE_NODE, Scripted(script), costs(checkpoint=10, restart=20))
    a, z = result.job("a"), result.job("z")
    assert (z.first_start, z.finish) == (60.0, 70.0)
    assert a.finish == pytest.approx(180.0)
    assert a.resizes == 1 and a.preemptions == 0
    assert a.held_s == pytest.approx(4 * 50 + 4 * 10 + 2 * 20 + 2 * 100)
    assert a.lost_s == pytest.approx(4 * 10 + 2 * 20)
    assert result.metrics.resizes == 1


def test_migrate_pauses_and_moves() -> None:
    # a runs on n0 0..30, migrates to n1 (holding both during the 10 s checkpoint, then n1
    # for the 20 s restart), and finishes its last 70 s at 130.
    fleet = Fleet.uniform(2, 2)
    jobs = [job("a", 2, 100.0), job("trigger", 1, 1.0, submit=30.0)]

    def script(snapshot: ClusterSnapshot) -> dict[str, Placement]:
        if "a" not in snapshot:
            return {}
        target = on("n1", 2) if snapshot.now >= 30 else on("n0", 2)
        return {"a": target, "trigger": EMPTY}

    policy = Scripted(script, tick=1000.0)
    result = simulate(jobs, fleet, policy, costs(checkpoint=10, restart=20), record_events=True)
    a = result.job("a")
    assert a.migrations == 1
    assert a.finish == pytest.approx(130.0)
    assert a.held_s == pytest.approx(2 * 30 + 4 * 10 + 2 * 20 + 2 * 70)
    states = [e.new for e in result.events if e.job_id == "a"]
    assert states == [
        JobState.STARTING,
        JobState.RUNNING,
        JobState.STOPPING,
        JobState.PREEMPTED,
        JobState.STARTING,
        JobState.RUNNING,
        JobState.SUCCEEDED,
    ]
    # the trigger job can never run under this script: the run ends, reporting it
    assert not result.job("trigger").completed
    assert result.metrics.completed == 1


def test_stop_while_starting_is_immediate() -> None:
    # a is resumed at 10 and stopped again at 15 while restarting: no checkpoint needed.
    fleet = Fleet.uniform(1, 2)
    jobs = [
        job("a", 2, 100.0),
        job("x", 2, 5.0, submit=5.0, tier=Tier.PREMIUM),
        job("y", 2, 5.0, submit=15.0, tier=Tier.PREMIUM),
    ]

    def script(snapshot: ClusterSnapshot) -> dict[str, Placement]:
        for other in ("x", "y"):
            if other in snapshot:
                return {"a": EMPTY, other: on("n0", 2)}
        return {"a": on("n0", 2)}

    result = simulate(jobs, fleet, Scripted(script), costs(checkpoint=0, restart=20))
    a = result.job("a")
    # a: run 0..5, stop (free checkpoint), x runs 5..10, a restarts 10..15, stopped at 15,
    # y runs 15..20, a restarts 20..40 and runs its last 95 s to 135.
    assert a.preemptions == 2
    assert a.finish == pytest.approx(135.0)
    assert a.lost_s == pytest.approx(2 * 5 + 2 * 20)


def test_tick_calls_policy_while_jobs_wait() -> None:
    fleet = Fleet.uniform(1, 2)
    jobs = [job("a", 2, 100.0), job("b", 2, 10.0, submit=1.0)]
    policy = Scripted(lambda s: {"a": on("n0", 2)} if "a" in s else {"b": on("n0", 2)}, tick=25)
    result = simulate(jobs, fleet, policy, CostModel.zero())
    # arrivals at 0 and 1, ticks every 25 s while b waits, a done at 100, b done at 110
    assert policy.calls == [0.0, 1.0, 26.0, 51.0, 76.0, 100.0, 110.0]
    assert result.job("b").finish == pytest.approx(110.0)


def test_min_round_interval_coalesces_rounds() -> None:
    fleet = Fleet.uniform(1, 8)
    jobs = [job(f"j{i}", 1, 100.0, submit=float(i)) for i in range(8)]
    exact = simulate(jobs, fleet, GangFifo(), CostModel.zero())
    coarse = simulate(jobs, fleet, GangFifo(), CostModel.zero(), min_round_interval=10.0)
    assert exact.metrics.rounds == 16
    # rounds at 0 (j0), 10 (j1..j7), 100 (j0 done), 110 (the rest done)
    assert coarse.metrics.rounds == 4
    assert coarse.job("j1").first_start == 10.0
    assert coarse.job("j1").finish == 110.0


class BatchedFifo(GangFifo):
    """A gang FIFO that lets the caller batch changes of up to 10 s (``round_interval``)."""

    round_interval = 10.0


def test_round_interval_batches_changes_but_not_premium_arrivals() -> None:
    fleet = Fleet.uniform(1, 8)
    jobs = [
        job("j0", 1, 100.0),
        job("j1", 1, 100.0, submit=1.0),
        job("j2", 1, 100.0, submit=2.0),
        job("p", 1, 100.0, submit=4.0, tier=Tier.PREMIUM),
        job("j3", 1, 100.0, submit=5.0),
    ]
    result = simulate(jobs, fleet, BatchedFifo(), CostModel.zero())
    # j0 at once (no round yet); j1 and j2 wait for the round due at 10, but the premium
    # job's arrival at 4 runs it at once; j3 then waits for the round due at 4 + 10.
    starts = {j: result.job(j).first_start for j in ("j0", "j1", "j2", "p", "j3")}
    assert starts == {"j0": 0.0, "j1": 4.0, "j2": 4.0, "p": 4.0, "j3": 14.0}
    # rounds at 0, 4, 14, then one per finish time: 100, 104, 114
    assert result.metrics.rounds == 6


def test_round_interval_does_not_batch_while_a_premium_job_waits() -> None:
    fleet = Fleet.uniform(1, 2)
    jobs = [job("a", 2, 50.0), job("p", 2, 10.0, submit=45.0, tier=Tier.PREMIUM)]
    result = simulate(jobs, fleet, BatchedFifo(), CostModel.zero())
    # p arrives at 45 and waits for a, which ends at 50, within 10 s of the last round:
    # the change gets a round at once, not at 55.
    assert result.job("p").first_start == 50.0
    batched = simulate(jobs, fleet, BatchedFifo(), CostModel.zero(), min_round_interval=10.0)
    assert batched.job("p").first_start == 55.0  # the caller's own interval is strict


def test_round_interval_must_be_a_number() -> None:
    policy = BatchedFifo()
    policy.round_interval = -1.0
    with pytest.raises(SimError, match="round_interval"):
        simulate([job("a", 1, 10.0)], ONE_NODE, policy, CostModel.zero())


def test_backfill_trusts_declared_work_and_jobs_run_their_true_work() -> None:
    # a (W=2) runs 0..100; b (W=4) arrives at 1 and waits for a: reserved at 100. c (W=2)
    # arrives at 2 and truly needs 200 s.
    fleet = Fleet.uniform(1, 4)
    a, b, c = job("a", 2, 100.0), job("b", 4, 10.0, submit=1.0), job("c", 2, 200.0, submit=2.0)
    honest = simulate([a, b, c], fleet, "fifo-backfill", CostModel.zero())
    # c would run past b's reservation: it waits; b 100..110, c 110..310
    assert (honest.job("b").first_start, honest.job("c").first_start) == (100.0, 110.0)
    assert honest.job("c").finish == 310.0
    # c declares 50 s: backfilled at once, it runs its true 200 s and delays b to 202
    lying = replace(c, declared_work=50.0 * 2)
    fooled = simulate([a, b, lying], fleet, "fifo-backfill", CostModel.zero())
    assert (fooled.job("c").first_start, fooled.job("c").finish) == (2.0, 202.0)
    assert fooled.job("b").first_start == 202.0


def test_overcommitting_plan_is_a_policy_error() -> None:
    policy = Scripted(lambda s: {j.id: on("n0", 4) for j in s.jobs})
    jobs = [job("a", 4, 10.0), job("b", 4, 10.0)]
    with pytest.raises(PolicyActionError, match="overcommits"):
        simulate(jobs, ONE_NODE, policy, CostModel.zero())


def test_bad_size_is_a_policy_error() -> None:
    policy = Scripted(lambda s: {"a": on("n0", 3)})
    with pytest.raises(PolicyActionError, match="not an allowed size"):
        simulate([job("a", 4, 10.0)], ONE_NODE, policy, CostModel.zero())


def test_job_too_big_for_fleet_ends_unfinished() -> None:
    jobs = [job("big", 8, 10.0), job("small", 2, 10.0)]
    result = simulate(jobs, ONE_NODE, GangFifo(), CostModel.zero())
    assert result.metrics.completed == 0  # FIFO head-of-line: small waits behind big
    assert result.metrics.jobs == 2


def test_until_stops_early() -> None:
    jobs = [job("a", 4, 100.0), job("b", 4, 100.0, submit=50.0), job("c", 1, 1.0, submit=500)]
    result = simulate(jobs, ONE_NODE, GangFifo(), CostModel.zero(), until=120.0)
    assert result.job("a").completed and not result.job("b").completed
    assert result.metrics.jobs == 3 and result.metrics.completed == 1
    assert result.job("c").held_s == 0.0


def _recorder(seen: list[tuple[float, float]]) -> Scripted:
    def script(snapshot: ClusterSnapshot) -> dict[str, Placement]:
        if "a" in snapshot:
            seen.append((snapshot.now, snapshot.job("a").work_done))
            return {"a": on("n0", 2)}
        return {}

    return Scripted(script)


@pytest.mark.parametrize(
    ("interval", "reported"), [(0.0, [0, 100, 200, 300]), (60.0, [0, 100, 100, 300])]
)
def test_progress_heartbeat(interval: float, reported: list[float]) -> None:
    # a (W=2) starts at 0; arrivals at 50, 100 and 150 make rounds. Its view is rebuilt
    # (exact) at 50, the first round after it changed state. With exact progress the policy
    # then sees 2 × 100 at 100; on a 60 s heartbeat the next report is due at 110, so at 100
    # it still sees the value reported at 50, and at 150 the fresh one.
    jobs = [
        job("a", 2, 500.0),
        job("x", 1, 1.0, submit=50.0),
        job("y", 1, 1.0, submit=100.0),
        job("z", 1, 1.0, submit=150.0),
    ]
    seen: list[tuple[float, float]] = []
    simulate(jobs, ONE_NODE, _recorder(seen), CostModel.zero(), progress_interval=interval)
    assert seen[:4] == list(zip((0.0, 50.0, 100.0, 150.0), reported, strict=True))


def test_restart_end_does_not_start_a_round() -> None:
    # a is stopped at 10 for b (checkpoint 0, so devices are free at once); b runs 10..20;
    # a resumes at 20 with a 30 s restart and runs its last 40 s, 50..90. Rounds: 0, 10
    # (b arrives), 20 (b done) and 90 (a done) — not 50, when a's restart ends.
    fleet = Fleet.uniform(1, 2)
    jobs = [job("a", 2, 50.0), job("b", 2, 10.0, submit=10.0)]
    policy = Scripted(_preempt_a_for_b)
    result = simulate(jobs, fleet, policy, costs(checkpoint=0, restart=30))
    assert policy.calls == [0.0, 10.0, 20.0, 90.0]
    assert result.job("a").finish == pytest.approx(90.0)


def test_duplicate_job_ids_are_rejected() -> None:
    with pytest.raises(SimError, match="'a' appears more than once"):
        simulate([job("a", 1, 1.0), job("a", 1, 1.0, submit=9.0)], ONE_NODE, GangFifo())


def test_gc_thresholds_are_restored() -> None:
    import gc

    before = gc.get_threshold()
    simulate([job("a", 1, 1.0)], ONE_NODE, GangFifo())
    assert gc.get_threshold() == before
