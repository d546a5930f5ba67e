"""A policy's decision: a target placement per job, a reason for every job left short."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from tidal.core.actions import NO_DEADLINE, Action, Migrate, Resize, Start, Stop, apply_order
from tidal.core.errors import PlanError
from tidal.core.placement import EMPTY, Placement
from tidal.core.snapshot import ClusterSnapshot
from tidal.core.states import ACTIVE_STATES, WAITING_STATES, JobState

_EMPTY_REASONS: Mapping[str, str] = MappingProxyType({})


# Compared by value, not hashable: it holds mappings.
@dataclass(slots=True, init=False)
class Plan:
    """Target placements (jobs not named get none) and reasons (immutable; a ``dict`` of
    placements is taken over, not copied, and shown read-only: do not change it after).

    ``reasons`` holds a human-readable line for every job that gets less than it asked
    for ("waiting: 6 of 8 devices free", "shrunk 8→4 for premium job j-17"). With
    ``checkpoint_on_stop`` false, stopped jobs are killed and lose their progress since
    their last checkpoint: only baselines that model kill-based preemption set it. ``kill``
    names jobs to stop *without* a checkpoint even so: a policy may kill a job that has
    made little progress since its last checkpoint, so that its devices are free at once
    instead of after the checkpoint is written.
    """

    placements: Final[Mapping[str, Placement]]
    reasons: Final[Mapping[str, str]]
    checkpoint_on_stop: Final[bool]
    kill: Final[frozenset[str]]
    # What `target` and `diff` look jobs up in: a dict (compiled, a lookup in a mapping
    # proxy or another Mapping is a generic method call, for every job in every round).
    _table: dict[str, Placement] = field(init=False, repr=False, compare=False)

    def __init__(
        self,
        placements: Mapping[str, Placement],
        reasons: Mapping[str, str] = _EMPTY_REASONS,
        checkpoint_on_stop: bool = True,
        kill: frozenset[str] = frozenset(),
    ) -> None:
        if isinstance(placements, dict):
            # Not copied: the plan takes the dict over, and shows it read-only.
            self._table = placements
            placements = MappingProxyType(placements)
        else:
            self._table = dict(placements)
        self.placements = placements
        self.reasons = reasons
        self.checkpoint_on_stop = checkpoint_on_stop
        self.kill = kill

    def target(self, job_id: str) -> Placement:
        return self._table.get(job_id, EMPTY)

    def diff(self, snapshot: ClusterSnapshot, stop_deadline: float = NO_DEADLINE) -> list[Action]:
        """The actions that move ``snapshot`` to this plan, in the order to apply them.

        Jobs in transition out (STOPPING) are left alone until they settle; a job that
        holds devices and gets none is stopped. Each action carries its job's generation;
        stops (and the stops that begin resizes and migrations) carry ``stop_deadline``.
        """
        actions: list[Action] = []
        placements = self._table
        reasons = self.reasons
        kill = self.kill
        checkpoint_on_stop = self.checkpoint_on_stop
        waiting = WAITING_STATES
        active = ACTIVE_STATES
        # One pass over the jobs (a round may have tens of thousands): a job that may start
        # is looked up in the plan; one that holds devices is compared with its target.
        # Jobs the plan names but the snapshot lacks are ignored. The order of the actions
        # is set by the sort below (total: by job id within a kind), not by this pass.
        for view in snapshot.jobs:
            state = view.state
            if state in waiting:
                job_id = view.spec.id
                target = placements.get(job_id)
                if target:
                    actions.append(Start(job_id, target, reasons.get(job_id, ""), view.generation))
                continue
            current = view.placement
            if not current.parts:
                continue
            job_id = view.spec.id
            target = placements.get(job_id, EMPTY)
            if target is current:
                continue  # kept as it is (most running jobs): no need to look further
            if state not in active or target == current:
                continue  # stopping jobs settle first
            reason = reasons.get(job_id, "")
            generation = view.generation
            if not target:
                checkpoint = checkpoint_on_stop and job_id not in kill
                actions.append(Stop(job_id, current, checkpoint, reason, generation, stop_deadline))
            elif target.size != current.size:
                actions.append(Resize(job_id, current, target, reason, generation, stop_deadline))
            else:
                actions.append(Migrate(job_id, current, target, reason, generation, stop_deadline))
        actions.sort(key=apply_order)
        return actions

    def validate(self, snapshot: ClusterSnapshot) -> None:
        """Raise :class:`PlanError` unless every target fits its job and the fleet."""
        used: dict[str, int] = {}
        for job_id, placement in self.placements.items():
            if not placement:
                continue
            view = snapshot.job(job_id)
            if placement.size not in view.spec.sizes:
                raise PlanError(
                    f"job {job_id!r}: {placement.size} devices is not an allowed size "
                    f"{view.spec.sizes}"
                )
            for node_name, count in placement.parts:
                node = snapshot.fleet.node(node_name)
                if node.device_type != view.spec.device_type:
                    raise PlanError(
                        f"job {job_id!r} wants {view.spec.device_type!r} devices but node "
                        f"{node_name!r} has {node.device_type!r}"
                    )
                used[node_name] = used.get(node_name, 0) + count
        # Jobs that keep devices while stopping still occupy them.
        for view in snapshot.jobs:
            if view.state is JobState.STOPPING and view.holds_devices:
                for node_name, count in view.placement.parts:
                    used[node_name] = used.get(node_name, 0) + count
        for node_name, count in used.items():
            cap = snapshot.fleet.node(node_name).devices
            if count > cap:
                raise PlanError(f"node {node_name!r} overcommitted: {count} of {cap} devices")
