"""Jobs keep the policy's latest reason and their attained service.

``plan_reason``: why the scheduler gives a job less than it asked for, as of the last
round that said something new about it (``tidal ls`` shows it for waiting and shrunk jobs).
``attained``: device-seconds held while running, so a restarted control plane keeps each
job's place in least-attained-service order.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (SQLite and PostgreSQL both have it): a batch copy of the table would
    # trip SQLite's foreign keys from events to jobs.
    op.add_column("jobs", sa.Column("plan_reason", sa.Text, nullable=True))
    op.add_column(
        "jobs", sa.Column("attained", sa.Double, nullable=False, server_default=sa.text("0"))
    )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("attained")
        batch.drop_column("plan_reason")
