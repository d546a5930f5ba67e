"""``tidal run`` with real processes: validation, exit statuses, status.json, stopping, the lock.

These start the real launcher (``python -c "from tidal.cli import main; main()" run ...``),
which starts its workers itself. Fake workers (plain scripts that write ``status.json``
through :mod:`tidal.launch.status`) cover the launcher's decisions; the real runtime covers
what a training script sees.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from tests.launch.helpers import alive, gone
from tidal.cli import app
from tidal.launch.local import LaunchSpec, launch
from tidal.launch.outcome import EXIT_PREEMPTED, EXIT_REFUSED
from tidal.launch.signals import StopSignals
from tidal.launch.status import Liveness, read_status

REPO = Path(__file__).resolve().parents[2]
DIGITS = REPO / "examples" / "train_digits.py"
TIDAL = [sys.executable, "-c", "from tidal.cli import main; main()"]


def _status(directory: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((directory / "status.json").read_text()))
    except (OSError, ValueError):
        return {}


def _env(**extra: str) -> dict[str, str]:
    """This environment without thread settings (the launcher sets them) or launcher vars."""
    drop = ("OMP_NUM_THREADS", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("TIDAL_")}
    env.update(extra)
    return env


def _start(
    *args: Any, env: dict[str, str] | None = None, block_stop: bool = False
) -> subprocess.Popen[str]:
    def blocked() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

    return subprocess.Popen(
        [*TIDAL, "run", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env if env is not None else _env(),
        cwd=REPO,
        preexec_fn=blocked if block_stop else None,
    )


def _wait_until(
    pred: Callable[[], bool], proc: subprocess.Popen[str], timeout: float, what: str
) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"launcher exited ({proc.returncode}) before {what}:\n{out}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()  # its workers die with it
        out, _ = proc.communicate()
        raise AssertionError(f"the launcher did not exit within {timeout} s:\n{out}") from None
    return proc.returncode, out


# ---------------------------------------------------------------- validation (in process)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--world", "4", "--workers", "3"], "--workers 3 does not divide --world 4"),
        (["--world", "0"], "--world must be an integer >= 1, got 0"),
        (["--world", "2", "--workers", "0"], "--workers must be an integer >= 1, got 0"),
        (["--world", "2", "--checkpoint-every-s", "0"], "--checkpoint-every-s must be > 0"),
        (["--world", "2", "--checkpoint-every-steps", "0"], "--checkpoint-every-steps must be"),
        (["--world", "2", "--threads", "0"], "--threads must be an integer >= 1, got 0"),
        (["--world", "2", "--stop-timeout", "0"], "--stop-timeout must be > 0 seconds, got 0"),
    ],
)
def test_cli_validation_names_the_bad_value(tmp_path: Path, args: list[str], message: str) -> None:
    script = tmp_path / "s.py"
    script.write_text("")
    result = CliRunner().invoke(
        app, ["run", str(script), "--checkpoint-dir", str(tmp_path / "d"), *args]
    )
    assert result.exit_code == EXIT_REFUSED, result.output
    assert message in result.output
    assert not (tmp_path / "d").exists(), "nothing is created for an invalid launch"


def test_cli_rejects_a_missing_script(tmp_path: Path) -> None:
    missing = tmp_path / "nope.py"
    result = CliRunner().invoke(
        app, ["run", str(missing), "--world", "2", "--checkpoint-dir", str(tmp_path / "d")]
    )
    assert result.exit_code == EXIT_REFUSED
    assert f"script {missing} does not exist" in result.output
    assert not (tmp_path / "d").exists()


def test_help_says_every_worker_gets_the_same_threads() -> None:
    result = CliRunner().invoke(app, ["run", "--help"], terminal_width=200)
    assert "--threads" in result.output and "OMP_NUM_THREADS" in result.output
    assert "whatever P" in result.output


# ---------------------------------------------------------------- fake workers

_FAKE_RUNTIME = """
import json, os, signal, sys, time
from pathlib import Path
from tidal.core.states import JobState
from tidal.launch.status import StatusRecord, write_status
d = Path(os.environ["TIDAL_CHECKPOINT_DIR"])
rank = int(os.environ["RANK"])
(d / f"pid-{rank}").write_text(str(os.getpid()))
def status(state, step):
    if rank == 0:
        write_status(d, StatusRecord(JobState(state), step=step,
            world=int(os.environ["TIDAL_WORLD"]), workers=int(os.environ["WORLD_SIZE"]))
            .written_now(heartbeat_s=0.5))
