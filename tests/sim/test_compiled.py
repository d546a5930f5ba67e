"""The compiled build (mypyc, the default install) decides exactly as the Python sources.

The same simulations run in two fresh interpreters: one importing Tidal as installed, one
importing a copy of its ``.py`` files only. Every job's history must match to the bit.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tidal
from tidal._build import compiled_modules

SCRIPT = """
import json, sys
import tidal.core.policies.tiered as tiered
from tidal.core import Fleet, policy_names
from tidal.sim import simulate, synthetic_trace

jobs = synthetic_trace(300, seed=11, capacity=48, load=1.1)
out = {"tiered_from": tiered.__file__}
for name in policy_names():
    result = simulate(jobs, Fleet.uniform(6, 8), name)
    out[name] = [
        [j.id, j.first_start, j.finish, j.held_s, j.running_s, j.lost_s, j.preemptions,
         j.resizes, j.migrations]
        for j in result.jobs
    ]
json.dump(out, sys.stdout)
"""


def run(env: dict[str, str]) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_compiled_and_pure_python_decide_alike(tmp_path: Path) -> None:
    if "tidal.core.policies.tiered" not in compiled_modules():
        pytest.skip("Tidal is installed as pure Python (TIDAL_COMPILE=0): nothing to compare")
    package = Path(tidal.__file__).parent
    shutil.copytree(package, tmp_path / "tidal", ignore=shutil.ignore_patterns("*.so", "*.pyd"))
    env = dict(os.environ)
    installed = run(env)
    pure = run({**env, "PYTHONPATH": str(tmp_path)})
    assert str(installed.pop("tiered_from")).endswith(".so")
    assert str(pure.pop("tiered_from")).endswith(".py")
    assert installed.keys() == pure.keys() and len(installed) >= 6
    for name in installed:
        assert installed[name] == pure[name], f"{name}: compiled and pure Python differ"
