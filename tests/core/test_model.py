"""The core model: spec validation, lifecycle, placement, plan validation and diff order."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

import pytest

from tests.core.helpers import running, snap, spec, waiting
from tidal._build import compiled_modules
from tidal.core import (
    EMPTY,
    ClusterSnapshot,
    Fleet,
    JobSpec,
    JobState,
    JobView,
    Migrate,
    Node,
    Placement,
    Plan,
    PlanError,
    Resize,
    SpecError,
    Start,
    Stop,
    Tier,
    TransitionError,
    UnknownPolicyError,
    make_policy,
    policy_names,
    transition,
)
from tidal.core.states import ACTIVE_STATES, WAITING_STATES, Phase


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"world": 0}, "world size must be >= 1, got 0"),
        ({"world": 4, "min_devices": 5}, "min_devices must be in [1, 4], got 5"),
        ({"submit_time": -1.0}, "submit_time must be >= 0, got -1.0"),
        ({"work": -5.0}, "work must be >= 0, got -5.0"),
        ({"checkpoint_bytes": -1}, "checkpoint_bytes must be >= 0, got -1"),
        ({"declared_work": -2.0}, "declared_work must be >= 0, got -2.0"),
        ({"declared_work": float("nan")}, "declared_work must be >= 0, got nan"),
        ({"id": ""}, "job id must be a non-empty string"),
    ],
)
def test_spec_errors_name_the_bad_value(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {
        "id": "j1",
        "tenant": "a",
        "tier": Tier.STANDARD,
        "world": 4,
        "submit_time": 0.0,
    }
    base.update(kwargs)
    with pytest.raises(SpecError) as err:
        JobSpec(**base)  # type: ignore[arg-type]
    assert message in str(err.value)


def test_spec_refuses_a_tier_that_is_not_a_tier() -> None:
    # Pure Python checks the type itself; a compiled JobSpec (mypyc) refuses the wrong
    # type as it is built, before its own checks run.
    if "tidal.core.spec" in compiled_modules():
        expected: type[Exception] = TypeError
        message = "Tier object expected; got str"
    else:
        expected, message = SpecError, "tier must be a Tier, got 'gold'"
    with pytest.raises(expected) as err:
        JobSpec(id="j1", tenant="a", tier="gold", world=4, submit_time=0.0)  # type: ignore[arg-type]
    assert message in str(err.value)


def test_policies_see_declared_work_left() -> None:
    exact = JobSpec("j", "a", Tier.STANDARD, 4, 0.0, work=400.0)
    assert exact.estimate == 400.0
    told = JobSpec("j", "a", Tier.STANDARD, 4, 0.0, work=400.0, declared_work=100.0)
    assert told.estimate == 100.0 and told.work == 400.0
    assert JobView(exact, work_done=40.0, estimate=exact.estimate).remaining == 360.0
    assert JobView(told, work_done=40.0, estimate=told.estimate).remaining == 60.0
    assert JobView(told, work_done=100.0, estimate=told.estimate).remaining == 0.0
    # Outran it, or declared nothing: taken as halfway.
    assert JobView(told, work_done=250.0, estimate=told.estimate).remaining == 250.0
    assert JobView(told, work_done=70.0).remaining == 70.0


@pytest.mark.parametrize(
    ("tier", "world", "min_devices", "sizes"),
    [
        ("standard", 8, 1, (1, 2, 4, 8)),
        ("basic", 12, 3, (3, 4, 6, 12)),
        ("premium", 8, 1, (8,)),  # premium runs only at W
        ("standard", 1, 1, (1,)),
    ],
)
def test_allowed_sizes(tier: str, world: int, min_devices: int, sizes: tuple[int, ...]) -> None:
    s = spec("j", tier, world, min_devices=min_devices)
    assert s.sizes == sizes
    assert s.elastic == (len(sizes) > 1)
    assert s.fit_size(world - 1) == (max((p for p in sizes if p < world), default=0))


def test_unknown_tier_names_choices() -> None:
    with pytest.raises(SpecError, match="unknown tier 'gold'; expected one of: premium"):
        Tier.parse("gold")
    assert Tier.parse(" Premium ") is Tier.PREMIUM
    assert Tier.PREMIUM.may_take_from(Tier.BASIC)
    assert not Tier.STANDARD.may_take_from(Tier.PREMIUM)
    assert not Tier.BASIC.may_take_from(Tier.STANDARD)


@pytest.mark.parametrize(
    ("old", "new", "ok"),
    [
        (JobState.PENDING, JobState.STARTING, True),
        (JobState.RUNNING, JobState.STOPPING, True),
        (JobState.STOPPING, JobState.PREEMPTED, True),
        (JobState.PREEMPTED, JobState.STARTING, True),
        (JobState.RUNNING, JobState.SUCCEEDED, True),
        (JobState.PENDING, JobState.RUNNING, False),
        (JobState.SUCCEEDED, JobState.RUNNING, False),
        (JobState.PREEMPTED, JobState.RUNNING, False),
        (JobState.RUNNING, JobState.RESTARTING, True),
        (JobState.RESTARTING, JobState.STARTING, True),
        (JobState.RESTARTING, JobState.RUNNING, False),
        (JobState.STOPPING, JobState.CANCELLED, True),
        (JobState.STARTING, JobState.SUCCEEDED, True),
    ],
)
def test_transitions(old: JobState, new: JobState, ok: bool) -> None:
    if ok:
        change = transition("j1", old, new, 5.0, "because")
        assert (change.old, change.new, change.at, change.reason) == (old, new, 5.0, "because")
    else:
        with pytest.raises(TransitionError, match=f"{old.value} -> {new.value}"):
            transition("j1", old, new, 5.0, "because")


def test_state_properties() -> None:
    assert {s for s in JobState if s.is_terminal} == {
        JobState.SUCCEEDED,
        JobState.FAILED,
        JobState.CANCELLED,
    }
    assert {s for s in JobState if s.holds_devices} == {
        JobState.STARTING,
        JobState.RUNNING,
        JobState.STOPPING,
    }
    # A failed job releases its devices and waits to be placed again.
    assert JobState.RESTARTING.phase is Phase.WAITING
    assert set(WAITING_STATES) == {JobState.PENDING, JobState.PREEMPTED, JobState.RESTARTING}
    assert set(ACTIVE_STATES) == {JobState.STARTING, JobState.RUNNING}
    assert {s.phase for s in JobState} == set(Phase)
    assert all(s.is_terminal == (s.phase is Phase.DONE) for s in JobState)


def test_a_restarting_job_is_started_again() -> None:
    view = JobView(spec("j1", world=4), state=JobState.RESTARTING)
    actions = Plan({"j1": Placement.of({"n0": 4})}).diff(snap([view]))
    assert actions == [Start("j1", Placement.of({"n0": 4}))]


def test_placement_merges_sorts_and_rejects_negative() -> None:
    p = Placement.of([("n2", 1), ("n1", 2), ("n2", 3), ("n3", 0)])
    assert p.parts == (("n1", 2), ("n2", 4))
    assert p.size == 6 and p.nodes == ("n1", "n2") and str(p) == "n1:2+n2:4"
    assert Placement((("n1", 2), ("n2", 4))) == p
    assert not EMPTY and EMPTY.size == 0 and str(EMPTY) == "-"
    with pytest.raises(SpecError, match="negative device count -1"):
        Placement.of({"n1": -1})


def test_fleet_errors() -> None:
    with pytest.raises(SpecError, match="duplicate node name 'a'"):
        Fleet((Node("a", 8), Node("a", 8)))
    with pytest.raises(SpecError, match="devices must be >= 1, got 0"):
        Node("b", 0)
    fleet = Fleet.uniform(3, 4, clusters=2)
    assert fleet.capacity == 12 and [n.cluster for n in fleet.nodes] == ["c0", "c1", "c0"]


def test_registry() -> None:
    assert set(policy_names()) >= {
        "tiered",
        "fifo",
        "fifo-backfill",
        "priority-kill",
        "tiresias",
        "gandiva",
    }
    with pytest.raises(UnknownPolicyError, match="unknown policy 'nope'; known policies: "):
        make_policy("nope")
    for name in policy_names():
        policy = make_policy(name)
        assert policy.name == name
        assert hasattr(policy, "tick")


def test_validate_rejects_bad_plans() -> None:
    a = spec("a", world=4, min_devices=2)
    s = snap([waiting(a)], nodes=2, per_node=4)
    with pytest.raises(PlanError, match=r"3 devices is not an allowed size \(2, 4\)"):
        Plan({"a": Placement.of({"n0": 3})}).validate(s)
    with pytest.raises(PlanError, match="node 'n0' overcommitted: 5 of 4"):
        Plan({"a": Placement.of({"n0": 4}), "b": Placement.of({"n0": 1})}).validate(
            snap([waiting(a), waiting(spec("b"))], nodes=2, per_node=4)
        )
    cpu = Fleet((Node("g", 4, "gpu"), Node("c", 4, "cpu")))
    with pytest.raises(PlanError, match="wants 'gpu' devices but node 'c' has 'cpu'"):
        Plan({"a": Placement.of({"c": 4})}).validate(snap([waiting(a)], fleet=cpu))
    # Devices of a stopping job are still taken.
    stopping = running(spec("s", world=2), {"n0": 2}, state=JobState.STOPPING)
    with pytest.raises(PlanError, match="overcommitted"):
        Plan({"a": Placement.of({"n0": 4})}).validate(snap([waiting(a), stopping], 2, 4))


def test_snapshot_refuses_a_job_twice_and_a_by_id_that_does_not_match() -> None:
    a, b = waiting(spec("a")), waiting(spec("b"))
    fleet = Fleet.uniform(1, 8)
    with pytest.raises(PlanError, match="job 'a' appears twice in the snapshot"):
        ClusterSnapshot(0.0, fleet, (a, b, a))
    with pytest.raises(PlanError, match="by_id names 1 jobs, the snapshot has 2"):
        ClusterSnapshot(0.0, fleet, (a, b), by_id={"a": a})
    given = {"a": a, "b": b}
    s = ClusterSnapshot(0.0, fleet, (a, b), by_id=given)
    assert s.job("b") is b and "a" in s and "c" not in s
    assert s == ClusterSnapshot(0.0, fleet, (a, b))  # by_id is not part of the value


def test_values_are_values() -> None:
    # Hand-written __init__s keep what frozen dataclasses gave: equality, hashing, repr,
    # dataclasses.replace; compiled, fields cannot be assigned.
    view = running(spec("a", world=4), {"n0": 4})
    again = running(spec("a", world=4), {"n0": 4})
    assert view == again and hash(view) == hash(again)
    moved = replace(view, work_done=5.0)
    assert moved.work_done == 5.0 and moved.placement is view.placement and moved != view
    assert repr(Placement.of({"n1": 2})) == "Placement(parts=(('n1', 2),))"
    assert Placement.of({"n1": 2, "n0": 1}).size == 3
    assert hash(Stop("a", EMPTY)) == hash(Stop("a", EMPTY))
    if "tidal.core.snapshot" in compiled_modules():
        with pytest.raises(AttributeError, match="not writable"):
            view.work_done = 1.0  # type: ignore[misc]


def test_plan_shows_its_placements_read_only_and_looks_them_up() -> None:
    given = {"a": Placement.of({"n0": 2})}
    plan = Plan(given)
    assert plan.target("a") is given["a"] and plan.target("b") is EMPTY
    with pytest.raises(TypeError):
        plan.placements["b"] = EMPTY  # type: ignore[index]
    # Any Mapping will do; a plan equals one made from the same placements.
    assert Plan(MappingProxyType(given)) == plan
    assert Plan(MappingProxyType(given)).target("a") is given["a"]


def test_diff_orders_frees_before_takes() -> None:
    jobs = [
        running(spec("grow", world=4), {"n0": 2}),
        running(spec("shrink", world=4), {"n1": 4}),
        running(spec("move", world=2), {"n0": 2}),
        running(spec("stop"), {"n2": 1}),
        running(spec("keep"), {"n2": 1}),
        waiting(spec("start", world=2)),
        running(spec("leaving"), {"n3": 1}, state=JobState.STOPPING),
    ]
    s = snap(jobs, nodes=4, per_node=4)
    plan = Plan(
        {
            "grow": Placement.of({"n0": 4}),
            "shrink": Placement.of({"n1": 2}),
            "move": Placement.of({"n2": 2}),
            "keep": Placement.of({"n2": 1}),
            "start": Placement.of({"n1": 2}),
        },
        reasons={"stop": "stopped for premium job p"},
    )
    got = plan.diff(s)
    assert [(type(a).__name__, a.job_id) for a in got] == [
        ("Stop", "stop"),
        ("Resize", "shrink"),
        ("Migrate", "move"),
        ("Resize", "grow"),
        ("Start", "start"),
    ]
    stop = got[0]
    assert isinstance(stop, Stop) and stop.checkpoint and stop.reason.startswith("stopped")
    assert isinstance(got[1], Resize) and isinstance(got[2], Migrate)
    assert isinstance(got[4], Start)


@pytest.mark.parametrize(
    ("checkpoint_on_stop", "kill", "expected"),
    [(True, frozenset(), True), (True, frozenset({"a"}), False), (False, frozenset(), False)],
)
def test_stop_checkpoint_flags(
    checkpoint_on_stop: bool, kill: frozenset[str], expected: bool
) -> None:
    s = snap([running(spec("a"), {"n0": 1})])
    (stop,) = Plan({}, checkpoint_on_stop=checkpoint_on_stop, kill=kill).diff(s)
    assert isinstance(stop, Stop) and stop.checkpoint is expected
