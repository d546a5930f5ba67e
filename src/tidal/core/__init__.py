"""Tidal's pure model: specs, tiers, fleet, snapshots, plans, actions, policies, and the
execution contract the simulator and the service share.

Nothing here imports torch, ray, sqlalchemy, fastapi or reads the wall clock.
"""

from tidal.core.actions import (
    NO_DEADLINE,
    Action,
    Cancel,
    Migrate,
    Resize,
    Start,
    Stop,
    apply_order,
)
from tidal.core.errors import CoreError, PlanError, SpecError, TransitionError, UnknownPolicyError
from tidal.core.execution import (
    ActionResult,
    CheckpointCommitted,
    NodeJoined,
    NodeLeft,
    Observation,
    Outcome,
    ProgressReported,
    WorkerExited,
)
from tidal.core.executor import Clock, Executor
from tidal.core.fleet import Fleet, Node
from tidal.core.placement import EMPTY, Placement
from tidal.core.plan import Plan
from tidal.core.policy import Policy, make_policy, policy_names, register_policy
from tidal.core.round import RoundReport, RoundRules, check_action, run_round
from tidal.core.snapshot import ClusterSnapshot, JobView
from tidal.core.spec import JobSpec, divisors_between
from tidal.core.states import (
    ACTIVE_STATES,
    WAITING_STATES,
    JobState,
    Phase,
    StateChange,
    transition,
)
from tidal.core.tiers import Tier

__all__ = [
    "ACTIVE_STATES",
    "EMPTY",
    "NO_DEADLINE",
    "WAITING_STATES",
    "Action",
    "ActionResult",
    "Cancel",
    "CheckpointCommitted",
    "Clock",
    "ClusterSnapshot",
    "CoreError",
    "Executor",
    "Fleet",
    "JobSpec",
    "JobState",
    "JobView",
    "Migrate",
    "Node",
    "NodeJoined",
    "NodeLeft",
    "Observation",
    "Outcome",
    "Phase",
    "Placement",
    "Plan",
    "PlanError",
    "Policy",
    "ProgressReported",
    "Resize",
    "RoundReport",
    "RoundRules",
    "SpecError",
    "Start",
    "StateChange",
    "Stop",
    "Tier",
    "TransitionError",
    "UnknownPolicyError",
    "WorkerExited",
    "apply_order",
    "check_action",
    "divisors_between",
    "make_policy",
    "policy_names",
    "register_policy",
    "run_round",
    "transition",
]
