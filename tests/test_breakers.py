"""Circuit breakers: a blast pauses itself when its recent sends go wrong (contract §13).

The senders run on the real ledger; carrier filtering is recorded as Twilio's status
callbacks record it (the row ``failed`` with ``30007``/``30034``), opt-outs as the replies
store keeps them; the scheduler's sweep judges and pauses.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, update

from config.settings import load_settings
from emulators.server import start_sendgrid, start_twilio
from messaging.access.audit import AuditLog
from messaging.blasts.blast_control import BlastActions
from messaging.blasts.expansion import Expander
from messaging.blasts.lifecycle import BlastStatus, PauseReason, RowState
from messaging.content.alert import parse_alert
from messaging.errors import ConfigError, PermanentSendError
from messaging.ports import NewReply, Outcome, RecentOutcomes
from messaging.providers.memory import InMemorySms
from messaging.safety.breakers import BreakerLimits, Breakers, tripped
from messaging.safety.sweep import Sweeper
from messaging.sending.sms import SmsSender
from messaging.store.memory.audit import MemoryAuditStore
from messaging.store.schema import deliveries
from messaging.store.sql.breakers import SqlBreakerWindow
from messaging.store.sql.replies import SqlReplyStore
from tests import fleet
from tests.conftest import free_port
from tests.factories import add_supporters, send_context, sms_config

SMS = sms_config(1e4)


def test_thresholds_minimum_sample_and_overrides() -> None:
    limits = BreakerLimits()
    # 11 of 500 filtered (2.2 %) trips carrier filtering before failure rate
    verdict = tripped(limits, RecentOutcomes(500, 11, 11, 500), 0)
    assert verdict is not None and verdict[0] == PauseReason.CARRIER_FILTERING
    assert (
        verdict[1]
        == "11 of the last 500 sends filtered by carriers (Twilio 30007/30034): 2.2% > 2.0%"
    )
    # 10 of 500 is exactly 2 %: holds; 51 failed of 500 trips the failure rate
    assert tripped(limits, RecentOutcomes(500, 10, 10, 500), 0) is None
    assert tripped(limits, RecentOutcomes(500, 51, 0, 500), 0)[0] == PauseReason.FAILURE_RATE  # type: ignore[index]
    # 16 opt-outs to 500 texts (3.2 %) trips the opt-out rate
    assert tripped(limits, RecentOutcomes(500, 0, 0, 500), 16)[0] == PauseReason.OPTOUT_RATE  # type: ignore[index]
    # Too few sends to judge: 5 of 20 failed is not a verdict
    assert tripped(limits, RecentOutcomes(20, 5, 5, 20), 5) is None
    # An alert's breakers override the fleet's, which override the defaults
    env = load_settings({"RAPID_BREAKERS": "failure_rate=0.5, window=200"})
    fleet = BreakerLimits().merged(dict(env.breakers))
    assert fleet == BreakerLimits(window=200, failure_rate=0.5)
    assert fleet.merged({"carrier_filtering": 0.1}).carrier_filtering == 0.1
    with pytest.raises(ConfigError, match="RAPID_BREAKERS: failure_rate must be a share"):
        load_settings({"RAPID_BREAKERS": "failure_rate=2"})
    alert = parse_alert(
        json.dumps({"sms": {"body": "x"}, "breakers": {"window": 100, "optout_rate": 0.5}}),
        fallback_id="a",
    )
    assert alert.breakers is not None and alert.breakers.window == 100


def _blast(engine: Engine, n: int, **alert: object):  # type: ignore[no-untyped-def]
    ids = add_supporters(engine, [{"phone": f"+1415555{i:04d}"} for i in range(n)], topic="t")
    ctx, queue = send_context(engine)
    doc = {"alert_id": "br1", "sms": {"body": "Hi"}, **alert}
    blast, _ = ctx.blasts.create(parse_alert(json.dumps(doc), fallback_id="x"), "t", None)
    Expander(ctx.ledger, ctx.blasts, queue).expand(blast)
    actions = BlastActions(ctx.blasts, ctx.ledger, queue, ctx.control)
    audit = AuditLog(MemoryAuditStore())
    replies = SqlReplyStore(engine)
    breakers = Breakers(SqlBreakerWindow(engine), replies, actions.lifecycle, audit, every_s=0)
    return ctx, queue, ids, Sweeper(actions, breakers=breakers), audit, replies


def test_carrier_filtering_reported_by_callbacks_pauses_the_blast(engine: Engine) -> None:
    # Given a 300-text blast, sent
    ctx, queue, _ids, sweeper, audit, _ = _blast(engine, 300, priority="urgent")
    sender = SmsSender(ctx, InMemorySms(), SMS)
    first = queue.items.pop(0)
    sender.process(first)
    sent = list(first.supporter_ids)
    # When Twilio's callbacks say carriers filtered 3 % of them (30007, then 30034)
    filtered = [
        Outcome(sid, RowState.FAILED, error_code="30007" if i % 2 else "30034")
        for i, sid in enumerate(sent[:9])
    ]
    with engine.begin() as conn:
        for o in filtered:
            conn.execute(
                update(deliveries)
                .where(deliveries.c.blast_id == "br1", deliveries.c.supporter_id == o.supporter_id)
                .values(state=o.state, error_code=o.error_code, updated_at=datetime.now(UTC))
            )
    # Then the next sweep pauses it, saying why and with the numbers, in the audit log too
    report = sweeper.run_once()
    blast = ctx.blasts.get("br1")
    assert blast is not None and blast.status == BlastStatus.PAUSED
    assert report.paused == ["br1"]
    assert blast.pause_reason == PauseReason.CARRIER_FILTERING
    assert blast.pause_detail is not None and blast.pause_detail.startswith(
        f"9 of the last {len(sent)}"
    )
    [entry] = audit.entries()
    assert (entry.source, entry.blast_id) == ("fleet", "br1") and "carrier_filtering" in (
        entry.detail or ""
    )
    # And what was not yet sent waits, pending, for an operator
    assert len(ctx.ledger.open_ids("br1", "sms", RowState.PENDING, 0, 10_000)) == 300 - len(sent)


@pytest.mark.parametrize(
    ("allow", "expected"), [(None, BlastStatus.PAUSED), (0.2, BlastStatus.SENDING)]
)
def test_failures_pause_unless_the_alert_allows_more(
    engine: Engine, allow: float | None, expected: str
) -> None:
    # Given a blast whose provider refuses 15 % of numbers (its own limit: default, or 20 %)
    extra = {"breakers": {"failure_rate": allow}} if allow else {}
    ctx, queue, _ids, sweeper, _, _ = _blast(engine, 300, priority="urgent", **extra)
    bad = {
        f"+1415555{i:04d}": PermanentSendError("twilio 21211", code="21211")
        for i in range(0, 300, 7)
    }
    sender = SmsSender(ctx, InMemorySms(errors=bad), SMS)  # type: ignore[arg-type]
    # When its first 100 are sent and the sweep looks
    sender.process(queue.items.pop(0))
    sweeper.run_once()
    # Then it paused with failure_rate, unless its alert allows that many
    blast = ctx.blasts.get("br1")
    assert blast is not None and blast.status == expected
    if expected == BlastStatus.PAUSED:
        assert blast.pause_reason == PauseReason.FAILURE_RATE
        assert blast.pause_detail == "15 of the last 100 sends failed: 15.0% > 10.0%"


def test_optout_replies_pause_the_blast(engine: Engine) -> None:
    ctx, queue, ids, sweeper, _, replies = _blast(engine, 300, priority="urgent")
    sender = SmsSender(ctx, InMemorySms(), SMS)
    for _ in range(2):
        sender.process(queue.items.pop(0))
    # When 7 of the 200 texted (3.5 %) reply STOP to it
    for i in range(7):
        replies.add(
            NewReply(f"SM{i:032x}", f"+1415555{i:04d}", "+15005550006", "STOP", "opt_out", "stop",
                     ids[i], "br1", datetime.now(UTC))
        )  # fmt: skip
    sweeper.run_once()
    blast = ctx.blasts.get("br1")
    assert blast is not None and blast.pause_reason == PauseReason.OPTOUT_RATE
    assert blast.pause_detail == "7 opt-out replies to 200 texts sent: 3.5% > 3.0%"


@pytest.mark.e2e
def test_carrier_filtering_from_live_callbacks_pauses_a_running_blast(
    pg_url: str, moto_url: str, prefix: str, tmp_path: Path
) -> None:
    """The whole way: Twilio's status callbacks say 30007 for 6 % of texts; `rapid web`
    records them, the scheduler's breaker pauses the blast mid-send with the numbers."""
    port = free_port()
    with (
        start_twilio(auth_token=fleet.AUTH_TOKEN, account_sid=fleet.ACCOUNT_SID) as twilio,
        start_sendgrid(api_key=fleet.SENDGRID_KEY) as sendgrid,
    ):
        twilio.faults.update(status_callbacks=True, callback_error_rate=0.06, seed=3)
        env = fleet.fleet_env(
            db_url=pg_url,
            moto_url=moto_url,
            prefix=prefix,
            twilio_url=twilio.url,
            sendgrid_url=sendgrid.url,
            PORT=str(port),
            # Callbacks come back to the web process on this machine
            PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
            RAPID_ENV="test",
            SMS_RATE_PER_SENDER="5",
            SMS_RATE_ACCOUNT="20",
        )
        fleet.rapid(env, "provision", "--topic", "filtered")
        fleet.write_people(tmp_path / "people.csv", 600, "filtered")
        fleet.rapid(env, "supporters", "import", str(tmp_path / "people.csv"), timeout=300)
        procs = fleet.Fleet(env, tmp_path)
        procs.start("web", "web", "--host", "127.0.0.1")
        procs.start("intake", "intake", "--wait-time", "1")
        procs.start("scheduler", "scheduler", "--interval", "1")
        procs.start("sender", "sender", "--threads", "4", "--channels", "sms")
        sns, _ = fleet.aws_clients(moto_url)
        try:
            sns.publish(
                TopicArn=fleet.topic_arn(sns, prefix, "filtered"),
                Message=json.dumps({"alert_id": "filtered-1", "sms": {"body": "Hi"}}),
            )
            deadline, summary = time.monotonic() + 90, None
            while time.monotonic() < deadline:
                summary = fleet.blast_summary(env, "filtered-1")
                if summary and summary["status"] != "sending" and summary["status"] != "expanding":
                    break
                time.sleep(0.5)
        finally:
            procs.stop()
        # Then it paused itself, mid-blast, for carrier filtering, saying how much
        assert summary is not None and summary["status"] == "paused", (summary, procs.logs())
        assert summary["pause_reason"] == "carrier_filtering"
        assert "filtered by carriers" in summary["pause_detail"]
        assert summary["counts"]["sms"]["pending"] > 0


def test_rows_our_own_crash_lost_do_not_trip_the_failure_breaker(engine: Engine) -> None:
    # Given a 300-text blast whose first 100 were sent, then 20 of them recorded as lost in
    # flight (a sender of ours died mid-send: nothing about the message or its audience)
    ctx, queue, _ids, sweeper, _, _ = _blast(engine, 300, priority="urgent")
    first = queue.items.pop(0)
    SmsSender(ctx, InMemorySms(), SMS).process(first)
    with engine.begin() as conn:
        conn.execute(
            update(deliveries)
            .where(
                deliveries.c.blast_id == "br1",
                deliveries.c.supporter_id.in_(list(first.supporter_ids)[:20]),
            )
            .values(
                state=RowState.FAILED, error_code="lost_in_flight", updated_at=datetime.now(UTC)
            )
        )
    # When the sweep looks
    sweeper.run_once()
    # Then the blast goes on: 20 % lost to a crash is the fleet's alarm, not failure_rate
    blast = ctx.blasts.get("br1")
    assert blast is not None and blast.status == BlastStatus.SENDING