"""


def _script(tmp_path: Path, body: str, name: str = "job.py") -> Path:
    path = tmp_path / name
    path.write_text(_FAKE_RUNTIME + textwrap.dedent(body))
    return path


def _pids(d: Path, workers: int) -> list[int]:
    return [int((d / f"pid-{r}").read_text()) for r in range(workers)]


def test_crash_without_final_state_is_failed_and_the_others_are_stopped(tmp_path: Path) -> None:
    script = _script(
        tmp_path,
        """
        status("running", 3)
        if rank == 1:
            time.sleep(0.5)
            sys.exit(3)
        time.sleep(120)
        """,
    )
    d = tmp_path / "ck"
    started = time.monotonic()
    rc, out = _finish(_start(script, "--world", "2", "--workers", "2", "--checkpoint-dir", d))
    assert rc == 3, out  # the failing worker's own status
    assert time.monotonic() - started < 60, "worker 0 must not be waited for"
    assert "worker 1 failed (exit status 3)" in out
    assert _status(d)["state"] == "failed", out
    assert _status(d)["step"] == 3, "the launcher keeps the last progress it saw"
    assert gone(_pids(d, 2))


def test_clean_exit_without_a_runtime_is_success_and_logged(tmp_path: Path) -> None:
    script = _script(tmp_path, "print('ARGS', sys.argv[1:], os.environ['OMP_NUM_THREADS'])\n")
    d = tmp_path / "ck"
    rc, out = _finish(
        _start(script, "--world", "1", "--checkpoint-dir", d, "--no-progress", "--", "--x", "1")
    )
    assert rc == 0, out
    assert "ARGS ['--x', '1'] 1" in out
    assert _status(d)["state"] == "succeeded"
    assert "ARGS ['--x', '1'] 1" in (d / "logs" / "worker-0.log").read_text()


@pytest.mark.parametrize(
    ("flags", "env", "expected"),
    [([], {}, "1"), (["--threads", "2"], {}, "2"), ([], {"OMP_NUM_THREADS": "3"}, "3")],
)
def test_every_worker_gets_the_same_thread_count_whatever_p(
    tmp_path: Path, flags: list[str], env: dict[str, str], expected: str
) -> None:
    script = _script(tmp_path, "print('THREADS', rank, os.environ['OMP_NUM_THREADS'])\n")
    seen = {}
    for p in (1, 2):
        d = tmp_path / f"ck{p}"
        rc, out = _finish(
            _start(script, "--world", "2", "--workers", p, "--checkpoint-dir", d, *flags,
                   env=_env(**env))
        )  # fmt: skip
        assert rc == 0, out
        seen[p] = sorted(line.split()[-1] for line in out.splitlines() if "THREADS" in line)
    assert seen == {1: [expected], 2: [expected, expected]}


def test_launch_as_a_library_prefixes_each_workers_lines(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    script = _script(tmp_path, "print('hello from', rank)\n")
    spec = LaunchSpec(script=script, world=2, workers=2, checkpoint_dir=tmp_path / "ck")
    signals = StopSignals().install()
    try:
        code = launch(spec, signals=signals)  # the default reporter: plain lines
    finally:
        signals.restore()
    assert code == 0
    out = capfd.readouterr().out
    assert "[0] hello from 0" in out and "[1] hello from 1" in out, out
    assert (tmp_path / "ck" / "logs" / "worker-1.log").read_text() == "hello from 1\n"


def test_stop_before_training_started_kills_at_once(tmp_path: Path) -> None:
    script = _script(tmp_path, "time.sleep(120)\n")  # never reports "running"
    d = tmp_path / "ck"
    proc = _start(script, "--world", "2", "--workers", "2", "--checkpoint-dir", d)
    _wait_until(lambda: (d / "pid-1").exists() and (d / "pid-0").exists(), proc, 60, "workers")
    pids = _pids(d, 2)

    # While it runs, a second launch on the same directory is refused.
    rc, out = _finish(_start(script, "--world", "2", "--checkpoint-dir", d), timeout=60)
    assert rc == EXIT_REFUSED and "is in use by another `tidal run`" in out, out

    proc.send_signal(signal.SIGTERM)
    rc, out = _finish(proc, timeout=30)
    assert rc == EXIT_PREEMPTED, out
    assert _status(d)["state"] == "preempted"
    assert gone(pids), "workers must not outlive the launcher"


def test_second_signal_kills_workers_that_ignore_sigterm(tmp_path: Path) -> None:
    script = _script(
        tmp_path,
        """
        signal.signal(signal.SIGTERM, lambda *a: (d / f"got-{rank}").write_text("1"))
        status("running", 7)
        while True:
            time.sleep(0.1)
        """,
    )
    d = tmp_path / "ck"
    proc = _start(script, "--world", "4", "--workers", "2", "--checkpoint-dir", d)
    _wait_until(lambda: _status(d).get("state") == "running", proc, 60, "running")
    _wait_until(lambda: (d / "pid-1").exists(), proc, 60, "worker 1")
    pids = _pids(d, 2)
    proc.send_signal(signal.SIGINT)  # Ctrl-C is relayed as SIGTERM to every worker
    _wait_until(lambda: all((d / f"got-{r}").exists() for r in (0, 1)), proc, 30, "SIGTERM")
    assert proc.poll() is None, "one signal must not kill workers that are checkpointing"
    proc.send_signal(signal.SIGTERM)
    rc, out = _finish(proc, timeout=30)
    assert rc == EXIT_PREEMPTED, out  # resumable from the last committed checkpoint
    assert gone(pids)


def test_the_lock_outlives_the_launcher_while_a_process_of_the_job_lives(tmp_path: Path) -> None:
    script = _script(
        tmp_path,
        """
        status("running", 1)
        if rank == 1 and os.fork() == 0:  # a process of the job that is not a worker
            (d / "grandchild").write_text(str(os.getpid()))
            time.sleep(120)
            os._exit(0)
        time.sleep(120)
        """,
    )
    d = tmp_path / "ck"
    proc = _start(script, "--world", "2", "--workers", "2", "--checkpoint-dir", d)
    _wait_until(lambda: (d / "grandchild").exists() and (d / "pid-0").exists(), proc, 60, "all")
    grandchild = int((d / "grandchild").read_text())
    pids = _pids(d, 2)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert gone(pids), "workers die with their launcher, even by SIGKILL"
    try:
        assert alive(grandchild)
        rc, out = _finish(_start(script, "--world", "2", "--checkpoint-dir", d), timeout=60)
        assert rc == EXIT_REFUSED and "in use" in out, out
    finally:
        os.kill(grandchild, signal.SIGKILL)
    assert gone([grandchild])
    ok = _script(tmp_path, "pass\n", name="ok.py")
    rc, out = _finish(_start(ok, "--world", "2", "--checkpoint-dir", d), timeout=60)
    assert rc == 0, out


# ---------------------------------------------------------------- the real runtime


_TRAIN = """
import os, sys, time
from pathlib import Path
import torch, tidal
from torch.utils.data import DataLoader, TensorDataset
d = Path(os.environ["TIDAL_CHECKPOINT_DIR"])
rank = int(os.environ.get("RANK", "0"))
(d / f"pid-{rank}").write_text(str(os.getpid()))
torch.manual_seed(0)
model = torch.nn.Linear(4, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
loader = DataLoader(TensorDataset(torch.randn(64, 4), torch.randn(64, 1)), batch_size=4)
model, opt, loader = tidal.prepare(model, opt, loader)
for epoch in tidal.epochs(int(sys.argv[1])):
    for x, y in loader:
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        opt.zero_grad()
        time.sleep(float(sys.argv[2]))
"""


def _train_script(tmp_path: Path, tail: str = "") -> Path:
    path = tmp_path / "train.py"
    path.write_text(_TRAIN + textwrap.dedent(tail))
    return path


def test_a_worker_that_fails_after_training_fails_the_job(tmp_path: Path) -> None:
    script = _train_script(
        tmp_path,
        """
        if rank == 1:
            raise RuntimeError("crash after training")
        """,
    )
    d = tmp_path / "ck"
    rc, out = _finish(
        _start(script, "--world", "2", "--workers", "2", "--checkpoint-dir", d, "--", "1", "0")
    )
    assert "crash after training" in out
    assert rc == 1, out
    assert _status(d)["state"] == "failed", "worker 0 had reported success; the launcher knows"


def test_resume_with_another_world_is_refused_before_starting(tmp_path: Path) -> None:
    script = _train_script(tmp_path)
    d = tmp_path / "ck"
    rc, out = _finish(_start(script, "--world", "2", "--checkpoint-dir", d, "--", "1", "0"))
    assert rc == 0, out
    assert [p.name for p in d.glob("ckpt-*")] == ["ckpt-00000008"]
    before = (d / "status.json").read_bytes()
    (d / "pid-0").unlink()

    started = time.monotonic()
    rc, out = _finish(_start(script, "--world", "4", "--checkpoint-dir", d, "--", "1", "0"))
    assert rc == EXIT_REFUSED, out
    assert "--world 4 does not match" in out and "logical world size 2" in out, out
    assert (d / "status.json").read_bytes() == before, "status.json is left untouched"
    assert not (d / "pid-0").exists(), "no worker was started"
    assert time.monotonic() - started < 30


def test_sigkill_of_the_launcher_takes_the_workers_and_status_shows_it_dead(
    tmp_path: Path,
) -> None:
    script = _train_script(tmp_path)
    d = tmp_path / "ck"
    proc = _start(
        script, "--world", "2", "--workers", "2", "--checkpoint-dir", d, "--", "50", "0.05"
    )
    _wait_until(lambda: _status(d).get("state") == "running" and _status(d)["step"] > 2, proc,
                120, "training")  # fmt: skip
    running = read_status(d)
    assert running is not None and running.liveness() is Liveness.ALIVE
    assert running.pid == int((d / "pid-0").read_text()) and running.heartbeat_s is not None
    pids = _pids(d, 2)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert gone(pids), "workers die with their launcher, even by SIGKILL"
    left = read_status(d)
    assert left is not None and left.state.value == "running", "nobody was left to say more"
    assert left.liveness() is Liveness.DEAD
    assert left.liveness(host="another-host", now=left.updated_at + 60) is Liveness.DEAD


@pytest.mark.slow
@pytest.mark.parametrize(
    ("delay", "block"),
    [(0.0, True), (0.05, True), (0.5, False), (1.0, False), (2.0, False), (3.5, False),
     (6.0, False)],
)  # fmt: skip
def test_a_stop_at_any_moment_ends_preempted_or_in_the_real_outcome(
    tmp_path: Path, delay: float, block: bool
) -> None:
    """A stop while the launcher starts, while the workers import torch, prepare, train."""
    script = _train_script(tmp_path)
    d = tmp_path / "ck"
    args = (script, "--world", "2", "--workers", "2", "--checkpoint-dir", d, "--", "2", "0.1")
    proc = _start(*args, block_stop=block)
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    rc, out = _finish(proc)
    if delay <= 2.0:  # the workers are still importing torch or preparing: nothing can be done
        assert rc == EXIT_PREEMPTED, out
    assert rc in (EXIT_PREEMPTED, 0), out
    status = read_status(d)
    assert status is not None
    assert status.state.value == ("preempted" if rc == EXIT_PREEMPTED else "succeeded")
    pids = [int(p.read_text()) for p in d.glob("pid-*")]
    assert gone(pids)
    # Resumable: the same command finishes the job.
    rc, out = _finish(_start(*args))
    assert rc == 0, out
    done = read_status(d)
    assert done is not None and done.state.value == "succeeded" and done.step == 16


@pytest.mark.slow
def test_sigterm_preempts_and_rerun_with_other_p_resumes_bitwise(tmp_path: Path) -> None:
    d = tmp_path / "ck"
    common = ["--world", "4", "--checkpoint-dir", d]
    train = ["--", "--epochs", "1", "--batch-size", "16"]

    proc = _start(DIGITS, *common, "--workers", "2", *train, "--step-delay", "0.05")
    _wait_until(lambda: _status(d).get("step", 0) >= 3, proc, 120, "step 3")
    proc.send_signal(signal.SIGTERM)
    rc, out = _finish(proc)
    assert rc == EXIT_PREEMPTED, out
    status = _status(d)
    assert status["state"] == "preempted"
    stopped_at = status["last_checkpoint_step"]
    assert stopped_at is not None and stopped_at == status["step"] >= 3
    assert (d / f"ckpt-{stopped_at:08d}" / "manifest.json").exists()

    resumed = tmp_path / "resumed.pt"
    rc, out = _finish(_start(DIGITS, *common, "--workers", "1", *train, "--out", resumed))
    assert rc == 0, out
    status = _status(d)
    assert status["state"] == "succeeded" and status["workers"] == 1 and status["world"] == 4
    assert "resumed" in out and f"step {stopped_at}" in out, out

    # Reference: the same job, uninterrupted, as one plain process with one thread (what
    # the launcher gives every worker by default, whatever P).
    reference = tmp_path / "reference.pt"
    ref = subprocess.run(
        [sys.executable, DIGITS, *train[1:], "--out", reference],
        env=_env(TIDAL_WORLD="4", OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ref.returncode == 0, ref.stderr
    a = torch.load(resumed, weights_only=True)
    b = torch.load(reference, weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


_RAISES = """
import torch, tidal
from torch.utils.data import DataLoader, TensorDataset
model = torch.nn.Linear(4, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
loader = DataLoader(TensorDataset(torch.randn(64, 4), torch.randn(64, 1)), batch_size=4)
model, opt, loader = tidal.prepare(model, opt, loader)
for epoch in tidal.epochs(2):
    for i, (x, y) in enumerate(loader):
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        opt.zero_grad()
        if i == 2:
            raise RuntimeError("boom in the user's loop")
"""


def test_script_that_raises_is_failed(tmp_path: Path) -> None:
    script = tmp_path / "raises.py"
    script.write_text(_RAISES)
    d = tmp_path / "ck"
    rc, out = _finish(_start(script, "--world", "2", "--workers", "1", "--checkpoint-dir", d))
    assert rc == 1, out
    assert "boom in the user's loop" in out
    assert _status(d)["state"] == "failed", out
