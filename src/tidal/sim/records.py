"""The simulator's private, mutable bookkeeping for one job. Never leaves :mod:`tidal.sim`."""

from __future__ import annotations

from tidal.core import EMPTY, JobSpec, JobState, JobView, Placement

_RUNNING = JobState.RUNNING


class SimJob:
    """Where one job stands, and everything the metrics need about its past.

    Time-integrated quantities are brought up to date by :meth:`settle`, which the
    executor calls before every change and the engine before every snapshot.
    """

    __slots__ = (
        "attained",
        "ckpt_work",
        "finish",
        "first_start",
        "generation",
        "held_s",
        "kill_at_phase_end",
        "killed_s",
        "last_checkpoint_at",
        "last_t",
        "migrations",
        "next_placement",
        "placed_at",
        "placement",
        "preemptions",
        "rate",
        "resizes",
        "restart_cost",
        "running_s",
        "since_ckpt_s",
        "size",
        "spec",
        "state",
        "stop_cost",
        "version",
        "view",
        "work_done",
    )

    def __init__(self, spec: JobSpec, stop_cost: float = 0.0, restart_cost: float = 0.0) -> None:
        self.spec = spec
        self.stop_cost = stop_cost  # the cost model's hints to the policy, in seconds
        self.restart_cost = restart_cost
        self.state = JobState.PENDING
        self.placement: Placement = EMPTY
        self.size = 0  # devices held (placement.size), cached
        self.work_done = 0.0
        self.ckpt_work = 0.0  # work saved by the last checkpoint (what a kill falls back to)
        self.attained = 0.0  # device-seconds held while RUNNING
        self.placed_at: float | None = None
        self.last_checkpoint_at: float | None = None
        self.preemptions = 0
        self.resizes = 0
        self.migrations = 0
        self.rate = 0.0  # work (device-seconds at W) per second while RUNNING
        self.last_t = spec.submit_time  # time the integrals below were settled to
        self.held_s = 0.0  # device-seconds held, any state
        self.running_s = 0.0  # device-seconds held while RUNNING
        self.since_ckpt_s = 0.0  # device-seconds RUNNING since the last checkpoint
        self.killed_s = 0.0  # device-seconds of work thrown away by kills
        self.first_start: float | None = None
        self.finish: float | None = None
        self.next_placement: Placement | None = None  # set while checkpointing for a move
        self.version = 0  # bumped to invalidate scheduled events
        self.generation = 0  # state changes so far (actions carry the one they were made for)
        self.kill_at_phase_end = False  # a stop that ran into its deadline ends as a kill
        self.view: JobView | None = None

    @property
    def id(self) -> str:
        return self.spec.id

    def settle(self, now: float) -> None:
        dt = now - self.last_t
        if dt > 0.0:
            self.last_t = now
            if self.size:
                used = self.size * dt
                self.held_s += used
                if self.state is _RUNNING:
                    self.running_s += used
                    self.attained += used
                    self.since_ckpt_s += used
                    self.work_done += self.rate * dt

    def make_view(self, now: float) -> JobView:
        """The job as the scheduler sees it at ``now`` (progress extrapolated, not settled)."""
        work_done = self.work_done
        attained = self.attained
        if self.state is _RUNNING:
            dt = now - self.last_t
            if dt > 0.0:
                work_done += self.rate * dt
                attained += self.size * dt
        work = self.spec.work
        view = JobView(
            self.spec,
            self.state,
            self.placement,
            work_done if work_done < work else work,
            attained,
            self.placed_at,
            self.last_checkpoint_at,
            self.preemptions,
            self.generation,
            self.stop_cost,
            self.restart_cost,
            self.spec.estimate,
        )
        self.view = view
        return view
