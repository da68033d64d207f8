"""Live counters never mislead (issue #14, item 6): a reconcile racing an expansion page's
commit must not lose the page, so the live view never shows fewer ``targeted`` than the
ledger holds, nor ``pending`` 0 while a row is pending."""

from __future__ import annotations

import json

from messaging.blasts.blast_control import BlastActions
from messaging.blasts.expansion import Expander
from messaging.blasts.lifecycle import counts_from_states
from messaging.content.alert import parse_alert
from messaging.ports import ExpandedPage
from messaging.safety.sweep import Sweeper
from messaging.store.db import create_db_engine
from tests.factories import add_supporters, send_context


def test_a_reconcile_between_a_pages_count_and_its_commit_loses_nothing(pg_url: str) -> None:
    # PostgreSQL only: SQLite takes its writer lock for every transaction, so a reconcile
    # cannot run between a page's count and its commit there.
    engine = create_db_engine(pg_url)
    # Given a blast being expanded, its counters based on the (empty) ledger
    add_supporters(engine, [{"phone": f"+1415555{i:04d}"} for i in range(660)], topic="t")
    ctx, queue = send_context(engine)
    doc = {"alert_id": "live-1", "sms": {"body": "Hi"}}
    blast, _ = ctx.blasts.create(parse_alert(json.dumps(doc), fallback_id="x"), "t", None)
    progress = ctx.control.progress
    progress.replace("live-1", ctx.blasts.state_counts(["live-1"])["live-1"])
    sweeper = Sweeper(BlastActions(ctx.blasts, ctx.ledger, queue, ctx.control))
    seen: list[dict[str, int]] = []

    def count_then_race(channel: str, page: ExpandedPage) -> None:
        # The page counts its rows, as expansion does, just before its commit; a scheduler
        # pass reconciles right then, while the rows are not yet visible to it
        progress.add("live-1", channel, page.by_state)
        sweeper.reconcile_live()
        live = progress.read(["live-1"])["live-1"]
        seen.append(counts_from_states((live or {}).get("sms", {})))

    # When the page of 660 rows commits after that reconcile
    written = ctx.ledger.expand_page("live-1", blast.alert, "t", 0, 1000, count_then_race)
    assert written is not None
    sweeper.reconcile_live()
    live = progress.read(["live-1"])["live-1"]
    # Then the live view counted all 660 throughout: none lost, pending never 0
    assert seen and all(c["targeted"] == 660 and c["pending"] == 660 for c in seen), seen
    counts = counts_from_states((live or {}).get("sms", {}))
    assert (counts["targeted"], counts["pending"]) == (660, 660)
    # And once the expansion has finished, reconciles base the counters on the ledger again
    Expander(ctx.ledger, ctx.blasts, queue).expand(ctx.blasts.get("live-1"))  # type: ignore[arg-type]
    progress.add("live-1", "sms", {"pending": 5})  # drift nobody reported
    sweeper.reconcile_live()
    counts = counts_from_states((progress.read(["live-1"])["live-1"] or {}).get("sms", {}))
    assert (counts["targeted"], counts["pending"]) == (660, 660)
    engine.dispose()
