"""no planner statistics on deliveries.blast_id (PostgreSQL)

A new blast's id is never in the column's statistics while it expands (ANALYZE has not seen
it), so the planner estimated its rows at ~1 and could probe "is this destination already
live in this blast" through the (blast, channel, state) index instead of the unique
(blast, channel, destination) one, reading every row of the blast per probe: a 20,000-row
blast after two others took 25 s to expand instead of 1 s. Without statistics the planner
assumes a blast holds a fixed small share of the ledger (0.5 %), which is always enough to
prefer the unique index for the probe, and still an index for everything else.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 17:45:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE deliveries ALTER COLUMN blast_id SET STATISTICS 0")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE deliveries ALTER COLUMN blast_id SET STATISTICS -1")
