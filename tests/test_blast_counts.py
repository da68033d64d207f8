"""Blast counts kept with the ledger's writes (issue #21, item 1).

``state_counts`` (what reconcile, ``blast show/list``, ``/metrics`` and the backlog read) no
longer counts the ledger: triggers keep ``blast_counts`` in the same transaction as every
ledger write. These tests drive every kind of ledger write through the stores and compare
the kept counts with a grouped count of the ledger itself, on every backend.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from messaging.blasts.lifecycle import BlastStatus, RowState
from messaging.ports import Outcome
from messaging.store import Stores, memory_stores, open_stores
from messaging.store.db import create_db_engine, migrate
from messaging.store.schema import blast_count_deltas, deliveries
from tests.test_store_contract import alert, expand_all, ids_of, person, seed

ByChannel = dict[str, dict[str, int]]


class Backend:
    """Stores on one backend, and the ledger's own grouped count (the oracle)."""

    def __init__(self, stores: Stores, engine: Engine | None) -> None:
        self.stores = stores
        self.engine = engine

    def ledger_counts(self, blast_id: str) -> ByChannel:
        if self.engine is None:  # the twin's own rows
            result: ByChannel = {}
            for row in self.stores.ledger._t.rows_of(blast_id):  # type: ignore[attr-defined]
                by_state = result.setdefault(row.channel, {})
                by_state[row.state] = by_state.get(row.state, 0) + 1
            return result
        query = (
            select(deliveries.c.channel, deliveries.c.state, func.count())
            .where(deliveries.c.blast_id == blast_id)
            .group_by(deliveries.c.channel, deliveries.c.state)
        )
        result = {}
        with self.engine.connect() as conn:
            for channel, state, n in conn.execute(query):
                result.setdefault(channel, {})[state] = int(n)
        return result

    def kept(self, blast_id: str) -> ByChannel:
        return self.stores.blasts.state_counts([blast_id])[blast_id]

    def deltas_left(self) -> int:
        """Count deltas not folded yet (a SQL backend's)."""
        assert self.engine is not None
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(blast_count_deltas)).scalar())


def expanded(stores: Stores, blast_id: str, people: int) -> list[int]:
    """Blast ``blast_id`` by SMS to supporters 1 to ``people``, expanded; its pending ids."""
    seed(stores, [person(i) for i in range(1, people + 1)])
    expand_all(stores, alert(blast_id))
    return ids_of(stores, blast_id)


@pytest.fixture
def pg_backend(pg_url: str) -> Iterator[Backend]:
    """The stores on this test's PostgreSQL."""
    engine = create_db_engine(pg_url)
    yield Backend(open_stores(engine), engine)
    engine.dispose()


