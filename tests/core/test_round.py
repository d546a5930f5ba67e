"""run_round with the fake executor, a round at a time: the execution contract end to end."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from tests.core.helpers import spec
from tidal.core import (
    EMPTY,
    Cancel,
    ClusterSnapshot,
    Fleet,
    JobState,
    NodeLeft,
    Outcome,
    Placement,
    Plan,
    RoundRules,
    StateChange,
    WorkerExited,
    run_round,
)
from tidal.core.book import JobBook
from tidal.core.errors import PlanError
from tidal.core.fake import FakeExecutor


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t


class Wants:
    """A policy that plans whatever the test sets in ``targets`` (jobs not named: none)."""

    name = "wants"
    tick: float | None = None
    round_interval: float | None = None

    def __init__(self) -> None:
        self.targets: dict[str, Placement] = {}

    def schedule(self, snapshot: ClusterSnapshot) -> Plan:
        return Plan(
            {j: p for j, p in self.targets.items() if j in snapshot},
            {j: "told so" for j in self.targets},
        )


FLEET = Fleet.uniform(2, 4)
N0 = Placement.of({"n0": 4})
N1 = Placement.of({"n1": 4})


class World:
    def __init__(self, capacity: Mapping[str, int] | None = None) -> None:
        self.clock = Clock()
        self.book = JobBook()
        self.fake = FakeExecutor(self.book, self.clock, capacity)
        self.policy = Wants()
        self.rounds = 0
        self.seen: list[object] = []

    def submit(self, job_id: str, world: int = 4, max_restarts: int = 3) -> None:
        from dataclasses import replace

        self.book.add(replace(spec(job_id, world=world), max_restarts=max_restarts), self.clock.t)

    def snapshot(self) -> ClusterSnapshot:
        self.rounds += 1
        views = tuple(r.view(self.clock.t) for r in self.book)
        return ClusterSnapshot(self.clock.t, FLEET, views, round_id=self.rounds)

    def round(self, snapshot: ClusterSnapshot | None = None, **kwargs: object):  # type: ignore[no-untyped-def]
        report = run_round(
            self.policy,
            snapshot or self.snapshot(),
            self.fake,
            **kwargs,  # type: ignore[arg-type]
        )
        self.seen.extend(self.fake.observe())
        return report

    def state(self, job_id: str) -> JobState:
        return self.book[job_id].state

    def changes(self, job_id: str) -> list[tuple[str, str]]:
        return [
            (c.new.value, c.reason)
            for c in self.seen
            if isinstance(c, StateChange) and c.job_id == job_id
        ]


def test_start_then_running_and_generations_count_changes() -> None:
    w = World()
    w.submit("a")
    w.policy.targets["a"] = N0
    report = w.round()
    assert [r.outcome for r in report.results] == [Outcome.APPLIED]
    assert w.state("a") is JobState.STARTING and w.book["a"].placement == N0
    w.fake.workers_up("a")
    w.seen.extend(w.fake.observe())
    assert w.state("a") is JobState.RUNNING
    assert w.book["a"].generation == 2
    assert [c.generation for c in w.seen if isinstance(c, StateChange)] == [1, 2]
    # Nothing to do: the plan keeps the job where it is.
    assert w.round().actions == ()


def test_a_placement_off_the_fleet_is_refused_before_the_executor_sees_it() -> None:
    w = World()
    w.submit("a")
    w.policy.targets["a"] = Placement.of({"n9": 4})
    report = w.round()
    (result,) = report.results
    assert result.outcome is Outcome.REFUSED
    assert "node 'n9', which is not in the fleet" in result.reason
    assert w.fake.applied == [] and w.state("a") is JobState.PENDING


def test_a_stale_action_is_refused_and_a_failed_worker_restarts() -> None:
    w = World()
    w.submit("a")
    w.policy.targets["a"] = N0
    w.round()
    w.fake.workers_up("a")
    w.seen.extend(w.fake.observe())
    old = w.snapshot()  # the job runs at generation 2
    w.policy.targets["a"] = N1  # the policy would migrate it ...
    w.fake.workers_exit("a", 1, "Traceback: boom")  # ... but a worker crashed meanwhile
    report = w.round(old)
    (result,) = report.results
    assert result.outcome is Outcome.REFUSED and result.reason.startswith("stale")
    assert w.state("a") is JobState.RESTARTING
    assert w.book["a"].restarts == 1 and w.book["a"].placement == EMPTY
    assert ("restarting", "worker exited with code 1: Traceback: boom") in w.changes("a")
    assert any(isinstance(o, WorkerExited) and o.code == 1 for o in w.seen)
    # Level-triggered: the next round decides again and starts it from its checkpoint.
    report = w.round()
    assert [type(a).__name__ for a in report.actions] == ["Start"]
    assert w.state("a") is JobState.STARTING and w.book["a"].placement == N1


def test_failures_beyond_max_restarts_fail_the_job() -> None:
    w = World()
    w.submit("a", max_restarts=1)
    w.policy.targets["a"] = N0
    for _ in range(2):
        w.round()
        w.fake.workers_exit("a", -9)
        w.seen.extend(w.fake.observe())
    assert w.state("a") is JobState.FAILED
    assert w.changes("a")[-1][1] == (
        "worker exited with signal 9 (failed 2 times; 1 restarts allowed)"
    )


def test_a_refused_start_fails_at_once() -> None:
    w = World()
    w.submit("a")
    w.policy.targets["a"] = N0
    w.round()
    w.fake.workers_exit("a", 2, "world size 4 does not match the checkpoint's 8")
    assert w.state("a") is JobState.FAILED


def test_a_stop_that_misses_its_deadline_is_killed() -> None:
    w = World()
    w.submit("a")
    w.policy.targets["a"] = N0
    w.round()
    w.fake.workers_up("a")
    del w.policy.targets["a"]  # the policy takes the devices away
    report = w.round(stop_deadline=w.clock.t + 30.0)
    (stop,) = report.actions
    assert type(stop).__name__ == "Stop" and stop.deadline == w.clock.t + 30.0  # type: ignore[union-attr]
    assert w.state("a") is JobState.STOPPING
    w.clock.t += 29.0
    w.seen.extend(w.fake.observe())
    assert w.state("a") is JobState.STOPPING  # still within its deadline
    w.clock.t += 2.0
    w.seen.extend(w.fake.observe())
    assert w.state("a") is JobState.PREEMPTED and w.fake.killed == ["a"]
    assert w.changes("a")[-1] == ("preempted", "stop deadline passed: killed")
    assert w.book["a"].last_checkpoint_at is None  # nothing committed: resumes as it was


def test_a_stop_in_time_commits_a_checkpoint() -> None:
    w = World()
    w.submit("a")
    w.policy.targets["a"] = N0
    w.round()
    w.fake.workers_up("a")
    del w.policy.targets["a"]
    w.round(stop_deadline=w.clock.t + 30.0)
    w.clock.t += 5.0
    w.fake.stop_done("a")
    w.seen.extend(w.fake.observe())
    assert w.state("a") is JobState.PREEMPTED and w.fake.killed == []
    assert w.book["a"].last_checkpoint_at == w.clock.t


def test_cancel_requests_go_first_and_end_jobs() -> None:
    w = World()
    w.submit("a")
    w.submit("b")
    w.policy.targets.update(a=N0, b=N1)
    w.round()
    w.fake.workers_up("a")
    snapshot = w.snapshot()
    cancels = [
        Cancel("a", "cancelled by alice", snapshot.job("a").generation),
        Cancel("b", "cancelled by alice", snapshot.job("b").generation),
    ]
    w.policy.targets["a"] = N1  # the plan's own action for a cancelled job is dropped
    report = w.round(snapshot, requests=cancels)
    assert [type(a).__name__ for a in report.actions] == ["Cancel", "Cancel"]
    assert all(r.outcome is Outcome.APPLIED for r in report.results)
    assert w.state("a") is JobState.CANCELLED and w.state("b") is JobState.CANCELLED
    assert [s for s, _ in w.changes("a")] == ["starting", "running", "stopping", "cancelled"]
    # A job that never started is cancelled without stopping anything.
    w.submit("c")
    w.round(requests=[Cancel("c", "changed my mind", 0)])
    assert w.changes("c") == [("cancelled", "changed my mind")]
    assert w.fake.killed == ["a", "b"]


def test_a_start_on_devices_still_being_released_is_deferred() -> None:
    w = World(capacity={"n0": 4, "n1": 4})
    w.submit("a")
    w.submit("b")
    w.policy.targets["a"] = N0
    w.round()
    w.fake.workers_up("a")
    w.policy.targets = {"b": N0}  # b takes a's devices, which a must release first
    report = w.round(stop_deadline=w.clock.t + 60.0)
    assert [(type(r.action).__name__, r.outcome) for r in report.results] == [
        ("Stop", Outcome.APPLIED),
        ("Start", Outcome.DEFERRED),
    ]
    w.fake.stop_done("a")
    report = w.round()
    assert [(type(r.action).__name__, r.outcome) for r in report.results] == [
        ("Start", Outcome.APPLIED)
    ]


def test_a_lost_node_restarts_its_jobs_elsewhere_without_counting() -> None:
    w = World()
    w.submit("a")
    w.policy.targets["a"] = N0
    w.round()
    w.fake.workers_up("a")
    w.fake.lose_node("n0")
    w.seen.extend(w.fake.observe())
    assert any(isinstance(o, NodeLeft) and o.name == "n0" for o in w.seen)
    assert w.state("a") is JobState.RESTARTING and w.book["a"].restarts == 0
    w.policy.targets["a"] = N1
    w.round()
    assert w.state("a") is JobState.STARTING and w.book["a"].placement == N1


def test_a_move_holds_both_placements_until_it_stops() -> None:
    w = World()
    w.submit("a")
    w.policy.targets["a"] = Placement.of({"n0": 2})
    w.round()
    w.fake.workers_up("a")
    w.policy.targets["a"] = N1
    w.round()
    assert w.state("a") is JobState.STOPPING
    assert w.book["a"].placement == Placement.of({"n0": 2, "n1": 4})
    w.fake.stop_done("a")
    assert w.state("a") is JobState.STARTING and w.book["a"].placement == N1


def test_run_round_checks_the_executor_answers_every_action() -> None:
    class Mute(FakeExecutor):
        def apply(self, actions):  # type: ignore[no-untyped-def]
            return []

    w = World()
    w.submit("a")
    w.policy.targets["a"] = N0
    with pytest.raises(PlanError, match="0 results for 1 actions"):
        run_round(w.policy, w.snapshot(), Mute(w.book, w.clock))


# --- when rounds run -----------------------------------------------------------------------


def test_rules_run_a_round_per_change_and_tick_while_jobs_wait() -> None:
    wakes: list[float] = []
    rules = RoundRules(tick=300.0, wake=wakes.append)
    assert not rules.due(10.0, changed=False)
    assert rules.due(10.0, changed=True)
    rules.ran(10.0, waiting=True)
    assert wakes == [310.0] and rules.next_wakeup() == 310.0
    assert not rules.due(309.0, changed=False)
    assert rules.due(310.0, changed=False)  # the tick
    rules.ran(310.0, waiting=False)
    assert rules.next_wakeup() == float("inf") and not rules.due(900.0, changed=False)


def test_rules_batch_changes_but_never_premium_work() -> None:
    wakes: list[float] = []
    rules = RoundRules(round_interval=30.0, wake=wakes.append)
    assert rules.batching
    assert rules.due(0.0, changed=True)
    rules.ran(0.0, waiting=False)
    assert not rules.due(5.0, changed=True)  # batched until 30
    assert wakes == [30.0]
    assert rules.due(6.0, changed=True, urgent=True)  # a premium job arrived: at once
    rules.ran(6.0, waiting=False)
    rules.premium_waiting("p", True)
    assert rules.due(7.0, changed=True)  # a premium job waits: no batching
    rules.ran(7.0, waiting=False)
    rules.premium_waiting("p", False)
    assert not rules.due(8.0, changed=True)
    assert rules.due(37.0, changed=False)  # the deferred round


def test_rules_reschedule_a_deferred_round_whose_gap_grew() -> None:
    wakes: list[float] = []
    rules = RoundRules(round_interval=30.0, min_round_interval=5.0, wake=wakes.append)
    rules.due(0.0, changed=True)
    rules.ran(0.0, waiting=False)
    rules.premium_waiting("p", True)
    assert not rules.due(1.0, changed=True)  # premium waits: the gap is 5
    rules.premium_waiting("p", False)  # it was placed: the gap is 30 again
    assert not rules.due(5.0, changed=False)
    assert wakes == [5.0, 30.0]  # the change is not forgotten
    assert rules.due(30.0, changed=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tick": 0.0}, "tick must be a positive number of seconds, got 0.0"),
        ({"round_interval": -1.0}, "round_interval must be a number of seconds >= 0, got -1.0"),
        ({"min_round_interval": float("nan")}, "min_round_interval must be"),
    ],
)
def test_rules_name_bad_settings(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(PlanError, match=message):
        RoundRules(**kwargs)  # type: ignore[arg-type]
