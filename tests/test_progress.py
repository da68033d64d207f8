"""Live progress counters in real Redis: kept by expansion, senders and the sweep, reconciled
with the ledger, read by `blast show`/`watch`/the API instead of counting the ledger; and the
fleet's status copy beside them, which senders cache."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import Engine

from config.names import Names
from messaging.blasts.blast_control import BlastActions
from messaging.blasts.expansion import Expander
from messaging.blasts.lifecycle import BlastStatus, RowState
from messaging.content.alert import parse_alert
from messaging.providers.memory import InMemorySms
from messaging.safety.sweep import Sweeper
from messaging.sending.common import SendContext
from messaging.sending.sms import SmsSender
from messaging.store.schema import deliveries
from queues.flow.control import CACHE_TTL_S, RedisBlastControl
from queues.flow.progress import KEY_TTL_S, RedisProgressCounters
from tests.factories import add_supporters, live_redis, send_context, sms_config
from workers.watch import watch

SMS = sms_config(org_name="Acme for America")


@pytest.fixture
def client(prefix: str) -> Iterator[redis.Redis]:
    """The real Redis; this test's keys are deleted afterwards."""
    c = live_redis()
    yield c
    keys = list(c.scan_iter(f"{prefix}*"))
    if keys:
        c.delete(*keys)
    c.close()


def test_counters_add_only_once_based_on_the_ledger(client: redis.Redis, prefix: str) -> None:
    counters = RedisProgressCounters(client, Names(prefix))
    # Given counters never based on the ledger: increments are not a count, readers get None
    counters.add("b1", "sms", {"sent": 5, "pending": -5})
    assert counters.read(["b1"]) == {"b1": None}
    assert counters.last_progress("b1") is not None  # the stall detector's stamp still moves
    # When they are based on the ledger, then incremented
    counters.replace("b1", {"sms": {"pending": 10, "duplicate": 2}, "email": {"pending": 3}})
    counters.add("b1", "sms", {"sent": 4, "failed": 1, "pending": -5})
    # Then they read as the ledger would, and expire in time
    assert counters.read(["b1", "other"]) == {
        "b1": {
            "sms": {"pending": 5, "duplicate": 2, "sent": 4, "failed": 1},
            "email": {"pending": 3},
        },
        "other": None,
    }
    ttl = client.ttl(Names(prefix).redis_key("counts", "b1"))
    assert 0 < ttl <= KEY_TTL_S
    # And rows the ledger shows claimed count as pending, as the senders that finish them
    # count them (or those would leave pending twice)
    counters.replace("b1", {"sms": {"pending": 3, "sending": 2}})
    counters.add("b1", "sms", {"pending": -2, "sent": 2})
    assert counters.read(["b1"])["b1"] == {"sms": {"pending": 3, "sent": 2}}


def _fleet(engine: Engine, client: redis.Redis, prefix: str, n: int):  # type: ignore[no-untyped-def]
    add_supporters(engine, [{"phone": f"+1415555{i:04d}"} for i in range(n)], topic="t")
    add_supporters(engine, [{"phone": "+14155559999"}], topic="t")  # a household duplicate below
    control = RedisBlastControl(client, Names(prefix))
    ctx, queue = send_context(engine, control=control, prefix=prefix)
    # Urgent: batches of 100, so a test can stop between them
    doc = {"alert_id": "p1", "priority": "urgent", "sms": {"body": "Hi {{ first_name }}"}}
    blast, _ = ctx.blasts.create(parse_alert(json.dumps(doc), fallback_id="x"), "t", None)
    return ctx, queue, control, blast


def _ledger_counts(ctx: SendContext, blast_id: str) -> dict[str, dict[str, int]]:
    return ctx.blasts.state_counts([blast_id])[blast_id]


def test_expansion_and_sends_keep_the_counters_equal_to_the_ledger(
    engine: Engine, client: redis.Redis, prefix: str
) -> None:
    # Given a 1,200-recipient blast, one of them suppressed before the alert
    ctx, queue, control, blast = _fleet(engine, client, prefix, 1_200)
    ctx.suppressions.add("sms", "+14155550003", reason="stop", source="test")
    # When it expands (several pages) and its first batches are sent
    Expander(ctx.ledger, ctx.blasts, queue, page_size=500, progress=control.progress).expand(blast)
    assert control.progress.read(["p1"])["p1"] == _ledger_counts(ctx, "p1")
    sender = SmsSender(ctx, InMemorySms(), SMS)
    sender.process(queue.items.pop(0))
    # Then every step's counters equal the ledger's grouped count, without any reconcile
    live = control.progress.read(["p1"])["p1"]
    ledger = _ledger_counts(ctx, "p1")
    assert live is not None and live["sms"]["sent"] == ledger["sms"]["sent"] > 0
    assert live["sms"]["suppressed"] == ledger["sms"]["suppressed"] == 1
    # And the summary `blast show` prints says where its counts came from
    summary = ctx.blasts.summaries([ctx.blasts.get("p1")], control.progress.read)[0]  # type: ignore[list-item]
    assert summary["counts_source"] == "live"
    assert summary["counts"] == ctx.blasts.summaries([ctx.blasts.get("p1")])[0]["counts"]  # type: ignore[list-item]
    # When everything is sent
    while queue.items:
        sender.process(queue.items.pop(0))
    # Then the blast is completed and its counts come from the ledger, matching the counters
    final = ctx.blasts.summaries([ctx.blasts.get("p1")], control.progress.read)[0]  # type: ignore[list-item]
    assert final["status"] == BlastStatus.COMPLETED and final["counts_source"] == "ledger"
    assert final["counts"]["sms"]["sent"] == 1_200
    assert _nonzero(control.progress.read(["p1"])["p1"]) == _ledger_counts(ctx, "p1")


