"""No duplicate emails from a partly sent batch (issue #14, item 5).

A batch whose recipients share bodies goes in one SendGrid call, and a recipient whose
fields cannot travel as substitutions goes in a call of its own. When that later call fails,
the recipients the first call delivered are settled as sent, once: they are neither re-queued
with the failed one (transient) nor split and sent again (permanent).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select

from emulators.server import Emulator, start_sendgrid
from messaging.blasts.expansion import Expander
from messaging.blasts.lifecycle import RowState
from messaging.content.alert import parse_alert
from messaging.content.unsubscribe import UnsubscribeTokens
from messaging.providers.sendgrid_email import SendGridEmail
from messaging.sending.email import EmailConfig, EmailSender
from messaging.store.schema import deliveries
from tests.factories import add_supporters, send_context

KEY = "SG.partial.key"
CONFIG = EmailConfig(
    "Acme <news@acme.org>", "Acme", "1 Main St", "https://rr.acme.org", UnsubscribeTokens(b"k" * 32)
)
#: A first name that looks like our substitution tags: its recipient goes in a call alone.
ALONE_NAME = "-rr.first_name.t-"


@pytest.fixture
def sendgrid() -> Iterator[Emulator]:
    with start_sendgrid(api_key=KEY) as emulator:
        yield emulator


def _states(engine: Engine) -> dict[str, tuple[str, str | None]]:
    with engine.connect() as conn:
        return {
            d: (s, c)
            for d, s, c in conn.execute(
                select(deliveries.c.destination, deliveries.c.state, deliveries.c.error_code)
            )
        }


@pytest.mark.parametrize(("status", "final"), [(500, RowState.SENT), (400, RowState.FAILED)])
def test_a_failed_later_call_never_resends_what_an_earlier_call_delivered(
    engine: Engine, sendgrid: Emulator, status: int, final: str
) -> None:
    # Given four recipients of plain templates, the last of whom must go in a call alone,
    # and SendGrid failing every call that carries that one
    people = [{"email": f"p{i}@example.org", "first_name": f"P{i}"} for i in range(3)]
    people.append({"email": "alone@example.org", "first_name": ALONE_NAME})
    add_supporters(engine, people, topic="t")
    ctx, queue = send_context(engine)
    doc = {"alert_id": "e1", "email": {"subject": "Hi", "text": "Hi {{ first_name }}"}}
    blast, _ = ctx.blasts.create(parse_alert(json.dumps(doc), fallback_id="x"), "t", None)
    Expander(ctx.ledger, ctx.blasts, queue).expand(blast)
    sendgrid.faults.update(email_errors={"alone@example.org": status})
    sender = EmailSender(ctx, SendGridEmail(KEY, base_url=sendgrid.url), CONFIG)
    # When the batch is sent (two calls: the shared one succeeds, the lone one fails)
    sender.process(queue.items.pop(0))
    # Then the three delivered recipients are sent, and only the failed one is left to retry
    got = _states(engine)
    assert all(got[f"p{i}@example.org"] == (RowState.SENT, None) for i in range(3)), got
    [alone_id] = _ids(engine, "alone@example.org")
    assert [w.supporter_ids for w in queue.items] == ([(alone_id,)] if status == 500 else [])
    # When the fault clears and whatever was re-queued runs
    sendgrid.faults.update(email_errors={})
    while queue.items:
        sender.process(queue.items.pop(0))
    # Then nobody got two emails, and the lone recipient ended once (sent, or failed alone)
    received = Counter(m["to"] for m in sendgrid.recorder.messages())
    assert all(n == 1 for n in received.values()), received
    assert {f"p{i}@example.org" for i in range(3)} <= set(received)
    assert _states(engine)["alone@example.org"][0] == final
    assert ("alone@example.org" in received) == (final == RowState.SENT)


def _ids(engine: Engine, address: str) -> list[int]:
    with engine.connect() as conn:
        return [
            int(sid)
            for (sid,) in conn.execute(
                select(deliveries.c.supporter_id).where(deliveries.c.destination == address)
            )
        ]
