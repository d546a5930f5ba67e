"""The reconcile loop, a pass at a time, with the fake executor: the service's path from a
submission to a state in the store, on SQLite and PostgreSQL, without Ray."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tidal.control.fleet import FleetWatcher
from tidal.control.loop import LoopSettings, Reconciler
from tidal.control.models import JobSubmission
from tidal.control.records import TenantRecord
from tidal.control.service import Service
from tidal.core import JobState, Placement, make_policy
from tidal.core.book import JobBook
from tidal.core.fake import FakeExecutor


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def now(self) -> float:
        return self.t


def ray_node(name: str, devices: int = 4, kind: str = "cpu") -> dict[str, Any]:
    """A node as ``ray.nodes()`` describes it."""
    return {
        "NodeID": f"{name:0<40}".encode().hex()[:56],
        "Alive": True,
        "NodeManagerAddress": "127.0.0.1",
        "Resources": {"CPU": 2.0, f"tidal_dev_{kind}": float(devices)},
        "Labels": {"tidal-node": name},
    }


@dataclass
class Plane:
    """A loop over the real store and service, a fake executor and a fleet the test edits."""

    service: Service
    clock: Clock
    nodes: list[dict[str, Any]]
    tenant: TenantRecord
    loops: list[Reconciler] = field(default_factory=list)

    def loop(self) -> Reconciler:
        """A reconcile loop as ``tidal up`` builds one (a second call: a restarted one)."""
        book = JobBook()
        executor = FakeExecutor(book, self.clock)
        loop = Reconciler(
            store=self.service.store,
            policy=make_policy("tiered"),
            book=book,
            executor=executor,
            fleet=FleetWatcher(lambda: self.nodes),
            launches={},
            clock=self.clock,
            settings=LoopSettings(stop_grace=30.0, progress_every=0.0),
        )
        self.service.on_change(loop.notify)
        loop.load()
        self.loops.append(loop)
        return loop

    def submit(self, **spec: Any) -> str:
        fields = {"world": 4, "device_type": "cpu", "command": ["python", "train.py"]}
        fields.update(spec)
        return self.service.submit(self.tenant, JobSubmission(**fields)).id

    def state(self, job_id: str) -> JobState:
        return self.service.store.get_job(job_id).state

    def placement(self, job_id: str) -> Placement:
        return self.service.store.get_job(job_id).placement

    def reasons(self, job_id: str) -> list[tuple[str, str]]:
        events, _ = self.service.store.events(job_id)
        return [(e.new.value, e.reason) for e in events]


@pytest.fixture
def plane(service: Service, alice: TenantRecord) -> Iterator[Plane]:
    yield Plane(service, Clock(), [ray_node("n0"), ray_node("n1")], alice)


def fake(loop: Reconciler) -> FakeExecutor:
    executor = loop.executor
    assert isinstance(executor, FakeExecutor)
    return executor


def settle(loop: Reconciler, passes: int = 3) -> None:
    for _ in range(passes):
        loop.step()


def test_a_submission_is_started_and_every_change_stored(plane: Plane) -> None:
    loop = plane.loop()
    assert [n.name for n in loop.fleet.fleet.nodes] == ["n0", "n1"]
    assert {n.name for n in plane.service.nodes()} == {"n0", "n1"}
    job = plane.submit(tier="standard")
    settle(loop)
    assert plane.state(job) is JobState.STARTING
    assert plane.placement(job).size == 4
    fake(loop).workers_up(job)
    settle(loop)
    assert plane.state(job) is JobState.RUNNING
    fake(loop).workers_exit(job, 0)
    settle(loop)
    stored = plane.service.store.get_job(job)
    assert stored.state is JobState.SUCCEEDED and stored.devices == 0
    assert [s for s, _ in plane.reasons(job)] == ["pending", "starting", "running", "succeeded"]
    assert job not in loop.book  # ended: dropped from the loop's table


def test_cancel_is_carried_out_by_the_loop(plane: Plane) -> None:
    loop = plane.loop()
    waiting = plane.submit(device_type="gpu")  # no gpu nodes: it waits
    running = plane.submit(tier="premium")
    settle(loop)
    fake(loop).workers_up(running)
    settle(loop)
    for job in (waiting, running):
        asked = plane.service.cancel(plane.tenant, job)
        assert asked.cancel_requested
    settle(loop)
    assert plane.state(waiting) is JobState.CANCELLED
    assert plane.state(running) is JobState.CANCELLED
    assert [s for s, _ in plane.reasons(running)] == [
        "pending",
        "starting",
        "running",
        "running",  # the request, recorded as it came
        "stopping",
        "cancelled",
    ]
    assert fake(loop).killed == [running]


def test_drain_moves_jobs_off_at_a_cut_and_keeps_the_node_empty(plane: Plane) -> None:
    loop = plane.loop()
    job = plane.submit(tier="premium")
    settle(loop)
    fake(loop).workers_up(job)
    settle(loop)
    first = plane.placement(job).nodes
    admin_tenant = TenantRecord("root", True, 0.0)
    plane.service.drain(admin_tenant, first[0])
    settle(loop)
    assert plane.state(job) is JobState.STOPPING
    assert f"node {first[0]} drained" in plane.reasons(job)[-1][1]
    fake(loop).stop_done(job)  # it committed a checkpoint and exited
    settle(loop)
    assert plane.state(job) is JobState.STARTING
    assert first[0] not in plane.placement(job).nodes
    # Nothing new goes to the drained node either.
    other = plane.submit(tier="basic")
    settle(loop)
    assert plane.state(other) is JobState.PENDING
    plane.service.undrain(admin_tenant, first[0])
    settle(loop)
    assert plane.placement(other).nodes == first


def test_a_lost_node_restarts_its_jobs_on_the_others(plane: Plane) -> None:
    loop = plane.loop()
    job = plane.submit(tier="standard", world=2)
    settle(loop)
    fake(loop).workers_up(job)
    settle(loop)
    (lost,) = plane.placement(job).nodes
    plane.nodes[:] = [n for n in plane.nodes if n["Labels"]["tidal-node"] != lost]
    settle(loop)
    stored = plane.service.store.get_job(job)
    assert stored.state is JobState.STARTING and lost not in stored.placement.nodes
    assert ("restarting", f"node {lost} left the fleet") in plane.reasons(job)
    assert stored.restarts == 1 and loop.book[job].restarts == 0  # not the job's fault
    assert not next(n for n in plane.service.nodes() if n.name == lost).alive


def test_a_restarted_loop_adopts_what_runs_and_loses_nothing(plane: Plane) -> None:
    loop = plane.loop()
    jobs = [plane.submit(tier="basic", world=2) for _ in range(3)]
    settle(loop)
    for job in jobs:
        if plane.state(job) is JobState.STARTING:
            fake(loop).workers_up(job)
    settle(loop)
    before = {j: (plane.state(j), plane.placement(j)) for j in jobs}
    assert sum(1 for s, _ in before.values() if s is JobState.RUNNING) == 3
    again = plane.loop()  # the control plane restarted (a new process, the same store)
    settle(again)
    assert {j: (plane.state(j), plane.placement(j)) for j in jobs} == before
    assert sorted(r.id for r in again.book) == sorted(jobs)
    assert fake(again).applied == []  # nothing was started or stopped again


def test_progress_reaches_the_store(plane: Plane, tmp_path: Path) -> None:
    from tidal.core import ProgressReported

    loop = plane.loop()
    job = plane.submit(tier="basic")
    settle(loop)
    loop._fold([ProgressReported(job, plane.clock.t, 42, 10.0, 123.0)])
    stored = plane.service.store.get_job(job)
    assert (stored.step, stored.samples_per_s) == (42, 123.0)


def test_the_policys_reasons_and_attained_service_are_stored(plane: Plane) -> None:
    loop = plane.loop()
    big = plane.submit(tier="premium", world=8)  # the fleet has 8 devices: it takes them all
    small = plane.submit(tier="standard", world=2)
    settle(loop)
    fake(loop).workers_up(big)
    settle(loop)
    waiting = plane.service.store.get_job(small)
    assert waiting.state is JobState.PENDING and waiting.plan_reason
    plane.clock.t += 100.0
    from tidal.core import ProgressReported

    loop._fold([ProgressReported(big, plane.clock.t, 7, 0.0, 1.0)])
    assert plane.service.store.get_job(big).attained == pytest.approx(800.0)
    again = plane.loop()
    assert again.book[big].attained == pytest.approx(800.0)  # its LAS place survives a restart
    fake(again).workers_exit(big, 0)  # the restarted loop is the one in charge now
    settle(again)
    started = plane.service.store.get_job(small)
    assert started.state is JobState.STARTING and started.plan_reason is None
