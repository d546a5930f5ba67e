"""Job ids: short, unique across restarts, and sorted as jobs were submitted.

An id is ``j-`` and eight base-36 digits of a millisecond count since 2025-01-01 UTC,
strictly increasing: an id minted in the same millisecond as the last one (or while the
clock stands behind it) takes the next count instead. A new mint starts after the largest
id in the store, so ids never repeat, and their string order is their submission order
(until the year 2114, when the count needs a ninth digit).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Final

__all__ = ["JOB_ID_PATTERN", "JobIdMint", "is_job_id"]

_EPOCH_MS: Final = 1_735_689_600_000  # 2025-01-01T00:00:00Z
_DIGITS: Final = "0123456789abcdefghijklmnopqrstuvwxyz"
_WIDTH: Final = 8
JOB_ID_PATTERN: Final = r"^j-[0-9a-z]{8}$"
_ID_RE: Final = re.compile(JOB_ID_PATTERN)


def is_job_id(value: str) -> bool:
    return _ID_RE.match(value) is not None


def _encode(count: int) -> str:
    out = []
    while count:
        count, digit = divmod(count, 36)
        out.append(_DIGITS[digit])
    return "j-" + "".join(reversed(out)).rjust(_WIDTH, "0")


def _decode(job_id: str) -> int:
    return int(job_id[2:], 36)


class JobIdMint:
    """Mints job ids; safe to share between threads.

    ``after`` is the largest id already used (from the store), ``clock`` returns seconds
    since the epoch (the wall clock by default).
    """

    def __init__(self, after: str | None = None, clock: Callable[[], float] = time.time) -> None:
        if after is not None and not is_job_id(after):
            raise ValueError(f"not a job id: {after!r}")
        self._last = _decode(after) if after is not None else -1
        self._clock = clock
        self._lock = threading.Lock()

    def advance_past(self, used: str) -> None:
        """Mint only ids after ``used`` from now on (another writer took ids ahead)."""
        with self._lock:
            self._last = max(self._last, _decode(used))

    def next(self) -> str:
        now = int(self._clock() * 1000) - _EPOCH_MS
        with self._lock:
            count = max(now, self._last + 1)
            self._last = count
        return _encode(count)
