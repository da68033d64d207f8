"""The blast lifecycle: every transition is guarded in the store, then mirrored, in order.

Unit tests on the in-memory stores and control (no services), except the lane test, which
needs the Redis the broker is built on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
import structlog
from sqlalchemy import Engine

from messaging.blasts.blast_control import BlastActions
from messaging.blasts.lifecycle import (
    BLAST_TRANSITIONS,
    COUNT_KEYS,
    ENDED_STATUSES,
    BlastLifecycle,
    BlastStatus,
    PauseReason,
    RowState,
    counts_from_states,
)
from messaging.content.alert import parse_alert
from messaging.errors import InputError, PermanentSendError
from messaging.memory import InMemoryBlastControl, InMemorySendQueue
from messaging.ports import SendWork
from messaging.safety.sweep import Sweeper
from messaging.store import Stores, memory_stores
from messaging.store.memory.tables import Row
from tests.conftest import REDIS_TEST_URL


class RecordingBlasts:
    """The memory blast store, noting each status write in a shared journal."""

    def __init__(self, inner: Any, journal: list[tuple[str, str]]) -> None:
        self._inner = inner
        self._journal = journal

    def set_status(self, blast_id: str, status: str, **kwargs: Any) -> bool:
        moved = bool(self._inner.set_status(blast_id, status, **kwargs))
        if moved:
            self._journal.append(("database", str(status)))
        return moved

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class RecordingControl(InMemoryBlastControl):
    """The memory control, noting each published status in the same journal."""

    def __init__(self, journal: list[tuple[str, str]]) -> None:
        super().__init__()
        self._journal = journal

    def set(self, blast_id: str, status: str) -> None:
        self._journal.append(("redis", str(status)))
        super().set(blast_id, status)


def _blast(stores: Stores, blast_id: str = "b1", **alert: Any) -> str:
    document = {"alert_id": blast_id, "sms": {"body": "Hi"}, **alert}
    stores.blasts.create(parse_alert(json.dumps(document), fallback_id=blast_id), "t", None)
    return blast_id


def _rows(stores: Stores, blast_id: str, states: Iterable[RowState]) -> None:
    tables = stores.ledger._t  # type: ignore[attr-defined]
    now = datetime.now(UTC)
    for sid, state in enumerate(states, start=1):
        tables.deliveries[blast_id, "sms", sid] = Row(
            blast_id, "sms", sid, f"+1415555{sid:04d}", str(state), now, now
        )


def _states(stores: Stores, blast_id: str) -> list[str]:
    tables = stores.ledger._t  # type: ignore[attr-defined]
    return sorted(r.state for r in tables.rows_of(blast_id))


def _lifecycle(stores: Stores) -> BlastLifecycle:
    """The lifecycle of ``stores``' blasts, with in-memory controls and queue."""
    return BlastLifecycle(stores.blasts, stores.ledger, InMemoryBlastControl(), InMemorySendQueue())


def _sending(stores: Stores, rows: Iterable[RowState] = (RowState.PENDING,)) -> BlastLifecycle:
    """A blast ``b1`` expanded and sending, with ledger rows in ``rows``."""
    lifecycle = _lifecycle(stores)
    _blast(stores)
    _rows(stores, "b1", rows)
    assert lifecycle.finish_expansion("b1", {})
    return lifecycle


def test_statuses_and_states_are_the_stored_strings() -> None:
    # Given the enums, then their values are what the database has always held
    assert BlastStatus.SENDING == "sending" and RowState.SENDING == "sending"
    assert "canceled" in ENDED_STATUSES  # a string read back from a row is found
    assert {PauseReason(r) for r in ("operator", "provider_auth", "optout_rate")}
    # And the counts carry every key of contract §6, a claimed row counted as pending
    counts = counts_from_states({"sending": 2, "delivered": 1, "capped": 1, "fallback": 1})
    assert tuple(counts) == COUNT_KEYS
    assert counts["pending"] == 2 and counts["sent"] == 1 and counts["delivered"] == 1
    assert counts["capped"] == 1 and counts["fallback"] == 1 and counts["targeted"] == 5


def test_an_ended_blast_has_no_way_out_and_every_status_is_reachable() -> None:
    for status in ENDED_STATUSES:
        assert BLAST_TRANSITIONS[status] == frozenset()
    reachable = {t for targets in BLAST_TRANSITIONS.values() for t in targets}
    assert reachable | {BlastStatus.SCHEDULED, BlastStatus.EXPANDING} == set(BlastStatus)


