"""``tidal sim`` and ``tidal demo`` end to end (through Typer's runner)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tidal.cli import app
from tidal.core import policy as policy_registry

from .conftest import trace_file
from .policies import GangFifo, GreedyFit

KEYS = {
    "policy",
    "jobs",
    "completed",
    "avg_jct_s",
    "p50_jct_s",
    "p99_jct_s",
    "avg_queue_s",
    "makespan_s",
    "utilization",
    "premium_sla_met",
    "standard_sla_met",
    "premium_preemptions",
    "preemptions",
    "resizes",
    "migrations",
    "lost_device_s",
    "wall_s",
}
TRACE = "job_id,submit_time,num_gpus,duration,vc\n" + "".join(
    f"j{i},{i * 40},{(1, 2, 4, 1)[i % 4]},{300 + 97 * i % 1000},vc{i % 3}\n" for i in range(60)
)


@pytest.fixture(autouse=True)
def _test_policies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(policy_registry._REGISTRY, "test-fifo", GangFifo)
    monkeypatch.setitem(policy_registry._REGISTRY, "test-greedy", GreedyFit)


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    path = tmp_path / "mini.csv"
    path.write_text(TRACE)
    return path


def run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def sim_json(trace: Path, *extra: str) -> list[dict[str, object]]:
    out = run("sim", str(trace), "--nodes", "2", "--devices-per-node", "4", "--json", *extra)
    data = json.loads(out)
    assert isinstance(data, list)
    return data


def test_json_keys_and_one_object_per_policy(trace: Path) -> None:
    (row,) = sim_json(trace, "--policy", "test-fifo")
    assert set(row) >= KEYS
    assert row["policy"] == "test-fifo"
    assert row["jobs"] == row["completed"] == 60


def test_json_is_deterministic_apart_from_wall_time(trace: Path) -> None:
    def strip(rows: list[dict[str, object]]) -> str:
        for row in rows:
            row.pop("wall_s")
        return json.dumps(rows)

    first = sim_json(trace, "--policy", "test-greedy", "--seed", "7")
    second = sim_json(trace, "--policy", "test-greedy", "--seed", "7")
    assert strip(first) == strip(second)


def test_table_and_plot(trace: Path, tmp_path: Path) -> None:
    png = tmp_path / "out.png"
    out = run("sim", str(trace), "--policy", "test-fifo", "--plot", str(png), "--zero-cost")
    assert "test-fifo" in out
    assert png.stat().st_size > 10_000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_trace_names_where_it_looked(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["sim", "philly"], env={"TIDAL_TRACE_DIR": str(tmp_path)})
    assert result.exit_code == 2
    assert "philly.csv" in result.output and str(tmp_path) in result.output


def test_unknown_policy_is_named(trace: Path) -> None:
    result = CliRunner().invoke(app, ["sim", str(trace), "--policy", "nope"])
    assert result.exit_code == 2
    assert "unknown policy 'nope'" in result.output


def test_set_passes_policy_options(trace: Path) -> None:
    plain = sim_json(trace, "--policy", "tiered")[0]
    batched = sim_json(trace, "--policy", "tiered", "--set", "round_interval=600")[0]
    assert plain["policy"] == batched["policy"] == "tiered"
    # the option reached the policy: a 600 s batch delays starts, so jobs queue longer
    assert isinstance(plain["avg_queue_s"], float) and isinstance(batched["avg_queue_s"], float)
    assert batched["avg_queue_s"] > plain["avg_queue_s"]


def test_estimate_noise_misleads_policies_that_read_declared_work(trace: Path) -> None:
    exact = sim_json(trace, "--policy", "fifo-backfill")[0]
    assert sim_json(trace, "--policy", "fifo-backfill", "--estimate-noise", "0")[0] | {
        "wall_s": 0
    } == exact | {"wall_s": 0}
    noisy = sim_json(trace, "--policy", "fifo-backfill", "--estimate-noise", "2")[0]
    assert noisy["completed"] == exact["completed"] == 60
    assert noisy["avg_jct_s"] != exact["avg_jct_s"]  # backfill trusted wrong run times
    fifo = sim_json(trace, "--policy", "test-fifo")[0]  # reads no estimate: unchanged
    assert sim_json(trace, "--policy", "test-fifo", "--estimate-noise", "2")[0] | {
        "wall_s": 0
    } == fifo | {"wall_s": 0}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "round_interval"], "expected KEY=VALUE"),
        (["--set", "no_such_option=1"], "bad --set option"),
        (["--set", "basic_lane=9"], "basic_lane must be between 0 and 3"),
        (["--policy", "all", "--set", "basic_lane=0"], "applies to one policy"),
    ],
)
def test_bad_set_options_are_named(trace: Path, args: list[str], message: str) -> None:
    if "--policy" not in args:
        args = ["--policy", "tiered", *args]
    result = CliRunner().invoke(app, ["sim", str(trace), *args])
    assert result.exit_code == 2
    assert message in result.output


@pytest.mark.trace
def test_named_trace_from_trace_dir() -> None:
    path = trace_file("philly_vc103959.csv")
    result = CliRunner().invoke(
        app,
        ["sim", "philly_vc103959", "--policy", "test-fifo", "--json", "--zero-cost"],
        env={"TIDAL_TRACE_DIR": str(path.parent)},
    )
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["jobs"] == row["completed"] == 876


def test_all_policies_are_deterministic(tmp_path: Path) -> None:
    from tidal.core import policy_names
    from tidal.sim import save_trace, synthetic_trace

    path = tmp_path / "syn.csv"
    save_trace(synthetic_trace(250, seed=1, capacity=32, load=1.2), path)
    args = ("--nodes", "4", "--devices-per-node", "8", "--policy", "all", "--json")
    first = json.loads(run("sim", str(path), *args))
    second = json.loads(run("sim", str(path), *args))
    assert [row["policy"] for row in first] == list(policy_names())
    for row in (*first, *second):
        row.pop("wall_s")
        assert row["completed"] == 250
    assert json.dumps(first) == json.dumps(second)


def test_demo_writes_table_and_plot(tmp_path: Path) -> None:
    png = tmp_path / "demo.png"
    out = run("demo", "--jobs", "150", "--plot", str(png))
    assert "avg JCT" in out and "tiered" in out
    assert png.read_bytes()[:4] == b"\x89PNG"
