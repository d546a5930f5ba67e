"""Shared helpers for the runtime's splicing tests: launching real workers, reading results."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

import tidal
from tidal.runtime import api

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
TRAIN = EXAMPLES / "train_digits.py"
TRAIN_DDP = EXAMPLES / "train_digits_ddp.py"

sys.path.insert(0, str(EXAMPLES))
import train_digits as digits  # noqa: E402

BATCH = 16
LR = 3e-3

_LAUNCHER_VARS = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_RUN_ID",
)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without launcher or Tidal variables, one thread per process.

    One intra-op thread everywhere: the runs being compared then execute the same kernels
    the same way, whatever the number of processes sharing the machine.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TIDAL_") and k not in _LAUNCHER_VARS
    }
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def torchrun_cmd(nproc: int, script: Path, args: Sequence[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        str(script),
        *args,
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_workers(
    nproc: int, script: Path, args: Sequence[str], env: Mapping[str, str], timeout: float = 240
) -> None:
    """Start ``nproc`` workers with the environment torchrun would give them, without its agent.

    (Cheaper than torchrun on a small machine; torchrun itself is exercised elsewhere.)
    """
    port = str(free_port())
    procs = []
    for rank in range(nproc):
        worker_env = dict(env)
        worker_env.update(
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(nproc),
            LOCAL_WORLD_SIZE=str(nproc),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port,
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), *args],
                env=worker_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                cwd=REPO,
            )
        )
    outputs = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=timeout)
            outputs.append(out)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    failed = [(r, p.returncode) for r, p in enumerate(procs) if p.returncode != 0]
    if failed:
        raise AssertionError(f"workers {failed} failed:\n" + "\n".join(o[-3000:] for o in outputs))


def tidal_cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", "from tidal.cli import main; main()", *args]


def run(cmd: Sequence[str], env: Mapping[str, str], *, timeout: float = 240) -> str:
    """Run to completion; fail with the output if the exit status is not 0."""
    proc = subprocess.run(
        list(cmd), env=dict(env), capture_output=True, text=True, timeout=timeout, cwd=REPO
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    return proc.stdout + proc.stderr


def read_status(ckpt_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((ckpt_dir / "status.json").read_text())
    except (OSError, ValueError):
        return None


def wait_for_step(
    ckpt_dir: Path, step: int, proc: subprocess.Popen[str], timeout: float = 180
) -> int:
    """Poll status.json until the job runs at ``step`` or later; returns the step seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(
                f"job ended (exit {proc.returncode}) before step {step}:\n{out[-6000:]}"
            )
        status = read_status(ckpt_dir)
        if status is not None and status["state"] == "running" and status["step"] >= step:
            return int(status["step"])
        time.sleep(0.05)
    raise AssertionError(f"job did not reach step {step} in {timeout}s: {read_status(ckpt_dir)}")


def children(pid: int) -> list[int]:
    """Direct child processes (Linux /proc)."""
    out: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    for task in task_dir.iterdir() if task_dir.exists() else []:
        try:
            out.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return out


def worker_pid(torchrun_pid: int, rank: int, timeout: float = 60) -> int:
    """The pid of torchrun's worker with RANK=rank."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in children(torchrun_pid):
            try:
                environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in environ:
                return child
        time.sleep(0.1)
    raise AssertionError(f"no worker with RANK={rank} under pid {torchrun_pid}")


def sigterm(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)


def load_state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def mismatches(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of entries that are not bitwise equal (or missing on one side)."""
    names = sorted(set(a) | set(b))
    return [n for n in names if n not in a or n not in b or not torch.equal(a[n], b[n])]


# ---------------------------------------------------------------- in-process training


def small_dataset(n: int = 300) -> TensorDataset:
    full = digits.build_dataset()
    x, y = full.tensors
    return TensorDataset(x[:n], y[:n])


def make_objects(world: int, epochs: int, dataset: TensorDataset, seed: int = 0):
    digits.seed_everything(seed)
    model = digits.build_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-2)
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, drop_last=True)
    total = epochs * digits.steps_per_epoch(len(dataset), world, BATCH)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=LR, total_steps=total)
    return model, optimizer, loader, scheduler


def train_with_tidal(
    world: int,
    epochs: int,
    dataset: TensorDataset,
    monkeypatch: Any,
    *,
    seen: list[Any] | None = None,
    sigterm_at: int | None = None,
    env: Mapping[str, str] | None = None,
) -> torch.nn.Module:
    """The digits loop under ``tidal.prepare`` in this process (P = 1, W = ``world``).

    ``seen`` collects (logical rank, clipped norm, gradients) after every micro-batch's
    clipping; ``sigterm_at`` sends this process SIGTERM during step ``sigterm_at``.
    """
    monkeypatch.setenv("TIDAL_WORLD", str(world))
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    model, optimizer, loader, scheduler = make_objects(world, epochs, dataset)
    model, optimizer, loader, scheduler = tidal.prepare(
        model, optimizer, loader, scheduler, seed=100
    )
    ctx = api.current()
    for _epoch in tidal.epochs(epochs):
        model.train()
        for x, y in loader:
            digits.train_step(model, x, y)
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            if seen is not None:
                grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
                seen.append((tidal.rank(), float(norm), grads))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            if sigterm_at is not None and ctx.position.step == sigterm_at and tidal.rank() == 0:
                os.kill(os.getpid(), signal.SIGTERM)
    api.shutdown()
    return model
