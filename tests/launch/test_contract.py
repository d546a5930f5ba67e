"""tidal.launch's contracts in one process: the environment, status.json, the job directory,
the exit status, and the package's promises (torch-free, one error family)."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pkgutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tidal.launch
import tidal.runtime
from tidal.core.states import JobState
from tidal.launch.env import JobEnv, worker_env
from tidal.launch.errors import LaunchError, LaunchRefused, StatusFormatError, WorldMismatch
from tidal.launch.jobdir import DirectoryLock, check_world, last_checkpoint
from tidal.launch.outcome import (
    EXIT_FAILED,
    EXIT_PREEMPTED,
    EXIT_SUCCEEDED,
    job_exit_status,
    state_for_exit,
)
from tidal.launch.status import (
    STATUS_FILE,
    Liveness,
    StatusRecord,
    pid_alive,
    read_status,
    write_status,
)

# ---------------------------------------------------------------- the package


def test_importing_every_launch_module_loads_no_torch() -> None:
    names = [m.name for m in pkgutil.iter_modules(tidal.launch.__path__, "tidal.launch.")]
    assert {"tidal.launch.worker", "tidal.launch.local", "tidal.launch.status"} <= set(names)
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}: importlib.import_module(name)\n"
        "import tidal.launch as L\n"
        "for name in L.__all__: getattr(L, name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'rich', "
        "'typer', 'xxhash')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stdout


def _classes(package: object) -> list[type]:
    found = []
    path = package.__path__  # type: ignore[attr-defined]
    prefix = package.__name__ + "."  # type: ignore[attr-defined]
    for info in pkgutil.walk_packages(path, prefix):
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if obj.__module__ == info.name and issubclass(obj, BaseException):
                found.append(obj)
    return found


@pytest.mark.parametrize(
    ("package", "base"),
    [(tidal.launch, LaunchError), (tidal.runtime, tidal.runtime.TidalRuntimeError)],
)
def test_every_error_belongs_to_its_family(package: object, base: type) -> None:
    errors = _classes(package)
    assert base in errors and len(errors) >= 3
    strays = [e.__qualname__ for e in errors if not issubclass(e, base)]
    assert strays == []


# ---------------------------------------------------------------- the worker environment


def _job(**changes: object) -> JobEnv:
    fields: dict[str, object] = {
        "world": 8,
        "workers": 4,
        "checkpoint_dir": Path("/ck"),
        "job_id": "j-1",
        "master_port": 29500,
    }
    fields.update(changes)
    return JobEnv(**fields)  # type: ignore[arg-type]


def test_worker_env_holds_what_the_runtime_reads() -> None:
    stale = {"PATH": "/bin", "RANK": "7", "TORCHELASTIC_RUN_ID": "x", "GROUP_RANK": "3"}
    env = worker_env(
        _job(checkpoint_every_steps=50, checkpoint_every_s=30.0, checkpoint_keep=3, threads=2),
        2,
        stale,
    )
    assert env["PATH"] == "/bin" and "TORCHELASTIC_RUN_ID" not in env and "GROUP_RANK" not in env
    assert (env["TIDAL_WORLD"], env["RANK"], env["WORLD_SIZE"]) == ("8", "2", "4")
    assert (env["LOCAL_RANK"], env["LOCAL_WORLD_SIZE"]) == ("2", "4")
    assert (env["MASTER_ADDR"], env["MASTER_PORT"]) == ("127.0.0.1", "29500")
    assert env["TIDAL_CHECKPOINT_DIR"] == "/ck" and env["TIDAL_JOB_ID"] == "j-1"
    assert env["TIDAL_CHECKPOINT_EVERY_STEPS"] == "50"
    assert float(env["TIDAL_CHECKPOINT_EVERY_S"]) == 30.0
    assert env["TIDAL_CHECKPOINT_KEEP"] == "3"
    assert env["OMP_NUM_THREADS"] == "2" and env["PYTHONUNBUFFERED"] == "1"
    assert "CUDA_VISIBLE_DEVICES" not in env

    alone = worker_env(_job(), 3, {}, local_rank=0, local_workers=1, devices=["5"])
    assert (alone["RANK"], alone["LOCAL_RANK"], alone["LOCAL_WORLD_SIZE"]) == ("3", "0", "1")
    assert alone["CUDA_VISIBLE_DEVICES"] == "5"


def test_the_thread_count_is_the_jobs_whatever_p() -> None:
    counts = {
        p: {worker_env(_job(workers=p, threads=3), i, {})["OMP_NUM_THREADS"] for i in range(p)}
        for p in (1, 2, 4, 8)
    }
    assert counts == {1: {"3"}, 2: {"3"}, 4: {"3"}, 8: {"3"}}
    assert (
        worker_env(_job(workers=1, master_port=None), 0, {"OMP_NUM_THREADS": "16"})[
            "OMP_NUM_THREADS"
        ]
        == "1"
    ), "the job's count replaces whatever the supervisor's environment had"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"workers": 3}, "P=3 does not divide the logical world size W=8"),
        ({"world": 0}, "W must be an integer >= 1, got 0"),
        ({"master_port": None}, "P=4 workers need a rendezvous master_port"),
        ({"master_port": 70000}, "master_port must be in 1..65535, got 70000"),
        ({"checkpoint_dir": Path("rel")}, "checkpoint_dir rel must be absolute"),
        ({"threads": 0}, "threads must be an integer >= 1, got 0"),
        ({"checkpoint_every_s": float("nan")}, "checkpoint_every_s must be > 0 seconds, got nan"),
    ],
)
def test_job_env_names_the_bad_value(changes: dict[str, object], message: str) -> None:
    with pytest.raises(LaunchRefused, match=message.replace("(", r"\(")):
        _job(**changes)


def test_worker_index_is_checked() -> None:
    with pytest.raises(LaunchRefused, match=r"worker index 4 is outside 0\.\.3"):
        worker_env(_job(), 4, {})


# ---------------------------------------------------------------- status.json


def _record(**changes: object) -> StatusRecord:
    fields: dict[str, object] = {
        "state": JobState.RUNNING,
        "step": 12,
        "epoch": 1,
        "world": 4,
        "workers": 2,
        "samples_per_s": 850.25,
        "last_checkpoint_step": 10,
        "job_id": "j",
        "updated_at": 1000.0,
        "heartbeat_s": 0.5,
        "pid": 4242,
        "host": "node-3",
    }
    fields.update(changes)
    return StatusRecord(**fields)  # type: ignore[arg-type]


def test_status_round_trips_through_the_file(tmp_path: Path) -> None:
    assert read_status(tmp_path) is None
    record = _record()
    write_status(tmp_path, record)
    raw = json.loads((tmp_path / STATUS_FILE).read_text())
    assert raw["state"] == "running" and raw["heartbeat_s"] == 0.5 and raw["pid"] == 4242
    assert read_status(tmp_path) == record
    assert [p.name for p in tmp_path.iterdir()] == [STATUS_FILE], "no temporary file left"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"state": "checkpointing"}, "'state' = 'checkpointing' is not a job state"),
        ({"state": "pending"}, "state 'pending' is not one a run reports"),
        ({"step": "12"}, "field 'step' = '12' is not int"),
        ({"step": True}, "field 'step' = True is not int"),
        ({"world": 1.5}, "field 'world' = 1.5 is not null or int"),
        ({"pid": 1.5}, "field 'pid' = 1.5 is not null or int"),
        ({"heartbeat_s": 0}, "heartbeat_s=0.0 must be > 0 or null"),
    ],
)
def test_a_malformed_status_names_the_field(
    tmp_path: Path, raw: dict[str, object], message: str
) -> None:
    payload = {**_record().to_json(), **raw}
    (tmp_path / STATUS_FILE).write_text(json.dumps(payload))
    with pytest.raises(StatusFormatError, match=message):
        read_status(tmp_path)
    (tmp_path / STATUS_FILE).write_text("{not json")
    with pytest.raises(StatusFormatError, match="is not JSON"):
        read_status(tmp_path)


def test_liveness_tells_a_live_run_from_a_dead_one() -> None:
    here = "this-host"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    mine = os.getpid()
    now = 5000.0
    fresh = {"updated_at": now - 1.0, "host": here}
    assert _record(state=JobState.SUCCEEDED).liveness(now=now, host=here) is Liveness.ENDED
    assert _record(state=JobState.PREEMPTED).liveness(now=now, host=here) is Liveness.ENDED
    assert _record(pid=mine, **fresh).liveness(now=now, host=here) is Liveness.ALIVE
    assert _record(pid=gone.pid, **fresh).liveness(now=now, host=here) is Liveness.DEAD
    stale = _record(pid=mine, host=here, updated_at=now - 60.0)
    assert stale.liveness(now=now, host=here) is Liveness.DEAD, "a heartbeat that stopped"
    assert stale.liveness(now=now, host=here, stale_after_s=120.0) is Liveness.ALIVE
    other = _record(pid=gone.pid, host="elsewhere", updated_at=now - 1.0)
    assert other.liveness(now=now, host=here) is Liveness.ALIVE, "another host: heartbeat only"
    silent = _record(heartbeat_s=None, updated_at=0.0)
    assert silent.liveness(now=now, host=here) is Liveness.UNKNOWN
    assert _record(heartbeat_s=None, pid=mine, host=here).liveness(now=now, host=here) is (
        Liveness.ALIVE
    )
    assert not pid_alive(gone.pid) and pid_alive(mine)


def test_written_now_stamps_the_writer() -> None:
    before = time.time()
    record = _record().written_now(state=JobState.STARTING, heartbeat_s=None)
    assert record.state is JobState.STARTING and record.pid == os.getpid()
    assert record.heartbeat_s is None and record.updated_at >= before and record.step == 12


# ---------------------------------------------------------------- the job directory


def _manifest(root: Path, step: int, world: int, text: str | None = None) -> None:
    d = root / f"ckpt-{step:08d}"
    d.mkdir(parents=True)
    body = {"format": "tidal-checkpoint", "step": step, "world": world, "workers": 2}
    (d / "manifest.json").write_text(text if text is not None else json.dumps(body))


def test_last_checkpoint_reads_the_newest_manifest_and_skips_broken_ones(tmp_path: Path) -> None:
    assert last_checkpoint(tmp_path) is None
    assert last_checkpoint(tmp_path / "missing") is None
    _manifest(tmp_path, 10, 4)
    _manifest(tmp_path, 20, 4)
    _manifest(tmp_path, 30, 4, text="{torn")
    (tmp_path / "ckpt-00000040.tmp").mkdir()  # not committed
    head = last_checkpoint(tmp_path)
    assert head is not None and (head.step, head.world, head.workers) == (20, 4, 2)
    assert check_world(tmp_path, 4) == head
    with pytest.raises(WorldMismatch, match=r"--world 8 does not match .* world size 4"):
        check_world(tmp_path, 8)


def test_the_directory_lock_lasts_as_long_as_a_process_holding_it(tmp_path: Path) -> None:
    first = DirectoryLock(tmp_path).acquire()
    with pytest.raises(LaunchRefused, match=f"pid {os.getpid()}"):
        DirectoryLock(tmp_path).acquire()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], pass_fds=(first.fd,)
    )
    try:
        first.release()  # this process lets go; the child still holds the locked file
        with pytest.raises(LaunchRefused, match="is in use"):
            DirectoryLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with DirectoryLock(tmp_path) as again:
        assert again.fd >= 0


# ---------------------------------------------------------------- the exit status


KILLED, TERMED = -signal.SIGKILL, -signal.SIGTERM


@pytest.mark.parametrize(
    ("codes", "state", "stopped", "expected"),
    [
        ([0, 0], JobState.SUCCEEDED, False, EXIT_SUCCEEDED),
        ([0, 0], None, False, EXIT_SUCCEEDED),  # a script without the runtime
        ([0, 1], JobState.SUCCEEDED, False, EXIT_FAILED),  # a worker crashed after training
        ([0, 3], JobState.SUCCEEDED, False, 3),
        ([KILLED, 0], JobState.RUNNING, False, 128 + 9),
        ([0, 75], JobState.RUNNING, False, EXIT_FAILED),  # a worker's 75 is not ours
        ([0, 2], JobState.RUNNING, False, EXIT_FAILED),
        ([0, 0], JobState.FAILED, False, EXIT_FAILED),
        ([0, 0], JobState.PREEMPTED, False, EXIT_PREEMPTED),  # stopped by someone else
        ([0, 0], JobState.PREEMPTED, True, EXIT_PREEMPTED),
        ([TERMED, KILLED], JobState.STARTING, True, EXIT_PREEMPTED),  # killed before a cut
        ([], JobState.STARTING, True, EXIT_PREEMPTED),  # stopped before any worker started
        ([0, 0], JobState.SUCCEEDED, True, EXIT_SUCCEEDED),  # it finished first
        ([0, KILLED], JobState.SUCCEEDED, True, EXIT_PREEMPTED),
        ([1, KILLED], JobState.STOPPING, True, EXIT_FAILED),  # a real failure during the cut
        ([0, 0], JobState.FAILED, True, EXIT_FAILED),
    ],
)
def test_job_exit_status(
    codes: list[int], state: JobState | None, stopped: bool, expected: int
) -> None:
    assert job_exit_status(codes, state, stopped=stopped) == expected


def test_state_for_exit() -> None:
    assert state_for_exit(0) is JobState.SUCCEEDED
    assert state_for_exit(75) is JobState.PREEMPTED
    assert state_for_exit(137) is JobState.FAILED
