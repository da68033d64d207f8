"""alert topics: a quiet window of their own

``alert_topics.quiet_hours`` (``HH:MM-HH:MM``, NULL: the fleet's ``QUIET_HOURS``) lets a
topic whose subscribers asked for live alerts (debate night) narrow or shift the window in
which its SMS wait (contract §6, ``rapid topics create NAME --quiet-hours``).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 11:45:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("alert_topics") as batch:
        batch.add_column(sa.Column("quiet_hours", sa.String(length=11), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alert_topics") as batch:
        batch.drop_column("quiet_hours")
