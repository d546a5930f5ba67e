"""Consistent cut and resume inside one process: SIGTERM, checkpoint, status.json, rerun.

W = 2 logical ranks on one worker (two micro-batches per step), a real SIGTERM sent to
this process in the middle of an epoch; the resumed run must end bitwise identical to
the uninterrupted one.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import tidal
from tests.runtime.splice_support import make_objects, mismatches, small_dataset, train_with_tidal
from tidal.runtime import api
from tidal.runtime.errors import SettingsError
from tidal.runtime.settings import ReduceMode, RuntimeSettings

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")

EPOCHS = 2
STEPS_PER_EPOCH = 9  # 300 samples / 2 ranks = 150 each: 9 batches of 16


@pytest.fixture(autouse=True)
def runtime_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name in [k for k in os.environ if k.startswith("TIDAL_")]:
        monkeypatch.delenv(name, raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers: fast on a small machine, kernels alike
    yield
    api.shutdown()
    torch.set_num_threads(threads)


def status(ckpt: Path) -> dict:
    return json.loads((ckpt / "status.json").read_text())


def test_sigterm_twice_mid_epoch_then_resume_is_bitwise_identical(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data = small_dataset()
    reference = train_with_tidal(2, EPOCHS, data, monkeypatch)
    ckpt = tmp_path / "ckpt"
    env = {"TIDAL_CHECKPOINT_DIR": str(ckpt), "TIDAL_JOB_ID": "j-1"}

    with pytest.raises(SystemExit) as stopped:
        train_with_tidal(2, EPOCHS, data, monkeypatch, sigterm_at=3, env=env)
    assert stopped.value.code == 0
    first = status(ckpt)
    assert first["state"] == "preempted" and first["job_id"] == "j-1"
    assert first["step"] == first["last_checkpoint_step"] and 3 < first["step"] < STEPS_PER_EPOCH
    assert (first["world"], first["workers"], first["epoch"]) == (2, 1, 0)

    with pytest.raises(SystemExit):
        train_with_tidal(2, EPOCHS, data, monkeypatch, sigterm_at=12, env=env)
    second = status(ckpt)
    assert second["state"] == "preempted" and second["epoch"] == 1
    assert STEPS_PER_EPOCH < second["step"] < EPOCHS * STEPS_PER_EPOCH

    resumed = train_with_tidal(2, EPOCHS, data, monkeypatch, env=env)
    done = status(ckpt)
    assert done["state"] == "succeeded" and done["step"] == EPOCHS * STEPS_PER_EPOCH
    assert done["epoch"] == EPOCHS and done["last_checkpoint_step"] == done["step"]
    assert mismatches(reference.state_dict(), resumed.state_dict()) == []

    # Running the finished job again restores the final state and trains nothing more.
    again = train_with_tidal(2, EPOCHS, data, monkeypatch, env=env)
    assert mismatches(reference.state_dict(), again.state_dict()) == []


def test_periodic_asynchronous_checkpoints_and_checkpoint_now(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ckpt = tmp_path / "ckpt"
    monkeypatch.setenv("TIDAL_WORLD", "2")
    monkeypatch.setenv("TIDAL_CHECKPOINT_DIR", str(ckpt))
    monkeypatch.setenv("TIDAL_CHECKPOINT_EVERY_STEPS", "4")
    monkeypatch.setenv("TIDAL_CHECKPOINT_KEEP", "10")
    model, optimizer, loader, scheduler = make_objects(2, 1, small_dataset())
    model, optimizer, loader, scheduler = tidal.prepare(model, optimizer, loader, scheduler)
    ctx = api.current()
    states = []
    for _ in tidal.epochs(1):
        for x, y in loader:
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            if ctx.position.step == 5 and tidal.rank() == 1:
                tidal.checkpoint_now()  # counted in step 6's reduction: saved after step 7
            states.append(status(ckpt)["state"])
    api.shutdown()
    names = sorted(p.name for p in ckpt.iterdir() if p.name.startswith("ckpt-"))
    assert names == ["ckpt-00000004", "ckpt-00000007", "ckpt-00000008", "ckpt-00000009"]
    assert set(states) == {"running"}, "periodic checkpoints are written while it runs"
    assert status(ckpt)["state"] == "succeeded"


def test_time_based_checkpoints_follow_worker_zeros_clock(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ckpt = tmp_path / "ckpt"
    monkeypatch.setenv("TIDAL_CHECKPOINT_EVERY_S", "0.15")
    monkeypatch.setenv("TIDAL_CHECKPOINT_KEEP", "100")
    monkeypatch.setenv("TIDAL_CHECKPOINT_DIR", str(ckpt))
    monkeypatch.setenv("TIDAL_WORLD", "2")
    model, optimizer, loader, _ = make_objects(2, 1, small_dataset())
    model, optimizer, loader = tidal.prepare(model, optimizer, loader)
    started = time.monotonic()
    for _ in tidal.epochs(1):
        for x, y in loader:
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            optimizer.zero_grad()
            time.sleep(0.02)
    elapsed = time.monotonic() - started
    api.shutdown()
    steps = sorted(int(p.name[5:]) for p in ckpt.iterdir() if p.name.startswith("ckpt-"))
    periodic = [s for s in steps if s != STEPS_PER_EPOCH]
    assert 1 <= len(periodic) <= elapsed / 0.15 + 1, (steps, elapsed)
    assert steps[-1] == STEPS_PER_EPOCH


def test_settings_come_from_the_launchers_environment() -> None:
    s = RuntimeSettings.from_env(
        {
            "TIDAL_WORLD": "8",
            "WORLD_SIZE": "2",
            "RANK": "1",
            "MASTER_ADDR": "h",
            "MASTER_PORT": "29500",
            "TIDAL_REDUCE": "native",
            "TIDAL_CHECKPOINT_EVERY_S": "2.5",
        }
    )
    assert (s.world, s.workers, s.worker, s.ranks_per_worker) == (8, 2, 1, 4)
    assert list(s.hosted_ranks) == [4, 5, 6, 7]
    assert s.reduce is ReduceMode.NATIVE and s.checkpoint_every_s == 2.5
    assert RuntimeSettings.from_env({}).world == 1
    assert RuntimeSettings.from_env({"WORLD_SIZE": "1", "RANK": "0"}).hosted_ranks == range(0, 1)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TIDAL_WORLD": "6", "WORLD_SIZE": "4", "MASTER_ADDR": "h", "MASTER_PORT": "1"}, "WORLD_SIZE=4 must divide"),
        ({"TIDAL_WORLD": "zero"}, "TIDAL_WORLD='zero' is not an integer"),
        ({"TIDAL_WORLD": "0"}, "TIDAL_WORLD=0 must be at least 1"),
        ({"TIDAL_WORLD": "4", "WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"}, "RANK=2"),
        ({"TIDAL_WORLD": "4", "WORLD_SIZE": "2", "RANK": "0"}, "MASTER_ADDR"),
        ({"TIDAL_REDUCE": "fast"}, "TIDAL_REDUCE='fast'"),
        ({"TIDAL_CHECKPOINT_EVERY_S": "-1"}, "TIDAL_CHECKPOINT_EVERY_S='-1'"),
    ],
)  # fmt: skip
def test_bad_settings_name_the_bad_value(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RuntimeSettings.from_env(env)
