"""The CLI client against a real API server on loopback: scriptable output, exit codes,
YAML specs, and finding the server from the environment or from ``tidal up``'s file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tidal.cli import app
from tidal.control.logs import log_dir
from tidal.control.service import Service
from tidal.core import JobState, Placement, transition

from .conftest import Api

TIDAL = Path(sys.executable).with_name("tidal")


def env_for(api: Api, token: str | None = None) -> dict[str, str]:
    """The environment of a CLI call: the server found through TIDAL_API/TIDAL_TOKEN, or
    (no token given) through the data directory alone."""
    env = {"TIDAL_DATA_DIR": str(api.data_dir), "TIDAL_API": "", "TIDAL_TOKEN": ""}
    if token is not None:
        env.update(TIDAL_API=api.url, TIDAL_TOKEN=token)
    return env


def tidal(api: Api, *args: str, token: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env=env_for(api, token))
    return result.exit_code, result.stdout, result.stderr


def drive(service: Service, job_id: str, *states: JobState) -> None:
    """Move a job through ``states`` as the reconcile loop would."""
    for new in states:
        job = service.store.get_job(job_id)
        placement = Placement.of({"n0": job.world}) if new.holds_devices else Placement()
        service.store.record_change(
            transition(
                job_id,
                job.state,
                new,
                time.time(),
                f"-> {new.value}",
                job.generation + 1,
                placement,
            )
        )


def test_submit_prints_the_id_alone_on_stdout(api: Api, tmp_path: Path) -> None:
    env = {**os.environ, **env_for(api)}
    done = subprocess.run(
        [str(TIDAL), "submit", "--tier", "basic", "--world", "4", "--min-devices", "1",
         "--name", "lm", "--", "python", "train.py", "--epochs", "3"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    assert done.stdout == job_id + "\n" and job_id.startswith("j-")
    assert job_id in done.stderr
    job = api.service.store.get_job(job_id)
    assert job.command == ("python", "train.py", "--epochs", "3")
    assert (job.name, job.tier.value, job.world, job.min_devices) == ("lm", "basic", 4, 1)
    assert job.workdir == str(tmp_path) and job.tenant == "admin"


def test_yaml_spec_with_flags_over_it(api: Api, tmp_path: Path) -> None:
    token = api.tenant("alice")
    spec = tmp_path / "job.yaml"
    spec.write_text(
        "name: big\ntier: premium\nworld: 8\ncommand: python pretrain.py --lr '3e-4'\n"
        "env: {SEED: '1'}\ncheckpoint: {every_steps: 100, keep: 2}\ndeclared_hours: 12\n"
        "workdir: runs/a\n"
    )
    code, out, err = tidal(
        api, "submit", "-f", str(spec), "--world", "16", "-e", "LR=1", "--checkpoint-every-s",
        "600", token=token,
    )  # fmt: skip
    assert code == 0, err
    code, shown, _ = tidal(api, "show", out.strip(), "--json", token=token)
    job = json.loads(shown)
    assert (job["name"], job["tier"], job["world"], job["sizes"]) == ("big", "premium", 16, [16])
    assert job["command"] == ["python", "pretrain.py", "--lr", "3e-4"]
    assert job["env"] == {"SEED": "1", "LR": "1"}
    assert job["checkpoint"] == {"every_steps": 100, "every_s": 600.0, "keep": 2}
    assert job["declared_hours"] == 12 and job["workdir"].endswith("runs/a")


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--world", "0", "--", "x"], "world"),
        (["--world", "4", "--min-devices", "5", "--", "x"], "min_devices"),
        (["--world", "4", "--tier", "gold", "--", "x"], "tier"),
        (["--world", "6", "--min-devices", "4", "--max-devices", "5", "--", "x"], "max_devices"),
        (["--world", "4", "-e", "NOEQUALS", "--", "x"], "--env"),
        (["--world", "4"], "command"),
        (["-f", "/nonexistent/job.yaml"], "job.yaml"),
    ],
)
def test_bad_specs_exit_2_naming_the_field(api: Api, args: list[str], field: str) -> None:
    code, out, err = tidal(api, "submit", *args)
    assert code == 2 and out == "" and field in err
    assert api.service.store.list_jobs() == []


def test_ls_show_cancel_and_wait(api: Api) -> None:
    token = api.tenant("alice")
    ids = [
        tidal(api, "submit", "--world", "2", "--", "x", token=token)[1].strip() for _ in range(3)
    ]
    code, out, _ = tidal(api, "ls", "--json", token=token)
    listed = json.loads(out)
    assert [j["id"] for j in listed] == ids[::-1]
    for key in ("id", "name", "tier", "state", "world", "devices", "step"):
        assert key in listed[0]
    assert "events" not in listed[0] and listed[0]["state"] == "pending"
    code, out, _ = tidal(api, "ls", token=token)
    assert code == 0 and all(i in out for i in ids) and "0/2" in out
    code, out, _ = tidal(api, "show", ids[0], "--json", token=token)
    shown = json.loads(out)
    assert shown["events"] == [
        {
            "time": shown["submitted_at"],
            "state": "pending",
            "previous": None,
            "reason": "submitted by alice",
            "generation": 0,
            "placement": {},
        }
    ]
    code, out, _ = tidal(api, "show", ids[0], token=token)
    assert code == 0 and "submitted by alice" in out and ids[0] in out
    code, _, err = tidal(api, "cancel", ids[0], token=token)
    assert code == 0 and "cancel requested" in err  # no loop here to carry it out
    drive(api.service, ids[0], JobState.CANCELLED)
    code, _, err = tidal(api, "wait", ids[0], token=token)
    assert code == 1 and "cancelled" in err
    drive(api.service, ids[1], JobState.STARTING, JobState.RUNNING)
    code, _, err = tidal(api, "cancel", ids[1], token=token)
    assert code == 0 and "cancel requested" in err
    assert api.service.store.get_job(ids[1]).cancel_requested
    threading.Timer(
        0.5, drive, (api.service, ids[2], JobState.STARTING, JobState.SUCCEEDED)
    ).start()
    code, _, err = tidal(api, "wait", ids[2], "--timeout", "30", token=token)
    assert code == 0 and "succeeded" in err
    code, _, err = tidal(api, "wait", ids[1], "--timeout", "0.5", token=token)
    assert code == 1 and "still running" in err
    assert tidal(api, "ls", "--state", "succeeded", "--json", token=token)[1].count('"id"') == 1


def test_logs_print_and_follow(api: Api) -> None:
    job_id = tidal(api, "submit", "--world", "2", "--", "x")[1].strip()
    logs = log_dir(api.service.checkpoint_root, job_id)
    logs.mkdir(parents=True)
    (logs / "worker-0.log").write_text("loss 1.0\n")
    (logs / "worker-1.log").write_text("loss 1.0\n")
    code, out, _ = tidal(api, "logs", job_id)
    assert code == 0 and out.splitlines() == ["[w0] loss 1.0", "[w1] loss 1.0"]

    def finish() -> None:
        with (logs / "worker-1.log").open("a") as handle:
            handle.write("loss 0.5\ndone")
        drive(api.service, job_id, JobState.STARTING, JobState.SUCCEEDED)

    threading.Timer(0.5, finish).start()
    code, out, _ = tidal(api, "logs", job_id, "-f")
    assert code == 0
    assert out.splitlines() == ["[w0] loss 1.0", "[w1] loss 1.0", "[w1] loss 0.5", "[w1] done"]


def test_tenants_nodes_and_drain(api: Api) -> None:
    code, out, err = tidal(api, "tenant", "add", "carol")
    assert code == 0 and "shown only now" in err
    token = out.splitlines()[-1]
    code, out, _ = tidal(api, "tenant", "ls", "--json")
    assert [t["name"] for t in json.loads(out)] == ["admin", "carol"]
    code, _, err = tidal(api, "tenant", "add", "dave", token=token)
    assert code == 1 and "admin" in err
    api.service.store.upsert_node("n0", "gpu", 8, True, time.time())
    assert tidal(api, "drain", "n0")[0] == 0
    code, out, _ = tidal(api, "nodes", "--json")
    assert json.loads(out)[0]["drained"] is True
    code, out, _ = tidal(api, "nodes")
    assert "drained" in out and "8/8" in out
    assert tidal(api, "undrain", "n0")[0] == 0 and api.service.store.drained_nodes() == set()
    code, _, err = tidal(api, "drain", "n9")
    assert code == 1 and "n9" in err
    code, _, err = tidal(api, "drain", "n0", token=token)
    assert code == 1 and "admin" in err


def test_the_environment_wins_over_the_data_directory(api: Api, tmp_path: Path) -> None:
    token = api.tenant("alice")
    code, out, _ = tidal(api, "submit", "--world", "1", "--", "x", token=token)
    assert code == 0 and api.service.store.get_job(out.strip()).tenant == "alice"
    empty = {"TIDAL_DATA_DIR": str(tmp_path / "nothing"), "TIDAL_API": "", "TIDAL_TOKEN": ""}
    result = CliRunner().invoke(app, ["ls"], env=empty)
    assert result.exit_code == 1 and "server.json" in result.stderr
    refused = CliRunner().invoke(
        app, ["ls"], env={**env_for(api, "tidal_000000000000_" + "x" * 43)}
    )
    assert refused.exit_code == 1 and "TIDAL_TOKEN" in refused.stderr
    gone = CliRunner().invoke(
        app, ["ls"], env={**env_for(api, token), "TIDAL_API": "http://127.0.0.1:9"}
    )
    assert gone.exit_code == 1 and "cannot reach" in gone.stderr


def test_the_command_may_follow_the_flags_without_a_double_dash(api: Api) -> None:
    code, out, err = tidal(api, "submit", "--world", "2", "python", "t.py", "--epochs", "3")
    assert code == 0, err
    assert api.service.store.get_job(out.strip()).command == ("python", "t.py", "--epochs", "3")
