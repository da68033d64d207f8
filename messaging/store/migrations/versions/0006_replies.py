"""replies: every inbound SMS with its classification, supporter, blast and review

``inbound_messages`` (0002) kept the text and a keyword; ``replies`` also keeps what the
reply asked for in the supporter's own words (contract §12: opt_out, opt_in, help,
needs_review, other, and why), the supporter and the blast it answers, and a person's review
of the unclear ones. Existing inbound messages are copied over; ``inbound_messages`` stays
until nothing writes it any more.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 11:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "replies",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("message_sid", sa.String(length=64), nullable=True),
        sa.Column("from_number", sa.String(length=32), nullable=False),
        sa.Column("to_number", sa.String(length=32), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column(
            "supporter_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("blast_id", sa.String(length=128), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("review_verdict", sa.String(length=16), nullable=True),
        sa.Column("reviewed_by", sa.String(length=128), nullable=True),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["supporter_id"],
            ["supporters.id"],
            name=op.f("fk_replies_supporter_id_supporters"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_replies")),
        sa.UniqueConstraint("message_sid", name=op.f("uq_replies_message_sid")),
    )
    op.create_index(op.f("ix_replies_received_at"), "replies", ["received_at"], unique=False)
    op.create_index(op.f("ix_replies_blast_id_kind"), "replies", ["blast_id", "kind"], unique=False)
    op.create_index(op.f("ix_replies_from_number"), "replies", ["from_number"], unique=False)
    # Keyword actions of 0002 map onto the new kinds; text nobody acted on stays "other".
    op.execute(
        "INSERT INTO replies (message_sid, from_number, to_number, body, kind, reason,"
        " received_at) SELECT message_sid, from_number, to_number, body,"
        " CASE action WHEN 'stop' THEN 'opt_out' WHEN 'start' THEN 'opt_in'"
        " WHEN 'help' THEN 'help' ELSE 'other' END, action, received_at"
        " FROM inbound_messages ORDER BY id"
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_replies_from_number"), table_name="replies")
    op.drop_index(op.f("ix_replies_blast_id_kind"), table_name="replies")
    op.drop_index(op.f("ix_replies_received_at"), table_name="replies")
    op.drop_table("replies")
