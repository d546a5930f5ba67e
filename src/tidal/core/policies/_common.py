"""What every policy shares: the round builder, job grouping, shrinking, and reason lines."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Generic, TypeVar

from tidal.core.packing import FreePool
from tidal.core.placement import EMPTY, Placement
from tidal.core.plan import Plan
from tidal.core.snapshot import ClusterSnapshot, JobView
from tidal.core.states import ACTIVE_STATES, WAITING_STATES, JobState

log = logging.getLogger(__name__)

_STOPPING = JobState.STOPPING


T = TypeVar("T")


class LazyReasons(Mapping[str, str], Generic[T]):
    """Reasons, some written out and the rest found and formatted only when read.

    A round may leave thousands of jobs waiting, each with a reason, while the caller reads
    only those of the jobs it acts on; finding them all every round, let alone formatting
    them, would cost more than the scheduling decision itself. ``fixed`` holds the reasons
    written out; ``short(job_id)`` gives what ``make`` formats a job's reason from, or
    ``None`` if the job has none; ``ids()`` names, in order, every job that may have one
    (read only to iterate). Both must describe the round the reasons belong to, not a later
    one.
    """

    __slots__ = ("_fixed", "_ids", "_make", "_short")

    def __init__(
        self,
        fixed: dict[str, str],
        short: Callable[[str], T | None],
        ids: Callable[[], Iterable[str]],
        make: Callable[[T], str],
    ):
        self._fixed = fixed
        self._short = short
        self._ids = ids
        self._make = make

    def __getitem__(self, job_id: str) -> str:
        text = self.get(job_id)
        if text is None:
            raise KeyError(job_id)
        return text

    def get(self, job_id: str, default: str | None = None) -> str | None:  # type: ignore[override]
        text = self._fixed.get(job_id)
        if text is not None:
            return text
        item = self._short(job_id)
        return default if item is None else self._make(item)

    def __iter__(self) -> Iterator[str]:
        fixed = self._fixed
        yield from fixed
        short = self._short
        for job_id in self._ids():
            if job_id not in fixed and short(job_id) is not None:
                yield job_id

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __contains__(self, job_id: object) -> bool:
        # Without formatting the reason.
        if not isinstance(job_id, str):
            return False
        return job_id in self._fixed or self._short(job_id) is not None


def split_jobs(snapshot: ClusterSnapshot) -> tuple[list[JobView], list[JobView], dict[str, int]]:
    """``(running, waiting, stopping_used)``.

    ``running`` hold devices and may be kept, resized, migrated or stopped; ``waiting``
    hold none and may be started; devices of jobs that are stopping are counted in
    ``stopping_used`` (node -> devices) and are never placed.
    """
    running: list[JobView] = []
    waiting: list[JobView] = []
    stopping: dict[str, int] = {}
    # Identity tests: hashing Enum members (for set membership) is slow in a hot loop.
    active, startable, stop = ACTIVE_STATES, WAITING_STATES, JobState.STOPPING
    for view in snapshot.jobs:
        state = view.state
        if state in active:
            if view.placement.parts:  # a holding state without devices: nothing to schedule
                running.append(view)
        elif state in startable:
            waiting.append(view)
        elif state is stop:
            for node, count in view.placement.parts:
                stopping[node] = stopping.get(node, 0) + count
    return running, waiting, stopping


class Round:
    """One scheduling round being built: the free pool, targets so far and reasons."""

    __slots__ = ("placements", "pool", "reasons", "snapshot")

    def __init__(
        self,
        snapshot: ClusterSnapshot,
        stopping_used: dict[str, int],
        placements: dict[str, Placement] | None = None,
        free: list[int] | None = None,
    ) -> None:
        """A round whose pool lacks the devices of stopping jobs and of ``placements``
        (targets already decided, which the round starts with). A caller that has counted
        the free devices per node (fleet order) already passes them as ``free``."""
        self.snapshot = snapshot
        self.placements: dict[str, Placement] = placements if placements is not None else {}
        if free is not None:
            self.pool = FreePool.from_free(snapshot.fleet, free)
        else:
            self.pool = FreePool(snapshot.fleet, stopping_used, self.placements.values())
        self.reasons: dict[str, str] = {}

    def keep_all(self, running: Sequence[JobView]) -> None:
        """Keep every running job where it is (non-preemptive policies)."""
        for view in running:
            self.keep(view)

    def keep(self, view: JobView) -> bool:
        """Keep ``view`` where it is, if its devices are still free in this round."""
        placement = view.placement
        if not self.pool.fits(placement):
            return False
        self.pool.take(placement)
        self.placements[view.spec.id] = placement
        if placement.size < view.spec.world:  # e.g. placed by another policy
            self.reasons[view.spec.id] = f"running on {placement.size} of {view.spec.world} devices"
        return True

    def place(self, view: JobView, size: int) -> Placement:
        """Allocate ``size`` devices for ``view`` compactly; EMPTY if they cannot be found."""
        placement = self.pool.allocate(size, view.spec.device_type)
        if placement:
            self.placements[view.id] = placement
        return placement

    def set(self, view: JobView, placement: Placement) -> None:
        """Record a placement already taken from the pool."""
        self.placements[view.id] = placement

    def drop(self, view: JobView) -> None:
        """Give back whatever ``view`` was given in this round."""
        placement = self.placements.pop(view.id, EMPTY)
        if placement:
            self.pool.give(placement)

    def target(self, job_id: str) -> Placement:
        return self.placements.get(job_id, EMPTY)

    def plan(
        self,
        checkpoint_on_stop: bool = True,
        explain_rest: bool = True,
        kill: frozenset[str] = frozenset(),
        reasons: Mapping[str, str] | None = None,
    ) -> Plan:
        """The plan built so far. With ``explain_rest``, every job left short without a
        reason gets a generic one."""
        placements = self.placements
        own = self.reasons
        for view in self.snapshot.jobs if explain_rest else ():
            if view.id in own or view.state is _STOPPING or view.state.is_terminal:
                continue
            placement = placements.get(view.id)
            size = placement.size if placement is not None else 0
            if size < view.spec.world:
                own[view.id] = (
                    f"running on {size} of {view.spec.world} devices" if size else "waiting"
                )
        return Plan(
            self.placements,  # the plan shows it read-only
            MappingProxyType(own) if reasons is None else reasons,
            checkpoint_on_stop=checkpoint_on_stop,
            kill=kill,
        )


def shrink_parts(placement: Placement, size: int) -> Placement:
    """Keep ``size`` of ``placement``'s devices on as few of its nodes as possible."""
    if size >= placement.size:
        return placement
    if size <= 0:
        return EMPTY
    parts = sorted(placement.parts, key=lambda p: (-p[1], p[0]))
    kept: list[tuple[str, int]] = []
    need = size
    # If one node already holds enough, keep the tightest such node.
    single = [p for p in parts if p[1] >= size]
    if single:
        node, _ = min(single, key=lambda p: (p[1], p[0]))
        return Placement(((node, size),))
    for node, count in parts:
        take = min(count, need)
        kept.append((node, take))
        need -= take
        if not need:
            break
    return Placement(tuple(sorted(kept)))


