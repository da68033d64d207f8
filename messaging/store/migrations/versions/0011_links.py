"""links: the tracked short links of each blast (contract §7 ``GET /l/{code}``)

One row per distinct URL of a blast's channel; a short link's code carries the row's id
and the recipient, HMAC-tagged (messaging/content/links.py). Clicks land on
``deliveries.clicked_at`` (migration 0009), variants on ``deliveries.variant``; a partial
index over the clicked rows counts a blast's clicks without reading its other rows.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 12:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "links",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("blast_id", sa.String(128), nullable=False),
        sa.Column("channel", sa.String(8), nullable=False),
        sa.Column("url_hash", sa.String(64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_links"),
    )
    op.create_index("ux_links_blast_url", "links", ["blast_id", "channel", "url_hash"], unique=True)
    # Outside a transaction and CONCURRENTLY: the ledger takes writes during a rolling update.
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_deliveries_clicked",
            "deliveries",
            ["blast_id", "channel"],
            postgresql_where=sa.text("clicked_at IS NOT NULL"),
            sqlite_where=sa.text("clicked_at IS NOT NULL"),
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    op.drop_index("ix_deliveries_clicked", table_name="deliveries")
    op.drop_index("ux_links_blast_url", table_name="links")
    op.drop_table("links")
