"""A resume right after a pause: the senders' cached view of the blast's status must not
keep its re-driven work waiting (each process caches the fleet's copy for a quarter second)."""

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
from messaging.blasts.lifecycle import RowState
from messaging.content.alert import parse_alert
from messaging.providers.memory import InMemorySms
from messaging.sending.sms import SmsSender
from queues.flow.control import CACHE_TTL_S, RedisBlastControl
from tests.factories import add_supporters, live_redis, send_context, sms_config


@pytest.fixture
def client(prefix: str) -> Iterator[redis.Redis]:
    """The real Redis; this test's keys are deleted afterwards."""
    c = live_redis()
    yield c
    keys = list(c.scan_iter(f"{prefix}*"))
    if keys:
        c.delete(*keys)
    c.close()


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
