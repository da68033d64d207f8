"""The sweep re-drives lost queue work without duplicating sends, and ends what is stuck."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select, update

from messaging.blasts.blast_control import BlastActions
from messaging.blasts.expansion import Expander
from messaging.blasts.lifecycle import BlastStatus, RowState
from messaging.content.alert import parse_alert
from messaging.memory import InMemoryBlastControl
from messaging.providers.memory import InMemorySms
from messaging.safety.sweep import Sweeper
from messaging.sending.sms import SmsSender
from messaging.store.schema import deliveries
from tests.factories import add_supporters, send_context, sms_config

CONFIG = sms_config()


def _setup(engine: Engine, n: int, **alert: object):  # type: ignore[no-untyped-def]
    add_supporters(engine, [{"phone": f"+1415555{i:04d}"} for i in range(n)], topic="t")
    control = InMemoryBlastControl()
    ctx, queue = send_context(engine, control=control)
    doc = {"alert_id": "s1", "sms": {"body": "Hi"}, **alert}
    blast, _ = ctx.blasts.create(parse_alert(json.dumps(doc), fallback_id="x"), "t", None)
    Expander(ctx.ledger, ctx.blasts, queue).expand(blast)
    actions = BlastActions(ctx.blasts, ctx.ledger, queue, control)
    return ctx, queue, actions


def test_lost_queue_work_is_redriven_once_and_nothing_is_sent_twice(engine: Engine) -> None:
    # Urgent SMS work comes in batches of 100: the first is sent, the other 150 are lost
    ctx, queue, actions = _setup(engine, 250, priority="urgent")
    sms = InMemorySms()
    sender = SmsSender(ctx, sms, CONFIG)
    # Given the first batch was sent, and the rest of the queue work was lost (a Redis flush)
    first = queue.items.pop(0)
    sender.process(first)
    queue.items.clear()
    pending = len(ctx.ledger.open_ids("s1", "sms", RowState.PENDING, 0, 10_000))
    assert pending == 150
    # When the sweep finds the blast stalled
    report = Sweeper(actions, stall_s=0).run_once()
    # Then exactly the pending rows are re-driven; processing them (and the old batch again)
    # sends each number once
    assert report.redriven == {"s1": pending}
    queue.items.append(first)
    while queue.items:
        sender.process(queue.items.pop(0))
    assert len(sms.sent) == 250 and len({m.to for m in sms.sent}) == 250
    # And the next sweep sees nothing owing and completes the blast
    Sweeper(actions, stall_s=0).run_once()
    assert ctx.blasts.get("s1").status == BlastStatus.COMPLETED  # type: ignore[union-attr]


def test_rows_lost_in_flight_fail_instead_of_sending_twice(engine: Engine) -> None:
    ctx, queue, actions = _setup(engine, 3)
    work = queue.items.pop(0)
    # Given a worker claimed the rows and died before recording an outcome
    ctx.ledger.claim(work.blast_id, "sms", work.supporter_ids)
    with engine.begin() as conn:
        conn.execute(update(deliveries).values(updated_at=datetime.now(UTC) - timedelta(hours=1)))
    # When the sweep runs
    report = Sweeper(actions, stall_s=0, stuck_s=60).run_once()
    # Then they end failed (at most once), and the blast completes
    assert report.lost_in_flight == 3
    with engine.connect() as conn:
        assert set(conn.scalars(select(deliveries.c.error_code))) == {"lost_in_flight"}
    Sweeper(actions).run_once()
    assert ctx.blasts.get("s1").status == BlastStatus.COMPLETED  # type: ignore[union-attr]


def test_pause_resume_cancel(engine: Engine) -> None:
    # Urgent SMS work comes in batches of 100, all sent at once at this rate: the counts below
    ctx, queue, actions = _setup(engine, 250, priority="urgent")
    sms = InMemorySms()
    sender = SmsSender(ctx, sms, CONFIG)
    sender.process(queue.items.pop(0))
    # When paused, queued batches send nothing and their rows stay pending
    actions.pause("s1")
    while queue.items:
        report = sender.process(queue.items.pop(0))
        assert report.skipped == "paused"
    assert len(sms.sent) == 100
    # When resumed, the pending rows are re-driven and sent once
    actions.resume("s1")
    sender.process(queue.items.pop(0))
    assert len(sms.sent) == 200 and len({m.to for m in sms.sent}) == 200
    # When canceled, the rest end canceled and the blast has nothing pending
    actions.cancel("s1")
    while queue.items:
        sender.process(queue.items.pop(0))
    summary = ctx.blasts.summaries([ctx.blasts.get("s1")])[0]  # type: ignore[list-item]
    assert summary["status"] == "canceled"
    assert summary["counts"]["sms"]["canceled"] == 50 and summary["counts"]["sms"]["pending"] == 0
    assert len(sms.sent) == 200


def test_expired_blast_ends_expired(engine: Engine) -> None:
    ctx, queue, actions = _setup(
        engine, 5, send_by=(datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    )
    queue.items.clear()
    import time

    time.sleep(1.1)
    report = Sweeper(actions).run_once()
    assert report.expired == ["s1"]
    summary = ctx.blasts.summaries([ctx.blasts.get("s1")])[0]  # type: ignore[list-item]
    assert summary["status"] == "expired" and summary["counts"]["sms"]["expired"] == 5