def test_completing_a_canceled_blast_does_not_move_it() -> None:
    # Given a canceled blast whose rows are all closed
    stores = memory_stores()
    lifecycle = _sending(stores, [RowState.SENT])
    assert lifecycle.cancel("b1", drain_s=0)
    # When anything tries to complete it (the sweep; a late sender whose stale view still
    # said sending, so it skips the status read)
    moved = lifecycle.complete("b1")
    late = lifecycle.complete("b1", seen_sending=True)
    # Then nothing moves, in the database or in the fleet's copy
    assert not moved and not late
    assert stores.blasts.status("b1") == ("canceled", True)
    assert lifecycle.control.get("b1") == "canceled"


def test_a_blast_completes_only_when_expanded_and_nothing_is_owed() -> None:
    stores = memory_stores()
    lifecycle = _lifecycle(stores)
    _blast(stores)
    _rows(stores, "b1", [RowState.SENT, RowState.DEFERRED])
    # Still expanding: not complete, whatever the rows say
    assert not lifecycle.complete("b1")
    lifecycle.finish_expansion("b1", {})
    # A deferred row still owes a send
    assert not lifecycle.complete("b1")
    stores.ledger.close_open("b1", RowState.EXPIRED, [RowState.DEFERRED])
    assert lifecycle.complete("b1")
    assert lifecycle.control.get("b1") == "completed"


def test_cancel_writes_the_database_before_the_fleet_copy() -> None:
    # Given a sending blast with pending and deferred rows, and one sent
    journal: list[tuple[str, str]] = []
    stores = memory_stores()
    blasts = RecordingBlasts(stores.blasts, journal)
    control = RecordingControl(journal)
    lifecycle = BlastLifecycle(blasts, stores.ledger, control, InMemorySendQueue())
    _blast(stores)
    _rows(stores, "b1", [RowState.PENDING, RowState.DEFERRED, RowState.SENT])
    lifecycle.finish_expansion("b1", {})
    journal.clear()
    # When it is canceled
    assert lifecycle.cancel("b1", drain_s=0)
    # Then the system of record moved first, the fleet's copy second
    assert journal == [("database", "canceled"), ("redis", "canceled")]
    # And every row not handed to a provider ended canceled
    assert _states(stores, "b1") == ["canceled", "canceled", "sent"]
    # And a second cancel moves nothing and says so
    assert not lifecycle.cancel("b1", drain_s=0)


def test_cancel_waits_for_sends_in_flight_then_closes_what_they_put_back() -> None:
    # Given a blast with a row claimed by a sender (in a provider call)
    stores = memory_stores()
    lifecycle = _sending(stores, [RowState.SENDING, RowState.PENDING])
    tables = stores.ledger._t  # type: ignore[attr-defined]
    clock = iter(float(t) for t in range(100))
    waits: list[float] = []

    def sleep(s: float) -> None:
        # The sender's call fails transiently: the row goes back to pending
        waits.append(s)
        tables.deliveries["b1", "sms", 1].state = "pending"

    lifecycle._sleep = sleep  # injected like the constructor's ``sleep=``
    lifecycle._monotonic = lambda: next(clock)
    # When canceled
    lifecycle.cancel("b1", drain_s=10)
    # Then it waited for the send, and the row put back is closed too
    assert waits and _states(stores, "b1") == ["canceled", "canceled"]


def test_pause_records_why_and_the_summary_shows_it_until_resumed() -> None:
    # Given a sending blast with two pending rows
    stores = memory_stores()
    queue = InMemorySendQueue()
    actions = BlastActions(stores.blasts, stores.ledger, queue, InMemoryBlastControl())
    _blast(stores)
    _rows(stores, "b1", [RowState.PENDING, RowState.PENDING])
    actions.lifecycle.finish_expansion("b1", {})
    # When the fleet pauses it because Twilio refused our credentials
    actions.pause("b1", PauseReason.PROVIDER_AUTH, "twilio: HTTP 401")
    # Then `blast show --json` says so
    [shown] = stores.blasts.summaries([stores.blasts.get("b1")])  # type: ignore[list-item]
    assert shown["status"] == "paused"
    assert shown["pause_reason"] == "provider_auth"
    assert shown["pause_detail"] == "twilio: HTTP 401"
    assert actions.control.get("b1") == "paused"
    # And a second pause is refused, naming the status
    with pytest.raises(InputError, match="is paused"):
        actions.pause("b1")
    # When resumed, the reason goes and every pending row is queued again
    actions.resume("b1")
    [shown] = stores.blasts.summaries([stores.blasts.get("b1")])  # type: ignore[list-item]
    assert shown["status"] == "sending" and "pause_reason" not in shown
    assert [w.supporter_ids for w in queue.items] == [(1, 2)]


