"""Small helpers to put supporters and blasts in a test database directly."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from config.names import Names
from messaging.memory import InMemoryBlastControl, InMemoryRateLimiter, InMemorySendQueue
from messaging.ports import BlastControl, SupporterRow
from messaging.sending.common import SendContext
from messaging.store import Stores
from messaging.store.schema import subscriptions, supporters
from messaging.store.sql.blasts import SqlBlastStore
from messaging.store.sql.ledger import SqlLedger
from messaging.store.sql.suppressions import SqlSuppressionList


def add_supporters(
    engine: Engine, people: Iterable[dict[str, Any]], topic: str | None = None
) -> list[int]:
    """Insert supporters (defaults: opted in to both channels); subscribe them to ``topic``."""
    now = datetime.now(UTC)
    ids = []
    with engine.begin() as conn:
        for i, person in enumerate(people):
            row = {
                "external_id": f"ext-{i}-{person.get('phone') or person.get('email')}",
                "first_name": f"Supporter{i}",
                "sms_opt_in": True,
                "email_opt_in": True,
                "created_at": now,
                "updated_at": now,
                **person,
            }
            sid = conn.execute(
                supporters.insert().values(**row).returning(supporters.c.id)
            ).scalar_one()
            ids.append(int(sid))
            if topic:
                conn.execute(
                    subscriptions.insert().values(topic=topic, supporter_id=sid, created_at=now)
                )
    return ids


def send_context(
    engine: Engine, *, control: BlastControl | None = None, prefix: str = "t"
) -> tuple[SendContext, InMemorySendQueue]:
    """Senders' context on the real ledger, with in-memory queue, limiter and controls."""
    queue = InMemorySendQueue()
    ctx = SendContext(
        SqlLedger(engine),
        SqlBlastStore(engine),
        SqlSuppressionList(engine),
        InMemoryRateLimiter(),
        queue,
        control or InMemoryBlastControl(),
        Names(prefix),
    )
    return ctx, queue


def migrated_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Engine:
    """A migrated engine for a per-backend fixture's "sqlite" or "postgresql" param (the
    caller disposes of it)."""
    from messaging.store.db import create_db_engine, migrate

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'rapid.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    engine = create_db_engine(url)
    migrate(engine)
    return engine


def write_texters(stores: Stores, n: int, topic: str = "t") -> None:
    """``n`` supporters opted in to SMS, subscribed to ``topic``, with distinct phones."""
    rows = [
        SupporterRow(f"p{i}", phone=f"+1412{2000000 + i:07d}", sms_opt_in=True, topics=(topic,))
        for i in range(n)
    ]
    stores.supporters.write_batch(rows, frozenset({"phone", "sms_opt_in", "topics"}))
