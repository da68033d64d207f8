"""Expansion analyzes the supporters and subscriptions when an audience outgrows the
planner's picture of them (a fresh import): on PostgreSQL, where plans follow statistics.

Right after a COPY the planner took a topic's page for one row and joined it to the
supporters' id range in a nested loop, scanning the range again per subscription: a
1,600-row page took 202 ms instead of 30 (issue #21, the fairness and first-send runs).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, text

from messaging.blasts.expansion import Expander
from messaging.content.alert import parse_alert
from messaging.memory import InMemorySendQueue
from messaging.store.db import create_db_engine
from messaging.store.schema import subscriptions, supporters
from messaging.store.sql.blasts import SqlBlastStore
from messaging.store.sql.dialect import dialect_for
from messaging.store.sql.ledger import SqlLedger
from messaging.store.sql.ledger_expansion import AUDIENCE_TABLES

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

AUDIENCE = 3_000


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[Engine]:
    """The test database with autovacuum off on the audience tables, so that nothing but
    the code under test analyzes them while the test runs."""
    engine = create_db_engine(pg_url)
    with engine.begin() as conn:
        for table in AUDIENCE_TABLES:
            conn.exec_driver_sql(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
    yield engine
    with engine.begin() as conn:
        for table in AUDIENCE_TABLES:
            conn.exec_driver_sql(f"ALTER TABLE {table} RESET (autovacuum_enabled)")
    engine.dispose()


def _estimates(engine: Engine) -> dict[str, float]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT relname, reltuples FROM pg_class WHERE relname = ANY(:names)"),
            {"names": list(AUDIENCE_TABLES)},
        )
        return {name: float(n) for name, n in rows}


def _import(engine: Engine, n: int, topic: str) -> None:
    """``n`` opted-in supporters following ``topic``, written in bulk as an import does."""
    now = datetime.now(UTC)
    with engine.begin() as conn:
        ids = conn.scalars(
            supporters.insert().returning(supporters.c.id),
            [
                {
                    "external_id": f"e{i}",
                    "first_name": f"Pat{i}",
                    "phone": f"+1412{2000000 + i:07d}",
                    "sms_opt_in": True,
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(n)
            ],
        ).all()
        conn.execute(
            subscriptions.insert(),
            [{"topic": topic, "supporter_id": sid, "created_at": now} for sid in ids],
        )


def test_a_blast_to_a_fresh_import_analyzes_its_audience_tables_once(pg_engine: Engine) -> None:
    # Given the audience tables analyzed while empty, then 3,000 supporters imported: the
    # planner still believes the tables hold nothing
    with pg_engine.begin() as conn:
        for table in AUDIENCE_TABLES:
            conn.exec_driver_sql(f"ANALYZE {table}")
    _import(pg_engine, AUDIENCE, "debate-night")
    assert all(n < AUDIENCE / 2 for n in _estimates(pg_engine).values())
    blasts, ledger = SqlBlastStore(pg_engine), SqlLedger(pg_engine)
    alert = parse_alert(json.dumps({"alert_id": "a-1", "sms": {"body": "Hi"}}), fallback_id="x")
    blast, _ = blasts.create(alert, "debate-night", None)

    # When a blast to them is expanded
    result = Expander(ledger, blasts, InMemorySendQueue()).expand(blast)

    # Then every recipient was written, and both tables' estimates now hold the audience
    assert result.pending == {"sms": AUDIENCE}
    assert all(n >= AUDIENCE for n in _estimates(pg_engine).values())
    # And a process that has read the new picture asks for no second ANALYZE
    assert SqlLedger(pg_engine).refresh_audience_statistics(AUDIENCE) is False


def test_an_audience_within_the_planners_picture_analyzes_nothing(pg_engine: Engine) -> None:
    # Given 600 supporters imported and analyzed, then a blast's audience of 600
    _import(pg_engine, 600, "debate-night")
    with pg_engine.begin() as conn:
        for table in AUDIENCE_TABLES:
            conn.exec_driver_sql(f"ANALYZE {table}")
    # When expansion asks, for that audience and for one below the floor on an empty picture
    # Then nothing is analyzed
    assert SqlLedger(pg_engine).refresh_audience_statistics(600) is False
    with pg_engine.begin() as conn:
        conn.execute(subscriptions.delete())
        conn.execute(supporters.delete())
        for table in AUDIENCE_TABLES:
            conn.exec_driver_sql(f"ANALYZE {table}")
    assert SqlLedger(pg_engine).refresh_audience_statistics(400) is False
    assert all(n == 0 for n in _estimates(pg_engine).values())


class _CountingDialect:
    """PostgreSQL's dialect, its ANALYZEs counted and made slow enough to overlap."""

    def __init__(self, engine: Engine) -> None:
        self._inner = dialect_for(engine)
        self.analyzed: list[str] = []

    def analyze(self, conn: Connection, table: str) -> None:
        time.sleep(0.1)
        self._inner.analyze(conn, table)
        self.analyzed.append(table)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_alerts_arriving_together_analyze_their_audience_once(pg_engine: Engine) -> None:
    # Given 3,000 supporters imported after the tables were analyzed empty
    with pg_engine.begin() as conn:
        for table in AUDIENCE_TABLES:
            conn.exec_driver_sql(f"ANALYZE {table}")
    _import(pg_engine, AUDIENCE, "debate-night")
    dialect = _CountingDialect(pg_engine)
    ledger = SqlLedger(pg_engine, dialect)  # type: ignore[arg-type]
    # When eight expansions of one process ask at once
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: ledger.refresh_audience_statistics(AUDIENCE), range(8)))
    # Then one of them analyzed each table, once
    assert answers.count(True) == 1
    assert sorted(dialect.analyzed) == sorted(AUDIENCE_TABLES)
    assert all(n >= AUDIENCE for n in _estimates(pg_engine).values())
