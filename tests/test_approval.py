"""The two-person rule (contract §11): a blast over the threshold waits for another operator.

Unit tests on the in-memory stores (approve / reject / the requester refused), expansion on
SQLite and PostgreSQL (held, previewed, released under the threshold, test sends and dry
runs never held), and the issue's end-to-end story: operator A sends a blast over the
threshold (3,000 recipients over 2,000), nothing reaches the provider, A's own approval
is refused, B approves, every recipient gets one message, and the audit log shows both
with their sources.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from messaging.access.audit import Actor, AuditLog, Source
from messaging.blasts.approval import ApprovalGate, Approvals, needs_approval, over_threshold
from messaging.blasts.dry_run import DryRunConfig
from messaging.blasts.expansion import Expander
from messaging.blasts.lifecycle import BlastLifecycle, BlastStatus, RowState
from messaging.content.alert import parse_alert
from messaging.errors import InputError
from messaging.memory import InMemoryBlastControl, InMemorySendQueue
from messaging.store import memory_stores
from messaging.store.memory.audit import MemoryAuditStore
from messaging.store.sql.blasts import SqlBlastStore
from messaging.store.sql.ledger import SqlLedger
from messaging.store.sql.suppressions import SqlSuppressionList
from tests.factories import add_supporters

ALICE = Actor("alice", Source.CLI)
BOB = Actor("bob", Source.API)


def _alert(alert_id: str = "big-1", **extra: Any) -> Any:
    document = {"alert_id": alert_id, "sms": {"body": "Hi {{ first_name }}"}, **extra}
    return parse_alert(json.dumps(document), fallback_id=alert_id)


# --- the rule itself -------------------------------------------------------------------------


def test_threshold_rules() -> None:
    plain, test, dry = _alert(), _alert(test_recipients=["+14155550100"]), _alert(dry_run=True)
    # Above the threshold waits; at it does not; 0 is every blast; off is never
    assert over_threshold({"sms": 6000, "email": 4001}, 10_000)
    assert not over_threshold({"sms": 10_000}, 10_000)
    assert over_threshold({"sms": 0}, 0)
    assert not over_threshold({"sms": 10**9}, None)
    # Test sends and dry runs never wait, whatever their size
    assert needs_approval(plain, 10, 11)
    assert not needs_approval(plain, 10, 10)
    assert not needs_approval(test, 0, 10**6)
    assert not needs_approval(dry, 0, 10**6)
    assert not needs_approval(plain, None, 10**6)


@pytest.fixture
def memory() -> tuple[Any, Approvals, InMemorySendQueue, AuditLog]:
    """A blast awaiting approval, requested by alice, on the in-memory stores."""
    stores = memory_stores()
    queue, control = InMemorySendQueue(), InMemoryBlastControl()
    lifecycle = BlastLifecycle(stores.blasts, stores.ledger, control, queue)
    audit = AuditLog(MemoryAuditStore())
    stores.blasts.create(_alert(requested_by="alice", requested_via="cli"), "news", None)
    stores.blasts.finish_expansion("big-1", {}, to=BlastStatus.AWAITING_APPROVAL)
    return stores, Approvals(stores.blasts, lifecycle, audit), queue, audit


def test_the_requester_cannot_approve_their_own_blast(memory: Any) -> None:
    stores, approvals, _queue, audit = memory
    with pytest.raises(InputError, match="requested by alice: another operator must approve"):
        approvals.approve("big-1", ALICE)
    assert stores.blasts.get("big-1").status == BlastStatus.AWAITING_APPROVAL
    assert audit.entries() == []


def test_another_operator_approves_and_it_is_recorded(memory: Any) -> None:
    stores, approvals, _queue, audit = memory
    approvals.approve("big-1", BOB)
    blast = stores.blasts.get("big-1")
    assert blast.status == BlastStatus.SENDING and blast.approved_by == "bob"
    (entry,) = audit.entries()
    assert (entry.actor, entry.source, entry.action, entry.blast_id) == (
        "bob",
        "api",
        "blast.approve",
        "big-1",
    )
    # A second approval, or a reject now, is refused: it is no longer waiting
    with pytest.raises(InputError, match="only a blast awaiting approval can be approved"):
        approvals.approve("big-1", Actor("carol", Source.CLI))
    with pytest.raises(InputError, match="can be rejected"):
        approvals.reject("big-1", BOB)


def test_reject_cancels(memory: Any) -> None:
    stores, approvals, _queue, audit = memory
    approvals.reject("big-1", BOB)
    assert stores.blasts.get("big-1").status == BlastStatus.CANCELED
    assert [e.action for e in audit.entries()] == ["blast.reject"]
    with pytest.raises(InputError, match="no blast 'nope'"):
        approvals.approve("nope", BOB)


# --- expansion holds, previews and releases --------------------------------------------------


def _expand(engine: Engine, alert: Any, threshold: int | None) -> tuple[Any, InMemorySendQueue]:
    blasts, ledger, queue = SqlBlastStore(engine), SqlLedger(engine), InMemorySendQueue()
    blast, _ = blasts.create(alert, "news", None)
    gate = ApprovalGate(threshold, DryRunConfig(org_name="Acme"))
    Expander(ledger, blasts, queue, page_size=4, approval=gate).expand(blast)
    return blasts.get(blast.blast_id), queue


def _queued(queue: InMemorySendQueue) -> int:
    return sum(len(work.supporter_ids) for work in queue.items)


def test_a_blast_over_the_threshold_waits_with_its_dry_run_figures(engine: Engine) -> None:
    # Given 12 subscribers, over a threshold of 10
    add_supporters(engine, [{"phone": f"+1415555{1000 + i:04d}"} for i in range(12)], topic="news")
    # When the blast is expanded
    blast, queue = _expand(engine, _alert(requested_by="alice"), 10)
    # Then it waits, nothing queued, its rows pending, and shows what it would do
    assert blast.status == BlastStatus.AWAITING_APPROVAL
    assert _queued(queue) == 0
    assert SqlBlastStore(engine).state_counts(["big-1"])["big-1"] == {"sms": {"pending": 12}}
    preview = blast.stats["approval"]
    assert preview["threshold"] == 10
    assert preview["estimate"]["sms"]["recipients"] == 12
    assert preview["estimate"]["sms"]["segments"] >= 12
    assert preview["estimate"]["sms"]["estimated_cost"] > 0
    assert preview["estimate"]["sms"]["eta_s"] > 0
    assert [s["body"] for s in preview["sample"]] == ["Hi Supporter0", "Hi Supporter1"]
    assert blast.requested_by == "alice"


def test_a_blast_that_shrinks_under_the_threshold_sends_at_once(engine: Engine) -> None:
    # Given 12 subscribers of whom 3 are suppressed and 2 share a phone (one duplicate)
    people = [{"phone": f"+1415555{1000 + i:04d}"} for i in range(11)]
    people.append({"phone": "+14155551000"})
    add_supporters(engine, people, topic="news")
    suppressions = SqlSuppressionList(engine)
    for i in (1, 2, 3):
        suppressions.add("sms", f"+1415555{1000 + i:04d}", reason="stop", source="test")
    # When a blast with a threshold of 10 is expanded (eligible 12 > 10: held while expanding)
    blast, queue = _expand(engine, _alert(), 10)
    # Then its final count (8) is under the threshold: it sends, every pending row queued
    assert blast.status == BlastStatus.SENDING
    assert _queued(queue) == 8
    assert "approval" not in blast.stats


@pytest.mark.parametrize("kind", ["test", "dry"])
def test_test_sends_and_dry_runs_never_wait(engine: Engine, kind: str) -> None:
    extra: dict[str, Any] = (
        {"test_recipients": ["+14155551000"]} if kind == "test" else {"dry_run": True}
    )
    add_supporters(engine, [{"phone": f"+1415555{1000 + i:04d}"} for i in range(5)], topic="news")
    blast, _queue = _expand(engine, _alert(**extra), 0)
    assert blast.status in (BlastStatus.SENDING, BlastStatus.COMPLETED)


def test_threshold_off_never_waits(engine: Engine) -> None:
    add_supporters(engine, [{"phone": f"+1415555{1000 + i:04d}"} for i in range(5)], topic="news")
    blast, queue = _expand(engine, _alert(), None)
    assert blast.status == BlastStatus.SENDING and _queued(queue) == 5


def test_send_by_keeps_running_while_a_blast_waits(engine: Engine) -> None:
    add_supporters(engine, [{"phone": f"+1415555{1000 + i:04d}"} for i in range(3)], topic="news")
    blast, _queue = _expand(engine, _alert(send_by="2026-01-01T00:00:00Z"), 0)
    assert blast.status == BlastStatus.AWAITING_APPROVAL
    blasts, ledger = SqlBlastStore(engine), SqlLedger(engine)
    lifecycle = BlastLifecycle(blasts, ledger, InMemoryBlastControl(), InMemorySendQueue())
    assert lifecycle.expire("big-1")
    assert blasts.get("big-1").status == BlastStatus.EXPIRED
    assert blasts.state_counts(["big-1"])["big-1"] == {"sms": {RowState.EXPIRED: 3}}


# --- end to end: two operators ---------------------------------------------------------------

#: A few thousand (end-to-end tests stay small; the threshold is set below them).
N_RECIPIENTS = 3_000


@pytest.mark.e2e
@pytest.mark.integration
def test_two_operators_end_to_end(pg_url: str, moto_url: str, prefix: str, tmp_path: Path) -> None:
    from emulators.client import EmulatorClient
    from tests.fleet import EmulatorProcess, Fleet, rapid, wait_ended

    emulators = EmulatorProcess()
    sendgrid = EmulatorClient(emulators.sendgrid_url)
    env = emulators.fleet_env(
        db_url=pg_url,
        moto_url=moto_url,
        prefix=prefix,
        RAPID_APPROVAL_THRESHOLD="2000",
        EMAIL_RATE="20000",
    )
    as_a, as_b = {**env, "RAPID_OPERATOR": "alice"}, {**env, "RAPID_OPERATOR": "bob"}
    fleet = Fleet(env, tmp_path)
    try:
        rapid(env, "provision", "--topic", "debate-night")
        people = tmp_path / "people.csv"
        people.write_text(
            "external_id,first_name,email,topics,email_opt_in\n"
            + "".join(
                f"e{i},Pat{i},p{i}@example.org,debate-night,yes\n" for i in range(N_RECIPIENTS)
            )
        )
        rapid(env, "supporters", "import", str(people), timeout=300)
        fleet.start("intake", "intake", "--wait-time", "1")
        fleet.start("sender", "sender", "--threads", "4", "--channels", "email")
        # Given alice sends a 3,000-recipient blast, over the threshold of 2,000
        rapid(
            as_a,
            "alert", "send", "--topic", "debate-night", "--alert-id", "big-1", "--priority", "urgent",
            "--email-subject", "Watch this", "--email-text", "Hi {{ first_name }}",
        )  # fmt: skip
        shown = _poll(lambda: _show(env, "awaiting_approval"), "big-1 awaiting approval", 120)
        # Then it waits, showing its figures, and nothing reaches the provider
        assert shown["counts"]["email"]["pending"] == N_RECIPIENTS
        preview = shown["audience"]["approval"]
        assert preview["estimate"]["email"]["recipients"] == N_RECIPIENTS
        assert [s["text"] for s in preview["sample"]] == ["Hi Pat0", "Hi Pat1"]
        text = rapid(env, "blast", "show", "big-1").stdout
        assert "requested by alice" in text and f"email: {N_RECIPIENTS:,} recipients" in text
        assert "sample email to e0: Watch this" in text
        time.sleep(2)
        assert sendgrid.messages()[0] == []
        # When alice tries to approve her own blast, she is refused with a clear message
        own = subprocess.run(
            [sys.executable, "-m", "workers", "blast", "approve", "big-1"],
            env=as_a,
            capture_output=True,
            text=True,
            check=False,
        )
        assert own.returncode == 1
        assert "requested by alice: another operator must approve it" in own.stderr
        assert sendgrid.messages()[0] == []
        # When bob approves it
        command_started = time.time()
        rapid(as_b, "blast", "approve", "big-1")
        first = _poll(lambda: sendgrid.messages()[0], "the first email", 30)
        first_received = min(m["received_at"] for m in first)
        # Then every recipient gets exactly one message
        final = wait_ended(env, "big-1", timeout_s=180)
        assert final["status"] == "completed" and final["approved_by"] == "bob"
        received = Counter(m["to"].lower() for m in sendgrid.messages()[0])
        assert len(received) == N_RECIPIENTS and set(received.values()) == {1}
        # And the audit log shows both, with where they came from
        audit = json.loads(rapid(env, "audit", "list", "--json").stdout)
        assert [(e["action"], e["actor"], e["source"]) for e in audit if e["blast_id"]] == [
            ("blast.approve", "bob", "cli"),
            ("alert.sent", "alice", "cli"),
        ]
        # And sending started within a second of the approval being recorded
        approved_at = datetime.fromisoformat(audit[0]["at"]).timestamp()
        latency_s = first_received - approved_at
        print(
            f"approval recorded -> first email: {latency_s:.3f} s; `rapid blast approve` "
            f"started -> first email: {first_received - command_started:.3f} s"
        )
        assert 0 <= latency_s <= 1.0, latency_s
    finally:
        fleet.stop()
        sendgrid.close()
        emulators.close()


def _poll(probe: Any, what: str, timeout_s: float) -> Any:
    """``probe()``'s first truthy answer; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not (found := probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)
    return found