def test_approval_by_another_operator_releases_the_held_rows() -> None:
    # Given an expanded blast held for approval
    stores = memory_stores()
    queue = InMemorySendQueue()
    actions = BlastActions(stores.blasts, stores.ledger, queue, InMemoryBlastControl())
    _blast(stores)
    _rows(stores, "b1", [RowState.PENDING])
    assert actions.lifecycle.finish_expansion("b1", {}, hold_for_approval=True)
    assert actions.control.get("b1") == "awaiting_approval" and not queue.items
    # When approved
    record = actions.approve("b1", "alice")
    # Then it sends, the approver is recorded and its rows are queued
    assert record.status == "sending" and record.approved_by == "alice"
    assert [w.supporter_ids for w in queue.items] == [(1,)]
    # And approving again is refused
    with pytest.raises(InputError, match="not awaiting approval"):
        actions.approve("b1", "bob")


def test_reject_cancels_a_held_blast_and_nothing_else() -> None:
    stores = memory_stores()
    actions = BlastActions(
        stores.blasts, stores.ledger, InMemorySendQueue(), InMemoryBlastControl()
    )
    lifecycle = actions.lifecycle
    _blast(stores)
    _rows(stores, "b1", [RowState.PENDING])
    lifecycle.finish_expansion("b1", {}, hold_for_approval=True)
    assert actions.reject("b1", drain_s=0).status == "canceled"
    assert _states(stores, "b1") == ["canceled"]
    _blast(stores, "b2")
    lifecycle.finish_expansion("b2", {})
    with pytest.raises(InputError, match="not awaiting approval"):
        actions.reject("b2")


def test_expiry_waits_for_sends_in_flight() -> None:
    # Given a sending blast past its deadline with a pending row and one in a provider call
    stores = memory_stores()
    lifecycle = _sending(stores, [RowState.PENDING, RowState.SENDING])
    # When expired: the pending row ends expired, but the blast waits for the send
    assert not lifecycle.expire("b1")
    assert _states(stores, "b1") == ["expired", "sending"]
    assert stores.blasts.status("b1") == ("sending", True)
    # When the send lands, the next pass ends the blast
    stores.ledger._t.deliveries["b1", "sms", 2].state = "sent"  # type: ignore[attr-defined]
    assert lifecycle.expire("b1")
    assert stores.blasts.status("b1") == ("expired", True)
    assert lifecycle.control.get("b1") == "expired"


def test_a_scheduled_blast_is_released_once() -> None:
    stores = memory_stores()
    lifecycle = _lifecycle(stores)
    _blast(stores)
    stores.blasts.set_status("b1", BlastStatus.SCHEDULED)
    assert lifecycle.release("b1")
    assert not lifecycle.release("b1")
    assert stores.blasts.status("b1") == ("expanding", False)


def test_the_sweep_expires_a_paused_blast_past_its_deadline() -> None:
    # Given a paused blast whose send_by has passed, with pending rows
    stores = memory_stores()
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    actions = BlastActions(
        stores.blasts, stores.ledger, InMemorySendQueue(), InMemoryBlastControl()
    )
    _blast(stores, send_by=past)
    _rows(stores, "b1", [RowState.PENDING, RowState.PENDING])
    actions.lifecycle.finish_expansion("b1", {})
    actions.pause("b1")
    # When the scheduler sweeps
    report = Sweeper(actions).run_once()
    # Then the blast ends expired with every row accounted for
    assert report.expired == ["b1"]
    assert _states(stores, "b1") == ["expired", "expired"]


