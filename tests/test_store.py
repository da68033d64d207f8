"""The schema migrates the same on both databases, and its guarantees hold on both."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, inspect
from sqlalchemy.exc import IntegrityError

from messaging.store.db import current_revision, migrate
from messaging.store.schema import blasts, deliveries, metadata


def test_migrations_create_every_table_and_are_idempotent(engine: Engine) -> None:
    # Given a migrated database, when migrating again, then nothing changes and all tables exist.
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from messaging.store.db import MIGRATIONS_DIR

    migrate(engine)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert current_revision(engine) == ScriptDirectory.from_config(cfg).get_current_head()
    assert set(metadata.tables) <= set(inspect(engine).get_table_names())


def test_ledger_refuses_a_second_live_row_for_one_destination(engine: Engine) -> None:
    # Given a blast with one live ledger row for +14155550100
    now = datetime.now(UTC)
    row = {
        "blast_id": "b1",
        "channel": "sms",
        "destination": "+14155550100",
        "state": "pending",
        "created_at": now,
        "updated_at": now,
    }
    with engine.begin() as conn:
        conn.execute(
            blasts.insert(),
            {
                "blast_id": "b1",
                "topic": "t",
                "status": "sending",
                "priority": "normal",
                "alert": "{}",
                "created_at": now,
                "updated_at": now,
            },
        )
        conn.execute(deliveries.insert(), {**row, "supporter_id": 1})
        # When a household member with the same phone is recorded as a duplicate, it is accepted
        conn.execute(deliveries.insert(), {**row, "supporter_id": 2, "state": "duplicate"})
    # Then a second live row for the same destination is refused by the database itself.
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(deliveries.insert(), {**row, "supporter_id": 3})


def test_migrations_match_the_tables_the_code_uses(engine: Engine) -> None:
    # Given the migrated database, then Alembic finds no difference from schema.py
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
