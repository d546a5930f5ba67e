"""The store's jobs and their events (internal; see :mod:`tidal.control.store`)."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tidal.control import _rows
from tidal.control._store_base import StoreBase
from tidal.control.errors import JobIdTakenError, NotFoundError, StaleChangeError, StoreError
from tidal.control.records import EventRecord, JobRecord
from tidal.control.schema import events, jobs, tenants
from tidal.core import JobState, StateChange

_LIVE: Final = tuple(s.value for s in JobState if not s.is_terminal)
_JOB_COLUMNS: Final = (*jobs.c, tenants.c.name.label("tenant_name"))
_INSERT_JOB: Final = jobs.insert()
_INSERT_EVENT: Final = events.insert()


def _job_select() -> sa.Select[Any]:
    return sa.select(*_JOB_COLUMNS).join_from(jobs, tenants, jobs.c.tenant_id == tenants.c.id)


@functools.cache
def _list_query(by_tenant: bool, by_state: bool, paged: bool) -> sa.Select[Any]:
    """The page query of each shape, built once with its values as parameters (compiled
    once; no statement or cache key built per request)."""
    query = _job_select()
    if by_tenant:
        query = query.where(tenants.c.name == sa.bindparam("tenant"))
    if by_state:
        query = query.where(jobs.c.state.in_(sa.bindparam("states", expanding=True)))
    if paged:
        query = query.where(jobs.c.id < sa.bindparam("before"))
    return query.order_by(jobs.c.id.desc()).limit(sa.bindparam("limit"))


def _one_job(conn: Connection, job_id: str, tenant: str | None = None) -> JobRecord | None:
    query = _job_select().where(jobs.c.id == job_id)
    if tenant is not None:
        query = query.where(tenants.c.name == tenant)
    row = conn.execute(query).mappings().first()
    return None if row is None else _rows.job_of(row, row["tenant_name"])


def _reread(conn: Connection, job_id: str) -> JobRecord:
    """A job this transaction has just updated."""
    job = _one_job(conn, job_id)
    if job is None:
        raise StoreError(f"job {job_id!r} vanished inside its own transaction")
    return job


def _add_event(
    conn: Connection,
    job_id: str,
    at: float,
    old: JobState | None,
    new: JobState,
    reason: str,
    generation: int,
    placement: dict[str, int],
) -> None:
    # Parameters passed to execute(), not bound with .values(): the statement stays the
    # same object, compiled once, and no cache key is built per call.
    conn.execute(
        _INSERT_EVENT,
        {
            "job_id": job_id,
            "at": at,
            "old": None if old is None else old.value,
            "new": new.value,
            "reason": reason,
            "generation": generation,
            "placement": placement,
        },
    )


class JobsMixin(StoreBase):
    def insert_job(self, job: JobRecord) -> JobRecord:
        """Store a newly submitted job (its ``state`` and ``reason`` make its first event)."""
        with self._write() as conn:
            tenant_id = conn.execute(
                sa.select(tenants.c.id).where(tenants.c.name == job.tenant)
            ).scalar()
            if tenant_id is None:
                raise NotFoundError(f"no tenant {job.tenant!r}")
            try:
                conn.execute(_INSERT_JOB, _rows.job_values(job, tenant_id))
            except sa.exc.IntegrityError:
                raise JobIdTakenError(f"job id {job.id!r} is taken") from None
            _add_event(
                conn, job.id, job.submitted_at, None, job.state, job.reason, job.generation, {}
            )
        return job

    def get_job(self, job_id: str, tenant: str | None = None) -> JobRecord:
        """The job ``job_id``; with ``tenant``, only if that tenant owns it."""
        with self._read() as conn:
            job = _one_job(conn, job_id, tenant)
        if job is None:
            raise NotFoundError(f"no job {job_id!r}")
        return job

    def list_jobs(
        self,
        tenant: str | None = None,
        states: Sequence[JobState] | None = None,
        before: str | None = None,
        limit: int = 50,
    ) -> list[JobRecord]:
        """A page of jobs, newest first: those of ``tenant`` (every tenant's if ``None``),
        in ``states`` (any if ``None``), submitted before the job ``before``."""
        query = _list_query(tenant is not None, bool(states), before is not None)
        params: dict[str, Any] = {"tenant": tenant, "before": before, "limit": limit}
        params["states"] = [s.value for s in states] if states else None
        with self._read() as conn:
            rows = conn.execute(query, params).mappings().all()
        return [_rows.job_of(row, row["tenant_name"]) for row in rows]

    def live_jobs(self) -> list[JobRecord]:
        """Every job not yet ended, oldest first: what the reconcile loop loads at start."""
        query = _job_select().where(jobs.c.state.in_(_LIVE)).order_by(jobs.c.id)
        with self._read() as conn:
            rows = conn.execute(query).mappings().all()
        return [_rows.job_of(row, row["tenant_name"]) for row in rows]

    def last_job_id(self) -> str | None:
        with self._read() as conn:
            value: str | None = conn.execute(sa.select(sa.func.max(jobs.c.id))).scalar()
        return value

    def record_change(self, change: StateChange) -> JobRecord:
        """Apply a state change (made by :func:`tidal.core.transition`) and store it as an
        event, in one transaction: the job's state, placement, generation and reason;
        ``started_at`` the first time it starts; ``finished_at`` when it ends; ``restarts``
        counted on entering RESTARTING.

        The job must still be in ``change.old``: otherwise someone changed it first and
        :class:`StaleChangeError` says what it is now. Returns the updated job.
        """
        placement = _rows.placement_json(change.placement)
        values: dict[str, Any] = {
            "state": change.new.value,
            "placement": placement,
            "devices": change.placement.size,
            "generation": change.generation,
            "reason": change.reason,
        }
        if change.new is JobState.STARTING:
            values["started_at"] = sa.func.coalesce(jobs.c.started_at, change.at)
        if change.new.is_terminal:
            values["finished_at"] = change.at
        if change.new is JobState.RESTARTING:
            values["restarts"] = jobs.c.restarts + 1
        with self._write() as conn:
            done = conn.execute(
                jobs.update()
                .where(jobs.c.id == change.job_id, jobs.c.state == change.old.value)
                .values(**values)
            )
            if done.rowcount != 1:
                now = _one_job(conn, change.job_id)
                if now is None:
                    raise NotFoundError(f"no job {change.job_id!r}")
                raise StaleChangeError(
                    f"job {change.job_id!r} is {now.state.value}, not {change.old.value}: "
                    f"cannot record {change.old.value} -> {change.new.value}"
                )
            _add_event(
                conn,
                change.job_id,
                change.at,
                change.old,
                change.new,
                change.reason,
                change.generation,
                placement,
            )
            return _reread(conn, change.job_id)

    def request_cancel(self, job_id: str, reason: str, at: float) -> JobRecord:
        """Mark a live job for cancelling (the reconcile loop, the one writer of job state,
        ends it) and record the request as an event. Returns the job;
        :class:`StaleChangeError` if it has ended meanwhile."""
        with self._write() as conn:
            job = _one_job(conn, job_id)
            if job is None:
                raise NotFoundError(f"no job {job_id!r}")
            done = conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.state == job.state.value)
                .where(jobs.c.state.in_(_LIVE))
                .values(cancel_requested=True)
            )
            if done.rowcount != 1:
                raise StaleChangeError(f"job {job_id!r} is {job.state.value}: nothing to cancel")
            _add_event(
                conn,
                job_id,
                at,
                job.state,
                job.state,
                reason,
                job.generation,
                _rows.placement_json(job.placement),
            )
            return _reread(conn, job_id)

    def record_progress(
        self,
        job_id: str,
        step: int,
        samples_per_s: float | None,
        at: float,
        attained: float | None = None,
    ) -> None:
        """The job's latest progress report, and its attained service (device-seconds held
        while running) when given (no event: progress is not a state change)."""
        values: dict[str, Any] = {"step": step, "samples_per_s": samples_per_s, "progress_at": at}
        if attained is not None:
            values["attained"] = attained
        with self._write() as conn:
            done = conn.execute(jobs.update().where(jobs.c.id == job_id).values(**values))
        if done.rowcount != 1:
            raise NotFoundError(f"no job {job_id!r}")

    def set_plan_reasons(self, reasons: Mapping[str, str | None]) -> None:
        """The policy's latest reason for each job named (``None``: it gets what it asked
        for), in one transaction; jobs no longer stored are skipped."""
        if not reasons:
            return
        with self._write() as conn:
            for job_id, reason in reasons.items():
                conn.execute(jobs.update().where(jobs.c.id == job_id).values(plan_reason=reason))

    def events(self, job_id: str, limit: int = 500) -> tuple[list[EventRecord], int]:
        """The job's latest ``limit`` events, oldest first, and how many it has in all."""
        with self._read() as conn:
            total = conn.execute(
                sa.select(sa.func.count()).select_from(events).where(events.c.job_id == job_id)
            ).scalar_one()
            rows = (
                conn.execute(
                    events.select()
                    .where(events.c.job_id == job_id)
                    .order_by(events.c.id.desc())
                    .limit(limit)
                )
                .mappings()
                .all()
            )
        return [_rows.event_of(r) for r in reversed(rows)], int(total)


__all__ = ["JobsMixin"]