@pytest.fixture(
    params=[
        "memory",
        pytest.param("sqlite", marks=pytest.mark.integration),
        pytest.param("postgresql", marks=[pytest.mark.integration, pytest.mark.postgres]),
    ]
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "memory":
        yield Backend(memory_stores(), None)
        return
    if request.param == "sqlite":
        engine = create_db_engine(f"sqlite:///{tmp_path / 'rapid.db'}")
        migrate(engine)
    else:
        from tests.conftest import _reset

        pg_engine = request.getfixturevalue("_pg_engine")
        _reset(pg_engine)
        engine = create_db_engine(pg_engine.url.render_as_string(hide_password=False))
    yield Backend(open_stores(engine), engine)
    engine.dispose()


def test_counts_follow_every_kind_of_ledger_write(backend: Backend) -> None:
    stores = backend.stores
    # Given a blast expanded in pages, with a household duplicate and a suppressed phone
    seed(stores, [person(i) for i in range(1, 31)] + [person(31, phone="+14155551001")])
    stores.suppressions.add("sms", "+14155551002", reason="stop", source="test")
    the_alert = alert("k-1", email={"subject": "s", "text": "t"})
    expand_all(stores, the_alert, page_size=7)
    assert backend.kept("k-1") == backend.ledger_counts("k-1")
    assert backend.kept("k-1")["sms"][RowState.DUPLICATE] == 1
    # When rows are claimed (pending -> sending) and given every kind of outcome
    ids = ids_of(stores, "k-1")
    claimed = [c.supporter_id for c in stores.ledger.claim("k-1", "sms", ids[:20])]
    assert backend.kept("k-1")["sms"][RowState.SENDING] == 20
    later = datetime.now(UTC) + timedelta(hours=1)
    outcomes = [Outcome(i, RowState.SENT, provider_message_id=f"SM{i}") for i in claimed[:10]]
    outcomes += [Outcome(i, RowState.FAILED, error_code="30007") for i in claimed[10:13]]
    outcomes += [Outcome(i, RowState.DEFERRED, deferred_until=later) for i in claimed[13:16]]
    outcomes += [Outcome(i, RowState.PENDING) for i in claimed[16:18]]  # given back
    stores.ledger.record("k-1", "sms", outcomes)
    assert backend.kept("k-1") == backend.ledger_counts("k-1")
    # And a status callback refines a sent text, emails are sent and one bounces
    now = datetime.now(UTC)
    assert stores.delivery_events.settle_sms(
        f"SM{claimed[0]}", {"state": RowState.DELIVERED, "updated_at": now}
    )
    emails = ids_of(stores, "k-1", "email")
    stores.ledger.claim("k-1", "email", emails)
    stores.ledger.record("k-1", "email", [Outcome(i, RowState.SENT) for i in emails])
    stores.delivery_events.apply_email_outcomes(
        [], [("k-1", emails[0], "bounce", "x")], "sg", [], now
    )
    # And the sweep closes what is left (cancel)
    stores.ledger.close_open("k-1", RowState.CANCELED, [RowState.PENDING, RowState.DEFERRED])
    # Then the kept counts are the ledger's, state by state
    kept = backend.kept("k-1")
    assert kept == backend.ledger_counts("k-1")
    assert kept["sms"][RowState.DELIVERED] == 1
    assert kept["email"][RowState.FAILED] == 1
    assert RowState.PENDING not in kept["sms"]  # a zero count is absent, as in a grouped count


def test_compaction_folds_deltas_without_changing_counts(backend: Backend) -> None:
    stores = backend.stores
    ids = expanded(stores, "k-2", 10)
    stores.ledger.claim("k-2", "sms", ids)
    stores.ledger.record("k-2", "sms", [Outcome(i, RowState.SENT) for i in ids])
    before = backend.kept("k-2")
    # When the deltas are folded, a few at a time
    while stores.retention.compact_counts(max_rows=2):
        assert backend.kept("k-2") == before
    # Then nothing is left to fold and the counts are unchanged
    assert backend.kept("k-2") == before == backend.ledger_counts("k-2")
    if backend.engine is not None:
        assert backend.deltas_left() == 0


@pytest.mark.integration
@pytest.mark.postgres
def test_concurrent_senders_of_one_blast_count_exactly_on_postgresql(
    pg_backend: Backend,
) -> None:
    # Given a blast of 400 texts on PostgreSQL
    stores = pg_backend.stores
    ids = expanded(stores, "k-3", 400)
    errors: list[BaseException] = []

    # When eight threads claim and record batches of it at once while a compactor runs
    def send(batch: list[int]) -> None:
        try:
            got = [c.supporter_id for c in stores.ledger.claim("k-3", "sms", batch)]
            stores.ledger.record("k-3", "sms", [Outcome(i, RowState.SENT) for i in got])
        except BaseException as exc:  # reported below
            errors.append(exc)

    def compact() -> None:
        try:
            for _ in range(20):
                stores.retention.compact_counts(max_rows=50)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(ids[i::8],)) for i in range(8)]
    threads.append(threading.Thread(target=compact))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then no write waited into a deadlock, and every row is counted once
    assert errors == []
    assert pg_backend.kept("k-3") == {"sms": {RowState.SENT: 400}}


def test_reports_read_the_kept_counts(backend: Backend) -> None:
    stores = backend.stores
    ids = expanded(stores, "k-4", 5)
    stores.blasts.set_status("k-4", BlastStatus.SENDING)
    stores.ledger.claim("k-4", "sms", ids[:2])
    stores.ledger.record("k-4", "sms", [Outcome(ids[0], RowState.FAILED, error_code="30007")])
    fleet = stores.reports.fleet_counts()
    assert fleet.open_rows[("sms", RowState.PENDING)] == 3
    assert fleet.open_rows[("sms", RowState.SENDING)] == 1
    backlog = stores.reports.lane_backlog(
        [BlastStatus.SENDING], ["sms", "email"], [RowState.PENDING, RowState.SENDING]
    )
    assert backlog == {("sms", "normal"): 4}
    rows, filtered = stores.reports.live_outcomes(
        [BlastStatus.SENDING], ["sms"], [RowState.FAILED], ["30007"]
    )
    assert rows == {("sms", RowState.FAILED): 1}
    assert filtered == 1


@pytest.mark.integration
@pytest.mark.postgres
def test_the_scheduler_pass_folds_the_deltas(pg_backend: Backend) -> None:
    from types import SimpleNamespace

    from workers.commands.run import _compact_counts

    # Given ledger writes on PostgreSQL, which leave count deltas behind
    expanded(pg_backend.stores, "k-5", 5)
    assert pg_backend.deltas_left()
    # When the scheduler's pass folds them
    _compact_counts(SimpleNamespace(stores=pg_backend.stores))  # type: ignore[arg-type]
    # Then none is left and the counts are unchanged
    assert pg_backend.deltas_left() == 0
    assert pg_backend.kept("k-5") == {"sms": {RowState.PENDING: 5}}
