"""How fast the supervisor side is: importing tidal.launch, catching stops, a whole launch.

Prints one JSON object (seconds, medians over ``--repeat`` fresh processes):

* ``python_startup_s``: ``python -c pass``, for scale;
* ``import_launch_s``: a fresh interpreter importing every ``tidal.launch`` module (what a
  service's actor pays; no PyTorch);
* ``catch_stop_s``: a fresh interpreter up to the moment its stop signals are counted, as
  ``tidal run`` does first (the window in which a stop could still end it with -15);
* ``run_trivial_s``: ``tidal run`` of a script that only prints, with ``--workers``
  processes, from start to exit status (the launcher's own overhead);
* ``stop_to_exit_s``: a training job (the real runtime, P = ``--workers``) stopped by
  SIGTERM while it trains, from the signal to the launcher's exit (one step, one
  checkpoint, the exits).

    python benchmarks/bench_launch.py --repeat 7 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

PY = sys.executable
TIDAL = [PY, "-c", "from tidal.cli import main; main()", "run"]

_TRAIN = """
import sys, time
import torch, tidal
from torch.utils.data import DataLoader, TensorDataset
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1))
opt = torch.optim.AdamW(model.parameters())
loader = DataLoader(TensorDataset(torch.randn(4096, 256), torch.randn(4096, 1)), batch_size=8)
model, opt, loader = tidal.prepare(model, opt, loader)
for epoch in tidal.epochs(100):
    for x, y in loader:
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        opt.zero_grad()
"""


def _wall(cmd: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env, timeout=300)
    return time.perf_counter() - started


def _median(repeat: int, sample: Callable[[], float]) -> float:
    return round(statistics.median(sample() for _ in range(repeat)), 4)


def _run_trivial(tmp: Path, workers: int, env: dict[str, str]) -> float:
    trivial = tmp / "trivial.py"
    trivial.write_text("print('hello')\n")
    d = tmp / f"t{time.monotonic_ns()}"
    cmd = [*TIDAL, str(trivial), "--world", str(workers), "--workers", str(workers)]
    return _wall([*cmd, "--checkpoint-dir", str(d), "--no-progress"], env)


def _stop_to_exit(tmp: Path, workers: int) -> float:
    script = tmp / "train.py"
    script.write_text(_TRAIN)
    d = tmp / f"ck-{time.monotonic_ns()}"
    proc = subprocess.Popen(
        [*TIDAL, str(script), "--world", str(workers), "--workers", str(workers),
         "--checkpoint-dir", str(d), "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            status = json.loads((d / "status.json").read_text())
        except (OSError, ValueError):
            status = {}
        if status.get("state") == "running" and status.get("step", 0) >= 5:
            break
        time.sleep(0.05)
    else:
        proc.kill()
        raise RuntimeError("the job did not reach step 5")
    started = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=300)
    if code != 75:
        raise RuntimeError(f"expected exit status 75 after SIGTERM, got {code}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        imports = (
            "import pkgutil, importlib, tidal.launch\n"
            "for m in pkgutil.iter_modules(tidal.launch.__path__, 'tidal.launch.'):\n"
            "    importlib.import_module(m.name)"
        )
        catch = "from tidal.launch.signals import catch_stop_signals; catch_stop_signals()"
        result = {
            "machine": platform.node(),
            "cpus": os.cpu_count(),
            "load_1min": round(os.getloadavg()[0], 2),
            "repeat": args.repeat,
            "workers": args.workers,
            "python_startup_s": _median(args.repeat, lambda: _wall([PY, "-c", "pass"])),
            "import_launch_s": _median(args.repeat, lambda: _wall([PY, "-c", imports])),
            "catch_stop_s": _median(args.repeat, lambda: _wall([PY, "-c", catch])),
            "run_trivial_s": _median(args.repeat, lambda: _run_trivial(tmp, args.workers, env)),
            "stop_to_exit_s": _median(
                max(1, args.repeat // 2), lambda: _stop_to_exit(tmp, args.workers)
            ),
        }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
