"""The store on SQLite and on PostgreSQL: jobs, events, paging, state changes, nodes,
tenants, and a schema that the migrations and ``tidal.control.schema`` agree on."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tidal.control.errors import ConflictError, NotFoundError, StaleChangeError, StoreError
from tidal.control.ids import JobIdMint
from tidal.control.pgtemp import TempPostgres
from tidal.control.records import CheckpointSettings, JobRecord
from tidal.control.schema import metadata
from tidal.control.store import Store, normalize_url, open_store
from tidal.control.tokens import new_token
from tidal.core import EMPTY, JobState, Placement, Tier, transition

_MINT = JobIdMint()


def make_job(tenant: str = "alice", **changes: object) -> JobRecord:
    job = JobRecord(
        id=_MINT.next(),
        tenant=tenant,
        name="lm",
        tier=Tier.BASIC,
        world=4,
        min_devices=1,
        max_devices=None,
        device_type="gpu",
        command=("python", "train.py", "--epochs", "3"),
        workdir="/home/alice/lm",
        env={"SEED": "1", "NOTE": "ünïcode ✓"},
        declared_steps=1000,
        declared_hours=None,
        checkpoint=CheckpointSettings(every_steps=100, every_s=None, keep=2),
        max_restarts=3,
        state=JobState.PENDING,
        placement=EMPTY,
        generation=0,
        step=None,
        samples_per_s=None,
        progress_at=None,
        restarts=0,
        reason="submitted",
        cancel_requested=False,
        submitted_at=1_800_000_000.25,
        started_at=None,
        finished_at=None,
    )
    return replace(job, **changes)  # type: ignore[arg-type]


@pytest.fixture
def tenants(store: Store) -> Store:
    store.create_tenant("alice", False, 1.0)
    store.create_tenant("bob", False, 2.0)
    return store


def test_a_job_round_trips(tenants: Store) -> None:
    job = tenants.insert_job(make_job())
    assert tenants.get_job(job.id) == job
    assert tenants.get_job(job.id, "alice") == job
    with pytest.raises(NotFoundError, match=job.id):
        tenants.get_job(job.id, "bob")
    with pytest.raises(NotFoundError):
        tenants.get_job("j-00000000")
    events, total = tenants.events(job.id)
    assert total == 1 and events[0].old is None and events[0].new is JobState.PENDING
    with pytest.raises(ConflictError):
        tenants.insert_job(job)
    with pytest.raises(NotFoundError, match="carol"):
        tenants.insert_job(make_job(tenant="carol"))


def test_pages_are_newest_first_by_tenant_and_state(tenants: Store) -> None:
    ids = [tenants.insert_job(make_job(tenant="alice" if i % 3 else "bob")).id for i in range(30)]
    alices = [i for n, i in enumerate(ids) if n % 3]
    first = tenants.list_jobs("alice", limit=7)
    assert [j.id for j in first] == alices[::-1][:7]
    second = tenants.list_jobs("alice", before=first[-1].id, limit=100)
    assert [j.id for j in first + second] == alices[::-1]
    assert len(tenants.list_jobs(None, limit=500)) == 30
    tenants.record_change(transition(ids[4], JobState.PENDING, JobState.CANCELLED, 5.0, "x", 1))
    assert [j.id for j in tenants.list_jobs(None, [JobState.CANCELLED])] == [ids[4]]
    assert [j.id for j in tenants.list_jobs("bob", [JobState.CANCELLED])] == []
    assert len(tenants.live_jobs()) == 29
    assert tenants.last_job_id() == ids[-1]


def test_record_change_updates_the_row_and_stores_the_event(tenants: Store) -> None:
    job = tenants.insert_job(make_job())
    here = Placement.of({"n1": 2, "n0": 2})
    started = tenants.record_change(
        transition(job.id, JobState.PENDING, JobState.STARTING, 10.0, "placed on 4", 1, here)
    )
    assert started.state is JobState.STARTING and started.placement == here
    assert started.devices == 4 and started.generation == 1 and started.started_at == 10.0
    running = tenants.record_change(
        transition(job.id, JobState.STARTING, JobState.RUNNING, 11.0, "running", 2, here)
    )
    failed = tenants.record_change(
        transition(job.id, JobState.RUNNING, JobState.RESTARTING, 12.0, "worker 1 died", 3)
    )
    assert failed.restarts == 1 and failed.devices == 0 and failed.reason == "worker 1 died"
    again = tenants.record_change(
        transition(job.id, JobState.RESTARTING, JobState.STARTING, 13.0, "resumed", 4, here)
    )
    assert again.started_at == 10.0  # the first start stays
    assert running.finished_at is None
    tenants.record_change(
        transition(job.id, JobState.STARTING, JobState.SUCCEEDED, 20.0, "exit 0", 5)
    )
    done = tenants.get_job(job.id)
    assert done.state is JobState.SUCCEEDED and done.finished_at == 20.0
    events, total = tenants.events(job.id)
    assert total == 6
    assert [(e.old, e.new) for e in events][1:3] == [
        (JobState.PENDING, JobState.STARTING),
        (JobState.STARTING, JobState.RUNNING),
    ]
    assert events[1].placement == here and events[3].reason == "worker 1 died"
    latest, _ = tenants.events(job.id, limit=2)
    assert [e.new for e in latest] == [JobState.STARTING, JobState.SUCCEEDED]


def test_a_stale_change_is_refused_and_changes_nothing(tenants: Store) -> None:
    job = tenants.insert_job(make_job())
    tenants.record_change(transition(job.id, JobState.PENDING, JobState.CANCELLED, 3.0, "c", 1))
    stale = transition(job.id, JobState.PENDING, JobState.STARTING, 4.0, "late", 1)
    with pytest.raises(StaleChangeError, match="cancelled, not pending"):
        tenants.record_change(stale)
    assert tenants.get_job(job.id).state is JobState.CANCELLED
    assert tenants.events(job.id)[1] == 2
    with pytest.raises(NotFoundError):
        tenants.record_change(replace(stale, job_id="j-zzzzzzzz"))  # type: ignore[arg-type]


def test_concurrent_changes_of_one_job_let_exactly_one_win(tenants: Store) -> None:
    job = tenants.insert_job(make_job())
    outcomes: list[str] = []
    barrier = threading.Barrier(6)

    def change(k: int) -> None:
        barrier.wait()
        target = JobState.CANCELLED if k % 2 else JobState.STARTING
        try:
            tenants.record_change(transition(job.id, JobState.PENDING, target, 1.0, f"t{k}", 1))
            outcomes.append("won")
        except StaleChangeError:
            outcomes.append("stale")

    threads = [threading.Thread(target=change, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["stale"] * 5 + ["won"]
    assert tenants.events(job.id)[1] == 2


def test_cancel_request_and_progress(tenants: Store) -> None:
    job = tenants.insert_job(make_job())
    ended = tenants.insert_job(make_job(id="j-00000002"))
    tenants.record_change(transition(ended.id, JobState.PENDING, JobState.FAILED, 2.0, "x", 1))
    with pytest.raises(StaleChangeError, match="failed: nothing to cancel"):
        tenants.request_cancel(ended.id, "cancel requested", 2.0)
    tenants.record_change(
        transition(job.id, JobState.PENDING, JobState.STARTING, 3.0, "p", 1, Placement.of({"a": 1}))
    )
    asked = tenants.request_cancel(job.id, "cancel requested by alice", 4.0)
    assert asked.cancel_requested and asked.state is JobState.STARTING
    last = tenants.events(job.id)[0][-1]
    assert (last.old, last.new, last.reason) == (
        JobState.STARTING,
        JobState.STARTING,
        "cancel requested by alice",
    )
    tenants.record_progress(job.id, 120, 3456.5, 5.0)
    seen = tenants.get_job(job.id)
    assert (seen.step, seen.samples_per_s, seen.progress_at) == (120, 3456.5, 5.0)
    with pytest.raises(NotFoundError):
        tenants.record_progress("j-zzzzzzzz", 1, None, 5.0)


def test_nodes_drain_and_holdings(tenants: Store) -> None:
    tenants.upsert_node("n1", "gpu", 8, True, 1.0)
    tenants.upsert_node("n0", "gpu", 8, True, 1.0)
    drained = tenants.set_drained("n1", True)
    assert drained.drained
    again = tenants.upsert_node("n1", "gpu", 4, False, 2.0)
    assert again.drained and again.devices == 4 and not again.alive
    assert tenants.drained_nodes() == frozenset({"n1"})
    with pytest.raises(NotFoundError, match="n9"):
        tenants.set_drained("n9", True)
    a = tenants.insert_job(make_job())
    b = tenants.insert_job(make_job(tenant="bob"))
    tenants.record_change(
        transition(a.id, JobState.PENDING, JobState.STARTING, 3, "p", 1, Placement.of({"n0": 3}))
    )
    tenants.record_change(
        transition(
            b.id, JobState.PENDING, JobState.STARTING, 3, "p", 1, Placement.of({"n0": 1, "n1": 2})
        )
    )
    n0, n1 = tenants.nodes()
    assert (n0.name, n0.used, n0.free) == ("n0", 4, 4)
    assert {(h.job_id, h.tenant, h.devices) for h in n0.held} == {
        (a.id, "alice", 3),
        (b.id, "bob", 1),
    }
    assert n1.free == 2 and tenants.set_drained("n1", False).drained is False


def test_tenants_and_tokens(tenants: Store) -> None:
    with pytest.raises(ConflictError, match="alice"):
        tenants.create_tenant("alice", True, 3.0)
    token = new_token()
    tenants.add_token("bob", token, 4.0)
    owner = tenants.token_owner(token.token_id)
    assert owner is not None and owner[0] == token.secret_hash and owner[1].name == "bob"
    assert tenants.token_owner("000000000000") is None
    with pytest.raises(NotFoundError):
        tenants.add_token("carol", new_token(), 4.0)
    assert [t.name for t in tenants.tenants()] == ["alice", "bob"]


def test_the_migrations_build_the_schema_the_code_describes(store: Store) -> None:
    with store.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
        version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    assert differences == []
    assert version == "0002"


def test_a_store_at_the_first_schema_upgrades_and_keeps_its_jobs(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config

    from tidal.control._store_base import MIGRATIONS, make_engine

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO tenants (name, is_admin, created_at) VALUES ('a', 0, 1)"))
    engine.dispose()
    old = Store(make_engine(url))
    job = old.insert_job(make_job(tenant="a"))  # written by code that knows 0002: same columns
    old.close()
    store = open_store(url)  # applies 0002
    try:
        kept = store.get_job(job.id)
        assert (kept.plan_reason, kept.attained) == (None, 0.0)
        store.set_plan_reasons({job.id: "waiting: 2 of 4 devices free"})
        store.record_progress(job.id, 5, None, 9.0, attained=12.5)
        kept = store.get_job(job.id)
        assert (kept.plan_reason, kept.attained, kept.step) == (
            "waiting: 2 of 4 devices free",
            12.5,
            5,
        )
    finally:
        store.close()


def test_opening_twice_applies_nothing_new_and_keeps_data(db_url: str) -> None:
    first = open_store(db_url)
    first.create_tenant("alice", False, 1.0)
    first.close()
    second = open_store(db_url)
    assert [t.name for t in second.tenants()] == ["alice"]
    second.close()


def test_a_fresh_postgres_database_is_migrated_on_open(postgres: TempPostgres) -> None:
    url = postgres.create_database("tidal_fresh")
    store = open_store(url)
    try:
        assert store.dialect == "postgresql" and store.tenants() == []
    finally:
        store.close()


def test_bad_urls_name_the_url() -> None:
    with pytest.raises(StoreError, match="mysql"):
        open_store("mysql://u@h/db")
    with pytest.raises(StoreError, match="needs a file"):
        open_store("sqlite://")
    with pytest.raises(StoreError, match="not a database URL"):
        open_store("no url at all")
    assert normalize_url("postgresql://u@h/d") == "postgresql+psycopg://u@h/d"
    assert normalize_url("postgres://u@h/d") == "postgresql+psycopg://u@h/d"
