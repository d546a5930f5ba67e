"""Stop signals for a supervisor: caught from its first moment, counted, never lost.

A stop request (SIGTERM from a service, Slurm or Kubernetes; Ctrl-C; SIGHUP when the
terminal goes) must end a job in "preempted, resumable" or in its real outcome, whenever
it arrives, including while the supervisor itself is still starting up. The handler only
counts: the supervisor acts on the count in its loop (first signal: stop at a consistent
cut; second: kill).

:func:`catch_stop_signals` installs the process's one :class:`StopSignals` (idempotent) and
then unblocks the signals: a caller that must be safe even while the interpreter starts can
start the supervisor with them blocked, and a signal that arrived meanwhile is delivered,
and counted, at that moment.
"""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType
from typing import Any

from tidal.launch.errors import LaunchError

__all__ = ["STOP_SIGNALS", "StopSignals", "catch_stop_signals", "release_stop_signals"]

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class StopSignals:
    """Counts stop signals from the moment :meth:`install` runs (main thread only)."""

    def __init__(self) -> None:
        self.count = 0
        self.first_at: float | None = None  # time.monotonic() of the first one
        self.last: signal.Signals | None = None
        self._previous: dict[signal.Signals, Any] = {}

    @property
    def requested(self) -> bool:
        return self.count > 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        self.last = signal.Signals(signum)
        if self.first_at is None:
            self.first_at = time.monotonic()

    def install(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            raise LaunchError("stop signals can only be caught on the main thread")
        for sig in STOP_SIGNALS:
            if sig not in self._previous:
                self._previous[sig] = signal.signal(sig, self._on_signal)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        return self

    def restore(self) -> None:
        """Put the previous handlers back (signals after this are no longer counted)."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


_CAUGHT: StopSignals | None = None


def catch_stop_signals() -> StopSignals:
    """The process's stop-signal counter, installed on first call (main thread)."""
    global _CAUGHT
    if _CAUGHT is None:
        _CAUGHT = StopSignals().install()
    return _CAUGHT


def release_stop_signals() -> None:
    """Put the handlers from before :func:`catch_stop_signals` back, and forget the count."""
    global _CAUGHT
    caught, _CAUGHT = _CAUGHT, None
    if caught is not None:
        caught.restore()
