"""The service facade: what it writes, whom it tells, and who may see what."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tidal.control.credentials import ensure_admin_token, read_credentials, write_credentials
from tidal.control.errors import AuthError, ConflictError, ForbiddenError, NotFoundError
from tidal.control.ids import JobIdMint
from tidal.control.models import JobSubmission
from tidal.control.records import JobRecord, NodeRecord, TenantRecord
from tidal.control.service import Notice, Service
from tidal.core import JobState, Placement, transition


def submission(**fields: object) -> JobSubmission:
    return JobSubmission.model_validate(
        {"name": "lm", "world": 4, "command": ["python", "train.py"], **fields}
    )


def start(service: Service, job: JobRecord, placement: Placement) -> JobRecord:
    """What the reconcile loop does when it places a job."""
    return service.store.record_change(
        transition(
            job.id, job.state, JobState.STARTING, 5.0, "placed", job.generation + 1, placement
        )
    )


def test_submit_stores_the_spec_and_tells_the_hooks(service: Service, alice: TenantRecord) -> None:
    seen: list[Notice] = []
    service.on_change(seen.append)
    job = service.submit(alice, submission(env={"A": "1"}, declared_hours=2.5, tier="premium"))
    assert seen == [job]
    stored = service.store.get_job(job.id)
    assert stored == job
    assert (stored.tenant, stored.state, stored.env, stored.declared_hours) == (
        "alice",
        JobState.PENDING,
        {"A": "1"},
        2.5,
    )
    second = service.submit(alice, submission())
    assert second.id > job.id


def test_a_failing_hook_does_not_fail_the_request(service: Service, alice: TenantRecord) -> None:
    def broken(_notice: Notice) -> None:
        raise RuntimeError("loop is down")

    seen: list[Notice] = []
    service.on_change(broken)
    service.on_change(seen.append)
    job = service.submit(alice, submission())
    assert seen == [job]


def test_tenants_see_only_their_jobs(
    service: Service, alice: TenantRecord, admin: TenantRecord
) -> None:
    service.add_tenant(admin, "bob")
    bob = service.store.get_tenant("bob")
    mine = service.submit(alice, submission())
    theirs = service.submit(bob, submission())
    assert [j.id for j in service.list_jobs(alice)] == [mine.id]
    assert [j.id for j in service.list_jobs(alice, tenant="bob")] == []
    assert [j.id for j in service.list_jobs(admin)] == [theirs.id, mine.id]
    assert [j.id for j in service.list_jobs(admin, tenant="bob")] == [theirs.id]
    for act in (service.get, service.cancel, service.events, service.logs):
        with pytest.raises(NotFoundError, match=theirs.id):
            act(alice, theirs.id)
    assert service.get(admin, mine.id) == mine
    assert service.store.get_job(theirs.id).state is JobState.PENDING


def test_cancel_of_a_waiting_job_asks_the_loop(service: Service, alice: TenantRecord) -> None:
    seen: list[Notice] = []
    service.on_change(seen.append)
    job = service.submit(alice, submission())
    asked = service.cancel(alice, job.id)
    # The loop is the one writer of state: the job waits for it, marked.
    assert asked.state is JobState.PENDING and asked.cancel_requested
    assert asked.generation == 0 and seen[-1] == asked
    assert service.cancel(alice, job.id) == asked  # again: nothing more happens
    events, _ = service.events(alice, job.id)
    assert [(e.old, e.new, e.reason) for e in events] == [
        (None, JobState.PENDING, "submitted by alice"),
        (JobState.PENDING, JobState.PENDING, "cancel requested by alice"),
    ]


def test_cancel_of_a_running_job_asks_the_loop(service: Service, alice: TenantRecord) -> None:
    seen: list[Notice] = []
    job = service.submit(alice, submission())
    start(service, job, Placement.of({"n0": 4}))
    service.on_change(seen.append)
    asked = service.cancel(alice, job.id)
    assert asked.state is JobState.STARTING and asked.cancel_requested
    assert seen == [asked]
    assert service.cancel(alice, job.id) == asked
    assert len(seen) == 1


def test_cancel_of_an_ended_job_is_a_conflict(service: Service, alice: TenantRecord) -> None:
    job = service.submit(alice, submission())
    started = start(service, job, Placement.of({"n0": 4}))
    service.store.record_change(
        transition(job.id, started.state, JobState.SUCCEEDED, 9.0, "exit 0", 2)
    )
    with pytest.raises(ConflictError, match="already succeeded"):
        service.cancel(alice, job.id)


def test_tokens_authenticate_their_tenant(service: Service, admin: TenantRecord) -> None:
    token = service.add_tenant(admin, "carol")
    assert service.authenticate(token).name == "carol"
    assert service.authenticate(token).name == "carol"  # from the cache
    other = service.issue_token(admin, "carol")
    assert other != token and service.authenticate(other).name == "carol"
    for bad in ("", "nonsense", token[:-1] + ("A" if token[-1] != "A" else "B")):
        with pytest.raises(AuthError):
            service.authenticate(bad)
    tampered = "tidal_000000000000_" + token.split("_", 2)[2]
    with pytest.raises(AuthError, match="unknown token"):
        service.authenticate(tampered)


def test_only_an_admin_manages_tenants_and_nodes(
    service: Service, alice: TenantRecord, admin: TenantRecord
) -> None:
    service.store.upsert_node("n0", "gpu", 8, True, 1.0)
    with pytest.raises(ForbiddenError, match="alice"):
        service.add_tenant(alice, "mallory")
    with pytest.raises(ForbiddenError):
        service.drain(alice, "n0")
    with pytest.raises(ForbiddenError):
        service.tenants(alice)
    seen: list[Notice] = []
    service.on_change(seen.append)
    node = service.drain(admin, "n0")
    assert isinstance(node, NodeRecord) and node.drained and seen == [node]
    assert service.store.drained_nodes() == {"n0"}
    assert not service.undrain(admin, "n0").drained
    with pytest.raises(NotFoundError, match="n7"):
        service.drain(admin, "n7")


def test_the_admin_token_is_made_once_and_kept(service: Service, tmp_path: Path) -> None:
    first = ensure_admin_token(service, tmp_path)
    assert service.authenticate(first).is_admin
    write_credentials(tmp_path, "http://127.0.0.1:1", first)
    assert (tmp_path / "server.json").stat().st_mode & 0o777 == 0o600
    assert ensure_admin_token(service, tmp_path) == first
    (tmp_path / "server.json").unlink()
    second = ensure_admin_token(service, tmp_path)
    assert second != first and service.authenticate(second).is_admin
    creds = read_credentials(tmp_path)
    assert creds is None
    write_credentials(tmp_path, "http://127.0.0.1:2", "tidal_000000000000_" + "x" * 43)
    third = ensure_admin_token(service, tmp_path)
    assert third not in (first, second) and service.authenticate(third).is_admin


def test_ids_taken_by_another_writer_are_skipped(service: Service, alice: TenantRecord) -> None:
    first = service.submit(alice, submission())
    # Another process (a second control plane, a bulk import) took ids far ahead.
    ahead = JobIdMint(after=first.id, clock=lambda: 4_000_000_000.0)
    taken = [service.store.insert_job(replace(first, id=ahead.next())).id for _ in range(3)]
    # Our own mint still stands just after `first`, at the same clock reading.
    service._mint = JobIdMint(after=first.id, clock=lambda: 4_000_000_000.0)
    job = service.submit(alice, submission())
    assert job.id > max(taken)


def test_a_restarted_service_keeps_every_job_and_continues_the_ids(
    db_url: str, tmp_path: Path
) -> None:
    from tidal.control.store import open_store

    store = open_store(db_url)
    first = Service(store, tmp_path, clock=lambda: 1_900_000_000.0)
    token = first.add_tenant(None, "alice")
    alice = first.authenticate(token)
    before = [first.submit(alice, submission()).id for _ in range(5)]
    store.close()
    reopened = open_store(db_url)
    # The new process's clock stands behind the old one's: ids still go on increasing.
    second = Service(reopened, tmp_path, clock=lambda: 1_800_000_000.0)
    assert second.authenticate(token).name == "alice"
    after = second.submit(alice, submission())
    assert after.id > max(before)
    assert [j.id for j in second.list_jobs(alice)] == [after.id, *before[::-1]]
    reopened.close()
