"""Tracked short links (issue #19 item 1, contract §7 ``GET /l/{code}``).

Codes are HMAC-tagged and short; every http(s) URL of an SMS (and of an email that opts in)
becomes the recipient's own ``/l/{code}``; the redirect adds ``refcode=<blast id>`` and the
first GET per recipient counts ``clicked`` (HEAD and link-preview bots count nothing). The
end-to-end test runs intake and senders as processes against the Twilio and SendGrid
emulators, and ``rapid web``'s app in process against the same PostgreSQL.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import Engine, select

from config.settings import load_settings
from emulators.server import start_in_thread
from messaging.blasts.dry_run import DryRunConfig
from messaging.blasts.intake import Intake
from messaging.content.alert import parse_alert
from messaging.content.links import (
    TAG_BITS,
    BlastLinks,
    LinkCodes,
    ShortLinks,
    find_urls,
    preview_links,
    with_refcode,
)
from messaging.memory import InMemoryBlastControl, InMemorySendQueue
from messaging.ports import Delivery, SupporterRow
from messaging.store import Stores, memory_stores, open_stores
from messaging.store.schema import deliveries
from tests.fleet import (  # noqa: F401 - emulated_fleet: the fixture
    EmulatedFleet,
    aws_clients,
    blast_summary,
    emulated_fleet,
    seed_people,
    start_pipeline,
    topic_arn,
    wait_ended,
)
from workers.app import App
from workers.web.app import create_app
from workers.web.links import ClickRecorder, is_preview

KEY = b"k" * 32
DONATE = "https://secure.actblue.com/donate/debate-night?amount=10"
CLIP = "https://ex.am/p1"


# --- codes ---------------------------------------------------------------------------------


@pytest.fixture
def stores(store_engine: Engine | None) -> Stores:
    """Empty stores on one backend (once each: memory, SQLite, PostgreSQL)."""
    return memory_stores() if store_engine is None else open_stores(store_engine)


def test_codes_round_trip_and_stay_short() -> None:
    codes = LinkCodes(KEY)
    for link_id, supporter_id in [(0, 0), (1, 1), (37, 250_000), (4_095, 1_999_999)]:
        code = codes.make(link_id, supporter_id)
        assert codes.verify(code) == (link_id, supporter_id)
        # SMS segments are paid per character: 13 at most for these sizes.
        assert len(code) <= 13 and re.fullmatch(r"[0-9A-Za-z]+", code)


def test_forged_altered_and_foreign_codes_are_refused() -> None:
    codes = LinkCodes(KEY)
    genuine = codes.make(12, 345_678)
    rng = random.Random(7)
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    # Given 20,000 random codes of the genuine length: none verifies (odds 2**-36 each)
    walked = ["".join(rng.choice(alphabet) for _ in genuine) for _ in range(20_000)]
    assert not [c for c in walked if codes.verify(c)]
    # A neighbour of a genuine code (walking ids by one) is refused
    for i in range(len(genuine)):
        for ch in "0aZ":
            altered = genuine[:i] + ch + genuine[i + 1 :]
            if altered != genuine:
                assert codes.verify(altered) is None
    # Another key's code, junk and over-long input are refused
    assert codes.verify(LinkCodes(b"z" * 32).make(12, 345_678)) is None
    for junk in ("", "!!", "a" * 200, "0" + genuine):
        assert codes.verify(junk) is None
    assert TAG_BITS >= 36


def test_a_previous_key_still_verifies_after_rotation() -> None:
    old = LinkCodes(b"o" * 32).make(3, 99)
    assert LinkCodes(KEY, [b"o" * 32]).verify(old) == (3, 99)


# --- finding and rewriting URLs -------------------------------------------------------------


def test_urls_are_found_in_templates_but_not_inside_expressions() -> None:
    template = (
        "Hi {{ first_name }}! Watch https://ex.am/p1. Chip in: "
        "https://secure.actblue.com/donate/x?a=1&b=2! Yours: https://x.org/?id={{ id }} "
        "{{ 'https://in.expression.org' }} (https://ex.am/p1)"
    )
    assert find_urls(template) == [
        "https://ex.am/p1",
        "https://secure.actblue.com/donate/x?a=1&b=2",
    ]


def test_rewrite_replaces_only_the_alerts_urls_with_the_recipients_short_link() -> None:
    codes = LinkCodes(KEY)
    links = BlastLinks(codes, "https://go.acme.example/", {CLIP: 5})
    body = links.rewrite(f"Watch {CLIP}. Not this: {CLIP}x or https://other.org", 42)
    short = re.findall(r"https://go\.acme\.example/l/(\w+)", body)
    assert len(short) == 1 and codes.verify(short[0]) == (5, 42)
    assert body.endswith(f". Not this: {CLIP}x or https://other.org")


def test_refcode_is_added_and_an_authors_own_is_kept() -> None:
    assert with_refcode(DONATE, "debate-1") == DONATE + "&refcode=debate-1"
    assert with_refcode("https://a.org/x", "b:1", "rc") == "https://a.org/x?rc=b%3A1"
    assert with_refcode("https://a.org/?refcode=mine", "b") == "https://a.org/?refcode=mine"


def test_preview_fetchers_are_recognised() -> None:
    for agent in (
        "facebookexternalhit/1.1 Facebot Twitterbot/1.0",  # iMessage's link preview
        "WhatsApp/2.23.20.0",
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
        "TelegramBot (like TwitterBot)",
    ):
        assert is_preview(agent), agent
    phone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile"
    assert not is_preview(phone) and not is_preview("")


def test_dry_run_counts_segments_with_short_links() -> None:
    # Given a body whose long URL makes it two segments as written (with the first-contact
    # text around it), one with a short link
    long_url = "https://secure.actblue.com/donate/debate-night-2026-rapid-response?amount=25"
    body = "Chip in now before midnight, the debate is on and we need you: " + long_url
    alert = parse_alert(json.dumps({"sms": {"body": body}}), fallback_id="d")
    assert len(body) > 130
    stores = _people(memory_stores(), 10)
    plain = _dry_run(stores, alert, DryRunConfig(org_name="Acme"))
    short = _dry_run(
        stores, alert, DryRunConfig(org_name="Acme", short_link_base_url="https://a.co")
    )
    # Then with short links it is measured as they would go: fewer segments
    assert short["segments"] < plain["segments"]
    links = preview_links(alert, "https://a.co")
    assert links is not None and "https://a.co/l/" in links.rewrite(body, 1)


def _people(stores: Stores, n: int) -> Stores:
    rows = [
        SupporterRow(f"p{i}", phone=f"+1415555{1000 + i:04d}", sms_opt_in=True, topics=("t",))
        for i in range(n)
    ]
    stores.supporters.write_batch(rows, frozenset({"phone", "sms_opt_in", "topics"}))
    return stores


def _dry_run(stores: Stores, alert: object, config: DryRunConfig) -> dict[str, float]:
    def unwrap(body: str) -> Delivery:
        return Delivery(body, "t", "m-1", "raw")

    intake = Intake(
        unwrap, stores.blasts, stores.ledger, InMemorySendQueue(), InMemoryBlastControl(), config
    )
    document = json.loads(alert.to_json())  # type: ignore[attr-defined]
    document.update(dry_run=True, alert_id=f"d-{random.random()}")
    blast = intake.handle(json.dumps(document))
    return dict(blast.stats["estimate"]["sms"])


# --- the store, on every backend ------------------------------------------------------------


def test_links_register_once_and_a_recipient_clicks_once(stores: Stores) -> None:
    # Given a blast expanded to 3 recipients
    _people(stores, 3)
    alert = parse_alert(json.dumps({"sms": {"body": f"Watch {CLIP}"}}), fallback_id="b1")
    record, _ = stores.blasts.create(alert, "t", None)
    stores.ledger.expand_page("b1", alert, "t", 0, 100, lambda _c, _p: None)
    # When the same URLs are registered twice (two senders racing)
    first = stores.links.register("b1", "sms", [CLIP, DONATE])
    assert stores.links.register("b1", "sms", [DONATE, CLIP]) == first
    assert stores.links.register("b1", "email", [CLIP])[CLIP] not in first.values()
    link = stores.links.get(first[DONATE])
    assert link is not None and (link.blast_id, link.channel, link.url) == ("b1", "sms", DONATE)
    assert stores.links.get(999_999) is None
    # Then a recipient's first click counts and later ones do not; no row, no click
    sid = min(s for s in _supporter_ids(stores, "b1"))
    assert stores.links.click([("b1", "sms", sid), ("b1", "sms", sid)]) == 1
    assert stores.links.click([("b1", "sms", sid)]) == 0
    assert stores.links.click([("b1", "sms", 10_000_000), ("b1", "email", sid)]) == 0
    assert stores.links.click([]) == 0
    # And blast show counts it
    (summary,) = stores.blasts.summaries([record])
    assert summary["counts"]["sms"]["clicked"] == 1
    assert summary["counts"]["sms"]["targeted"] == 3  # a click moves no row


def test_the_click_recorder_writes_batches_and_keeps_clicks_the_database_refused(
    stores: Stores,
) -> None:
    _people(stores, 3)
    alert = parse_alert(json.dumps({"sms": {"body": f"Watch {CLIP}"}}), fallback_id="b2")
    stores.blasts.create(alert, "t", None)
    stores.ledger.expand_page("b2", alert, "t", 0, 100, lambda _c, _p: None)
    sids = _supporter_ids(stores, "b2")

    class Down:
        def click(self, clicks: object) -> int:
            raise ConnectionError("database away")

    # Given a recorder whose database is away: the clicks wait, nothing is lost
    recorder = ClickRecorder(Down(), flush_every_s=3600)  # type: ignore[arg-type]
    for sid in [*sids, sids[0]]:
        recorder.add("b2", "sms", sid)
    assert recorder.flush() == 0
    # When the database is back, one flush writes them: each recipient once
    recorder._store = stores.links
    assert recorder.flush() == 3 and recorder.flush() == 0
    (summary,) = stores.blasts.summaries([stores.blasts.get("b2")])  # type: ignore[list-item]
    assert summary["counts"]["sms"]["clicked"] == 3


def _supporter_ids(stores: Stores, blast_id: str) -> list[int]:
    """The supporter ids of a blast's SMS rows (ids differ per backend and run)."""
    engine = getattr(stores.ledger, "engine", None)
    if engine is None:  # the memory twin
        return sorted(r.supporter_id for r in stores.ledger._t.rows_of(blast_id))  # type: ignore[attr-defined]
    with engine.connect() as conn:
        rows = conn.execute(
            select(deliveries.c.supporter_id).where(
                deliveries.c.blast_id == blast_id, deliveries.c.channel == "sms"
            )
        ).all()
    return sorted(int(r[0]) for r in rows)