def _show(env: dict[str, str], status: str) -> dict[str, Any] | None:
    from tests.fleet import blast_summary

    summary = blast_summary(env, "big-1")
    return summary if summary and summary["status"] == status else None


# --- intake records who asked ------------------------------------------------------------


@pytest.mark.parametrize("via", ["sns", "cli"])
def test_intake_records_the_alert_and_its_requester(via: str) -> None:
    from messaging.blasts.intake import Intake
    from messaging.ports import Delivery

    stores = memory_stores()
    audit = AuditLog(MemoryAuditStore())
    document: dict[str, Any] = {"alert_id": "a-1", "sms": {"body": "Hi"}}
    if via == "cli":
        document |= {"requested_by": "alice", "requested_via": "cli"}
    intake = Intake(
        lambda body: Delivery(body, "news", "m-1", "raw"),
        stores.blasts,
        stores.ledger,
        InMemorySendQueue(),
        InMemoryBlastControl(),
        approval=ApprovalGate(0, DryRunConfig()),
        audit=audit,
    )
    # When the alert arrives twice (SQS is at-least-once)
    intake.handle(json.dumps(document))
    intake.handle(json.dumps(document))
    # Then one entry says who asked and through what; straight to SNS, that is `sns`
    (entry,) = audit.entries()
    who = ("sns", "sns") if via == "sns" else ("alice", "cli")
    assert (entry.action, entry.blast_id, (entry.actor, entry.source)) == ("alert.sent", "a-1", who)
    assert stores.blasts.get("a-1").requested_by == who[0]


def test_a_blast_paused_while_held_still_needs_approval_after_resume(engine: Engine) -> None:
    # Given a blast over the threshold, paused by an operator while it was expanding
    add_supporters(engine, [{"phone": f"+1415555{1000 + i:04d}"} for i in range(6)], topic="news")
    blasts, ledger, queue = SqlBlastStore(engine), SqlLedger(engine), InMemorySendQueue()
    lifecycle = BlastLifecycle(blasts, ledger, InMemoryBlastControl(), queue)
    blast, _ = blasts.create(_alert(requested_by="alice"), "news", None)
    assert lifecycle.pause("big-1")
    gate = ApprovalGate(5, DryRunConfig())
    Expander(ledger, blasts, queue, page_size=4, lifecycle=lifecycle, approval=gate).expand(blast)
    assert blasts.get("big-1").status == BlastStatus.PAUSED
    # When it is resumed, then it waits for approval instead of sending
    assert lifecycle.resume("big-1")
    assert blasts.get("big-1").status == BlastStatus.AWAITING_APPROVAL
    assert _queued(queue) == 0
    # And once another operator approves it, all of it is queued
    Approvals(blasts, lifecycle, AuditLog(MemoryAuditStore())).approve("big-1", BOB)
    assert _queued(queue) == 6