def _nonzero(by_channel: dict[str, dict[str, int]] | None) -> dict[str, dict[str, int]]:
    assert by_channel is not None
    return {ch: {s: n for s, n in by.items() if n} for ch, by in by_channel.items()}


def test_the_sweep_reconciles_what_the_counters_did_not_see(
    engine: Engine, client: redis.Redis, prefix: str
) -> None:
    # Given a sending blast whose rows changed behind the counters' back (status callbacks)
    ctx, queue, control, blast = _fleet(engine, client, prefix, 300)
    Expander(ctx.ledger, ctx.blasts, queue, progress=control.progress).expand(blast)
    sender = SmsSender(ctx, InMemorySms(), SMS)
    sender.process(queue.items.pop(0))
    with engine.begin() as conn:
        conn.execute(
            deliveries.update()
            .where(deliveries.c.blast_id == "p1", deliveries.c.state == RowState.SENT)
            .values(state=RowState.DELIVERED)
        )
    live = control.progress.read(["p1"])["p1"]
    assert live is not None and "delivered" not in live["sms"]
    # When the scheduler sweeps
    actions = BlastActions(ctx.blasts, ctx.ledger, queue, control)
    report = Sweeper(actions).run_once()
    # Then the counters are the ledger's again
    assert report.reconciled == 1
    assert _nonzero(control.progress.read(["p1"])["p1"]) == _ledger_counts(ctx, "p1")
    assert _ledger_counts(ctx, "p1")["sms"]["delivered"] > 0


def test_watch_reads_the_counters_and_checks_idleness_with_the_ledger(
    engine: Engine, client: redis.Redis, prefix: str
) -> None:
    # Given a sending blast whose counters wrongly say nothing is pending (a lost increment)
    ctx, queue, control, blast = _fleet(engine, client, prefix, 50)
    Expander(ctx.ledger, ctx.blasts, queue, progress=control.progress).expand(blast)
    control.progress.replace("p1", {"sms": {"sent": 51}})
    lines: list[str] = []
    # When watching until idle, with a short timeout
    final = watch(
        ctx.blasts,
        "p1",
        as_json=True,
        interval_s=0.05,
        until_idle=True,
        timeout_s=0.3,
        emit=lines.append,
        live=control.progress.read,
    )
    # Then the frames showed the counters, but the ledger decided: not idle (timed out)
    assert json.loads(lines[0])["channels"]["sms"]["sent"] == 51
    assert final["counts_source"] == "ledger" and final["counts"]["sms"]["pending"] == 51
    assert len(lines) > 1


# A resume right after a pause: each process caches the fleet's status copy for a quarter
# second, and that cache must not keep the re-driven work waiting.
def test_work_redriven_by_a_resume_is_sent_by_a_sender_that_just_saw_the_pause(
    engine: Engine, client: redis.Redis, prefix: str
) -> None:
    # Given a sender process and an operator's process, each with its own view of the fleet's
    # status copy (urgent: batches of 100, sent at once at this rate)
    add_supporters(engine, [{"phone": f"+1415555{i:04d}"} for i in range(250)], topic="t")
    ctx, queue = send_context(
        engine, control=RedisBlastControl(client, Names(prefix)), prefix=prefix
    )
    operator = RedisBlastControl(client, Names(prefix))
    doc = {"alert_id": "q1", "priority": "urgent", "sms": {"body": "Hi"}}
    blast, _ = ctx.blasts.create(parse_alert(json.dumps(doc), fallback_id="x"), "t", None)
    Expander(ctx.ledger, ctx.blasts, queue).expand(blast)
    actions = BlastActions(ctx.blasts, ctx.ledger, queue, operator)
    sms = InMemorySms()
    sender = SmsSender(ctx, sms, sms_config())
    sender.process(queue.items.pop(0))
    # And the blast was paused: the sender meets the pause on its next unit, once its cached
    # view of the sending blast has lapsed, and caches the pause in turn
    actions.pause("q1")
    time.sleep(CACHE_TTL_S)
    assert sender.process(queue.items.pop(0)).skipped == "paused"
    queue.items.clear()  # the paused units are done with; resume re-drives their rows
    # When the operator resumes it a moment later, within the sender's cache of the pause
    actions.resume("q1")
    while queue.items:
        report = sender.process(queue.items.pop(0))
        assert report.skipped is None
    # Then every re-driven row is sent now, once, not left pending for the sweep
    assert ctx.ledger.open_ids("q1", "sms", RowState.PENDING, 0, 10_000) == []
    assert len(sms.sent) == 250 and len({m.to for m in sms.sent}) == 250
