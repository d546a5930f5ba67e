"""The job spec model: what it accepts, what it refuses, and that refusals name the field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tidal.control.models import JobSubmission, default_name
from tidal.core import Tier


def spec(**fields: Any) -> dict[str, Any]:
    return {"world": 4, "command": ["python", "train.py"], **fields}


def refused_at(body: dict[str, Any]) -> list[tuple[Any, ...]]:
    with pytest.raises(ValidationError) as info:
        JobSubmission.model_validate(body)
    return [tuple(e["loc"]) for e in info.value.errors()]


def test_defaults_and_sizes() -> None:
    job = JobSubmission.model_validate(spec(world=12, min_devices=2, max_devices=6))
    assert job.tier is Tier.STANDARD
    assert job.name == "train"
    assert job.sizes == (2, 3, 4, 6)
    assert job.max_restarts == 3 and job.env == {} and job.workdir is None
    premium = JobSubmission.model_validate(spec(world=8, tier="premium", min_devices=1))
    assert premium.sizes == (8,)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (spec(world=0), ("world",)),
        (spec(world=-3), ("world",)),
        (spec(world=True), ("world",)),
        (spec(world=4.5), ("world",)),
        (spec(world="4"), ("world",)),
        (spec(world=10**9), ("world",)),
        (spec(min_devices=5), ("min_devices",)),
        (spec(min_devices=0), ("min_devices",)),
        (spec(max_devices=5), ("max_devices",)),
        (spec(min_devices=3, max_devices=2), ("max_devices",)),
        (spec(world=6, min_devices=4, max_devices=5), ("max_devices",)),
        (spec(world=8, tier="premium", max_devices=4), ("max_devices",)),
        (spec(tier="gold"), ("tier",)),
        (spec(tier="Premium"), ("tier",)),
        (spec(command=[]), ("command",)),
        (spec(command="python train.py"), ("command",)),
        (spec(command=["a\x00b"]), ("command", 0)),
        (spec(command=["ok", "\ud800"]), ("command", 1)),
        (spec(command=["x" * 10_000]), ("command", 0)),
        (spec(command=["x"] * 300), ("command",)),
        (spec(name="x" * 129), ("name",)),
        (spec(name="has space"), ("name",)),
        (spec(name=""), ("name",)),
        (spec(workdir="relative/dir"), ("workdir",)),
        (spec(workdir="/a\x00b"), ("workdir",)),
        (spec(env={"1BAD": "x"}), ("env", "1BAD", "[key]")),
        (spec(env={"OK": "\x00"}), ("env", "OK")),
        (spec(env={f"K{i}": "v" for i in range(200)}), ("env",)),
        (spec(workdir="~/lm"), ("workdir",)),
        (spec(declared_steps=0), ("declared_steps",)),
        (spec(declared_hours=float("inf")), ("declared_hours",)),
        (spec(declared_hours=True), ("declared_hours",)),
        (spec(checkpoint={"every_steps": 0}), ("checkpoint", "every_steps")),
        (spec(checkpoint={"often": True}), ("checkpoint", "often")),
        (spec(max_restarts=-1), ("max_restarts",)),
        (spec(device_type="a b"), ("device_type",)),
        (spec(colour="blue"), ("colour",)),
    ],
)
def test_refusals_name_the_field(body: dict[str, Any], field: tuple[Any, ...]) -> None:
    assert field in refused_at(body)


def test_missing_fields_named() -> None:
    locs = refused_at({})
    assert ("world",) in locs and ("command",) in locs


@pytest.mark.parametrize(
    ("command", "name"),
    [
        (["python", "train.py", "--epochs", "3"], "train"),
        (["python3.11", "-u", "/src/lm/pretrain.py"], "pretrain"),
        (["torchrun", "--nproc", "4", "x.py"], "x"),
        (["bash", "-c", "echo hi"], "echo hi".replace(" ", "-")),
        (["./run-me"], "run-me"),
        (["/usr/bin/env"], "env"),
        (["python"], "python"),
        (["--"], "job"),
        (["über!"], "ber-"),
    ],
)
def test_default_name(command: list[str], name: str) -> None:
    assert default_name(command) == name
