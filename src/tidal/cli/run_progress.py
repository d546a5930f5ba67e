"""Console output of ``tidal run``: the workers' lines and the job's progress, read from
``DIR/status.json``.

On a terminal: a Rich live line at the bottom (state, step, epoch, samples/s, last
checkpoint) while the workers' output scrolls above it. Without a terminal (CI, log files):
one plain line whenever the state changes and every ``interval_s`` seconds, nothing
redrawn. With several workers, each output line starts with the worker's index (``[1]``).
Implements :class:`tidal.launch.local.Reporter`.
"""

from __future__ import annotations

import sys
import threading
import time
from types import TracebackType

from rich.console import Console
from rich.live import Live
from rich.text import Text

from tidal.launch.status import StatusRecord

__all__ = ["ProgressDisplay", "describe"]

_STYLE = {
    "starting": "cyan",
    "running": "green",
    "stopping": "yellow",
    "preempted": "magenta",
    "succeeded": "bold green",
    "failed": "bold red",
}


def describe(status: StatusRecord | None, *, elapsed_s: float) -> str:
    """One human line for a ``status.json`` record."""
    if status is None:
        return f"waiting for workers · {elapsed_s:.0f}s"
    parts = [status.state.value, f"step {status.step}", f"epoch {status.epoch}"]
    if status.samples_per_s > 0:
        parts.append(f"{status.samples_per_s:,.1f} samples/s")
    ckpt = status.last_checkpoint_step
    parts.append(f"checkpoint @ {ckpt}" if ckpt is not None else "no checkpoint yet")
    workers = "?" if status.workers is None else status.workers
    world = "?" if status.world is None else status.world
    parts.append(f"{workers} workers / world {world}")
    parts.append(f"{elapsed_s:.0f}s")
    return " · ".join(parts)


class ProgressDisplay:
    """Shows the job's progress and its workers' output; ``enabled=False`` shows only the
    output and the launcher's notes."""

    def __init__(
        self, *, job_id: str, workers: int, enabled: bool = True, interval_s: float = 10.0
    ) -> None:
        self._console = Console(stderr=True, highlight=False)
        self._job_id = job_id
        self._prefix = workers > 1
        self._live_mode = enabled and self._console.is_terminal
        self._enabled = enabled
        self._interval_s = interval_s
        self._started = time.monotonic()
        self._live: Live | None = None
        self._last_state: object = object()
        self._last_line_at = 0.0
        self._status: StatusRecord | None = None
        self._lines = threading.Lock()  # workers' lines arrive on several threads

    def _render(self) -> Text:
        state = self._status.state.value if self._status is not None else "starting"
        line = describe(self._status, elapsed_s=time.monotonic() - self._started)
        text = Text(f"tidal {self._job_id} ", style="bold")
        text.append(line, style=_STYLE.get(state, ""))
        return text

    def __enter__(self) -> ProgressDisplay:
        if self._live_mode:
            self._live = Live(
                self._render(),
                console=self._console,
                refresh_per_second=4,
                transient=False,
                redirect_stdout=True,
                redirect_stderr=True,
            )
            self._live.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.__exit__(kind, value, tb)
            self._live = None

    def update(self, status: StatusRecord | None) -> None:
        self._status = status
        if not self._enabled:
            return
        if self._live is not None:
            self._live.update(self._render())
            return
        state = status.state if status is not None else None
        now = time.monotonic()
        if state != self._last_state or now - self._last_line_at >= self._interval_s:
            self._last_state, self._last_line_at = state, now
            self._console.print(self._render(), soft_wrap=True)

    def note(self, message: str) -> None:
        """A launcher message (stop requested, escalation, final outcome)."""
        self._console.print(Text(f"tidal {self._job_id}: {message}"), soft_wrap=True)

    def line(self, worker: int, text: str, is_stderr: bool) -> None:
        """One line of a worker's output, to our stdout or stderr (looked up per line, so
        the live display, which redirects them, places it above itself)."""
        with self._lines:
            stream = sys.stderr if is_stderr else sys.stdout
            stream.write(f"[{worker}] {text}\n" if self._prefix else f"{text}\n")
            stream.flush()
