"""The store's tables (SQLAlchemy Core), as the latest migration leaves them.

The schema itself is created and changed only by the Alembic migrations in
``tidal/control/migrations`` (applied on start); this module describes it for queries, and
a test holds the two to each other. Times are seconds since the epoch (double precision);
placements are JSON objects ``{node: count}``; job ids sort as jobs were submitted.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = ["events", "jobs", "metadata", "nodes", "tenants", "tokens"]

metadata = sa.MetaData()

tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("is_admin", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sqlite_autoincrement=True,
)

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenants.id"), nullable=False, index=True),
    sa.Column("secret_hash", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenants.id"), nullable=False),
    # submission
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("tier", sa.String(16), nullable=False),
    sa.Column("world", sa.Integer, nullable=False),
    sa.Column("min_devices", sa.Integer, nullable=False),
    sa.Column("max_devices", sa.Integer, nullable=True),
    sa.Column("device_type", sa.String(64), nullable=False),
    sa.Column("command", sa.JSON, nullable=False),
    sa.Column("workdir", sa.Text, nullable=True),
    sa.Column("env", sa.JSON, nullable=False),
    sa.Column("declared_steps", sa.BigInteger, nullable=True),
    sa.Column("declared_hours", sa.Double, nullable=True),
    sa.Column("checkpoint", sa.JSON, nullable=False),
    sa.Column("max_restarts", sa.Integer, nullable=False),
    # status
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("placement", sa.JSON, nullable=False),
    sa.Column("devices", sa.Integer, nullable=False),
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("step", sa.BigInteger, nullable=True),
    sa.Column("samples_per_s", sa.Double, nullable=True),
    sa.Column("progress_at", sa.Double, nullable=True),
    sa.Column("restarts", sa.Integer, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("cancel_requested", sa.Boolean, nullable=False),
    sa.Column("submitted_at", sa.Double, nullable=False),
    sa.Column("started_at", sa.Double, nullable=True),
    sa.Column("finished_at", sa.Double, nullable=True),
    sa.Column("plan_reason", sa.Text, nullable=True),
    sa.Column("attained", sa.Double, nullable=False, server_default=sa.text("0")),
    # A tenant's page of jobs, newest first; every job in some states (live jobs, ls --state).
    sa.Index("ix_jobs_tenant_id_id", "tenant_id", "id"),
    sa.Index("ix_jobs_state_id", "state", "id"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("job_id", sa.String(16), sa.ForeignKey("jobs.id"), nullable=False),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("old", sa.String(16), nullable=True),
    sa.Column("new", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("placement", sa.JSON, nullable=False),
    sa.Index("ix_events_job_id_id", "job_id", "id"),
    sqlite_autoincrement=True,
)

nodes = sa.Table(
    "nodes",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("device_type", sa.String(64), nullable=False),
    sa.Column("devices", sa.Integer, nullable=False),
    sa.Column("alive", sa.Boolean, nullable=False),
    sa.Column("drained", sa.Boolean, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)
