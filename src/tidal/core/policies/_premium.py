"""Premium jobs under ``tiered``: who starts now, on which node, and whom they take from.

Premium jobs always run at W and nobody takes their devices. A waiting premium job is
admitted, in submission order, if the devices premium work does not hold can take it and
it fits compactly once only premium jobs hold devices. Each admitted job then gets a node
(its ``hint``), chosen so it starts as soon as possible at the lowest cost:

1. a node with enough devices free *now* (best fit): it starts at once;
2. otherwise devices that stopping jobs are releasing, if the job can afford to wait a
   checkpoint's time (its SLA slack, from its declared work, exceeds it);
3. otherwise victims on one node: basic jobs before standard ones, elastic victims shrunk
   before anyone is stopped, the cheapest first. A job too short to wait for a checkpoint
   prefers a node where victims can be *killed* (stopped at once without a checkpoint)
   because each would lose at most ``kill_max_loss`` device-seconds of progress.

Jobs larger than a node take victims by counts (basic, then standard; shrink, then stop)
and are placed, clearing whole nodes if need be, in :mod:`._tiered_place`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from tidal.core.packing import FleetIndex, FreePool
from tidal.core.placement import Placement
from tidal.core.policies._tiered_alloc import GIB, Entry, TieredConfig
from tidal.core.states import JobState
from tidal.core.tiers import Tier

_PREMIUM = Tier.PREMIUM
_STANDARD = Tier.STANDARD
_BASIC = Tier.BASIC
_RUNNING = JobState.RUNNING

# Checkpoint size assumed for the jobs a defragmentation migrates (to bound its delay).
MIGRATE_GIB = 8.0

# How many candidate nodes a premium job weighs when it needs victims (all of them on
# fleets up to this many occupied nodes; the most promising ones on larger fleets).
NODES_TO_WEIGH = 32

# A planned cut: (victim, devices it keeps, killed?)
Cut = tuple[Entry, int, bool]


def admit(
    running: list[Entry],
    waiting: list[Entry],
    capacity: int,
    fits: Callable[[Entry], Placement],
) -> list[Entry]:
    """Running premium jobs keep W; waiting ones are admitted in submission order while the
    devices not held by premium work (``capacity`` counts devices still being released)
    can hold them and ``fits(entry)`` finds them a compact place beside premium work.
    Returns the admitted jobs."""
    waiting = sorted(waiting, key=lambda e: (e.spec.submit_time, e.id))
    avail = capacity
    for e in running:
        e.target = e.held
        e.fixed = True
        avail -= e.held
    admitted: list[Entry] = []
    for e in waiting:
        e.fixed = True
        if e.world > avail:
            e.reason = (
                f"waiting: premium jobs hold {capacity - avail} of {capacity} devices, "
                f"{avail} left for a {e.world}-device job"
            )
        elif not (hint := fits(e)):
            e.reason = f"waiting: premium jobs leave no room for {e.world} devices together"
        else:
            e.hint = hint
            e.target = e.world
            avail -= e.world
            admitted.append(e)
    return admitted


def kill_loss(e: Entry, now: float) -> float:
    """Device-seconds of work a kill would throw away: progress since the job's last
    checkpoint, or since it was (re)started; nothing while it is still starting."""
    view = e.view
    if view.state is not _RUNNING:
        return 0.0
    since = max(
        view.placed_at if view.placed_at is not None else view.spec.submit_time,
        view.last_checkpoint_at if view.last_checkpoint_at is not None else -math.inf,
    )
    return max(0.0, now - since) * e.held


def stop_delay(e: Entry, config: TieredConfig) -> float:
    """Estimated seconds until a checkpointed stop of ``e`` releases its devices."""
    return config.checkpoint_fixed_s + e.spec.checkpoint_bytes / GIB / config.checkpoint_gib_per_s


def sla_slack(p: Entry, config: TieredConfig) -> float:
    """Seconds premium job ``p`` may wait and still meet its SLA, if it runs no shorter
    than its declared work divided by ``slack_margin``."""
    return (1.0 / config.premium_sla - 1.0) * (p.spec.estimate / p.world) / config.slack_margin


def stop_cost(e: Entry) -> tuple[int, int, float, str]:
    """Cheapest victims to checkpoint first: past their minimum hold, small checkpoint,
    most service already received (LAS would serve them last anyway)."""
    return (1 if e.pinned else 0, e.spec.checkpoint_bytes, -e.view.attained, e.id)


class Premium:
    """Finds devices for the admitted premium jobs of one device type."""

    def __init__(
        self,
        fx: FleetIndex,
        device_type: str,
        others: list[Entry],
        now_pool: FreePool,
        soon: int,
        soon_delay: float,
        now: float,
        config: TieredConfig,
    ) -> None:
        self.fx = fx
        self.device_type = device_type
        self.nodes = fx.by_type.get(device_type, [])
        self.node_cap = fx.max_cap.get(device_type, 0)
        self.others = others
        self.pool = now_pool  # devices free now (stopping jobs' included as taken)
        self.soon = soon
        self.soon_delay = soon_delay  # longest a stopping job may still take to release
        self.claimed = 0  # devices being released that premium jobs wait for
        self.now = now
        self.config = config
        self._occ: list[list[Entry] | None] | None = None
        self._occupied: list[int] = []  # nodes with running non-premium jobs
        self._pairs: dict[int, list[tuple[Entry, int]]] = {}
        self._basic: list[int] = []
        self._losses: dict[str, float] = {}
        self._candidates: list[int] | None = None
        self._by_cost: dict[Tier, list[Entry]] = {}
        self._sorted: set[int] = set()

    # -- lazily built views of the nodes ----------------------------------------------------

    def free_now(self) -> list[int]:
        return self.pool.free

    def total_free(self) -> int:
        return self.pool.total_free(self.device_type)

    def occupants(self) -> list[list[Entry] | None]:
        """Node index -> the running non-premium jobs there (once per placement part), or
        None where there are none."""
        if self._occ is None:
            index = self.fx.index
            nodes = len(self.fx.names)
            # Lists by node index, not dicts: no hashing or boxing of node numbers in a pass
            # over every running job (tens of thousands on large fleets).
            occ: list[list[Entry] | None] = [None] * nodes
            basic = self._basic = [0] * nodes  # node -> devices basic jobs hold there
            occupied = self._occupied = []
            # One pass over the running jobs, storing only the entries: the (job, devices)
            # pairs are made for the few nodes weighed. The per-node basic counts ride
            # along for ``candidates``.
            for e in self.others:
                if e.held:
                    is_basic = e.tier is _BASIC
                    for node, count in e.view.placement.parts:
                        i = index[node]
                        jobs = occ[i]
                        if jobs is None:
                            occ[i] = [e]
                            occupied.append(i)
                        else:
                            jobs.append(e)
                        if is_basic:
                            basic[i] += count
            self._occ = occ
        return self._occ

    def jobs_on(self, node: int) -> list[tuple[Entry, int]]:
        """``(job, devices it holds on node)`` for the running non-premium jobs on
        ``node``, made the first time the node is looked at."""
        jobs = self._pairs.get(node)
        if jobs is None:
            name = self.fx.names[node]
            jobs = []
            seen: dict[str, int] = {}  # multi-node jobs: parts of this node used so far
            for e in self.occupants()[node] or ():
                parts = e.view.placement.parts
                if len(parts) == 1:
                    jobs.append((e, parts[0][1]))
                    continue
                k = seen.get(e.id, 0)
                seen[e.id] = k + 1
                jobs.append((e, [c for n, c in parts if n == name][k]))
            self._pairs[node] = jobs
        return jobs

    def victims_on(self, node: int) -> list[tuple[Entry, int]]:
        """The jobs on ``node`` in the order victims are weighed (least progress lost,
        then cheapest to checkpoint); sorted the first time the node is weighed."""
        jobs = self.jobs_on(node)
        if node not in self._sorted:
            loss = self.loss
            jobs.sort(key=lambda ec: (loss(ec[0]), stop_cost(ec[0])))
            self._sorted.add(node)
        return jobs

    def loss(self, e: Entry) -> float:
        loss = self._losses.get(e.id)
        if loss is None:
            loss = self._losses[e.id] = kill_loss(e, self.now)
        return loss

    # -- deciding -----------------------------------------------------------------------

    def find(self, p: Entry) -> bool:
        """Give ``p`` a node (its ``hint``) and cut victims if need be; False if it must
        wait for devices being released."""
        config = self.config
        world = p.world
        slack = sla_slack(p, config)
        tight = slack < self.soon_delay  # cannot wait for the jobs now stopping
        if world <= self.node_cap:
            hole = self.pool.allocate(world, self.device_type)  # best fit, devices free now
            if hole:
                p.hint = hole
                return True
        if not tight and self.soon - self.claimed >= world:
            self.claimed += world
            return False
        if (
            config.migrate
            and slack >= config.checkpoint_fixed_s + MIGRATE_GIB / config.checkpoint_gib_per_s
            and self.total_free() >= world
        ):
            # Enough devices are free, only scattered, and the job can wait for a few
            # checkpoints: placement migrates jobs to make a hole (defragmentation)
            # instead of stopping anyone.
            self._take_free(world)
            return True
        if world <= self.node_cap:
            choice = self._best_node(p, slack)
            if choice is not None:
                self._claim(p, choice[0], choice[1])
                return True
        return self._by_counts(p, slack)

    def _take_free(self, count: int) -> None:
        """Count ``count`` scattered free devices as taken (fullest nodes first)."""
        for _ in range(count):
            if not self.pool.allocate(1, self.device_type):
                break

    def _claim(self, p: Entry, node: int, cuts: list[Cut]) -> None:
        """Cut the victims and reserve ``node`` for ``p``."""
        name = self.fx.names[node]
        freed = 0
        for e, keep, kill in cuts:
            _cut(e, keep, kill, p)
            freed += dict(e.view.placement.parts).get(name, 0) - keep
        if freed:
            self.pool.give(Placement(((name, freed),)))
        hint = Placement(((name, p.world),))
        self.pool.take(hint)
        p.hint = hint

    def _best_node(self, p: Entry, slack: float) -> tuple[int, list[Cut]] | None:
        """The node where ``p`` can be made room for most cheaply, with the cuts."""
        free = self.free_now()
        cap = self.fx.cap
        world = p.world
        best: tuple[tuple[float, ...], int, list[Cut]] | None = None
        looked = 0
        for i in self.candidates():
            if cap[i] < world:
                continue
            jobs = self.jobs_on(i)
            if free[i] + sum(c for e, c in jobs if not e.fixed) < world:
                continue
            plan = self._cuts_on(i, self.victims_on(i), world - free[i], slack)
            if plan is None:
                continue
            score, cuts = plan
            if best is None or (score, i) < (best[0], best[1]):
                best = (score, i, cuts)
                if not any(score):
                    break  # nobody waits, no standard job and no progress lost: optimal
            looked += 1
            if looked >= NODES_TO_WEIGH:
                break
        return None if best is None else (best[1], best[2])

    def candidates(self) -> list[int]:
        """Nodes with non-premium jobs, most promising first (most devices free or held by
        basic jobs); a premium job weighs at most ``NODES_TO_WEIGH`` of them."""
        if self._candidates is None:
            free = self.free_now()
            self.occupants()
            basic = self._basic
            # Sorting by (-score, -free, node), with score = free + basic held, as a bucket
            # sort: the bucket key orders (score, free) since free <= node_cap, there are
            # few distinct keys, and visiting nodes in ascending order keeps each bucket
            # sorted by node.
            width = self.node_cap + 1
            buckets: dict[int, list[int]] = {}
            for i in sorted(self._occupied):
                f = free[i]
                key = (f + basic[i]) * width + f
                bucket = buckets.get(key)
                if bucket is None:
                    buckets[key] = [i]
                else:
                    bucket.append(i)
            self._candidates = [i for key in sorted(buckets, reverse=True) for i in buckets[key]]
        return self._candidates

    def _cuts_on(
        self, node: int, jobs: list[tuple[Entry, int]], need: int, slack: float
    ) -> tuple[tuple[float, ...], list[Cut]] | None:
        """Victims on one node freeing ``need`` devices: basic before standard, shrink
        before stop, cheapest first. A victim whose checkpoint would outlast the premium
        job's SLA slack is killed if that loses little, and never shrunk (a shrink
        checkpoints too); the score counts the checkpoints the premium job would wait for."""
        config = self.config
        cuts: dict[str, Cut] = {}
        freed: dict[str, int] = {}
        standard_taken = 0
        waits = 0
        cost = 0.0
        for tier in (_BASIC, _STANDARD):
            group = [(e, c) for e, c in jobs if e.tier is tier and not e.fixed]
            if not group:
                continue
            for e, c in group:
                if need <= 0:
                    break
                if c != e.held or not e.spec.elastic or stop_delay(e, config) > slack:
                    continue  # shrink only jobs on this node alone, if the wait is affordable
                keep = e.spec.fit_size(e.held - need) or e.spec.min_size
                if keep < e.held:
                    cuts[e.id] = (e, keep, False)
                    freed[e.id] = e.held - keep
                    need -= e.held - keep
                    cost += e.spec.checkpoint_bytes / GIB
                    standard_taken += (e.held - keep) if tier is _STANDARD else 0
            for e, c in group:
                if need <= 0:
                    break
                late = stop_delay(e, config) > slack
                kill = late and self.loss(e) <= config.kill_max_loss
                more = c - freed.get(e.id, 0)
                cuts[e.id] = (e, 0, kill)
                need -= more
                waits += 1 if late and not kill else 0
                cost += self.loss(e) if kill else e.spec.checkpoint_bytes / GIB
                standard_taken += more if tier is _STANDARD else 0
        if need > 0:
            return None
        return (waits, standard_taken, cost), list(cuts.values())

    def _by_counts(self, p: Entry, slack: float) -> bool:
        """Jobs larger than a node: cut victims anywhere by counts; placement clears nodes."""
        config = self.config
        need = p.world - self.total_free()
        if need <= 0:
            return True
        for tier in (_BASIC, _STANDARD):
            if need <= 0:
                break
            for e in self._victims_by_cost(tier):
                if e.fixed:
                    continue
                if need <= 0:
                    break
                late = stop_delay(e, config) > slack
                if e.spec.elastic and not late:
                    keep = e.spec.fit_size(e.held - need) or e.spec.min_size
                    if keep < e.held:
                        _cut(e, keep, False, p)
                        need -= e.held - keep
                        continue
                _cut(e, 0, late and self.loss(e) <= config.kill_max_loss, p)
                need -= e.held
        if need > 0:  # shrinking was not enough: stop the shrunk ones too
            for e in self.others:
                if need > 0 and e.fixed and e.target and e.tier is not _PREMIUM:
                    need -= e.target
                    _cut(e, 0, False, p)
        if need > 0:
            use = min(self.soon - self.claimed, need)
            self.claimed += use
        return True

    def _victims_by_cost(self, tier: Tier) -> list[Entry]:
        """The running jobs of ``tier``, cheapest victims first; sorted the first time a
        job larger than a node needs them (standard ones only if basic ones fall short)."""
        found = self._by_cost.get(tier)
        if found is None:
            found = [e for e in self.others if e.held and e.tier is tier]
            found.sort(key=stop_cost)
            self._by_cost[tier] = found
        return found


def _cut(e: Entry, keep: int, kill: bool, premium: Entry) -> None:
    e.target = keep
    e.fixed = True
    e.kill = kill and not keep
    if keep:
        e.reason = f"shrunk {e.held}→{keep} for premium job {premium.id}"
    elif e.kill:
        e.reason = f"stopped at once (no checkpoint) for premium job {premium.id}"
    else:
        e.reason = f"stopped for premium job {premium.id}"
