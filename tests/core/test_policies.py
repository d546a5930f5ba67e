"""What holds for every registered policy: validity, determinism, reasons, stopping jobs."""

from __future__ import annotations

import random

import pytest

from tests.core.helpers import check, running, snap, spec, waiting
from tests.core.test_tiered import random_snapshot
from tidal.core import Fleet, JobState, Node, make_policy, policy_names


@pytest.mark.parametrize("name", policy_names())
def test_random_snapshots_give_valid_deterministic_explained_plans(name: str) -> None:
    rng = random.Random(name)
    policy = make_policy(name)
    for trial in range(40):
        s = random_snapshot(rng, trial)
        check(policy, s)  # validates, repeats, checks reasons and stopping jobs


@pytest.mark.parametrize("name", policy_names())
def test_stopping_jobs_hold_their_devices(name: str) -> None:
    s = snap(
        [
            running(spec("leaving", world=8), {"n0": 8}, state=JobState.STOPPING),
            waiting(spec("w", world=8)),
        ]
    )
    plan = check(make_policy(name), s)
    assert not plan.target("w") and not plan.target("leaving") and not plan.diff(s)


@pytest.mark.parametrize("name", policy_names())
def test_device_types_are_respected(name: str) -> None:
    fleet = Fleet((Node("a", 8, "a100"), Node("h", 8, "h100")))
    s = snap(
        [
            waiting(spec("ja", world=8, device_type="a100")),
            waiting(spec("jh", world=8, device_type="h100")),
        ],
        fleet=fleet,
    )
    plan = check(make_policy(name), s)
    assert plan.target("ja").nodes == ("a",) and plan.target("jh").nodes == ("h",)


@pytest.mark.parametrize("name", policy_names())
def test_empty_snapshot(name: str) -> None:
    plan = check(make_policy(name), snap([]))
    assert not plan.placements and not plan.diff(snap([]))
