"""Replica splicing with real worker processes on gloo: the issue's invariance claims.

W = 4 logical ranks train ``examples/train_digits.py`` (dropout, BatchNorm, AdamW, one-cycle
LR, gradient clipping, NumPy and Python augmentation) for two epochs (56 steps):

* on P = 1, 2 and 4 workers: bitwise identical parameters and buffers;
* stopped by SIGTERM twice (once through ``tidal run`` to every worker, once to a single
  torchrun worker) and resumed on 4, then 2, then 1 workers: bitwise identical to the
  uninterrupted run;
* W = 6, not a power of two, on P = 1, 2 and 3: bitwise identical;
* against plain PyTorch DDP with 4 processes: equal within tight floating-point tolerance.

The launches are shared by the tests through one module-scoped fixture.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests.runtime.splice_support import (
    TRAIN,
    TRAIN_DDP,
    clean_env,
    digits,
    load_state,
    mismatches,
    read_status,
    run,
    run_workers,
    sigterm,
    tidal_cmd,
    torchrun_cmd,
    wait_for_step,
    worker_pid,
)

EPOCHS = 2
STEPS = EPOCHS * 28  # ceil(1797 / 4) = 450 samples per rank, 28 batches of 16
EXIT_PREEMPTED = 75  # tidal run: preempted, resumable


@dataclass(frozen=True)
class Runs:
    by_workers: dict[int, Path]
    resumed: Path
    ddp: Path
    stops: tuple[int, int]
    statuses: tuple[dict, dict, dict]
    checkpoints: list[str]


@pytest.fixture(scope="module")
def data_args(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Arguments that make every worker read the digits from one cache file (no sklearn)."""
    cache = tmp_path_factory.mktemp("data") / "digits.pt"
    digits.build_dataset(cache)
    return ["--data", str(cache)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, data_args: list[str]) -> Runs:
    tmp = tmp_path_factory.mktemp("splice")
    args = ["--epochs", str(EPOCHS), *data_args]
    env = clean_env(TIDAL_WORLD="4")
    by_workers = {}
    out = tmp / "p1.pt"
    run([sys.executable, str(TRAIN), *args, "--out", str(out)], env)
    by_workers[1] = out
    out = tmp / "p2.pt"
    run(torchrun_cmd(2, TRAIN, [*args, "--out", str(out)]), env)  # through torchrun once
    by_workers[2] = out
    out = tmp / "p4.pt"
    run_workers(4, TRAIN, [*args, "--out", str(out)], env)
    by_workers[4] = out

    ddp = tmp / "ddp.pt"
    run_workers(4, TRAIN_DDP, [*args, "--out", str(ddp)], clean_env())

    # Interrupted twice, resumed on a different number of workers each time.
    ckpt = tmp / "ckpt"
    resumed = tmp / "resumed.pt"
    slow = [*args, "--out", str(resumed), "--step-delay", "0.03"]
    first = subprocess.Popen(
        tidal_cmd("run", str(TRAIN), "--world", "4", "--workers", "4", "--checkpoint-dir",
                  str(ckpt), "--no-progress", "--", *slow),
        env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    wait_for_step(ckpt, 8, first)
    sigterm(first.pid)  # the launcher relays SIGTERM to every worker
    log1, _ = first.communicate(timeout=120)
    assert first.returncode == EXIT_PREEMPTED, log1[-6000:]
    status1 = read_status(ckpt)
    assert status1 is not None

    second = subprocess.Popen(
        torchrun_cmd(2, TRAIN, slow),
        env=clean_env(TIDAL_WORLD="4", TIDAL_CHECKPOINT_DIR=str(ckpt)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    wait_for_step(ckpt, int(status1["step"]) + 8, second)
    sigterm(worker_pid(second.pid, rank=1))  # only worker 1: the others learn it in the reduction
    log2, _ = second.communicate(timeout=120)
    assert second.returncode == 0, log2[-6000:]
    status2 = read_status(ckpt)
    assert status2 is not None

    env = clean_env(TIDAL_WORLD="4", TIDAL_CHECKPOINT_DIR=str(ckpt))
    run([sys.executable, str(TRAIN), *args, "--out", str(resumed)], env)
    status3 = read_status(ckpt)
    assert status3 is not None
    return Runs(
        by_workers=by_workers,
        resumed=resumed,
        ddp=ddp,
        stops=(int(status1["step"]), int(status2["step"])),
        statuses=(status1, status2, status3),
        checkpoints=sorted(p.name for p in ckpt.iterdir() if p.name.startswith("ckpt-")),
    )


def test_bitwise_identical_for_every_worker_count(runs: Runs) -> None:
    states = {p: load_state(path) for p, path in runs.by_workers.items()}
    assert any("running_mean" in k for k in states[1]), "the model must have BatchNorm buffers"
    assert int(states[1]["1.num_batches_tracked"]) == STEPS
    for p in (2, 4):
        assert mismatches(states[1], states[p]) == [], f"P=1 vs P={p}"


def test_two_sigterms_and_resumes_on_other_worker_counts_change_nothing(runs: Runs) -> None:
    first, second = runs.stops
    assert 0 < first < second < STEPS, runs.stops
    s1, s2, s3 = runs.statuses
    assert (s1["state"], s1["workers"], s1["last_checkpoint_step"]) == ("preempted", 4, first)
    assert (s2["state"], s2["workers"], s2["last_checkpoint_step"]) == ("preempted", 2, second)
    assert (s3["state"], s3["workers"], s3["step"], s3["epoch"]) == ("succeeded", 1, STEPS, EPOCHS)
    assert f"ckpt-{second:08d}" in runs.checkpoints
    uninterrupted = load_state(runs.by_workers[1])
    assert mismatches(uninterrupted, load_state(runs.resumed)) == []


def test_matches_plain_ddp_within_float_tolerance(runs: Runs) -> None:
    tidal_state = load_state(runs.by_workers[4])
    ddp_state = load_state(runs.ddp)
    assert sorted(tidal_state) == sorted(ddp_state)
    for name, value in tidal_state.items():
        ref = ddp_state[name]
        if value.is_floating_point():
            # only the order of the gradient sum differs: gloo's all-reduce vs Tidal's tree
            torch.testing.assert_close(value, ref, rtol=1e-5, atol=2e-6, msg=name)
        else:
            assert torch.equal(value, ref), name


@pytest.fixture(scope="module")
def odd_world(tmp_path_factory: pytest.TempPathFactory, data_args: list[str]) -> dict[int, Path]:
    """W = 6 (not a power of two: frontier all-gather) on P = 1, 2 and 3, one epoch."""
    tmp = tmp_path_factory.mktemp("odd")
    env = clean_env(TIDAL_WORLD="6")
    out = {1: tmp / "p1.pt", 2: tmp / "p2.pt", 3: tmp / "p3.pt"}
    args = ["--epochs", "1", *data_args]
    run([sys.executable, str(TRAIN), *args, "--out", str(out[1])], env)
    for p in (2, 3):
        run_workers(p, TRAIN, [*args, "--out", str(out[p])], env)
    return out


def test_bitwise_identical_for_a_world_that_is_not_a_power_of_two(
    odd_world: dict[int, Path],
) -> None:
    states = {p: load_state(path) for p, path in odd_world.items()}
    assert int(states[1]["1.num_batches_tracked"]) == 1797 // 6 // 16  # 300 per rank, 18 steps
    for p in (2, 3):
        assert mismatches(states[1], states[p]) == [], f"P=1 vs P={p}"


def test_native_reduction_is_within_tolerance_of_the_ordered_one(
    runs: Runs, data_args: list[str], tmp_path: Path
) -> None:
    out = tmp_path / "native.pt"
    env = clean_env(TIDAL_WORLD="4", TIDAL_REDUCE="native")
    run_workers(2, TRAIN, ["--epochs", str(EPOCHS), *data_args, "--out", str(out)], env)
    native, ordered = load_state(out), load_state(runs.by_workers[4])
    for name, value in ordered.items():
        if value.is_floating_point():
            torch.testing.assert_close(native[name], value, rtol=1e-5, atol=2e-6, msg=name)
        else:
            assert torch.equal(native[name], value), name


def test_bucketing_and_overlap_change_no_bit(
    runs: Runs, data_args: list[str], tmp_path: Path
) -> None:
    """One bucket per parameter (overlapped), and no overlap at all: the same bits."""
    reference = load_state(runs.by_workers[1])
    args = ["--epochs", str(EPOCHS), *data_args]
    for workers, bucket_mb in ((2, "0.000001"), (4, "0")):
        out = tmp_path / f"p{workers}-bucket{bucket_mb}.pt"
        env = clean_env(TIDAL_WORLD="4", TIDAL_BUCKET_MB=bucket_mb)
        run_workers(workers, TRAIN, [*args, "--out", str(out)], env)
        assert mismatches(reference, load_state(out)) == [], (
            f"P={workers} TIDAL_BUCKET_MB={bucket_mb}"
        )
