"""An executor for tests that drive the loop a round at a time (as Ray Train pairs its worker
group protocol with a dummy one).

:class:`FakeExecutor` implements :class:`~tidal.core.executor.Executor` over a
:class:`~tidal.core.book.JobBook`, exactly as the Ray executor does, but runs nothing: a
test says what the workers did (:meth:`~FakeExecutor.workers_up`,
:meth:`~FakeExecutor.workers_exit`, :meth:`~FakeExecutor.lose_node`) and moves the clock.
Stops that pass their deadline are killed when observed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from tidal.core.actions import Action, Cancel, Migrate, Resize, Start, Stop
from tidal.core.book import EXIT_PREEMPTED, JobBook, LiveJob
from tidal.core.errors import TransitionError
from tidal.core.execution import (
    ActionResult,
    NodeLeft,
    Observation,
    Outcome,
    WorkerExited,
)
from tidal.core.executor import Clock
from tidal.core.placement import Placement
from tidal.core.states import ACTIVE_STATES, WAITING_STATES


class FakeExecutor:
    """Applies actions to ``book`` at once; the test reports what the workers do.

    With ``capacity`` (devices per node), a start or grow that needs devices still held by
    a stopping job is deferred, as a real executor must.
    """

    def __init__(
        self, book: JobBook, clock: Clock, capacity: Mapping[str, int] | None = None
    ) -> None:
        self.book = book
        self._clock = clock
        self._capacity = dict(capacity) if capacity is not None else None
        self._extra: list[Observation] = []
        self.applied: list[Action] = []  # every action applied, in order
        self.killed: list[str] = []  # jobs whose workers were killed (deadline, kill, cancel)

    # --- the Executor protocol ---------------------------------------------------------

    def apply(self, actions: Sequence[Action]) -> list[ActionResult]:
        results = []
        for action in actions:
            refusal = self.book.refusal(action)
            if refusal:
                results.append(ActionResult(action, Outcome.REFUSED, refusal))
                continue
            try:
                outcome = self._apply(self.book[action.job_id], action)
            except TransitionError as err:
                results.append(ActionResult(action, Outcome.REFUSED, str(err)))
                continue
            if outcome is Outcome.APPLIED:
                self.applied.append(action)
            results.append(ActionResult(action, outcome))
        return results

    def observe(self) -> list[Observation]:
        now = self._clock.now()
        for record in self.book.overdue(now):
            self.killed.append(record.id)
            self.book.stopped(record, now, committed=False, reason="stop deadline passed: killed")
        out = [*self._extra, *self.book.drain()]
        self._extra = []
        return out

    # --- what a test says the workers did ------------------------------------------------

    def workers_up(self, job_id: str) -> None:
        self.book.running(self.book[job_id], self._clock.now())

    def workers_exit(self, job_id: str, code: int, detail: str = "") -> None:
        """Every worker of the job is gone; ``code`` as :meth:`JobBook.exited` takes it
        (75 after a stop: committed)."""
        now = self._clock.now()
        self._extra.append(WorkerExited(job_id, now, 0, code, detail))
        self.book.exited(self.book[job_id], now, code, detail)

    def stop_done(self, job_id: str) -> None:
        """A stopping job committed its checkpoint and its workers exited 75."""
        self.workers_exit(job_id, EXIT_PREEMPTED)

    def lose_node(self, name: str) -> None:
        """The node is gone: reported as :class:`NodeLeft`, and its jobs fail over."""
        self._extra.append(NodeLeft(name, self._clock.now(), "lost"))
        self.node_left(name)

    # --- what the service's loop asks of a live executor ---------------------------------

    def node_left(self, name: str) -> None:
        """A node left the fleet: its jobs fail over (not counted against them)."""
        now = self._clock.now()
        if self._capacity is not None:
            self._capacity.pop(name, None)
        for record in list(self.book):
            if name in record.placement.nodes and record.state.holds_devices:
                self.book.node_lost(record, now, name)

    def adopt(self, record: LiveJob, incarnation: int) -> None:
        """Nothing runs here to adopt: the book's record is all there is."""

    # --- actions -----------------------------------------------------------------------

    def _apply(self, record: LiveJob, action: Action) -> Outcome:
        now = self._clock.now()
        book = self.book
        if isinstance(action, Start):
            if record.state not in WAITING_STATES:
                raise TransitionError(f"Start for job {record.id!r} in {record.state.value}")
            if not self._fits(record, action.placement):
                return Outcome.DEFERRED
            book.start(record, action.placement, now, action.reason)
        elif isinstance(action, Stop):
            if action.checkpoint:
                book.stop(record, now, action.reason, action.deadline)
            else:
                book.stop(record, now, action.reason or "kill", now)
                self.killed.append(record.id)
                book.stopped(record, now, committed=False, reason="killed")
        elif isinstance(action, (Resize, Migrate)):
            if record.state not in ACTIVE_STATES:
                raise TransitionError(f"move for job {record.id!r} in {record.state.value}")
            if not self._fits(record, record.placement.union(action.new)):
                return Outcome.DEFERRED
            book.stop(record, now, action.reason, action.deadline, next_placement=action.new)
        elif isinstance(action, Cancel) and book.cancel(record, now, action.reason):
            self.killed.append(record.id)  # it held workers: killed, then CANCELLED
            book.stopped(record, now, committed=False)
        return Outcome.APPLIED

    def _fits(self, record: LiveJob, placement: Placement) -> bool:
        if self._capacity is None:
            return True
        used: dict[str, int] = {}
        for other in self.book:
            if other is not record and other.state.holds_devices:
                for node, count in other.placement.parts:
                    used[node] = used.get(node, 0) + count
        for node, count in placement.parts:
            if count > self._capacity.get(node, 0) - used.get(node, 0):
                return False
        return True


__all__ = ["FakeExecutor"]
