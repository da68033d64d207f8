"""blast lifecycle: why a blast is paused, who asked for and approved it, when it is due

A paused blast says why (``pause_reason``: operator, provider_auth, carrier_filtering,
failure_rate, optout_rate) and, in free text, what tripped it (``pause_detail``). A blast that
needs approval records who requested and who approved it; a scheduled blast records when it
is due (``send_at``). All nullable: existing blasts keep their meaning unchanged.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 10:55:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("blasts") as batch:
        batch.add_column(sa.Column("pause_reason", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("pause_detail", sa.Text(), nullable=True))
        batch.add_column(sa.Column("requested_by", sa.Text(), nullable=True))
        batch.add_column(sa.Column("approved_by", sa.Text(), nullable=True))
        batch.add_column(sa.Column("send_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("blasts") as batch:
        batch.drop_column("send_at")
        batch.drop_column("approved_by")
        batch.drop_column("requested_by")
        batch.drop_column("pause_detail")
        batch.drop_column("pause_reason")
