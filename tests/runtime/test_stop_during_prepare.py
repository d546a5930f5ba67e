"""A SIGTERM that arrives while ``prepare`` runs (here: while it restores a checkpoint) is kept
and becomes a consistent cut at the first step boundary, instead of killing the worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import torch, tidal
    from torch.utils.data import DataLoader, TensorDataset

    class StopWhileRestoring:  # an extra prepared object: restored during prepare
        def state_dict(self):
            return {"n": torch.tensor(1)}
        def load_state_dict(self, state):
            os.kill(os.getpid(), signal.SIGTERM)

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(TensorDataset(torch.randn(64, 4), torch.randn(64, 1)), batch_size=4)
    model, opt, loader, _ = tidal.prepare(model, opt, loader, StopWhileRestoring())
    for epoch in tidal.epochs(int(sys.argv[1])):
        for x, y in loader:
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            opt.zero_grad()
    print("FINISHED", flush=True)
    """
)


def _run(script: Path, ckpt: Path, epochs: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TIDAL_WORLD": "2", "TIDAL_CHECKPOINT_DIR": str(ckpt)}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [sys.executable, str(script), str(epochs)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_stop_while_prepare_restores_is_a_cut_at_the_first_step(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(_SCRIPT)
    ckpt = tmp_path / "ck"
    first = _run(script, ckpt, epochs=1)  # 8 steps, final checkpoint at step 8
    assert first.returncode == 0 and "FINISHED" in first.stdout, first.stderr

    second = _run(script, ckpt, epochs=2)  # restores step 8: the object sends SIGTERM
    assert second.returncode == 0, (second.returncode, second.stderr[-3000:])
    assert "FINISHED" not in second.stdout
    status = json.loads((ckpt / "status.json").read_text())
    assert status["state"] == "preempted"
    assert status["step"] == status["last_checkpoint_step"] == 9, "stopped after one step"
