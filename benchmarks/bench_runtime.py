"""Runtime benchmark: the cost of Tidal next to plain PyTorch, measured side by side.

Prints ONE JSON object to stdout (progress goes to stderr)::

    python benchmarks/bench_runtime.py            # about 3-5 minutes on 2 CPU cores
    python benchmarks/bench_runtime.py --quick    # fewer repeats, for a smoke test

Keys (fractions are relative: 0.01 = 1 % slower / 1 % of the baseline):

* ``ddp_overhead``: Tidal at P = W = 2 (default ordered reduction) vs plain DDP, same model
  and data, per-step median, arms interleaved in the same two processes (gloo).
  ``ddp_overhead_native`` is the same with ``TIDAL_REDUCE=native``, and
  ``ddp_overhead_serial`` the ordered reduction with ``TIDAL_BUCKET_MB=0`` (its exchange
  after backward instead of overlapped with it).
* ``splice_overhead``: {k: t(one step of k logical ranks on one worker) / (k * t(one plain
  PyTorch step of one rank)) - 1}; ``splice_overhead_vs_accumulation`` compares with plain
  gradient accumulation over the same k micro-batches (one optimizer step).
* ``checkpoint_vs_raw``: checkpoint write throughput (CheckpointManager.save, synchronous,
  committed) / throughput of writing the same tensor bytes raw (one file, fsync).
* ``async_slowdown``: extra wall time of the training steps that overlap an asynchronous
  checkpoint (including the step that takes the snapshot), as a fraction of their time
  without one.
* ``preempt_s``: SIGTERM to every worker -> all workers exited with a committed checkpoint.
* ``resume_s``: ``tidal run`` started on a directory with a checkpoint -> first step done
  (``fresh_start_s``: the same without a checkpoint).

The model is an MLP with 10.5 M parameters; with AdamW its state is ~126 MB. Workers and
the measuring process use one intra-op thread each, so the numbers reflect this machine's
cores rather than thread contention.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
BATCH = 32
IN, HIDDEN, CLASSES = 1024, 2048, 10


def log(message: str) -> None:
    print(f"[bench_runtime] {message}", file=sys.stderr, flush=True)


def build_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(IN, HIDDEN),
        nn.ReLU(),
        nn.Linear(HIDDEN, HIDDEN),
        nn.ReLU(),
        nn.Linear(HIDDEN, HIDDEN),
        nn.ReLU(),
        nn.Linear(HIDDEN, CLASSES),
    )


def dataset(samples: int, seed: int = 1) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(
        torch.randn(samples, IN, generator=g), torch.randint(0, CLASSES, (samples,), generator=g)
    )


def loss_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(model(x), y)


def durations(stamps: list[float], skip: int) -> list[float]:
    diffs = [b - a for a, b in itertools.pairwise(stamps)]
    return diffs[skip:]


def median(xs: Iterable[float]) -> float:
    values = list(xs)
    return statistics.median(values) if values else float("nan")


# ====================================================================== worker modes


def _tidal_steps(model: nn.Module, steps: int, k: int, world: int) -> list[float]:
    """Run one epoch of ``steps`` steps through tidal.prepare; time stamps after each step."""
    import tidal

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loader = DataLoader(dataset(steps * BATCH * world), batch_size=BATCH, shuffle=True)
    model, opt, loader = tidal.prepare(model, opt, loader)
    stamps = [time.perf_counter()]
    for _ in tidal.epochs(1):
        for i, (x, y) in enumerate(loader):
            loss_of(model, x, y).backward()
            opt.step()
            opt.zero_grad()
            if (i + 1) % k == 0:
                stamps.append(time.perf_counter())
    from tidal.runtime.api import shutdown

    shutdown()
    return stamps


def worker_ddp(args: argparse.Namespace) -> None:
    """P = W processes: DDP and Tidal arms interleaved in the same processes."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DistributedSampler

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    steps, warm = args.steps, args.warmup
    results: dict[str, list[float]] = {
        "ddp": [],
        "tidal_ordered": [],
        "tidal_serial": [],
        "tidal_native": [],
    }
    for rnd in range(args.rounds):
        for arm in results:
            model = build_model()
            if arm == "ddp":
                ddp = DistributedDataParallel(model)
                opt = torch.optim.AdamW(ddp.parameters(), lr=1e-4)
                data = dataset((steps + warm) * BATCH * world)
                sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True)
                stamps = [time.perf_counter()]
                for x, y in DataLoader(data, batch_size=BATCH, sampler=sampler):
                    loss_of(ddp, x, y).backward()
                    opt.step()
                    opt.zero_grad()
                    stamps.append(time.perf_counter())
            else:
                serial = arm == "tidal_serial"
                os.environ["TIDAL_REDUCE"] = "ordered" if serial else arm.removeprefix("tidal_")
                os.environ["TIDAL_BUCKET_MB"] = "0" if serial else ""
                stamps = _tidal_steps(model, steps + warm, 1, world)
            results[arm] += durations(stamps, warm)
            dist.barrier()
            if rank == 0:
                log(f"  ddp round {rnd}: {arm} median {median(results[arm]) * 1e3:.1f} ms/step")
    if rank == 0:
        Path(args.out).write_text(json.dumps(results))
    dist.destroy_process_group()


