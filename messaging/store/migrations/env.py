"""Alembic environment: runs on the connection handed over by :func:`messaging.store.db.migrate`."""

from __future__ import annotations

from alembic import context

from messaging.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - we never run alembic without a connection
    raise RuntimeError("run migrations through messaging.store.db.migrate()")

context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things in place; batch mode rebuilds the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
    # Short per-file transactions: a migration with an autocommit block (CREATE INDEX
    # CONCURRENTLY) commits what came before it, so every file must stand on its own.
    transaction_per_migration=True,
)
with context.begin_transaction():
    context.run_migrations()
