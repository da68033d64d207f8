"""A/B variants (issue #19 item 2, contract §4 ``variants``).

Recipients are split evenly and reproducibly: the variant is a hash of (blast, supporter)
computed by the expansion itself (in SQL on PostgreSQL and SQLite, in Python in the twin,
all three agreeing), stored on the ledger row, and the same on every redelivery. Every
count is also reported per variant. The end-to-end test sends a two-variant alert through
intake, senders and the Twilio emulator and redelivers it midway.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from messaging.blasts.intake import Intake
from messaging.blasts.winner import WinnerPicker, held_variants, winner_by_clicks
from messaging.content.alert import parse_alert
from messaging.content.personalize import sms_body
from messaging.content.variants import is_held, variant_of
from messaging.errors import InputError
from messaging.memory import InMemoryBlastControl, InMemorySendQueue
from messaging.ports import Delivery, SupporterRow
from messaging.store import Stores, memory_stores, open_stores
from messaging.store.db import create_db_engine
from messaging.store.memory.tables import MemoryTables
from messaging.store.schema import deliveries
from tests.factories import write_texters
from tests.fleet import (  # noqa: F401 - emulated_fleet: the fixture
    EmulatedFleet,
    aws_clients,
    emulated_fleet,
    seed_people,
    start_pipeline,
    topic_arn,
    wait_ended,
    wait_until,
)
from tests.test_dashboard import BOOTSTRAP_TOKEN, Web, login, web  # noqa: F401 - the fixture
from workers.commands.blast import build_alert

TWO = [{"sms": {"body": "A: watch the clip"}}, {"sms": {"body": "B: chip in tonight"}}]


# --- the alert ------------------------------------------------------------------------------


def test_variants_take_two_to_five_with_the_same_channels() -> None:
    alert = parse_alert(json.dumps({"variants": TWO}), fallback_id="a")
    # A variants-only alert sends on its variants' channels
    assert alert.channels == ("sms",) and alert.sms is not None and len(alert.variants or ()) == 2
    for bad in ([TWO[0]], TWO * 3):
        with pytest.raises(InputError, match="variants"):
            parse_alert(json.dumps({"variants": bad}), fallback_id="a")
    mixed = [TWO[0], {"email": {"subject": "s", "text": "t"}}]
    with pytest.raises(InputError, match="email"):
        parse_alert(json.dumps({"variants": mixed}), fallback_id="a")
    # Round trip: what is stored with the blast parses to the same alert
    assert parse_alert(alert.to_json(), fallback_id="x") == alert


def test_the_cli_builds_variants_and_email_tracking() -> None:
    document = build_alert(
        topic="debate-night",
        alert_id="cli-ab",
        sms_body=None,
        email_subject="Did you see that?",
        email_text="Watch https://ex.am/p1",
        email_html=None,
        priority="urgent",
        send_by=None,
        audience_json=None,
        test_recipients=(),
        dry_run=False,
        variant_sms_bodies=("A: https://ex.am/p1", "B: https://ex.am/p1"),
        track_email_links=True,
        pick_winner_after="PT10M",
        pick_winner_share=0.1,
    )
    alert = parse_alert(json.dumps(document), fallback_id="x")
    assert [v.sms.body[:1] for v in alert.variants or () if v.sms] == ["A", "B"]
    assert alert.sms is not None and alert.sms.body.startswith("A:")
    assert alert.email is not None and alert.email.track_links
    assert alert.pick_winner is not None and alert.pick_winner.share == 0.1
    assert alert.pick_winner.after.total_seconds() == 600


def even_by_chance(count: int, total: int, buckets: int) -> bool:
    """``count`` of ``total`` in one of ``buckets`` is what a fair die gives: within 5
    standard deviations of its share (a random split of 10,000 in three is 3,333 ± 47 per
    SD; a broken split such as the linear hash's all-one-variant test share is hundreds off).
    """
    p = 1 / buckets
    return abs(count - total * p) <= 5 * (total * p * (1 - p)) ** 0.5


def test_the_hash_is_even_and_differs_between_blasts() -> None:
    for n in (2, 3, 5):
        split = Counter(variant_of("debate-1", sid, n) for sid in range(1, 10_001))
        assert all(even_by_chance(k, 10_000, n) for k in split.values()), split
    same = sum(variant_of("a", s, 2) == variant_of("b", s, 2) for s in range(1, 10_001))
    assert 4_500 < same < 5_500  # another blast splits the same people independently


def test_a_test_share_holds_every_variant_in_proportion() -> None:
    # Given 200 blasts testing on a fifth, over 2,000 consecutive supporter ids at offsets a
    # real database reaches (a linear hash failed this: one test share of 100 was all B)
    worst_z = 0.0
    for b in range(200):
        alert = parse_alert(
            json.dumps({"alert_id": f"share-{b}", "variants": TWO, "pick_winner": PICK}),
            fallback_id="x",
        )
        for offset in (0, 5_000, 1_000_000):
            tested = [s for s in range(offset + 1, offset + 2_001) if not is_held(alert, s)]
            a = sum(1 for s in tested if variant_of(alert.alert_id, s, 2) == 0)
            n = len(tested)
            assert 300 <= n <= 500, n  # the share is a fifth, give or take chance
            worst_z = max(worst_z, abs(a - n / 2) / (n / 4) ** 0.5)
    # Then each test share splits like a fair coin: 600 splits, none beyond 4.5 sigma
    assert worst_z < 4.5, worst_z


# --- the split on every backend -------------------------------------------------------------


@pytest.fixture
def backend(store_engine: Engine | None) -> tuple[Stores, object]:
    if store_engine is None:
        stores = memory_stores()
        return stores, stores.ledger._t  # type: ignore[attr-defined]
    return open_stores(store_engine), store_engine


def _variants_written(where: object, blast_id: str) -> dict[int, int | None]:
    if isinstance(where, MemoryTables):
        return {r.supporter_id: r.variant for r in where.rows_of(blast_id)}
    assert isinstance(where, Engine)
    with where.connect() as conn:
        rows = conn.execute(
            select(deliveries.c.supporter_id, deliveries.c.variant).where(
                deliveries.c.blast_id == blast_id
            )
        ).all()
    return {int(s): v for s, v in rows}


def _intake(stores: Stores) -> Intake:
    def unwrap(body: str) -> Delivery:
        return Delivery(body, "t", "m-1", "raw")

    return Intake(unwrap, stores.blasts, stores.ledger, InMemorySendQueue(), InMemoryBlastControl())


def test_ten_thousand_recipients_split_evenly_and_stay_put_on_redelivery(
    backend: tuple[Stores, object],
) -> None:
    stores, where = backend
    # Given 10,000 opted-in supporters
    write_texters(stores, 10_000)
    three = [*TWO, {"sms": {"body": "C: call your senator"}}]
    document = json.dumps({"alert_id": "ab-1", "variants": three})
    # When the alert is taken in
    intake = _intake(stores)
    record = intake.handle(document)
    written = _variants_written(where, "ab-1")
    # Then each variant got a third, within 3 %
    split = Counter(written.values())
    assert len(written) == 10_000 and set(split) == {0, 1, 2}
    assert all(even_by_chance(n, 10_000, 3) for n in split.values()), split
    # And the database computed what the hash says (SQL and Python agree)
    assert all(v == variant_of("ab-1", sid, 3) for sid, v in written.items())
    # And a redelivery of the same alert changes nobody's variant
    again = intake.handle(document)
    assert again.blast_id == record.blast_id
    assert _variants_written(where, "ab-1") == written
    # And blast show reports every count per variant
    (summary,) = stores.blasts.summaries([stores.blasts.get("ab-1")])  # type: ignore[list-item]
    per_variant = summary["variants"]
    assert set(per_variant) == {"0", "1", "2"}
    assert [per_variant[str(v)]["sms"]["targeted"] for v in range(3)] == [
        split[v] for v in range(3)
    ]
    assert sum(per_variant[v]["sms"]["pending"] for v in per_variant) == 10_000


def test_an_alert_without_variants_has_no_variant_rows(backend: tuple[Stores, object]) -> None:
    stores, where = backend
    stores.supporters.write_batch(
        [SupporterRow("p1", phone="+14122000001", sms_opt_in=True, topics=("t",))],
        frozenset({"phone", "sms_opt_in", "topics"}),
    )
    _intake(stores).handle(json.dumps({"alert_id": "plain", "sms": {"body": "hi"}}))
    assert set(_variants_written(where, "plain").values()) == {None}
    (summary,) = stores.blasts.summaries([stores.blasts.get("plain")])  # type: ignore[list-item]
    assert "variants" not in summary


# --- end to end -----------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.integration
def test_variants_go_end_to_end_each_recipient_once_across_a_redelivery(
    emulated_fleet: Callable[..., EmulatedFleet],  # noqa: F811 - the fixture
    moto_url: str,
    prefix: str,
    tmp_path: Path,
) -> None:
    with emulated_fleet() as (twilio, _, env):
        phones = seed_people(env, tmp_path, 200, "debate")
        sns, _ = aws_clients(moto_url)
        arn = topic_arn(sns, prefix, "debate")
        fleet = start_pipeline(env, tmp_path)
        try:
            # Given a two-variant alert, published, and published again midway (redelivery)
            alert = json.dumps({"alert_id": "ab-e2e", "variants": TWO})
            sns.publish(TopicArn=arn, Message=alert)
            wait_until(lambda: len(twilio.recorder.messages()) >= 20, "the first texts")
            sns.publish(TopicArn=arn, Message=alert)
            summary = wait_ended(env, "ab-e2e", timeout_s=90)
        finally:
            fleet.stop()
        texts = twilio.recorder.messages()
    # Then every recipient got exactly one text, of one variant
    assert sorted(m["to"] for m in texts) == sorted(phones)
    bodies = Counter(m["body"].split(":", 2)[1].strip()[:1] for m in texts)
    assert set(bodies) == {"A", "B"} and all(60 <= n <= 140 for n in bodies.values()), bodies
    # And the counts per variant add up to the blast's and match what was sent
    per_variant = summary["variants"]
    assert per_variant["0"]["sms"]["sent"] + per_variant["1"]["sms"]["sent"] == 200
    assert summary["counts"]["sms"]["sent"] == 200
    assert sorted(v["sms"]["sent"] for v in per_variant.values()) == sorted(bodies.values())


# --- the dashboard --------------------------------------------------------------------------


def test_the_dashboard_shows_counts_and_clicks_per_variant(web: Web) -> None:  # noqa: F811
    # Given a two-variant blast expanded over 40 supporters, 3 of whom clicked
    stores = web.app.stores
    write_texters(stores, 40)
    alert = parse_alert(json.dumps({"alert_id": "ab-dash", "variants": TWO}), fallback_id="x")
    stores.blasts.create(alert, "t", None)
    stores.ledger.expand_page("ab-dash", alert, "t", 0, 100, lambda _c, _p: None)
    sids = sorted(_variants_written(web.app.engine, "ab-dash"))
    assert stores.links.click([("ab-dash", "sms", sid) for sid in sids[:3]]) == 3
    # When an operator opens the blast's page
    client = web.make_client()
    login(client, BOOTSTRAP_TOKEN)
    page = client.get("/dashboard/blasts/ab-dash")
    # Then a table shows each variant's counts, the clicks among them
    assert page.status_code == 200
    assert "A/B variants" in page.text
    rows = re.findall(
        r"<tr><td>(\d)</td><td>sms</td><td>(\d+)</td>(?:<td>\d+</td>){2}<td>(\d+)</td>", page.text
    )
    by_variant = {int(v): (int(targeted), int(clicked)) for v, targeted, clicked in rows}
    assert set(by_variant) == {1, 2}
    assert sum(t for t, _ in by_variant.values()) == 40
    assert sum(c for _, c in by_variant.values()) == 3
    clicked = Counter(variant_of("ab-dash", sid, 2) + 1 for sid in sids[:3])
    assert all(by_variant[v][1] == clicked.get(v, 0) for v in (1, 2))


# --- pick_winner ----------------------------------------------------------------------------

PICK = {"after": "PT2S", "by": "clicks", "share": 0.2}


def test_pick_winner_is_validated() -> None:
    alert = parse_alert(json.dumps({"variants": TWO, "pick_winner": PICK}), fallback_id="a")
    assert alert.pick_winner is not None and alert.pick_winner.after.total_seconds() == 2
    for bad in ({"after": "PT2S", "share": 1.5}, {"after": "soon"}, {"after": "PT2S", "by": "x"}):
        with pytest.raises(InputError, match="pick_winner"):
            parse_alert(json.dumps({"variants": TWO, "pick_winner": bad}), fallback_id="a")
    with pytest.raises(InputError, match="pick_winner needs variants"):
        parse_alert(json.dumps({"sms": {"body": "x"}, "pick_winner": PICK}), fallback_id="a")


def test_the_test_share_goes_first_and_the_winner_to_the_rest(
    backend: tuple[Stores, object],
) -> None:
    stores, where = backend
    # Given 1,000 supporters and a two-variant alert that tests on a fifth of them
    write_texters(stores, 1_000)
    document = {"alert_id": "pw-1", "variants": TWO, "pick_winner": PICK}
    record = _intake(stores).handle(json.dumps(document))
    written = _variants_written(where, "pw-1")
    # Then a fifth (within 3 points) is pending with its variant, the rest held without one
    test_share = {sid for sid, v in written.items() if v is not None}
    held = set(written) - test_share
    assert 170 <= len(test_share) <= 230, len(test_share)
    assert all(is_held(record.alert, sid) == (sid in held) for sid in written)
    (summary,) = stores.blasts.summaries([record])
    assert summary["counts"]["sms"]["pending"] == len(test_share)
    assert summary["counts"]["sms"]["deferred"] == len(held)
    # Nothing held is released while the test runs
    now = datetime.now(UTC)
    assert stores.ledger.release_due(now + timedelta(days=1), 10_000) == []
    # When variant B's texts get more clicks, and the test's time has passed
    b_rows = sorted(sid for sid in test_share if written[sid] == 1)
    a_rows = sorted(sid for sid in test_share if written[sid] == 0)
    stores.links.click([("pw-1", "sms", sid) for sid in b_rows[:5]])
    stores.links.click([("pw-1", "sms", sid) for sid in a_rows[:2]])
    early = WinnerPicker(stores.blasts, stores.blasts, stores.links, clock=lambda: now)
    assert early.run_once() == {}  # 2 s have not passed
    later = now + timedelta(seconds=3)
    picker = WinnerPicker(stores.blasts, stores.blasts, stores.links, clock=lambda: later)
    assert picker.run_once() == {"pw-1": 1}
    # Then every held row gets B and is due now; a second pick changes nothing
    assert {v for sid, v in _variants_written(where, "pw-1").items() if sid in held} == {1}
    again = WinnerPicker(stores.blasts, stores.blasts, stores.links, clock=lambda: later)
    assert again.run_once() == {}
    released = stores.ledger.release_due(later, 10_000)
    assert {sid for _, _, sid in released} == held
    # And the sender's view of a held row is B's body, a tested row keeps its own
    some_held = min(held)
    variants = held_variants(stores.links, record.alert, "pw-1", "sms", [some_held, a_rows[0]])
    assert variants == {some_held: 1}
    assert sms_body(record.alert, some_held, {}, None, variants[some_held]).startswith("B:")
    assert sms_body(record.alert, a_rows[0], {}, None, None).startswith("A:")


def test_a_tie_picks_the_first_variant() -> None:
    alert = parse_alert(json.dumps({"variants": TWO, "pick_winner": PICK}), fallback_id="a")
    assert winner_by_clicks(alert, {}) == 0
    tie = {0: {"sms": {"clicked": 3}}, 1: {"sms": {"clicked": 2}, "email": {"clicked": 1}}}
    assert winner_by_clicks(alert, tie) == 0
    assert winner_by_clicks(alert, {1: {"sms": {"clicked": 1}}}) == 1


@pytest.mark.e2e
@pytest.mark.integration
def test_pick_winner_end_to_end_the_rest_get_the_variant_clicked_most(
    emulated_fleet: Callable[..., EmulatedFleet],  # noqa: F811 - the fixture
    pg_url: str,
    moto_url: str,
    prefix: str,
    tmp_path: Path,
) -> None:
    with emulated_fleet() as (twilio, _, env):
        phones = seed_people(env, tmp_path, 100, "debate")
        sns, _ = aws_clients(moto_url)
        fleet = start_pipeline(env, tmp_path)
        fleet.start("scheduler", "scheduler", "--interval", "1")
        engine = create_db_engine(pg_url)
        try:
            # Given a two-variant alert testing on a fifth for 15 seconds (room for a loaded CI host to send the test share and click)
            pick = {"after": "PT15S", "share": 0.2}
            document = {"alert_id": "pw-e2e", "variants": TWO, "pick_winner": pick}
            sns.publish(TopicArn=topic_arn(sns, prefix, "debate"), Message=json.dumps(document))
            alert = parse_alert(json.dumps(document), fallback_id="x")
            stores = open_stores(engine)

            def expanded() -> bool:
                record = stores.blasts.get("pw-e2e")
                return record is not None and record.expanded_at is not None

            wait_until(expanded, "the blast's expansion", 30)
            tested = {s: v for s, v in _variants_written(engine, "pw-e2e").items() if v is not None}
            wait_until(lambda: len(twilio.recorder.messages()) >= len(tested), "the test share")
            # When two of B's recipients click (and none of A's) before the time is up
            b_rows = sorted(s for s, v in tested.items() if v == 1)[:2]
            assert stores.links.click([("pw-e2e", "sms", s) for s in b_rows]) == 2
            summary = wait_ended(env, "pw-e2e", timeout_s=90)
        finally:
            fleet.stop()
            engine.dispose()
        texts = twilio.recorder.messages()
    # Then everyone got one text: the test share their own variant, the rest B's
    assert sorted(m["to"] for m in texts) == sorted(phones)
    letters = Counter(m["body"].split(":", 2)[1].strip()[:1] for m in texts)
    tested_a = sum(1 for v in tested.values() if v == 0)
    assert (letters["A"], letters["B"]) == (tested_a, 100 - tested_a), letters
    assert 0 < tested_a < len(tested), tested  # the test share tried both variants
    assert not any(is_held(alert, s) for s in tested)
    per_variant = summary["variants"]
    assert per_variant["1"]["sms"]["sent"] == 100 - tested_a
    assert per_variant["1"]["sms"]["clicked"] == 2
