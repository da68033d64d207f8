"""blast counts: ledger rows per (blast, channel, state), kept with the writes

Reconcile, ``/metrics``, ``blast show/list`` and the backlog used to count the ledger (a
grouped scan of every live blast's rows, each pass and look). Triggers on ``deliveries``
now keep ``blast_counts`` in the transaction of every ledger write, whichever code path
writes (expansion pages, claims, outcomes, the sweep, webhooks), so those reads cost the
same at 10 thousand or 10 million rows (issue #21).

- PostgreSQL: statement-level triggers with transition tables append one row per (blast,
  channel, state) and statement to ``blast_count_deltas``; appending never waits on another
  sender's counter row, so concurrent batches of one blast neither queue nor deadlock. The
  scheduler folds the deltas into ``blast_counts``; readers add both.
- SQLite: row triggers update ``blast_counts`` directly (SQLite has one writer at a time).
- No DELETE trigger: deleting ledger rows is ``rapid ledger prune``, which keeps the
  blast's summary.

The upgrade backfills ``blast_counts`` from the ledger (one grouped scan, once).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 12:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION rapid_count_deliveries() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO blast_count_deltas (blast_id, channel, state, n)
        SELECT blast_id, channel, state, count(*) FROM new_rows GROUP BY 1, 2, 3;
    ELSE
        -- Every UPDATE of the ledger fires this; only a changed state leaves a net delta.
        INSERT INTO blast_count_deltas (blast_id, channel, state, n)
        SELECT blast_id, channel, state, sum(n) FROM (
            SELECT blast_id, channel, state, 1 AS n FROM new_rows
            UNION ALL
            SELECT blast_id, channel, state, -1 AS n FROM old_rows
        ) moved
        GROUP BY 1, 2, 3
        HAVING sum(n) <> 0;
    END IF;
    RETURN NULL;
END
$$
"""

_PG_TRIGGERS = (
    "CREATE TRIGGER deliveries_count_insert AFTER INSERT ON deliveries "
    "REFERENCING NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION rapid_count_deliveries()",
    "CREATE TRIGGER deliveries_count_update AFTER UPDATE ON deliveries "
    "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION rapid_count_deliveries()",
)

_SQLITE_TRIGGERS = (
    """
CREATE TRIGGER deliveries_count_insert AFTER INSERT ON deliveries
BEGIN
    INSERT INTO blast_counts (blast_id, channel, state, n)
    VALUES (NEW.blast_id, NEW.channel, NEW.state, 1)
    ON CONFLICT (blast_id, channel, state) DO UPDATE SET n = n + 1;
END
""",
    """
CREATE TRIGGER deliveries_count_update AFTER UPDATE OF state ON deliveries
WHEN OLD.state <> NEW.state
BEGIN
    UPDATE blast_counts SET n = n - 1
    WHERE blast_id = OLD.blast_id AND channel = OLD.channel AND state = OLD.state;
    INSERT INTO blast_counts (blast_id, channel, state, n)
    VALUES (NEW.blast_id, NEW.channel, NEW.state, 1)
    ON CONFLICT (blast_id, channel, state) DO UPDATE SET n = n + 1;
END
""",
)


def upgrade() -> None:
    op.create_table(
        "blast_counts",
        sa.Column("blast_id", sa.String(128), nullable=False),
        sa.Column("channel", sa.String(8), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("blast_id", "channel", "state", name="pk_blast_counts"),
    )
    op.create_table(
        "blast_count_deltas",
        sa.Column("id", _Id, autoincrement=True, nullable=False),
        sa.Column("blast_id", sa.String(128), nullable=False),
        sa.Column("channel", sa.String(8), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_blast_count_deltas"),
    )
    op.create_index(
        "ix_blast_count_deltas_blast_id", "blast_count_deltas", ["blast_id"], unique=False
    )
    # Triggers first: on PostgreSQL creating one locks out ledger writers until this
    # migration commits, so the backfill below and the triggers never miss or double a row.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        for statement in _PG_TRIGGERS:
            op.execute(statement)
    else:
        for statement in _SQLITE_TRIGGERS:
            op.execute(statement)
    op.execute(
        "INSERT INTO blast_counts (blast_id, channel, state, n) "
        "SELECT blast_id, channel, state, count(*) FROM deliveries GROUP BY 1, 2, 3"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS deliveries_count_update" + _on_deliveries())
    op.execute("DROP TRIGGER IF EXISTS deliveries_count_insert" + _on_deliveries())
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS rapid_count_deliveries()")
    op.drop_index("ix_blast_count_deltas_blast_id", table_name="blast_count_deltas")
    op.drop_table("blast_count_deltas")
    op.drop_table("blast_counts")


def _on_deliveries() -> str:
    return " ON deliveries" if op.get_bind().dialect.name == "postgresql" else ""
