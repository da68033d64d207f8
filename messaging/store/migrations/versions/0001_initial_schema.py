"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-26 13:17:41.375062
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
        "alert_topics",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("sns_topic_arn", sa.String(length=256), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_alert_topics")),
    )
    op.create_table(
        "blasts",
        sa.Column("blast_id", sa.String(length=128), nullable=False),
        sa.Column("topic", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.String(length=8), nullable=False),
        sa.Column("alert", sa.Text(), nullable=False),
        sa.Column("sns_message_id", sa.String(length=128), nullable=True),
        sa.Column("dry_run", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("is_test", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("send_by", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "expansion_cursor",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            server_default="0",
            nullable=False,
        ),
        sa.Column("stats", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expanded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("blast_id", name=op.f("pk_blasts")),
    )
    op.create_index(op.f("ix_blasts_created_at"), "blasts", ["created_at"], unique=False)
    op.create_table(
        "supporters",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("external_id", sa.String(length=128), nullable=False),
        sa.Column("first_name", sa.String(length=200), nullable=True),
        sa.Column("last_name", sa.String(length=200), nullable=True),
        sa.Column("phone", sa.String(length=16), nullable=True),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("postal_code", sa.String(length=10), nullable=True),
        sa.Column("state", sa.String(length=2), nullable=True),
        sa.Column("tags", sa.Text(), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=True),
        sa.Column("sms_opt_in", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("email_opt_in", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("first_sms_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_supporters")),
        sa.UniqueConstraint("external_id", name=op.f("uq_supporters_external_id")),
    )
    op.create_index(op.f("ix_supporters_email"), "supporters", ["email"], unique=False)
    op.create_index(op.f("ix_supporters_phone"), "supporters", ["phone"], unique=False)
    op.create_table(
        "suppression_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("value", sa.String(length=320), nullable=False),
        sa.Column("action", sa.String(length=8), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suppression_events")),
    )
    op.create_index(
        op.f("ix_suppression_events_channel_value"),
        "suppression_events",
        ["channel", "value"],
        unique=False,
    )
    op.create_table(
        "suppressions",
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("value", sa.String(length=320), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("channel", "value", name=op.f("pk_suppressions")),
    )
    op.create_table(
        "deliveries",
        sa.Column("blast_id", sa.String(length=128), nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column(
            "supporter_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("destination", sa.String(length=320), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("sender", sa.String(length=34), nullable=True),
        sa.Column("provider_message_id", sa.String(length=64), nullable=True),
        sa.Column("error_code", sa.String(length=32), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.SmallInteger(), server_default="0", nullable=False),
        sa.Column("segments", sa.SmallInteger(), nullable=True),
        sa.Column("deferred_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["blast_id"], ["blasts.blast_id"], name=op.f("fk_deliveries_blast_id_blasts")
        ),
        sa.PrimaryKeyConstraint("blast_id", "channel", "supporter_id", name=op.f("pk_deliveries")),
    )
    op.create_index(
        op.f("ix_deliveries_blast_id_channel_state"),
        "deliveries",
        ["blast_id", "channel", "state"],
        unique=False,
    )
    op.create_index(
        op.f("ix_deliveries_provider_message_id"),
        "deliveries",
        ["provider_message_id"],
        unique=False,
    )
    op.create_index(
        "ux_deliveries_destination",
        "deliveries",
        ["blast_id", "channel", "destination"],
        unique=True,
        postgresql_where=sa.text("state <> 'duplicate'"),
        sqlite_where=sa.text("state <> 'duplicate'"),
    )
    op.create_table(
        "subscriptions",
        sa.Column("topic", sa.String(length=64), nullable=False),
        sa.Column(
            "supporter_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["supporter_id"],
            ["supporters.id"],
            name=op.f("fk_subscriptions_supporter_id_supporters"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("topic", "supporter_id", name=op.f("pk_subscriptions")),
    )
    op.create_index(
        op.f("ix_subscriptions_supporter_id"), "subscriptions", ["supporter_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_subscriptions_supporter_id"), table_name="subscriptions")
    op.drop_table("subscriptions")
    op.drop_index("ux_deliveries_destination", table_name="deliveries")
    op.drop_index(op.f("ix_deliveries_provider_message_id"), table_name="deliveries")
    op.drop_index(op.f("ix_deliveries_blast_id_channel_state"), table_name="deliveries")
    op.drop_table("deliveries")
    op.drop_table("suppressions")
    op.drop_index(op.f("ix_suppression_events_channel_value"), table_name="suppression_events")
    op.drop_table("suppression_events")
    op.drop_index(op.f("ix_supporters_phone"), table_name="supporters")
    op.drop_index(op.f("ix_supporters_email"), table_name="supporters")
    op.drop_table("supporters")
    op.drop_index(op.f("ix_blasts_created_at"), table_name="blasts")
    op.drop_table("blasts")
    op.drop_table("alert_topics")
