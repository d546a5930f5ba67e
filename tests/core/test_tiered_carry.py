"""``tiered`` carries its entries, and their order, from one round to the next; none of it
may change a decision, and a plan's reasons must describe the snapshot it was made for."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from tests.core.helpers import NOW, snap, spec, waiting
from tests.core.test_tiered import random_snapshot
from tidal.core import ClusterSnapshot, Fleet, JobState, make_policy
from tidal.core.policies._common import LazyReasons
from tidal.core.policies._tiered_alloc import (
    DEFAULT_LAS_THRESHOLDS,
    Basis,
    Entry,
    TieredConfig,
    sort_entries,
)

# Every field of an entry but the policy's own bookkeeping of rounds and of order, and
# `account`, which each allocation sets before reading it;
# `test_entry_fields_are_all_checked` keeps the list complete.
_BOOKKEEPING = {"seen", "sorted_gen", "key_gen", "account"}
_FIELDS = (
    "base_rank",
    "critical",
    "fixed",
    "held",
    "hint",
    "id",
    "key",
    "kill",
    "las",
    "left",
    "level",
    "lowest",
    "pinned",
    "rank",
    "reason",
    "spec",
    "target",
    "tenant",
    "tier",
    "timed",
    "view",
    "world",
)


def progressed(snapshot: ClusterSnapshot, rng: random.Random, dt: float) -> ClusterSnapshot:
    """``snapshot`` ``dt`` later: running jobs report progress (new views), some waiting
    ones leave, and new ones arrive, as between two rounds of a live fleet."""
    jobs = []
    for v in snapshot.jobs:
        if v.state is JobState.RUNNING:
            jobs.append(replace(v, attained=v.attained + dt * v.size, work_done=v.work_done + dt))
        elif v.state is JobState.PENDING and rng.random() < 0.2:
            continue  # gone (cancelled)
        else:
            jobs.append(v)
    for k in range(rng.randint(0, 3)):
        arrival = spec(
            f"new{snapshot.now + dt:.0f}-{k}",
            rng.choice(["standard", "basic", "premium"]),
            rng.choice([1, 2, 4, 8]),
            submit=snapshot.now + dt,
            tenant=rng.choice("abc"),
        )
        jobs.append(waiting(arrival))
    return replace(snapshot, now=snapshot.now + dt, jobs=tuple(jobs))


def test_a_policy_with_a_past_decides_as_a_fresh_one() -> None:
    # One policy schedules a run of snapshots (entries renewed, re-derived, and sorted
    # from the last round's order); a fresh policy for each snapshot has nothing carried.
    rng = random.Random(7)
    carried = make_policy("tiered")
    rounds = 0
    for trial in range(15):
        snapshot = random_snapshot(rng, trial)
        for _ in range(6):
            plan = carried.schedule(snapshot)
            fresh = make_policy("tiered").schedule(snapshot)
            assert plan == fresh, f"trial {trial} at t={snapshot.now}: the carried state decided"
            rounds += 1
            snapshot = progressed(snapshot, rng, rng.choice([10.0, 600.0, 10_000.0]))
    assert rounds == 90


def test_a_new_fleet_object_starts_from_nothing() -> None:
    # The same snapshots on a fleet listing the same nodes in another order (other node
    # indices) must still be decided as by a fresh policy: nothing carried may depend on
    # the last round's fleet.
    rng = random.Random(17)
    carried = make_policy("tiered")
    for trial in range(10):
        snapshot = random_snapshot(rng, trial)
        reordered = Fleet(tuple(reversed(snapshot.fleet.nodes)))
        for fleet in (snapshot.fleet, reordered, snapshot.fleet):
            s = replace(snapshot, fleet=fleet)
            assert carried.schedule(s) == make_policy("tiered").schedule(s), trial


def test_an_entry_updated_to_a_new_view_equals_a_new_entry() -> None:
    rng = random.Random(3)
    # Share floors and yielding on, so that keys depend on the time too.
    config = TieredConfig(standard_floor=0.2, floor_grace=600.0, standard_yield=0.5)
    basis = Basis(config, NOW)
    for trial in range(30):
        before = random_snapshot(rng, trial)
        after = progressed(before, rng, rng.choice([60.0, 50_000.0]))
        for old, new in zip(before.jobs, after.jobs, strict=False):
            if old.spec is not new.spec:
                continue
            entry = Entry(old, old.placement.size, basis)
            entry.target, entry.fixed, entry.reason = 3, True, "decided in the last round"
            entry.update(new, new.placement.size, basis)
            made = Entry(new, new.placement.size, basis)
            for name in _FIELDS:
                assert getattr(entry, name) == getattr(made, name), (new.id, name)


def test_entry_fields_are_all_checked() -> None:
    # Compiled, a native class lists its attributes in `__mypyc_attrs__`, not `__slots__`.
    attrs = getattr(Entry, "__mypyc_attrs__", None) or Entry.__slots__
    assert set(_FIELDS) | _BOOKKEEPING == set(attrs)


def test_sorting_from_the_last_order_equals_a_full_sort() -> None:
    # Rounds of a queue where jobs arrive, leave, and change keys (new tuples, some equal
    # in value to the old): each round's order must be exactly the sorted order, whether
    # few entries moved (inserted one by one) or many (one sort), and the round's own list
    # must keep its (snapshot) order.
    rng = random.Random(11)
    basis = Basis(TieredConfig(), NOW)
    made = 0

    def new_entry() -> Entry:
        nonlocal made
        made += 1
        job = spec(f"j{made:04d}", rng.choice(["standard", "basic"]), rng.choice([1, 2, 4, 8]))
        return Entry(waiting(job, attained=rng.uniform(0, 200_000.0)), 0, basis)

    live = [new_entry() for _ in range(200)]
    last: list[Entry] | None = None
    for stamp in range(1, 120):
        live = [e for e in live if rng.random() > 0.02]
        live += [new_entry() for _ in range(rng.choice([0, 0, 1, 3, 60]))]
        for e in rng.sample(live, rng.choice([0, 1, 5, len(live) // 2])):
            rank, level, _, submit, job_id = e.key
            e.set_key((rank, rng.choice([level, level + 1, 0]), rng.choice([0, 2]), submit, job_id))
        rng.shuffle(live)  # snapshot order
        for e in live:
            e.seen = stamp
        given = live[:]
        ordered = sort_entries(live, last, stamp)
        assert [e.id for e in ordered] == [e.id for e in sorted(live, key=lambda e: e.key)]
        assert live == given and ordered is not live
        assert all(e.seen == stamp for e in live)
        last = ordered[:] if stamp % 17 else None  # now and then: no order carried


def test_lazy_reasons_behave_as_a_mapping() -> None:
    made: list[int] = []

    def make(shortfall: int) -> str:
        made.append(shortfall)
        return f"short by {shortfall}"

    shortfall = {"b": 2, "c": 3, "d": 0}
    reasons = LazyReasons(
        {"a": "fixed a", "c": "fixed c"},
        lambda job_id: shortfall.get(job_id) or None,
        lambda: ["a", "b", "c", "d", "e"],
        make,
    )
    assert list(reasons) == ["a", "c", "b"] and len(reasons) == 3
    assert dict(reasons) == {"a": "fixed a", "c": "fixed c", "b": "short by 2"}
    made.clear()
    assert "b" in reasons and "d" not in reasons and "z" not in reasons and 5 not in reasons
    assert made == []  # membership formats nothing
    assert reasons.get("d", "none") == "none" and reasons.get("b") == "short by 2"
    with pytest.raises(KeyError):
        reasons["d"]


def test_reasons_read_after_the_next_round_describe_their_own_round() -> None:
    # A waiting job's reason is formatted when read. Its entry moves on with the next
    # round (here its attained service crosses the first LAS threshold): the old plan
    # must still say what was true when it was made.
    policy = make_policy("tiered")
    job = spec("w", world=16, min_devices=16)  # never fits on one 8-device node
    first = snap([waiting(job, attained=10.0)])
    plan = policy.schedule(first)
    later = snap([waiting(job, attained=DEFAULT_LAS_THRESHOLDS[0] + 1.0)], now=NOW + 60.0)
    next_plan = policy.schedule(later)
    assert "service level 0" in plan.reasons["w"]
    assert "service level 1" in next_plan.reasons["w"]
