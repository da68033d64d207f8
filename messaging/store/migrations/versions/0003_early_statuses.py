"""early status callbacks, parked until the sender records the message SID

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 14:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "early_statuses",
        sa.Column("provider_message_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("error_code", sa.String(length=32), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("provider_message_id", name=op.f("pk_early_statuses")),
    )
    op.create_index(
        op.f("ix_early_statuses_received_at"), "early_statuses", ["received_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_early_statuses_received_at"), table_name="early_statuses")
    op.drop_table("early_statuses")
