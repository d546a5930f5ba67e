"""A job's exit status, decided from its workers' exit codes and its ``status.json``.

The launch contract: **0** every worker exited 0 (and the run did not report a failure),
**75** (``EX_TEMPFAIL``) stopped at a consistent cut, or stopped before one could be made,
and resumable from the last committed checkpoint, **2** refused before starting, **anything
else** failed (the first failing worker's status; ``128 + N`` for a worker ended by signal
N; 1 where that would read as 0, 2 or 75).
"""

from __future__ import annotations

import signal
from collections.abc import Sequence

from tidal.core.states import JobState

__all__ = [
    "EXIT_FAILED",
    "EXIT_PREEMPTED",
    "EXIT_REFUSED",
    "EXIT_SUCCEEDED",
    "describe_exit",
    "failure_status",
    "job_exit_status",
    "state_for_exit",
]

EXIT_SUCCEEDED = 0
EXIT_FAILED = 1
EXIT_REFUSED = 2
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: run the same command again to resume

# How a worker ends when a stop request reached it before (or instead of) a consistent cut:
# our SIGTERM before its handler was installed, our SIGKILL, or the runtime's own exit
# after a cut with no checkpoint directory (128 + SIGTERM).
_STOPPED_CODES = frozenset({-signal.SIGTERM, -signal.SIGKILL, 128 + signal.SIGTERM})


def failure_status(code: int) -> int:
    """The supervisor's exit status for a worker that failed with ``code`` (non-zero)."""
    if code < 0:
        return 128 - code
    if code in (EXIT_SUCCEEDED, EXIT_REFUSED, EXIT_PREEMPTED) or not 0 < code < 256:
        return EXIT_FAILED
    return code


def job_exit_status(codes: Sequence[int], state: JobState | None, *, stopped: bool) -> int:
    """The job's exit status.

    ``codes`` are the workers' exit codes in the order they ended (``-N``: signal N);
    ``state`` is the last state in ``status.json`` (None: the script does not use the
    runtime); ``stopped`` says whether a stop request reached the workers.
    """
    failures = [c for c in codes if c != 0]
    if stopped:
        real = [c for c in failures if c not in _STOPPED_CODES]
        if real:
            return failure_status(real[0])
        if state is JobState.FAILED:
            return EXIT_FAILED
        if state is JobState.SUCCEEDED and not failures:
            return EXIT_SUCCEEDED  # it finished before the stop took effect
        return EXIT_PREEMPTED  # the last committed checkpoint is intact: commits are atomic
    if failures:
        return failure_status(failures[0])
    if state is JobState.FAILED:
        return EXIT_FAILED
    if state is JobState.PREEMPTED:
        return EXIT_PREEMPTED  # a worker was stopped by someone else (e.g. Slurm)
    return EXIT_SUCCEEDED


def state_for_exit(code: int) -> JobState:
    """The ``status.json`` state that says the same as a job exit status."""
    if code == EXIT_SUCCEEDED:
        return JobState.SUCCEEDED
    if code == EXIT_PREEMPTED:
        return JobState.PREEMPTED
    return JobState.FAILED


def describe_exit(code: int) -> str:
    if code == EXIT_SUCCEEDED:
        return "succeeded"
    if code == EXIT_PREEMPTED:
        return "preempted (resumable: run the same command again)"
    if code == EXIT_REFUSED:
        return "refused"
    return "failed"
