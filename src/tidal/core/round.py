"""One scheduling round, and the rules for when one runs: shared by the simulator and the
service, which differ only in their executor and their clock.

:func:`run_round` is snapshot → ``policy.schedule`` → validate → ``plan.diff`` → apply.
:class:`RoundRules` says *when*: a round for every change (a job arrived, ended, released
devices; a node came or went), at the policy's ``tick`` while jobs wait, changes batched
over the policy's ``round_interval`` (and at least ``min_round_interval`` apart), except
that premium work never waits for a batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Final

from tidal.core.actions import NO_DEADLINE, Action, Cancel, Migrate, Resize, Start
from tidal.core.errors import PlanError
from tidal.core.execution import ActionResult, Outcome
from tidal.core.executor import Executor
from tidal.core.placement import Placement
from tidal.core.plan import Plan
from tidal.core.policy import Policy
from tidal.core.snapshot import ClusterSnapshot

_REFUSED = Outcome.REFUSED


@dataclass(slots=True, init=False, unsafe_hash=True)
class RoundReport:
    """What one round decided and what became of it (immutable): the plan, the actions in
    the order they were applied (requests first), and one result per action."""

    round_id: Final[int]
    plan: Final[Plan]
    actions: Final[tuple[Action, ...]]
    results: Final[tuple[ActionResult, ...]]

    def __init__(
        self,
        round_id: int,
        plan: Plan,
        actions: tuple[Action, ...],
        results: tuple[ActionResult, ...],
    ) -> None:
        self.round_id = round_id
        self.plan = plan
        self.actions = actions
        self.results = results

    @property
    def applied(self) -> int:
        """How many actions took effect."""
        n = 0
        for result in self.results:
            if result.outcome is Outcome.APPLIED:
                n += 1
        return n

    def refused(self) -> list[ActionResult]:
        return [r for r in self.results if r.outcome is _REFUSED]


def run_round(
    policy: Policy,
    snapshot: ClusterSnapshot,
    executor: Executor,
    *,
    stop_deadline: float = NO_DEADLINE,
    requests: Sequence[Action] = (),
) -> RoundReport:
    """Decide on ``snapshot`` and apply the decisions through ``executor``.

    ``requests`` are actions asked for outside the policy (a user's :class:`Cancel`); they
    are applied first, and the plan's actions for the same jobs are dropped this round.
    Every action is checked against the snapshot before it is applied (:func:`check_action`);
    one that fails is refused with the reason and never reaches the executor. Stops carry
    ``stop_deadline`` (a clock reading; by default none).
    """
    plan = policy.schedule(snapshot)
    actions = plan.diff(snapshot, stop_deadline)
    if requests:
        asked = {a.job_id for a in requests}
        actions = [*requests, *(a for a in actions if a.job_id not in asked)]
    results: list[ActionResult | None] = []
    valid: list[Action] = []
    for action in actions:
        problem = check_action(snapshot, action)
        if problem:
            results.append(ActionResult(action, _REFUSED, problem))
        else:
            results.append(None)
            valid.append(action)
    applied = executor.apply(valid) if valid else []
    if len(applied) != len(valid):
        raise PlanError(f"executor answered {len(applied)} results for {len(valid)} actions")
    if len(valid) == len(actions):
        final = tuple(applied)
    else:
        it = iter(applied)
        final = tuple(r if r is not None else next(it) for r in results)
    return RoundReport(snapshot.round_id, plan, tuple(actions), final)


def check_action(snapshot: ClusterSnapshot, action: Action) -> str:
    """Why ``action`` cannot be applied to the job and fleet in ``snapshot`` ("" if it
    can): an unknown job, a generation the snapshot does not show, a placement of a size
    the job does not allow, or on nodes that are not in the fleet or hold other devices.
    Capacity is the executor's to check: it knows what is being released."""
    if action.job_id not in snapshot:
        return f"job {action.job_id!r} is not in the snapshot"
    view = snapshot.job(action.job_id)
    if action.generation != view.generation:
        return (
            f"job {action.job_id!r}: action for generation {action.generation}, "
            f"the snapshot shows {view.generation}"
        )
    if isinstance(action, Start):
        target: Placement = action.placement
    elif isinstance(action, (Resize, Migrate)):
        target = action.new
    else:
        return ""
    spec = view.spec
    if target.size not in spec.sizes:
        return f"job {spec.id!r}: {target.size} devices is not an allowed size {spec.sizes}"
    fleet = snapshot.fleet
    for node_name, _ in target.parts:
        if node_name not in fleet:
            return f"job {spec.id!r} placed on node {node_name!r}, which is not in the fleet"
        kind = fleet.node(node_name).device_type
        if kind != spec.device_type:
            return (
                f"job {spec.id!r} placed on node {node_name!r}, which has {kind!r} devices; "
                f"it needs {spec.device_type!r}"
            )
    return ""


class RoundRules:
    """When a round runs. The caller reports each moment something a policy could act on
    changed, asks :meth:`due`, runs a round when told, and reports it with :meth:`ran`;
    ``wake(at)`` is called whenever the rules want to be asked again at clock reading
    ``at`` even if nothing changes (a deferred round, the policy's tick).

    - Every change gets a round, at once when the last round is at least ``gap`` ago, else
      at ``last + gap``. ``gap`` is ``min_round_interval``, or the policy's
      ``round_interval`` when that is larger and no premium job is at stake (one arrived
      now — ``urgent`` — or one is waiting: :meth:`premium_waiting`).
    - While jobs wait (``ran(..., waiting=True)``), a round runs at least every ``tick``
      seconds even without a change.
    """

    __slots__ = (
        "_batch",
        "_interval",
        "_last",
        "_premium",
        "_round_at",
        "_round_due",
        "_tick",
        "_tick_at",
        "_wake",
    )

    def __init__(
        self,
        tick: float | None = None,
        round_interval: float | None = None,
        min_round_interval: float = 0.0,
        wake: Callable[[float], None] | None = None,
    ) -> None:
        if tick is not None and (not math.isfinite(tick) or tick <= 0):
            raise PlanError(f"tick must be a positive number of seconds, got {tick!r}")
        if round_interval is not None and (not math.isfinite(round_interval) or round_interval < 0):
            raise PlanError(
                f"round_interval must be a number of seconds >= 0, got {round_interval!r}"
            )
        if not math.isfinite(min_round_interval) or min_round_interval < 0:
            raise PlanError(
                f"min_round_interval must be a number of seconds >= 0, got {min_round_interval!r}"
            )
        self._tick = tick
        self._batch: float = round_interval or 0.0
        self._interval = float(min_round_interval)
        self._wake = wake
        self._last = -math.inf
        self._round_due = False
        self._round_at = math.inf
        self._tick_at = math.inf
        self._premium: set[str] = set()

    @classmethod
    def for_policy(
        cls,
        policy: Policy,
        min_round_interval: float = 0.0,
        wake: Callable[[float], None] | None = None,
    ) -> RoundRules:
        try:
            return cls(policy.tick, policy.round_interval, min_round_interval, wake)
        except PlanError as err:
            raise PlanError(f"policy {policy.name!r}: {err}") from None

    @property
    def batching(self) -> bool:
        """Whether changes may be batched (so premium jobs waiting must be reported)."""
        return self._batch > self._interval

    @property
    def last_round(self) -> float:
        return self._last

    def premium_waiting(self, job_id: str, waiting: bool) -> None:
        """Report whether premium job ``job_id`` waits for devices (no batching while one
        does). Only needed while :attr:`batching`."""
        if waiting:
            self._premium.add(job_id)
        else:
            self._premium.discard(job_id)

    def premium_waiting_ids(self) -> Collection[str]:
        return self._premium

    def due(self, now: float, changed: bool, urgent: bool = False) -> bool:
        """Whether a round should run at ``now``. ``changed``: something a policy could act
        on changed since the last call; ``urgent``: a premium job arrived."""
        if not (changed or now >= self._tick_at or (self._round_due and now >= self._round_at)):
            return False
        gap = self._interval
        if self._batch > gap and not (urgent or self._premium):
            gap = self._batch  # nothing premium at stake: decide with later changes
        at = self._last + gap
        if now < at:
            if not self._round_due or at != self._round_at:
                self._round_due = True
                self._round_at = at
                if self._wake is not None:
                    self._wake(at)
            return False
        self._round_due = False
        self._round_at = math.inf
        return True

    def ran(self, now: float, waiting: bool) -> None:
        """A round ran at ``now``; ``waiting``: jobs still wait for devices after it."""
        self._last = now
        self._tick_at = math.inf
        if waiting and self._tick is not None:
            self._tick_at = now + self._tick
            if self._wake is not None:
                self._wake(self._tick_at)

    def next_wakeup(self) -> float:
        """The earliest clock reading at which :meth:`due` may say yes without a change
        (``inf``: none)."""
        at = self._tick_at
        if self._round_due and self._round_at < at:
            at = self._round_at
        return at


def cancel_request(snapshot: ClusterSnapshot, job_id: str, reason: str) -> Cancel:
    """A :class:`Cancel` for ``job_id`` at its generation in ``snapshot``."""
    return Cancel(job_id, reason, snapshot.job(job_id).generation)


__all__ = ["RoundReport", "RoundRules", "cancel_request", "check_action", "run_round"]
