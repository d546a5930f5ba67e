"""The first schema: tenants, tokens, jobs, events, nodes.

Revision ID: 0001
Revises:
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("is_admin", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    op.create_index("ix_tokens_tenant_id", "tokens", ["tenant_id"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenants.id"), nullable=False),
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
    )
    op.create_index("ix_jobs_tenant_id_id", "jobs", ["tenant_id", "id"])
    op.create_index("ix_jobs_state_id", "jobs", ["state", "id"])
    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("job_id", sa.String(16), sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("at", sa.Double, nullable=False),
        sa.Column("old", sa.String(16), nullable=True),
        sa.Column("new", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("placement", sa.JSON, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_events_job_id_id", "events", ["job_id", "id"])
    op.create_table(
        "nodes",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("device_type", sa.String(64), nullable=False),
        sa.Column("devices", sa.Integer, nullable=False),
        sa.Column("alive", sa.Boolean, nullable=False),
        sa.Column("drained", sa.Boolean, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("nodes")
    op.drop_index("ix_events_job_id_id", "events")
    op.drop_table("events")
    op.drop_index("ix_jobs_state_id", "jobs")
    op.drop_index("ix_jobs_tenant_id_id", "jobs")
    op.drop_table("jobs")
    op.drop_index("ix_tokens_tenant_id", "tokens")
    op.drop_table("tokens")
    op.drop_table("tenants")
