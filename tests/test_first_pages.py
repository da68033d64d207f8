"""Alerts short of their first expansion page go before other alerts' later pages
(issue #21, item 2: fifty blasts at once, each starting within seconds)."""

from __future__ import annotations

import json
import threading
import time

import pytest
from sqlalchemy import Engine

from messaging.blasts.expansion import Expander
from messaging.blasts.first_pages import HOLD_SHARE, MAX_HOLD_S, FirstPagesFirst, HoldBudget
from messaging.content.alert import parse_alert
from messaging.memory import InMemorySendQueue
from messaging.store.sql.blasts import SqlBlastStore
from messaging.store.sql.ledger import SqlLedger
from tests.factories import add_supporters


def test_a_later_page_goes_at_once_when_no_alert_waits() -> None:
    gate = FirstPagesFirst()
    done = gate.arrived()
    done()
    assert gate.waiting == 0
    assert gate.hold(5.0) < 0.5


def test_a_later_page_waits_until_every_first_page_is_written() -> None:
    # Given two alerts short of their first page
    gate = FirstPagesFirst()
    first, second = gate.arrived(), gate.arrived()
    assert gate.waiting == 2
    # When both finish their first pages, a moment apart, while a later page waits
    threading.Timer(0.1, first).start()
    threading.Timer(0.3, second).start()
    waited = gate.hold(5.0)
    # Then the later page went once the last first page was done, not at its budget's end
    assert 0.25 <= waited < 3.0
    # And calling done again changes nothing
    second()
    assert gate.waiting == 0


def test_the_hold_is_bounded_by_its_budget() -> None:
    gate = FirstPagesFirst()
    gate.arrived()  # an alert that never reports its first page (stuck on the database)
    started = time.monotonic()
    assert 0.15 <= gate.hold(0.2) < 1.0
    assert time.monotonic() - started < 1.0
    assert gate.hold(0.0) == 0.0  # a spent budget never waits


def test_expansion_reports_its_first_page_once_queued_and_holds_later_pages(
    engine: Engine,
) -> None:
    # Given a blast of 30 subscribers expanded in pages of 10 (the first page is 10 too)
    add_supporters(
        engine, [{"phone": f"+1415555{2000 + i:04d}"} for i in range(30)], topic="fp-topic"
    )
    blasts, ledger, queue = SqlBlastStore(engine), SqlLedger(engine), InMemorySendQueue()
    alert = parse_alert(json.dumps({"alert_id": "fp-1", "sms": {"body": "Hi"}}), fallback_id="x")
    blast, _ = blasts.create(alert, "fp-topic", None)
    events: list[tuple[str, float, int]] = []

    def first_page_done() -> None:
        # What the blast has on its lanes at this moment
        events.append(("first", 0.0, sum(len(w.supporter_ids) for w in queue.items)))

    def hold(budget_s: float) -> float:
        events.append(("hold", budget_s, sum(len(w.supporter_ids) for w in queue.items)))
        return 0.5  # as if another alert's first page took half a second

    # When it is expanded
    result = Expander(
        ledger, blasts, queue, page_size=10, first_page_done=first_page_done, hold_later_page=hold
    ).expand(blast)
    # Then the first page's work was queued before the first page was reported done, once
    assert result.pages == 3
    assert events[0] == ("first", 0.0, 10)
    assert [e[0] for e in events].count("first") == 1
    # And each later page (and the end of the audience) first gave way, its budget shrinking
    holds = [budget for kind, budget, _ in events if kind == "hold"]
    # (each page's few milliseconds earn back a fifth of themselves)
    assert holds == pytest.approx([MAX_HOLD_S, MAX_HOLD_S - 0.5, MAX_HOLD_S - 1.0], abs=0.05)
    assert sum(len(w.supporter_ids) for w in queue.items) == 30


@pytest.mark.parametrize(("subscribers", "pages", "holds"), [(25, 3, 2), (7, 1, 0)])
def test_an_expansion_whose_audience_ends_in_a_short_page_holds_no_more(
    engine: Engine, subscribers: int, pages: int, holds: int
) -> None:
    # Given a blast whose audience ends part-way through a page of 10
    add_supporters(
        engine,
        [{"phone": f"+1415555{3000 + i:04d}"} for i in range(subscribers)],
        topic="short-topic",
    )
    blasts, ledger, queue = SqlBlastStore(engine), SqlLedger(engine), InMemorySendQueue()
    alert = parse_alert(json.dumps({"alert_id": "sp-1", "sms": {"body": "Hi"}}), fallback_id="x")
    blast, _ = blasts.create(alert, "short-topic", None)
    held: list[float] = []

    def hold(budget_s: float) -> float:
        held.append(budget_s)
        return 0.0

    # When it is expanded
    result = Expander(ledger, blasts, queue, page_size=10, hold_later_page=hold).expand(blast)
    # Then the short page was the last: no page after it gave way to other alerts (a
    # twenty-recipient alert holds nobody and is held by nobody)
    assert result.pages == pages and len(held) == holds
    assert sum(len(w.supporter_ids) for w in queue.items) == subscribers
    # And the blast is expanded to its end
    assert blasts.get("sp-1").expanded_at is not None  # type: ignore[union-attr]


def test_a_long_expansion_earns_its_hold_budget_back_as_it_runs() -> None:
    # Given an expansion whose holds each take all the budget offered (alerts keep coming)
    now = [0.0]
    budget = HoldBudget(clock=lambda: now[0])
    offered: list[float] = []

    def hold(budget_s: float) -> float:
        offered.append(budget_s)
        return budget_s

    budget.spend(hold)  # spends the starting budget
    assert offered == [MAX_HOLD_S]
    budget.spend(hold)  # nothing earned yet: no hold at all
    assert offered == [MAX_HOLD_S]
    # When it has run 10 s more, it may hold a fifth of that; never more than the cap
    now[0] += 10.0
    budget.spend(hold)
    assert offered[-1] == pytest.approx(HOLD_SHARE * 10.0)
    now[0] += 1_000.0
    budget.spend(hold)
    assert offered[-1] == MAX_HOLD_S
