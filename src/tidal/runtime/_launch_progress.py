"""Console progress for ``tidal run``, read from ``DIR/status.json``.

On a terminal: a Rich live line at the bottom (step, epoch, samples/s, last checkpoint)
while the workers' output scrolls above it. Without a terminal (CI, log files): one plain
line whenever the state changes and every ``interval_s`` seconds, nothing redrawn.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

_STYLE = {
    "starting": "cyan",
    "running": "green",
    "checkpointing": "yellow",
    "preempted": "magenta",
    "succeeded": "bold green",
    "failed": "bold red",
}


def describe(status: Mapping[str, Any] | None, *, elapsed_s: float) -> str:
    """One human line for a status.json payload."""
    if not status:
        return f"waiting for workers · {elapsed_s:.0f}s"
    parts = [str(status.get("state", "?"))]
    parts.append(f"step {status.get('step', 0)}")
    parts.append(f"epoch {status.get('epoch', 0)}")
    rate = status.get("samples_per_s")
    if isinstance(rate, (int, float)) and rate > 0:
        parts.append(f"{rate:,.1f} samples/s")
    ckpt = status.get("last_checkpoint_step")
    parts.append(f"checkpoint @ {ckpt}" if ckpt is not None else "no checkpoint yet")
    parts.append(f"{status.get('workers', '?')} workers / world {status.get('world', '?')}")
    parts.append(f"{elapsed_s:.0f}s")
    return " · ".join(parts)


class ProgressDisplay:
    """Shows the job's progress; ``live`` selects the terminal mode."""

    def __init__(
        self, *, job_id: str, live: bool, enabled: bool = True, interval_s: float = 10.0
    ) -> None:
        self._console = Console(stderr=True, highlight=False)
        self._job_id = job_id
        self._live_mode = live and enabled and self._console.is_terminal
        self._enabled = enabled
        self._interval_s = interval_s
        self._started = time.monotonic()
        self._live: Live | None = None
        self._last_state: object = object()
        self._last_line_at = 0.0
        self._status: Mapping[str, Any] | None = None

    @property
    def live(self) -> bool:
        """Whether the live terminal line is used (then child output must be forwarded)."""
        return self._live_mode

    def _render(self) -> Text:
        state = str((self._status or {}).get("state", "starting"))
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

    def update(self, status: Mapping[str, Any] | None) -> None:
        self._status = status
        if not self._enabled:
            return
        if self._live is not None:
            self._live.update(self._render())
            return
        state = (status or {}).get("state")
        now = time.monotonic()
        if state != self._last_state or now - self._last_line_at >= self._interval_s:
            self._last_state, self._last_line_at = state, now
            self._console.print(self._render(), soft_wrap=True)

    def note(self, message: str) -> None:
        """A launcher message (stop requested, escalation, final outcome)."""
        self._console.print(Text(f"tidal {self._job_id}: {message}"), soft_wrap=True)
