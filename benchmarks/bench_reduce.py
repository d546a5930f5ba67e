"""Tidal's two gradient reductions against plain DDP, side by side in the same processes.

    python benchmarks/bench_reduce.py [--workers 2] [--steps 30] [--hidden 2048]

Starts P worker processes (torchrun, gloo on CPU, NCCL on GPU) that each time, on the same
MLP (about 12.6 M parameters with the default ``--hidden``) and W = P:

* plain ``DistributedDataParallel``;
* ``tidal.prepare`` with ``TIDAL_REDUCE=ordered`` (fixed tree, bitwise the same for any P),
  whose cross-worker part overlaps the backward pass in ~25 MB buckets;
* the same with ``TIDAL_BUCKET_MB=0``: the whole exchange after backward (``ordered_serial``);
* ``tidal.prepare`` with ``TIDAL_REDUCE=native`` (the backend's all-reduce).

Prints one JSON object: median seconds per step of each, and each Tidal mode's overhead
against DDP as a fraction. Timings interleave the three variants round by round so that
a busy machine affects them alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn


def build(hidden: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(1024, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1024),
    )  # fmt: skip


def time_steps(step: Any, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        out.append(time.perf_counter() - t)
    return out


def worker(args: argparse.Namespace) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader, TensorDataset

    import tidal
    from tidal.runtime import api

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    x = torch.randn(64 * (args.steps * args.rounds + 8) * dist.get_world_size(), 1024)
    data = TensorDataset(x, x)

    def make_step(model: nn.Module, opt: torch.optim.Optimizer, batches: Any):
        def step() -> None:
            xb, yb = next(batches)
            nn.functional.mse_loss(model(xb), yb).backward()
            opt.step()
            opt.zero_grad()

        return step

    results: dict[str, list[float]] = {"ddp": [], "ordered": [], "ordered_serial": [], "native": []}
    variants = {}
    ddp_model = DistributedDataParallel(build(args.hidden))
    ddp_opt = torch.optim.SGD(ddp_model.parameters(), lr=1e-3)
    sampler = torch.utils.data.DistributedSampler(data, shuffle=False)
    variants["ddp"] = make_step(ddp_model, ddp_opt, iter(DataLoader(data, 64, sampler=sampler)))
    # One tidal context at a time: build each mode when its turn comes.
    for _round in range(args.rounds):
        results["ddp"] += time_steps(variants["ddp"], args.steps)
        for arm in ("ordered", "ordered_serial", "native"):
            os.environ["TIDAL_REDUCE"] = arm.removesuffix("_serial")
            os.environ["TIDAL_BUCKET_MB"] = "0" if arm.endswith("_serial") else ""
            model = build(args.hidden)
            opt = torch.optim.SGD(model.parameters(), lr=1e-3)
            model, opt, loader = tidal.prepare(model, opt, DataLoader(data, 64))
            it = iter(loader)
            step = make_step(model, opt, it)
            step()  # warm-up: allocates the transfer buffers
            results[arm] += time_steps(step, args.steps)
            del it
            api.shutdown()
    if rank == 0:
        med = {k: statistics.median(v[args.steps // 4 :]) for k, v in results.items()}
        params = sum(p.numel() for p in ddp_model.parameters())
        out = {
            "workers": dist.get_world_size(),
            "parameters": params,
            "step_s": med,
            "load_average": os.getloadavg(),
            "ordered_overhead_vs_ddp": med["ordered"] / med["ddp"] - 1,
            "ordered_serial_overhead_vs_ddp": med["ordered_serial"] / med["ddp"] - 1,
            "native_overhead_vs_ddp": med["native"] / med["ddp"] - 1,
        }
        Path(args.result).write_text(json.dumps(out))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--result", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        env = dict(os.environ, OMP_NUM_THREADS="1", TIDAL_WORLD=str(args.workers))
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={args.workers}", __file__, "--worker", "--result", str(result),
            "--steps", str(args.steps), "--rounds", str(args.rounds), "--hidden", str(args.hidden),
        ]  # fmt: skip
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
            raise SystemExit(proc.returncode)
        sys.stdout.write(result.read_text() + "\n")


if __name__ == "__main__":
    main()
