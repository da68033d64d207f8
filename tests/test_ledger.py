"""Claims and outcomes on the real ledger, on both dialects (PostgreSQL runs its array SQL)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete, select

from messaging.blasts.expansion import Expander
from messaging.blasts.lifecycle import RowState
from messaging.content.alert import parse_alert
from messaging.memory import InMemorySendQueue
from messaging.ports import Outcome
from messaging.store.schema import deliveries, supporters
from messaging.store.sql.blasts import SqlBlastStore
from messaging.store.sql.ledger import SqlLedger
from tests.factories import add_supporters


def _blast(engine: Engine) -> tuple[SqlLedger, list[int]]:
    ids = add_supporters(
        engine,
        [{"phone": f"+1415555{i:04d}", "first_name": f"Ann{i}"} for i in range(6)],
        topic="t",
    )
    blasts = SqlBlastStore(engine)
    doc = {"alert_id": "l1", "sms": {"body": "Hi {{ first_name }}"}}
    blast, _ = blasts.create(parse_alert(json.dumps(doc), fallback_id="x"), "t", None)
    ledger = SqlLedger(engine)
    Expander(ledger, blasts, InMemorySendQueue()).expand(blast)
    return ledger, ids


def _rows(engine: Engine) -> dict[int, dict[str, object]]:
    with engine.connect() as conn:
        return {
            int(r.supporter_id): r._asdict()
            for r in conn.execute(select(deliveries).where(deliveries.c.blast_id == "l1"))
        }


def test_a_row_is_claimed_once_with_its_template_fields(engine: Engine) -> None:
    ledger, ids = _blast(engine)
    # Given one supporter erased after expansion
    with engine.begin() as conn:
        conn.execute(delete(supporters).where(supporters.c.id == ids[5]))
    # When two workers claim overlapping batches
    first = ledger.claim("l1", "sms", ids[:4])
    second = ledger.claim("l1", "sms", ids[2:])
    # Then each row went to exactly one of them, in id order, with its fields
    assert [c.supporter_id for c in first] == ids[:4]
    assert [c.supporter_id for c in second] == ids[4:]
    assert first[1].fields["first_name"] == "Ann1" and first[1].destination == "+14155550001"
    assert first[0].attempts == 1 and first[0].fields["postal_code"] == ""
    # And the erased supporter's row is still claimed (it ends with an outcome, not pending)
    assert second[1].fields["first_name"] == ""
    assert {r["state"] for r in _rows(engine).values()} == {RowState.SENDING}


def test_outcomes_are_written_each_to_its_row_and_only_to_rows_still_sending(
    engine: Engine,
) -> None:
    ledger, ids = _blast(engine)
    ledger.claim("l1", "sms", ids[:5])  # ids[5] stays pending
    until = datetime.now(UTC) + timedelta(hours=8)
    # When a batch records every kind of outcome (and one for a row it never claimed)
    ledger.record(
        "l1",
        "sms",
        [
            Outcome(
                ids[0], RowState.SENT, provider_message_id="SM0", sender="+15005550006", segments=1
            ),
            Outcome(
                ids[1], RowState.SENT, provider_message_id="SM1", sender="+15005550007", segments=2
            ),
            Outcome(ids[2], RowState.FAILED, error_code="21211", error="x" * 2000),
            Outcome(ids[3], RowState.DEFERRED, deferred_until=until),
            Outcome(ids[4], RowState.PENDING),
            Outcome(ids[5], RowState.SENT, provider_message_id="SM5"),
        ],
    )
    rows = _rows(engine)
    # Then each row holds its own outcome
    assert rows[ids[0]]["provider_message_id"] == "SM0" and rows[ids[0]]["segments"] == 1
    assert rows[ids[1]]["sender"] == "+15005550007" and rows[ids[1]]["segments"] == 2
    assert rows[ids[0]]["sent_at"] is not None and rows[ids[2]]["sent_at"] is None
    assert rows[ids[2]]["state"] == RowState.FAILED and rows[ids[2]]["error_code"] == "21211"
    assert len(str(rows[ids[2]]["error"])) == 1000
    deferred_until = rows[ids[3]]["deferred_until"]
    assert isinstance(deferred_until, datetime)
    if deferred_until.tzinfo is None:  # SQLite keeps naive UTC
        deferred_until = deferred_until.replace(tzinfo=UTC)
    assert abs(deferred_until - until) < timedelta(seconds=1)
    assert rows[ids[4]]["state"] == RowState.PENDING
    # And the row that was not claimed is untouched
    assert rows[ids[5]]["state"] == RowState.PENDING and rows[ids[5]]["provider_message_id"] is None


def test_the_planner_keeps_no_statistics_on_blast_ids(pg_url: str) -> None:
    # A new blast is never in the statistics while it expands; with them, the planner once
    # probed households through the (blast, channel, state) index and a 20,000-row blast
    # took 25 s to expand instead of 1 s (benchmarks/bench_sender.py, third run). Without
    # them it assumes 0.5 % of the ledger per blast, and the unique index wins.
    from sqlalchemy import text

    from messaging.store.db import create_db_engine

    engine = create_db_engine(pg_url)
    with engine.connect() as conn:
        target = conn.execute(
            text(
                "SELECT attstattarget FROM pg_attribute"
                " WHERE attrelid = 'deliveries'::regclass AND attname = 'blast_id'"
            )
        ).scalar_one()
    engine.dispose()
    assert target == 0
