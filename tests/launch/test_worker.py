"""WorkerProcess with real processes: output, exit codes, stopping, and dying with its supervisor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tests.launch.helpers import alive
from tidal.launch.errors import LaunchError
from tidal.launch.worker import WorkerProcess

PY = sys.executable
REPO = Path(__file__).resolve().parents[2]


def _py(code: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(code)]


def _wait_for(pred: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_output_goes_to_the_log_and_the_callback_and_the_exit_code_is_true(
    tmp_path: Path,
) -> None:
    lines: list[tuple[str, bool]] = []
    lock = threading.Lock()

    def on_line(text: str, is_stderr: bool) -> None:
        with lock:
            lines.append((text, is_stderr))

    log = tmp_path / "logs" / "w.log"
    w = WorkerProcess(
        _py(
            """
            import os, sys
            print("out", os.environ["X"])
            print("err line", file=sys.stderr)
            sys.stdout.write("no newline at the end")
            sys.exit(3)
            """
        ),
        {**os.environ, "X": "42"},
        name="w0",
        log_path=log,
        on_line=on_line,
    ).start()
    assert w.wait(timeout=30) == 3
    w.close()
    assert w.returncode == 3
    assert sorted(lines) == [
        ("err line", True),
        ("no newline at the end", False),
        ("out 42", False),
    ]
    assert sorted(log.read_text().splitlines()) == ["err line", "no newline at the end", "out 42"]
    again = WorkerProcess(_py("print('second run')"), os.environ, log_path=log).start()
    assert again.wait(timeout=30) == 0
    again.close()
    assert log.read_text().splitlines()[-1] == "second run", "the log is appended to"


def test_a_command_that_cannot_start_is_a_launch_error(tmp_path: Path) -> None:
    with pytest.raises(LaunchError, match=r"cannot start w .*no-such-program"):
        WorkerProcess([str(tmp_path / "no-such-program")], os.environ, name="w").start()
    with pytest.raises(LaunchError, match="argv is empty"):
        WorkerProcess([], os.environ)


_PARENT_AND_CHILD = """
import os, signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
signal.signal(signal.SIGTERM, lambda *a: (print("TERM", flush=True), sys.exit(0)))
print("CHILD", child.pid, flush=True)
while True:
    time.sleep(0.05)
"""


def test_terminate_reaches_the_worker_alone_and_kill_takes_its_group() -> None:
    seen: list[str] = []
    w = WorkerProcess(_py(_PARENT_AND_CHILD), os.environ, on_line=lambda t, e: seen.append(t))
    w.start()
    _wait_for(lambda: any(s.startswith("CHILD") for s in seen), 60, "the child")
    child = int(next(s for s in seen if s.startswith("CHILD")).split()[1])
    assert w.terminate()
    assert w.wait(timeout=30) == 0 and "TERM" in seen
    assert alive(child), "SIGTERM goes to the worker, not to its process group"
    assert not w.terminate(), "it has exited"
    os.kill(child, signal.SIGKILL)

    seen.clear()
    w2 = WorkerProcess(_py(_PARENT_AND_CHILD), os.environ, on_line=lambda t, e: seen.append(t))
    w2.start()
    _wait_for(lambda: any(s.startswith("CHILD") for s in seen), 60, "the child")
    child = int(next(s for s in seen if s.startswith("CHILD")).split()[1])
    w2.kill()
    assert w2.wait(timeout=30) == -signal.SIGKILL
    _wait_for(lambda: not alive(child), 10, "the worker's child to die with its group")
    w.close()
    w2.close()


def test_stop_escalates_to_sigkill_after_the_grace() -> None:
    ready = threading.Event()
    w = WorkerProcess(
        _py(
            """
            import signal, time
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            print("ready", flush=True)
            time.sleep(120)
            """
        ),
        os.environ,
        on_line=lambda t, e: ready.set(),
    ).start()
    assert ready.wait(60)
    started = time.monotonic()
    assert w.stop(grace_s=0.5) == -signal.SIGKILL
    assert time.monotonic() - started < 30
    w.close()


_SUPERVISOR = """
import os, signal, sys, threading, time
from tidal.launch.worker import WorkerProcess
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # the worker must not inherit it
box = []
def start():  # from a thread that ends at once, as a Ray actor's method may
    box.append(WorkerProcess([sys.executable, "-c", "import time; time.sleep(120)"],
                             os.environ).start())
t = threading.Thread(target=start)
t.start()
t.join()
time.sleep(0.5)
print("WORKER", box[0].pid, box[0].poll(), flush=True)
time.sleep(120)
"""


def test_the_worker_dies_with_its_supervisor_even_by_sigkill() -> None:
    sup = subprocess.Popen(
        _py(_SUPERVISOR), stdout=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True
    )
    try:
        assert sup.stdout is not None
        line = sup.stdout.readline().split()
        assert line[:1] == ["WORKER"], line
        worker, code = int(line[1]), line[2]
        assert code == "None", "the worker outlives the thread that started it"
        assert alive(worker)
        sup.send_signal(signal.SIGKILL)
        sup.wait(timeout=30)
        _wait_for(lambda: not alive(worker), 10, "the worker to die with its supervisor")
    finally:
        if sup.poll() is None:
            sup.kill()


def test_the_worker_starts_with_stop_signals_unblocked() -> None:
    code = """
    import os, signal, sys
    from tidal.launch.worker import WorkerProcess
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    w = WorkerProcess([sys.executable, "-c", "import time; print('up', flush=True); "
                       "time.sleep(120)"], os.environ, on_line=lambda t, e: print(t, flush=True))
    w.start()
    import time
    time.sleep(1.0)
    w.terminate()
    print("EXIT", w.wait(timeout=30), flush=True)
    """
    out = subprocess.run(_py(code), capture_output=True, text=True, timeout=90, cwd=REPO)
    assert f"EXIT {-signal.SIGTERM}" in out.stdout, out.stdout + out.stderr