def capacity_by_type(snapshot: ClusterSnapshot, stopping_used: dict[str, int]) -> dict[str, int]:
    """Devices of each type that this round may place (capacity minus stopping jobs)."""
    cap: dict[str, int] = {}
    for node in snapshot.fleet.nodes:
        cap[node.device_type] = cap.get(node.device_type, 0) + node.devices
    if stopping_used:
        fleet = snapshot.fleet
        for name, count in stopping_used.items():
            t = fleet.node(name).device_type
            cap[t] -= count
    return cap


def submit_order(view: JobView) -> tuple[float, str]:
    return (view.spec.submit_time, view.spec.id)


def waiting_reason(need: int, free: int, why: str = "") -> str:
    """``"waiting: needs 8 devices, 3 free"`` plus an optional explanation."""
    text = f"waiting: needs {need} devices, {free} free"
    return f"{text} ({why})" if why else text


def fill_waiting(rnd: Round, order: Sequence[JobView]) -> list[JobView]:
    """Start jobs of ``order`` at full size wherever they fit now; return those that do not."""
    left: list[JobView] = []
    for view in order:
        if not rnd.place(view, view.spec.world):
            left.append(view)
    return left


def log_round(name: str, snapshot: ClusterSnapshot, plan: Plan) -> None:
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "round %d (%s) at t=%.1f: %d jobs placed, %d with reasons",
            snapshot.round_id,
            name,
            snapshot.now,
            len(plan.placements),
            len(plan.reasons),
        )
