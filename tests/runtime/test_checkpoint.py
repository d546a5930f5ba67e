"""Checkpoint manager: round trips across P, asynchronous snapshots, crashes and corruption.

The multi-worker tests start real processes: this file is also the worker script
(``python test_checkpoint.py save ROOT WORKER WORKERS WORLD STEP...``).
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tidal.runtime.checkpoint import (
    CheckpointError,
    CheckpointManager,
    CheckpointWorldMismatch,
)

HERE = Path(__file__).resolve()

pytestmark = [
    pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning"),
    pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step:UserWarning"),
]


# ---------------------------------------------------------------- deterministic states


def make_shared(step: int, big: int = 0) -> dict[str, Any]:
    """A shared state like the runtime's: model, optimizer (int keys), scheduler, counters."""
    g = torch.Generator().manual_seed(1000 + step)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.BatchNorm1d(5))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    model(torch.randn(8, 6, generator=g)).square().mean().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3)
    sched.step()
    shared: dict[str, Any] = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "scaler": {},
        "extras": {"notes": ["a", 1, 2.5, None], "pair": (1, "x")},
        "step": step,
        "samples_seen": 17 * step,
    }
    if big:
        shared["big"] = torch.randn(big, generator=g)
    return shared


def make_rank(rank: int, step: int) -> dict[str, Any]:
    rng = random.Random(rank * 7919 + step)
    np_rng = np.random.RandomState(rank + 31 * step)
    torch_gen = torch.Generator().manual_seed(rank * 13 + step)
    torch.randn(3, generator=torch_gen)
    return {
        "python_rng": rng.getstate(),
        "numpy_rng": np_rng.get_state(),
        "torch_rng": torch_gen.get_state(),
        "data_position": {"epoch": step // 5, "batch": step % 5, "rank": rank},
        "buffers": {"bn.running_mean": torch.full((5,), float(rank + step))},
    }


def hosted(worker: int, workers: int, world: int) -> list[int]:
    k = world // workers
    return list(range(worker * k, (worker + 1) * k))


def assert_same(a: Any, b: Any, where: str = "state") -> None:
    """Deep equality with exact tensor/array comparison and key types preserved."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype, where
        assert np.array_equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict), f"{where}: {type(b).__name__}"
        assert list(a.keys()) == list(b.keys()), f"{where}: {list(a)} != {list(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b and type(a) is type(b), f"{where}: {a!r} != {b!r}"


def template_for(shared: dict[str, Any]) -> dict[str, Any]:
    """Fresh state dicts of live objects, as the runtime passes them: optimizer state empty."""
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.BatchNorm1d(5))
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3)
    tmpl: dict[str, Any] = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "scaler": {},
        "extras": {},
        "step": 0,
        "samples_seen": 0,
    }
    if "big" in shared:
        tmpl["big"] = torch.zeros_like(shared["big"])
    return tmpl


# ---------------------------------------------------------------- worker process


def _worker_main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    mode, root, worker, workers, world = argv[0], argv[1], *map(int, argv[2:5])
    steps = [int(s) for s in argv[5].split(",")]
    big = int(argv[6]) if len(argv) > 6 else 0
    pause_at = set(argv[7].split(",")) if len(argv) > 7 else set()
    current = {"step": -1}

    def on_phase(name: str) -> None:
        if current["step"] == steps[-1] and name in pause_at:
            time.sleep(60)  # the test SIGKILLs us here

    # One manager per process, created before any save (as the runtime does).
    mgr = CheckpointManager(
        root, worker=worker, workers=workers, world=world, keep=5, _on_phase=on_phase
    )
    for step in steps:
        current["step"] = step
        shared = make_shared(step, big) if worker == 0 else None
        per_rank = {r: make_rank(r, step) for r in hosted(worker, workers, world)}
        mgr.save(
            step,
            shared=shared,
            per_rank=per_rank,
            meta={"epoch": step // 5, "tag": "t"},
            asynchronous=(mode == "async"),
        )
        print(f"saved {step}", flush=True)
    mgr.close()


def _spawn(*args: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(HERE), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"worker failed ({proc.returncode}):\n{err}"
    return out


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_two_workers_save_and_any_p_loads(tmp_path: Path, mode: str) -> None:
    world = 4
    procs = [_spawn(mode, tmp_path, w, 2, world, "3,6") for w in range(2)]
    for proc in procs:
        _finish(proc)

    for workers in (1, 2, 4):
        for worker in range(workers):
            mgr = CheckpointManager(tmp_path, worker=worker, workers=workers, world=world)
            info = mgr.latest()
            assert info is not None and info.step == 6 and info.world == world
            assert info.meta == {"epoch": 1, "tag": "t"}
            expected = make_shared(6)
            loaded = mgr.load_shared(info, template_for(expected))
            assert_same(expected, loaded)
            for r in hosted(worker, workers, world):
                assert_same(make_rank(r, 6), mgr.load_rank(info, r), f"rank {r}")
            mgr.close()

    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["ckpt-00000003", "ckpt-00000006"], names
    assert not list(tmp_path.glob("**/done-worker-*")), "done-markers must not be committed"


def test_loaded_state_restores_live_objects(tmp_path: Path) -> None:
    shared = make_shared(4)
    mgr = CheckpointManager(tmp_path, worker=0, workers=1, world=1)
    mgr.save(4, shared=shared, per_rank={0: make_rank(0, 4)}, meta={})
    info = mgr.latest()
    assert info is not None

    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.BatchNorm1d(5))
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3)
    assert opt.state_dict()["state"] == {}  # nothing before the first step
    tmpl = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "scaler": {},
        "extras": {},
        "step": 0,
        "samples_seen": 0,
    }
    loaded = mgr.load_shared(info, tmpl)
    model.load_state_dict(loaded["model"])
    opt.load_state_dict(loaded["optimizer"])
    sched.load_state_dict(loaded["scheduler"])
    assert_same(shared["optimizer"], opt.state_dict())
    assert_same(shared["model"], model.state_dict())
    assert sched.state_dict() == shared["scheduler"]


def test_empty_optimizer_state_round_trips(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    shared = {"model": model.state_dict(), "optimizer": opt.state_dict(), "extras": {}}
    mgr = CheckpointManager(tmp_path, worker=0, workers=1, world=1)
    mgr.save(0, shared=shared, per_rank={0: {}}, meta={})
    info = mgr.latest()
    assert info is not None
    loaded = mgr.load_shared(info, shared)
    assert loaded["optimizer"]["state"] == {}
    assert loaded["extras"] == {}
    assert mgr.load_rank(info, 0) == {}
    opt.load_state_dict(loaded["optimizer"])


def test_async_save_keeps_the_snapshot_while_training_mutates(tmp_path: Path) -> None:
    shared = make_shared(2, big=200_000)
    rank_state = make_rank(0, 2)
    expected_shared = {k: v for k, v in make_shared(2, big=200_000).items()}
    expected_rank = make_rank(0, 2)

    # The background write starts well after save() returns and training mutated the state.
    def late_start(phase: str) -> None:
        if phase == "start":
            time.sleep(0.3)

    mgr = CheckpointManager(tmp_path, worker=0, workers=1, world=1, _on_phase=late_start)
    mgr.save(2, shared=shared, per_rank={0: rank_state}, meta={}, asynchronous=True)
    # "Training goes on": mutate every tensor in place, and the containers too.
    for t in shared["model"].values():
        t.add_(1000)
    shared["big"].zero_()
    shared["step"] = 99
    for st in shared["optimizer"]["state"].values():
        st["exp_avg"].mul_(-3)
    rank_state["buffers"]["bn.running_mean"].fill_(-1)
    rank_state["data_position"]["batch"] = 42
    assert not (tmp_path / "ckpt-00000002").exists(), "save() must not block on the write"
    mgr.wait()
    info = mgr.latest()
    assert info is not None and info.step == 2
    assert_same(expected_shared, mgr.load_shared(info, template_for(expected_shared)))
    assert_same(expected_rank, mgr.load_rank(info, 0))
    mgr.close()


def test_async_errors_are_reraised_by_wait(tmp_path: Path) -> None:
    mgr = CheckpointManager(tmp_path, worker=0, workers=1, world=2, commit_timeout_s=0.2)
    # Worker 0 alone never covers rank 1: the background commit must fail loudly.
    mgr.save(1, shared={"x": torch.ones(2)}, per_rank={0: {}}, meta={}, asynchronous=True)
    with pytest.raises(CheckpointError, match=r"logical ranks \[1\]"):
        mgr.wait()
    assert mgr.latest() is None


def test_worker_zero_waits_for_the_other_workers(tmp_path: Path) -> None:
    mgr = CheckpointManager(tmp_path, worker=0, workers=2, world=2, commit_timeout_s=0.3)
    with pytest.raises(CheckpointError, match=r"workers \[1\] did not finish"):
        mgr.save(1, shared={"x": torch.ones(2)}, per_rank={0: {}}, meta={})
    assert mgr.latest() is None


def _wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(f"worker exited ({proc.returncode}) before {path}:\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {path}")
        time.sleep(0.005)


@pytest.mark.parametrize(
    ("kill_when", "pause_at"),
    [
        ("ckpt-00000002.tmp", "none"),  # as soon as the write starts: inside DCP's write
        ("ckpt-00000002.tmp/shared/.metadata", "shared-written"),  # ranks not written yet
        ("ckpt-00000002.tmp/manifest.json", "manifest-written"),  # all but the rename
    ],
)
def test_sigkill_mid_write_leaves_previous_checkpoint(
    tmp_path: Path, kill_when: str, pause_at: str
) -> None:
    big = 4_000_000  # 16 MB of shared state, so the first case dies mid-file
    proc = _spawn("sync", tmp_path, 0, 1, 2, "1,2", big, pause_at)
    _wait_for(tmp_path / kill_when, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert (tmp_path / "ckpt-00000002.tmp").exists()
    assert not (tmp_path / "ckpt-00000002").exists()

    mgr = CheckpointManager(tmp_path, worker=1, workers=2, world=2)  # not worker 0: no cleanup
    info = mgr.latest()
    assert info is not None and info.step == 1
    expected = make_shared(1, big)
    assert_same(expected, mgr.load_shared(info, template_for(expected)))
    assert_same(make_rank(1, 1), mgr.load_rank(info, 1))

    # The next commit removes the debris of the interrupted write.
    mgr0 = CheckpointManager(tmp_path, worker=0, workers=1, world=2)
    mgr0.save(3, shared=make_shared(3), per_rank={0: {}, 1: {}}, meta={})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-00000001", "ckpt-00000003"]


def _flip_bytes(path: Path, offset_fraction: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    i = int(len(data) * offset_fraction)
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "victim",
    [
        "shared/__0_0.distcp",
        "shared/.metadata",
        "shared-structure.json",
        "ranks/rank-00001.pt",
        "manifest.json",
        "<truncate ranks/rank-00000.pt>",
        "<delete shared/__0_0.distcp>",
    ],
)
def test_corrupted_checkpoint_is_detected_and_skipped(
    tmp_path: Path, victim: str, caplog: pytest.LogCaptureFixture
) -> None:
    mgr = CheckpointManager(tmp_path, worker=0, workers=1, world=2, keep=3)
    for step in (1, 2):
        mgr.save(
            step,
            shared=make_shared(step),
            per_rank={r: make_rank(r, step) for r in (0, 1)},
            meta={},
        )
    newest = tmp_path / "ckpt-00000002"
    if victim.startswith("<truncate"):
        target = newest / victim.split()[1].rstrip(">")
        target.write_bytes(target.read_bytes()[:-10])
    elif victim.startswith("<delete"):
        (newest / victim.split()[1].rstrip(">")).unlink()
    else:
        _flip_bytes(newest / victim)

    fresh = CheckpointManager(tmp_path, worker=0, workers=2, world=2)
    with caplog.at_level(logging.WARNING, logger="tidal.runtime.checkpoint"):
        info = fresh.latest()
    assert info is not None and info.step == 1
    assert any(
        "skipping checkpoint" in r.message and "ckpt-00000002" in r.message for r in caplog.records
    )
    expected = make_shared(1)
    assert_same(expected, fresh.load_shared(info, template_for(expected)))


def test_corruption_after_verification_is_still_caught_for_rank_files(tmp_path: Path) -> None:
    mgr = CheckpointManager(tmp_path, worker=0, workers=1, world=1)
    mgr.save(1, shared=make_shared(1), per_rank={0: make_rank(0, 1)}, meta={})
    info = mgr.latest()
    assert info is not None
    _flip_bytes(info.path / "ranks/rank-00000.pt")
    with pytest.raises(CheckpointError, match=r"rank-00000\.pt does not match"):
        mgr.load_rank(info, 0)


def _age(path: Path, seconds: float) -> None:
    """Pretend a crashed earlier launch wrote ``path`` ``seconds`` ago."""
    when = time.time() - seconds
    for p in [path, *path.rglob("*")]:
        os.utime(p, (when, when))


def test_worker_zero_removes_temporaries_of_earlier_launches_only(tmp_path: Path) -> None:
    old = tmp_path / "ckpt-00000009.tmp"
    (old / "ranks").mkdir(parents=True)
    (old / "done-worker-00001.json").write_text("{}")
    _age(old, 3600)
    # A faster worker of this launch already writes step 12: that must survive.
    current = tmp_path / "ckpt-00000012.tmp"
    (current / "ranks").mkdir(parents=True)
    (current / "ranks" / "rank-00001.pt").write_bytes(b"x")
    CheckpointManager(tmp_path, worker=1, workers=2, world=2)
    assert old.exists(), "only worker 0 cleans up"
    CheckpointManager(tmp_path, worker=0, workers=2, world=2)
    assert not old.exists()
    assert current.exists()


def test_stale_done_marker_of_an_earlier_launch_is_not_trusted(tmp_path: Path) -> None:
    tmp = tmp_path / "ckpt-00000005.tmp"
    (tmp / "ranks").mkdir(parents=True)
    (tmp / "ranks" / "rank-00001.pt").write_bytes(b"stale")
    marker = {
        "step": 5,
        "worker": 1,
        "workers": 2,
        "world": 2,
        "files": {"ranks/rank-00001.pt": {"xxh3_128": "0" * 32, "size": 5}},
    }
    (tmp / "done-worker-00001.json").write_text(json.dumps(marker))
    mgr = CheckpointManager(tmp_path, worker=0, workers=2, world=2, commit_timeout_s=1.0)
    _age(tmp, 3600)  # written by an earlier launch (after worker 0 started, for this test)
    with pytest.raises(CheckpointError, match=r"workers \[1\] did not finish"):
        mgr.save(5, shared={}, per_rank={0: {}}, meta={})
    assert mgr.latest() is None


def test_keep_prunes_old_checkpoints_and_stale_temporaries(tmp_path: Path) -> None:
    mgr = CheckpointManager(tmp_path, worker=0, workers=1, world=1, keep=2)
    (tmp_path / "ckpt-00000002.tmp" / "ranks").mkdir(parents=True)  # a crashed write
    for step in (1, 2, 3, 4):
        mgr.save(step, shared={"step": step}, per_rank={0: {"s": step}}, meta={})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-00000003", "ckpt-00000004"]
    info = mgr.latest()
    assert info is not None and mgr.load_shared(info, {}) == {"step": 4}


def test_resuming_from_an_older_step_replaces_the_abandoned_timeline(tmp_path: Path) -> None:
    mgr = CheckpointManager(tmp_path, worker=0, workers=1, world=1, keep=3)
    for step in (1, 2):
        mgr.save(step, shared={"v": step}, per_rank={0: {}}, meta={})
    _flip_bytes(tmp_path / "ckpt-00000002" / "manifest.json")
    info = mgr.latest()
    assert info is not None and info.step == 1
    mgr.save(2, shared={"v": 20}, per_rank={0: {}}, meta={})  # same step, new timeline
    info = mgr.latest()
    assert info is not None and info.step == 2 and mgr.load_shared(info, {}) == {"v": 20}


def test_world_mismatch_is_an_error_not_a_skip(tmp_path: Path) -> None:
    CheckpointManager(tmp_path, worker=0, workers=1, world=2).save(
        1, shared={}, per_rank={0: {}, 1: {}}, meta={}
    )
    with pytest.raises(CheckpointWorldMismatch, match="world 2; this job has world 4"):
        CheckpointManager(tmp_path, worker=0, workers=1, world=4).latest()


def test_stock_pytorch_tools_read_the_shared_state(tmp_path: Path) -> None:
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    shared = make_shared(5)
    mgr = CheckpointManager(tmp_path, worker=0, workers=1, world=1)
    mgr.save(5, shared=shared, per_rank={0: {}}, meta={})
    out = tmp_path / "plain.pt"
    dcp_to_torch_save(tmp_path / "ckpt-00000005" / "shared", out)
    plain = torch.load(out, weights_only=False)
    assert_same(shared["model"], dict(plain["model"]))
    assert torch.equal(
        plain["optimizer"]["state"]["0"]["exp_avg"], shared["optimizer"]["state"][0]["exp_avg"]
    )
    assert plain["step"] == 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"worker": 0, "workers": 3, "world": 4}, r"workers \(3\) must divide world \(4\)"),
        ({"worker": 2, "workers": 2, "world": 4}, r"worker must be in \[0, 2\), got 2"),
        ({"worker": 0, "workers": 1, "world": 0}, r"world must be an int >= 1, got 0"),
        ({"worker": 0, "workers": 1, "world": 1, "keep": 0}, r"keep must be an int >= 1, got 0"),
    ],
)
def test_constructor_validation_names_the_bad_value(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(CheckpointError, match=message):
        CheckpointManager(tmp_path, **kwargs)


def test_save_validation_names_the_bad_value(tmp_path: Path) -> None:
    w0 = CheckpointManager(tmp_path, worker=0, workers=2, world=2)
    w1 = CheckpointManager(tmp_path, worker=1, workers=2, world=2)
    with pytest.raises(CheckpointError, match="worker 0 must pass the shared state"):
        w0.save(1, shared=None, per_rank={0: {}}, meta={})
    with pytest.raises(CheckpointError, match="only worker 0 passes shared state; worker 1"):
        w1.save(1, shared={}, per_rank={1: {}}, meta={})
    with pytest.raises(CheckpointError, match=r"per_rank key 5 is not a logical rank in \[0, 2\)"):
        w1.save(1, shared=None, per_rank={5: {}}, meta={})
    with pytest.raises(CheckpointError, match="step must be an int >= 0, got -1"):
        w1.save(-1, shared=None, per_rank={1: {}}, meta={})
    with pytest.raises(CheckpointError, match="meta must be JSON-serialisable"):
        w1.save(1, shared=None, per_rank={1: {}}, meta={"t": torch.ones(1)})
    with pytest.raises(CheckpointError, match=r"dict key \(1, 2\) has type tuple"):
        w0.save(1, shared={"bad": {(1, 2): 3}}, per_rank={0: {}}, meta={})
    sched = torch.optim.lr_scheduler.StepLR(
        torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1), step_size=1
    )
    sched.step = types.MethodType(lambda self: None, sched)  # type: ignore[method-assign]
    with pytest.raises(CheckpointError, match=r"shared\['scheduler'\]\['step'\] is a method"):
        w0.save(1, shared={"scheduler": sched.state_dict()}, per_rank={0: {}}, meta={})
    with pytest.raises(CheckpointError, match=r"per_rank\[1\]\['f'\] is a function"):
        w1.save(1, shared=None, per_rank={1: {"f": _worker_main}}, meta={}, asynchronous=True)
    w0.close()
    with pytest.raises(CheckpointError, match="is closed"):
        w0.save(2, shared={}, per_rank={0: {}}, meta={})


def test_verifying_100_mb_is_fast(tmp_path: Path) -> None:
    mgr = CheckpointManager(tmp_path, worker=0, workers=1, world=1)
    mgr.save(1, shared={"w": torch.randn(25_000_000)}, per_rank={0: {}}, meta={})
    fresh = CheckpointManager(tmp_path, worker=0, workers=1, world=1)
    started = time.perf_counter()
    assert fresh.latest() is not None
    elapsed = time.perf_counter() - started
    # Generous bound (hashing runs at ~1 GB/s here): catches accidental O(n^2) or re-reads.
    assert elapsed < 5.0, f"verifying 100 MB took {elapsed:.2f} s"


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _worker_main(sys.argv[1:])
