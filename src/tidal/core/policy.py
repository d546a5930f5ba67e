"""The ``Policy`` protocol and the one registry every policy is built from."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from tidal.core.errors import UnknownPolicyError
from tidal.core.plan import Plan
from tidal.core.snapshot import ClusterSnapshot


@runtime_checkable
class Policy(Protocol):
    """Decides, never acts: the same snapshot always gives the same plan.

    ``tick`` (seconds, or ``None``): a policy whose decisions change with time alone
    (demotion by attained service, time slices, minimum hold times) is run at least every
    ``tick`` seconds while jobs wait, not only when jobs arrive, finish or change state.
    ``None`` means events suffice.

    ``round_interval`` (seconds, or ``None``): the caller may batch the changes of up to
    that many seconds into one round, as a periodic scheduler does, except that a premium
    job arriving, or any change while a premium job waits, gets a round at once (premium
    work starts without delay). ``None`` or 0: a round for every change.

    Both are read by :class:`tidal.core.round.RoundRules`, which the simulator and the
    service share.
    """

    name: str
    tick: float | None
    round_interval: float | None

    def schedule(self, snapshot: ClusterSnapshot) -> Plan: ...


PolicyFactory = Callable[..., Policy]

# name -> factory, or "module:attribute" imported on first use.
_REGISTRY: dict[str, PolicyFactory | str] = {
    "tiered": "tidal.core.policies.tiered:TieredPolicy",
    "fifo": "tidal.core.policies.fifo:FifoPolicy",
    "fifo-backfill": "tidal.core.policies.backfill:BackfillPolicy",
    "priority-kill": "tidal.core.policies.priority_kill:PriorityKillPolicy",
    "tiresias": "tidal.core.policies.tiresias:TiresiasPolicy",
    "gandiva": "tidal.core.policies.gandiva:GandivaPolicy",
}


def register_policy(name: str, factory: PolicyFactory | str) -> None:
    """Register ``factory`` (a callable or ``"module:attribute"``) under ``name``."""
    _REGISTRY[name] = factory


def policy_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def make_policy(name: str, **options: Any) -> Policy:
    """Build the policy registered as ``name`` with ``options``."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise UnknownPolicyError(f"unknown policy {name!r}; known policies: {known}") from None
    if isinstance(factory, str):
        module_name, _, attr = factory.partition(":")
        factory = getattr(importlib.import_module(module_name), attr)
        _REGISTRY[name] = factory
    policy: Policy = factory(**options)
    return policy
