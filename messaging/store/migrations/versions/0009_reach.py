"""reach: custom fields of supporters, clicks and variants on the ledger

``supporters.fields`` keeps the columns of an import that the contract does not name
(contract §5) as one JSON object per supporter: JSONB on PostgreSQL, with a GIN index
(``jsonb_path_ops``) that serves the ``audience.fields`` filter (``fields @> {…}``); JSON
text on SQLite. ``deliveries.clicked_at`` is when the recipient first followed a tracked
link (set by ``GET /l/{code}``; read by exports and ``from_blast.clicked``), and
``deliveries.variant`` which of an alert's variants the row got (NULL: no variants).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 11:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("supporters") as batch:
        batch.add_column(sa.Column("fields", _JSON, nullable=True))
    # Outside a transaction and CONCURRENTLY: a rolling update must not lock the supporters
    # table's writes (an import) while the index builds.
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_supporters_fields",
            "supporters",
            ["fields"],
            postgresql_using="gin",
            postgresql_ops={"fields": "jsonb_path_ops"},
            postgresql_concurrently=True,
        )
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("clicked_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("variant", sa.SmallInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("variant")
        batch.drop_column("clicked_at")
    op.drop_index("ix_supporters_fields", table_name="supporters")
    with op.batch_alter_table("supporters") as batch:
        batch.drop_column("fields")