def test_a_send_batch_logs_its_blast_and_lane_and_permanent_failures_are_not_retried() -> None:
    from config.names import Names
    from queues.lanes import Lanes, make_broker

    client = redis.Redis.from_url(REDIS_TEST_URL)
    lanes = Lanes(make_broker(client, Names("lifecycle-test")))
    seen: list[dict[str, Any]] = []

    def handler(work: SendWork) -> None:
        seen.append(structlog.contextvars.get_contextvars())

    lanes.handle("sms", handler)
    actor = lanes._actors["sms", "urgent"]
    # When a batch is handled, every log line inside it carries the blast and the lane
    actor.fn("b1", [1, 2])
    assert seen == [{"blast_id": "b1", "channel": "sms", "priority": "urgent"}]
    assert structlog.contextvars.get_contextvars() == {}  # and only inside it
    # And a failure a redelivery cannot fix goes straight to the dead letters
    assert issubclass(PermanentSendError, actor.options["throws"])
    assert issubclass(InputError, actor.options["throws"])
    client.close()


def _intake(stores: Stores, control: InMemoryBlastControl) -> Any:
    from messaging.blasts.intake import Intake
    from messaging.ports import Delivery

    # The transport's envelope reader is injected: the domain never imports queues/.
    def unwrap(body: str) -> Delivery:
        return Delivery(body, "t", "m-1", "raw")

    return Intake(unwrap, stores.blasts, stores.ledger, InMemorySendQueue(), control)


def test_intake_ends_a_blast_with_nothing_to_send_through_the_lifecycle() -> None:
    # Given an alert for a topic nobody subscribes to
    stores = memory_stores()
    control = InMemoryBlastControl()
    # When the intake takes it
    final = _intake(stores, control).handle(json.dumps({"alert_id": "a1", "sms": {"body": "Hi"}}))
    # Then it is completed in the store and in the fleet's copy
    assert final.status == "completed" and control.get("a1") == "completed"


def test_intake_expires_an_alert_published_after_its_deadline() -> None:
    stores = memory_stores()
    control = InMemoryBlastControl()
    past = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    body = json.dumps({"alert_id": "a2", "sms": {"body": "Hi"}, "send_by": past})
    final = _intake(stores, control).handle(body)
    assert final.status == "expired" and control.get("a2") == "expired"


def test_a_pause_mid_batch_leaves_typed_waiting_rows_not_pseudo_states(engine: Engine) -> None:
    from messaging.blasts.expansion import Expander
    from messaging.providers.base import SmsMessage
    from messaging.providers.memory import InMemorySms
    from messaging.sending.common import Waiting
    from messaging.sending.sms import SmsConfig, SmsSender
    from tests.factories import add_supporters, send_context

    # Given a sending blast of three, and a provider after whose first send it is paused
    add_supporters(engine, [{"phone": f"+1415555{i:04d}"} for i in range(3)], topic="t")
    control = InMemoryBlastControl()
    ctx, queue = send_context(engine, control=control)
    doc = {"alert_id": "p1", "priority": "urgent", "sms": {"body": "Hi"}}
    blast, _ = ctx.blasts.create(parse_alert(json.dumps(doc), fallback_id="x"), "t", None)
    Expander(ctx.ledger, ctx.blasts, queue).expand(blast)
    actions = BlastActions(ctx.blasts, ctx.ledger, queue, control)

    class PausedAfterOne(InMemorySms):
        def send_many(self, messages: Any, gate: Any = None, reslot: Any = None) -> Any:
            def pausing_gate(m: SmsMessage) -> bool:
                if self.sent:
                    actions.lifecycle.pause("p1", PauseReason.OPERATOR)
                return bool(gate(m)) if gate else True

            return super().send_many(messages, pausing_gate, reslot)

    config = SmsConfig(org_name="Acme", from_numbers=("+15005550006",), rate_account_per_s=1e3)
    sender = SmsSender(ctx, PausedAfterOne(), config)
    # When the batch runs
    report = sender.process(queue.items.pop(0))
    # Then one was sent, two wait pending (held), and the ledger outcomes are real states
    assert report.by_state == {RowState.SENT: 1}
    assert report.waiting == {Waiting.HELD: 2}
    summary = ctx.blasts.summaries([ctx.blasts.get("p1")])[0]  # type: ignore[list-item]
    assert summary["counts"]["sms"]["pending"] == 2 and summary["pause_reason"] == "operator"