def _publish(path: Path, text: str) -> None:
    """Write a small file atomically, so the measuring process never reads it half-written."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def worker_preempt(args: argparse.Namespace) -> None:
    """A long Tidal job under ``tidal run``: reports pids and when its first step is done."""
    import tidal

    torch.set_num_threads(1)
    out = Path(args.out)
    rank = int(os.environ.get("RANK", "0"))
    _publish(out / f"pid-{rank}", str(os.getpid()))
    model = build_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loader = DataLoader(dataset(20_000), batch_size=BATCH, shuffle=True)
    model, opt, loader = tidal.prepare(model, opt, loader)
    first = True
    for _ in tidal.epochs(1000):
        for x, y in loader:
            loss_of(model, x, y).backward()
            opt.step()
            opt.zero_grad()
            if first and rank == 0:
                first = False
                _publish(out / "first-step", repr(time.time()))


# ====================================================================== measurements


def bench_ddp(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    log("ddp_overhead: DDP vs Tidal at P = W = 2 (torchrun, gloo), arms interleaved")
    out = tmp / "ddp.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TIDAL_WORLD": "2"}
    env.pop("TIDAL_CHECKPOINT_DIR", None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(HERE),
        "--worker",
        "ddp",
        "--out",
        str(out),
        "--steps",
        str(args.ddp_steps),
        "--warmup",
        "3",
        "--rounds",
        str(args.rounds),
    ]
    proc = subprocess.run(cmd, env=env, stdout=sys.stderr, stderr=sys.stderr, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"ddp benchmark workers failed ({proc.returncode})")
    raw = json.loads(out.read_text())
    ddp, ordered, serial, native = (
        median(raw[a]) for a in ("ddp", "tidal_ordered", "tidal_serial", "tidal_native")
    )
    return {
        "ddp_overhead": ordered / ddp - 1,
        "ddp_overhead_serial": serial / ddp - 1,
        "ddp_overhead_native": native / ddp - 1,
        "ddp_step_ms": {
            "ddp": ddp * 1e3,
            "tidal_ordered": ordered * 1e3,
            "tidal_serial": serial * 1e3,
            "tidal_native": native * 1e3,
        },
    }


def _plain_steps(steps: int, k: int) -> list[float]:
    """Plain PyTorch, one process: a step = k micro-batches accumulated, one optimizer step."""
    model = build_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loader = DataLoader(dataset(steps * k * BATCH), batch_size=BATCH, shuffle=True)
    stamps = [time.perf_counter()]
    for i, (x, y) in enumerate(loader):
        loss_of(model, x, y).backward()
        if (i + 1) % k == 0:
            opt.step()
            opt.zero_grad()
            stamps.append(time.perf_counter())
    return stamps


def bench_splice(args: argparse.Namespace) -> dict[str, Any]:
    log("splice_overhead: one worker hosting k logical ranks vs k plain steps")
    steps, warm = args.splice_steps, 2
    arms: dict[str, Callable[[], list[float]]] = {"plain": lambda: _plain_steps(steps + warm, 1)}
    for k in (2, 4):
        arms[f"accumulate_{k}"] = lambda k=k: _plain_steps(steps + warm, k)
        arms[f"tidal_{k}"] = lambda k=k: _tidal_in_process(steps + warm, k)
    times: dict[str, list[float]] = {name: [] for name in arms}
    for rnd in range(args.rounds):
        for name, run in arms.items():
            times[name] += durations(run(), warm)
        log(
            f"  splice round {rnd}: "
            + ", ".join(f"{n} {median(t) * 1e3:.0f} ms" for n, t in times.items())
        )
    plain = median(times["plain"])
    return {
        "splice_overhead": {str(k): median(times[f"tidal_{k}"]) / (k * plain) - 1 for k in (2, 4)},
        "splice_overhead_vs_accumulation": {
            str(k): median(times[f"tidal_{k}"]) / median(times[f"accumulate_{k}"]) - 1
            for k in (2, 4)
        },
        "splice_step_ms": {name: median(t) * 1e3 for name, t in times.items()},
    }


def _tidal_in_process(steps: int, k: int) -> list[float]:
    os.environ["TIDAL_WORLD"] = str(k)
    try:
        return _tidal_steps(build_model(), steps, k, k)
    finally:
        os.environ.pop("TIDAL_WORLD", None)


def _training_state() -> tuple[dict[str, Any], int]:
    model = build_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, y = dataset(BATCH).tensors
    loss_of(model, x, y).backward()
    opt.step()
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": 1}
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    size += sum(
        t.numel() * t.element_size()
        for st in opt.state_dict()["state"].values()
        for t in st.values()
        if isinstance(t, torch.Tensor)
    )
    return state, size


def bench_checkpoint(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from tidal.runtime.checkpoint import CheckpointManager

    state, size = _training_state()
    log(f"checkpoint_vs_raw: {size / 1e6:.0f} MB of model + AdamW state, raw vs checkpoint")
    tensors = [*state["model"].values()]
    tensors += [t for st in state["optimizer"]["state"].values() for t in st.values()]
    blob = b"".join(t.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes() for t in tensors)
    root = tmp / "ckpt-bench"
    # keep=100: deleting the previous checkpoint is not part of writing this one; the old
    # directories are removed between repeats, outside the timed region.
    mgr = CheckpointManager(root, worker=0, workers=1, world=1, keep=100)
    raw_t, ckpt_t = [], []
    for i in range(args.ckpt_repeats):
        for old in root.glob("ckpt-*"):
            shutil.rmtree(old)
        path = tmp / "raw.bin"
        start = time.perf_counter()
        with open(path, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        raw_t.append(time.perf_counter() - start)
        path.unlink()
        start = time.perf_counter()
        mgr.save(i + 1, shared=state, per_rank={0: {"position": i}}, meta={})
        ckpt_t.append(time.perf_counter() - start)
        log(f"  write {i}: raw {raw_t[-1]:.2f} s, checkpoint {ckpt_t[-1]:.2f} s")
    info = mgr.latest()
    start = time.perf_counter()
    fresh = CheckpointManager(root, worker=0, workers=1, world=1)
    found = fresh.latest()
    verify_s = time.perf_counter() - start
    if info is None or found is None:
        raise RuntimeError("benchmark checkpoint not found")
    mgr.close()
    shutil.rmtree(root, ignore_errors=True)
    return {
        "checkpoint_vs_raw": median(raw_t) / median(ckpt_t),
        "checkpoint_mb_per_s": size / median(ckpt_t) / 1e6,
        "raw_mb_per_s": size / median(raw_t) / 1e6,
        "checkpoint_verify_s": verify_s,
        "state_mb": size / 1e6,
    }


def bench_async(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from tidal.runtime.checkpoint import CheckpointManager

    log("async_slowdown: training steps overlapping an asynchronous checkpoint")
    model = build_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    data = iter(DataLoader(dataset(4000 * BATCH), batch_size=BATCH))
    mgr = CheckpointManager(tmp / "async-bench", worker=0, workers=1, world=1, keep=1)

    def step() -> None:
        x, y = next(data)
        loss_of(model, x, y).backward()
        opt.step()
        opt.zero_grad()

    def timed(n: int) -> list[float]:
        out = []
        for _ in range(n):
            t = time.perf_counter()
            step()
            out.append(time.perf_counter() - t)
        return out

    timed(3)  # warm-up (and AdamW state allocation)
    base: list[float] = []
    fractions, blocking, overlapped = [], [], []
    for c in range(args.async_repeats):
        before = timed(6)
        t = time.perf_counter()
        state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": c}
        mgr.save(c + 1, shared=state, per_rank={0: {}}, meta={}, asynchronous=True)
        blocking.append(time.perf_counter() - t)
        step()
        window = [time.perf_counter() - t]
        while mgr.saving:
            window += timed(1)
        mgr.wait()
        after = timed(max(6, len(window)))
        # Paired reference: the steps just before and after, so load drift cancels out.
        ref = median(before + after)
        base += before + after
        fractions.append(sum(window) / (len(window) * ref) - 1)
        overlapped.append(len(window))
        log(
            f"  async {c}: {len(window)} steps overlapped, {fractions[-1] * 100:+.1f} % "
            f"(step {ref * 1e3:.0f} ms, snapshot {blocking[-1] * 1e3:.0f} ms)"
        )
    mgr.close()
    shutil.rmtree(tmp / "async-bench", ignore_errors=True)
    return {
        "async_slowdown": median(fractions),
        "async_snapshot_s": median(blocking),
        "async_overlapped_steps": median(overlapped),
        "plain_step_ms": median(base) * 1e3,
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (ProcessLookupError, OSError):
        return False


def _wait_for(pred: Callable[[], bool], proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 300
    while not pred():
        if proc.poll() is not None:
            raise RuntimeError(f"tidal run exited ({proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


def bench_preempt_resume(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    log("preempt_s / resume_s: tidal run --world 2 --workers 2, SIGTERM, rerun")
    ck = tmp / "preempt-ck"
    marks = tmp / "preempt-marks"
    marks.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-c",
        "from tidal.cli import main; main()",
        "run",
        str(HERE),
        "--world",
        "2",
        "--workers",
        "2",
        "--checkpoint-dir",
        str(ck),
        "--no-progress",
        "--",
        "--worker",
        "preempt",
        "--out",
        str(marks),
    ]
    fresh, resume, preempt, sizes = [], [], [], []
    for i in range(args.launches):
        for f in marks.iterdir():
            f.unlink()
        started = time.time()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for(lambda: (marks / "first-step").exists(), proc, "the first step")
        first = float((marks / "first-step").read_text()) - started
        (fresh if i == 0 else resume).append(first)
        _wait_for(lambda: all((marks / f"pid-{r}").exists() for r in (0, 1)), proc, "pids")
        time.sleep(1.0)  # a few steps
        pids = [int((marks / f"pid-{r}").read_text()) for r in (0, 1)]
        t0 = time.perf_counter()
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        while any(_alive(p) for p in pids):
            time.sleep(0.005)
        preempt.append(time.perf_counter() - t0)
        rc = proc.wait(timeout=120)
        status = json.loads((ck / "status.json").read_text())
        if rc != 75 or status.get("state") != "preempted":
            raise RuntimeError(f"launch {i}: exit {rc}, status {status}")
        step = status["last_checkpoint_step"]
        ckpt = ck / f"ckpt-{step:08d}"
        sizes.append(sum(f.stat().st_size for f in ckpt.rglob("*") if f.is_file()))
        log(
            f"  launch {i}: first step {first:.2f} s after launch, preempted at step {step} "
            f"in {preempt[-1]:.2f} s ({sizes[-1] / 1e6:.0f} MB committed)"
        )
    return {
        "preempt_s": median(preempt),
        "resume_s": median(resume),
        "fresh_start_s": median(fresh),
        "preempt_checkpoint_mb": median(sizes) / 1e6,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", choices=["ddp", "preempt"], help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=12, help=argparse.SUPPRESS)
    p.add_argument("--warmup", type=int, default=3, help=argparse.SUPPRESS)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per comparison")
    p.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    args = p.parse_args()
    if args.worker == "ddp":
        worker_ddp(args)
        return
    if args.worker == "preempt":
        worker_preempt(args)
        return

    quick = args.quick
    args.ddp_steps = 6 if quick else 10
    args.splice_steps = 3 if quick else 4
    args.ckpt_repeats = 2 if quick else 6
    args.async_repeats = 2 if quick else 4
    args.launches = 2 if quick else 3
    if quick:
        args.rounds = 1
    torch.set_num_threads(1)
    for name in ("TIDAL_CHECKPOINT_DIR", "TIDAL_WORLD", "WORLD_SIZE", "RANK"):
        os.environ.pop(name, None)
    import logging

    logging.basicConfig(level=logging.WARNING)
    started = time.monotonic()
    result: dict[str, Any] = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "intra_op_threads": 1,
            "backend": "gloo",
            "load_average_at_start": os.getloadavg(),
        },
        "model_parameters": sum(p.numel() for p in build_model().parameters()),
    }
    parts: list[tuple[str, Callable[[Path], dict[str, Any]]]] = [
        ("checkpoint", lambda t: bench_checkpoint(args, t)),
        ("async", lambda t: bench_async(args, t)),
        ("splice", lambda t: bench_splice(args)),
        ("ddp", lambda t: bench_ddp(args, t)),
        ("preempt_resume", lambda t: bench_preempt_resume(args, t)),
    ]
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="tidal-bench-") as tmp:
        for name, part in parts:
            try:
                result.update(part(Path(tmp)))
            except Exception as e:  # report what was measured; name what was not
                log(f"{name} failed: {e!r}")
                errors[name] = repr(e)
    if errors:
        result["errors"] = errors
    result["bench_seconds"] = time.monotonic() - started
    result["machine"]["load_average_at_end"] = os.getloadavg()
    log(f"done in {result['bench_seconds']:.0f} s")
    print(json.dumps(result, indent=1, sort_keys=True))
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