# --- end to end -----------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.integration
def test_links_are_rewritten_redirected_with_refcode_and_clicks_counted_once(
    emulated_fleet: Callable[..., EmulatedFleet],  # noqa: F811 - the fixture
    moto_url: str,
    prefix: str,
    tmp_path: Path,
) -> None:
    with emulated_fleet(
        SHORT_LINK_BASE_URL="https://go.acme.example",
    ) as (twilio, sendgrid, env):
        phones = seed_people(env, tmp_path, 20, "debate")
        sns, _ = aws_clients(moto_url)
        fleet = start_pipeline(env, tmp_path)
        try:
            # Given a debate-night alert with a clip and a donation link, email opting in
            alert = {
                "alert_id": "debate-1-links",
                "sms": {"body": f"Hi {{{{ first_name }}}}, watch {CLIP} then chip in: {DONATE}"},
                "email": {
                    "subject": "Did you see that?",
                    "html": f'<p>Watch <a href="{CLIP}">the clip</a></p>',
                    "track_links": True,
                },
            }
            sns.publish(TopicArn=topic_arn(sns, prefix, "debate"), Message=json.dumps(alert))
            summary = wait_ended(env, "debate-1-links", timeout_s=90)
        finally:
            fleet.stop()
        texts = twilio.recorder.messages()
        mails = sendgrid.recorder.messages()
    assert summary["counts"]["sms"]["sent"] == 20 and summary["counts"]["email"]["sent"] == 20
    assert sorted(m["to"] for m in texts) == sorted(phones)
    # Then no text carries a long URL: each has two short links of its own
    codes: list[list[str]] = []
    for m in texts:
        assert CLIP not in m["body"] and "actblue" not in m["body"]
        found = re.findall(r"https://go\.acme\.example/l/([0-9A-Za-z]+)", m["body"])
        assert len(found) == 2, m["body"]
        codes.append(found)
    assert len({c for pair in codes for c in pair}) == 40
    # And the opted-in email's link is a short link too
    for mail in mails:
        assert CLIP not in mail["content"]["text/html"]
        assert "https://go.acme.example/l/" in mail["content"]["text/html"]

    app = App(load_settings(env))
    server = start_in_thread(create_app(app), port=0)
    try:
        with httpx.Client(base_url=server.url, trust_env=False, timeout=10) as web:
            clip_code, donate_code = codes[0]
            # When a recipient follows the donation link: 302 with the refcode
            answer = web.get(f"/l/{donate_code}")
            assert answer.status_code == 302
            target = urlsplit(answer.headers["location"])
            assert f"{target.scheme}://{target.netloc}{target.path}" == DONATE.split("?")[0]
            assert parse_qs(target.query) == {"amount": ["10"], "refcode": ["debate-1-links"]}
            # And again, and through the other link of the same text: still one click
            assert web.get(f"/l/{donate_code}").status_code == 302
            assert web.get(f"/l/{clip_code}").headers["location"].startswith(CLIP + "?refcode=")
            # A HEAD and a link-preview bot get the redirect but count nothing
            head_code = codes[1][0]
            assert web.head(f"/l/{head_code}").status_code == 302
            bot = {"user-agent": "facebookexternalhit/1.1 Facebot Twitterbot/1.0"}
            assert web.get(f"/l/{codes[2][0]}", headers=bot).status_code == 302
            # A second recipient clicks; a forged code is a 404
            assert web.get(f"/l/{codes[3][1]}").status_code == 302
            assert (
                web.get("/l/" + clip_code[:-1] + ("a" if clip_code[-1] != "a" else "b")).status_code
                == 404
            )
            assert web.get("/l/nope!").status_code == 404
    finally:
        server.stop()
        app.close()
    # Then blast show counts two recipients clicked on SMS, none on email (clicks are
    # written within 50 ms of the redirect, and the server flushes what it holds as it stops)
    shown = blast_summary(env, "debate-1-links")
    assert shown is not None
    assert shown["counts"]["sms"]["clicked"] == 2
    assert shown["counts"]["email"]["clicked"] == 0
    assert shown["counts"]["sms"]["sent"] == 20


def test_short_links_need_no_key_only_in_production() -> None:
    # Production without RAPID_SECRET_KEY: no links (the senders log it); test: a throwaway key
    production = App(load_settings({"RAPID_ENV": "production"}))
    assert production.links is None
    testing = App(load_settings({"RAPID_ENV": "test", "DATABASE_URL": "sqlite://"}))
    links = testing.links
    assert isinstance(links, ShortLinks) and links.base_url == "http://127.0.0.1:8000"
