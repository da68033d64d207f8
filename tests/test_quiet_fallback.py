"""Debate night (issue #15 item 5): a topic's own quiet window and the email fallback.

The sender tests run on the real ledger (SQLite and PostgreSQL) at a fixed hour: 03:00 UTC
on a November night is 22:00 in New York (quiet under 21:00-08:00) and 17:00 in Honolulu.
The last test runs the fleet as the Procfile does: the CLI, moto SNS/SQS, `rapid intake` and
`rapid sender` processes, PostgreSQL, Redis and the Twilio/SendGrid emulators.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, select

from config.settings import QuietHours
from messaging.blasts.expansion import Expander
from messaging.blasts.lifecycle import RowState
from messaging.content.alert import parse_alert
from messaging.errors import InputError
from messaging.providers.memory import InMemorySms
from messaging.sending.sms import SmsSender
from messaging.store.schema import deliveries
from messaging.store.sql.suppressions import SqlSuppressionList
from messaging.store.sql.topics import SqlTopicStore
from tests.factories import add_supporters, send_context, sms_config
from tests.fleet import EmulatorProcess, emulators  # noqa: F401 - the fixture

TCPA = QuietHours(time(21, 0), time(8, 0))
#: 22:00 in New York, 17:00 in Honolulu; in the future, so a send_by after it has not passed.
NIGHT = datetime(2030, 11, 27, 3, 0, tzinfo=UTC)
CONFIG = sms_config(100, quiet_hours=TCPA)
BOTH = {"sms": {"body": "Hi"}, "email": {"subject": "Now", "text": "Watch"}}


def _states(engine: Engine) -> dict[tuple[str, int], str]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(deliveries.c.channel, deliveries.c.supporter_id, deliveries.c.state)
        )
        return {(channel, sid): state for channel, sid, state in rows}


def _blast(engine: Engine, alert: dict[str, Any]) -> tuple[Any, Any, Any]:
    ctx, queue = send_context(engine)
    blast, _ = ctx.blasts.create(parse_alert(json.dumps(alert), fallback_id="x"), "t", None)
    Expander(ctx.ledger, ctx.blasts, queue, progress=ctx.control.progress).expand(blast)
    return ctx, queue, blast


def test_quiet_sms_falls_back_to_the_email_the_blast_holds(engine: Engine) -> None:
    # Given four New Yorkers and one Honolulu supporter: A consents to email, B does not,
    # C's address is suppressed, D consents but their address is A's (a household)
    ny = "America/New_York"
    ids = add_supporters(
        engine,
        [
            {"phone": "+12125550101", "email": "a@example.org", "timezone": ny},
            {
                "phone": "+12125550102",
                "email": "b@example.org",
                "timezone": ny,
                "email_opt_in": False,
            },
            {"phone": "+12125550103", "email": "c@example.org", "timezone": ny},
            {"phone": "+12125550104", "email": "A@example.org", "timezone": ny},
            {"phone": "+18085550101", "email": "h@example.org", "timezone": "Pacific/Honolulu"},
        ],
        topic="t",
    )
    a, b, c, d, h = ids
    SqlSuppressionList(engine).add("email", "c@example.org", reason="bounce", source="sendgrid")
    ctx, queue, _ = _blast(engine, {"alert_id": "f1", **BOTH, "quiet_hours_fallback": "email"})
    email_work = [w for w in queue.items if w.channel == "email"]
    sms_work = [w for w in queue.items if w.channel == "sms"]
    sms = InMemorySms()
    # When the SMS batch is processed at 22:00 New York time
    report = SmsSender(ctx, sms, CONFIG, clock=lambda: NIGHT).process(sms_work[0])
    # Then Honolulu is texted; A and D end `fallback` (the blast's one email to their address
    # reaches them, and no second email row is made); B (no email consent) and C
    # (suppressed address) wait for the morning
    assert [m.to for m in sms.sent] == ["+18085550101"]
    states = _states(engine)
    assert {sid: states["sms", sid] for sid in ids} == {
        a: RowState.FALLBACK,
        b: RowState.DEFERRED,
        c: RowState.DEFERRED,
        d: RowState.FALLBACK,
        h: RowState.SENT,
    }
    assert report.by_state[RowState.FALLBACK] == 2
    assert {sid: s for (ch, sid), s in states.items() if ch == "email"} == {
        a: RowState.PENDING,
        c: RowState.SUPPRESSED,
        d: RowState.DUPLICATE,
        h: RowState.PENDING,
    }
    # And no email work beyond the expansion's was queued
    assert [w for w in queue.items if w.channel == "email"] == email_work
    assert ctx.blasts.state_counts(["f1"])["f1"]["sms"][RowState.FALLBACK] == 2


def test_without_the_fallback_quiet_sms_wait_and_with_it_late_ones_expire_less(
    engine: Engine,
) -> None:
    # Given a New Yorker who consents to both channels
    add_supporters(
        engine,
        [{"phone": "+12125550101", "email": "a@example.org", "timezone": "America/New_York"}],
        topic="t",
    )
    # When an alert without the fallback is sent at night, the text waits
    ctx, queue, _ = _blast(engine, {"alert_id": "n1", **BOTH})
    sms_work = next(w for w in queue.items if w.channel == "sms")
    SmsSender(ctx, InMemorySms(), CONFIG, clock=lambda: NIGHT).process(sms_work)
    assert RowState.DEFERRED in _states(engine).values()
    # When one with the fallback must be read before the window ends (send_by 04:00 UTC),
    # the supporter gets the email instead of an expired text
    send_by = (NIGHT + timedelta(hours=1)).isoformat()
    alert = {"alert_id": "n2", **BOTH, "quiet_hours_fallback": "email", "send_by": send_by}
    ctx, queue, _ = _blast(engine, alert)
    sms_work = next(w for w in queue.items if w.channel == "sms")
    SmsSender(ctx, InMemorySms(), CONFIG, clock=lambda: NIGHT).process(sms_work)
    assert ctx.blasts.state_counts(["n2"])["n2"]["sms"] == {RowState.FALLBACK: 1}


def test_a_supporter_without_an_email_row_gets_one_written_and_queued(engine: Engine) -> None:
    # Given a New Yorker who opted in to email only after the blast was expanded
    (sid,) = add_supporters(
        engine,
        [
            {
                "phone": "+12125550101",
                "email": "a@example.org",
                "timezone": "America/New_York",
                "email_opt_in": False,
            }
        ],
        topic="t",
    )
    ctx, queue, _ = _blast(engine, {"alert_id": "g1", **BOTH, "quiet_hours_fallback": "email"})
    assert [w.channel for w in queue.items] == ["sms"]
    with engine.begin() as conn:
        from messaging.store.schema import supporters

        conn.execute(supporters.update().values(email_opt_in=True))
    # When the text would wait for quiet hours
    SmsSender(ctx, InMemorySms(), CONFIG, clock=lambda: NIGHT).process(queue.items.pop(0))
    # Then a pending email row is written, queued and counted, and the text is `fallback`
    assert _states(engine) == {("sms", sid): RowState.FALLBACK, ("email", sid): RowState.PENDING}
    assert [(w.channel, w.supporter_ids) for w in queue.items] == [("email", (sid,))]
    live = ctx.control.progress.read(["g1"])["g1"]
    assert live is not None and live["email"] == {RowState.PENDING: 1}
    assert live["sms"][RowState.FALLBACK] == 1


def test_a_topic_window_of_its_own_texts_debate_night(engine: Engine) -> None:
    # Given the debate topic's subscribers asked for live alerts until 23:00 local time
    add_supporters(
        engine,
        [
            {"phone": "+12125550101", "timezone": "America/New_York"},
            {"phone": "+18335550100", "timezone": None},  # no zone from number or ZIP
        ],
        topic="t",
    )
    topics = SqlTopicStore(engine)
    topics.register("t")
    topics.set_quiet_hours("t", QuietHours(time(23, 0), time(8, 0)))
    ctx, queue, _ = _blast(engine, {"alert_id": "d1", "sms": {"body": "Live now"}})
    sms = InMemorySms()
    # When the 9 p.m. ET debate alert goes out (22:00 in New York, 03:00 UTC)
    SmsSender(ctx, sms, CONFIG, clock=lambda: NIGHT, topics=topics).process(queue.items.pop(0))
    # Then New York and the unknown zone are texted (the fleet's 21:00-08:00 would hold both)
    assert sorted(m.to for m in sms.sent) == ["+12125550101", "+18335550100"]
    assert set(_states(engine).values()) == {RowState.SENT}
    # And once the topic's window starts at 22:00 instead, the next text waits for morning
    topics.set_quiet_hours("t", QuietHours(time(22, 0), time(8, 0)))
    ctx, queue, _ = _blast(engine, {"alert_id": "d2", "sms": {"body": "Recap"}})
    later = SmsSender(ctx, sms, CONFIG, clock=lambda: NIGHT, topics=topics)
    later.process(queue.items.pop(0))
    assert ctx.blasts.state_counts(["d2"])["d2"]["sms"] == {RowState.DEFERRED: 2}


def test_the_fallback_needs_both_parts() -> None:
    with pytest.raises(InputError, match="quiet_hours_fallback"):
        parse_alert(
            json.dumps({"alert_id": "x", "sms": {"body": "Hi"}, "quiet_hours_fallback": "email"}),
            fallback_id="x",
        )
    with pytest.raises(InputError, match="quiet_hours_fallback"):
        parse_alert(
            json.dumps({"alert_id": "x", **BOTH, "quiet_hours_fallback": "sms"}), fallback_id="x"
        )


def _window_quiet_now_in(zone: str) -> str:
    """``HH:MM-HH:MM`` from an hour before to an hour after now in ``zone``: quiet there and
    wherever clocks are within an hour of it, not in Honolulu (5-6 hours behind New York)."""
    local = datetime.now(UTC).astimezone(ZoneInfo(zone))
    return f"{local - timedelta(hours=1):%H:%M}-{local + timedelta(hours=1):%H:%M}"


@pytest.mark.e2e
@pytest.mark.integration
def test_debate_night_from_the_outside(
    emulators: EmulatorProcess,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    from emulators.client import EmulatorClient
    from tests.fleet import (
        Fleet,
        blast_summary,
        far_quiet_window,
        rapid,
        wait_ended,
        wait_until,
    )

    sendgrid = EmulatorClient(emulators.sendgrid_url)
    # Given the fleet's QUIET_HOURS are quiet right now in New York (and so for unknown
    # zones), not in Honolulu
    env = emulators.env(QUIET_HOURS=_window_quiet_now_in("America/New_York"))
    fleet = Fleet(env, tmp_path)
    try:
        # And a debate topic whose subscribers asked for live alerts (its own window is
        # nowhere near now), and a rally topic on the fleet's window
        rapid(env, "provision")
        live = far_quiet_window()
        assert rapid(env, "topics", "create", "debate", "--quiet-hours", live).stdout.endswith(
            f"quiet hours {live}\n"
        )
        rapid(env, "topics", "create", "rally")
        listed = json.loads(rapid(env, "topics", "list", "--json").stdout)
        assert {t["name"]: t["quiet_hours"] for t in listed} == {
            "debate": live,
            "rally": env["QUIET_HOURS"],
        }
        bad = subprocess.run(
            [sys.executable, "-m", "workers", "topics", "create", "x", "--quiet-hours", "9pm"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert bad.returncode == 2 and "HH:MM-HH:MM" in bad.stderr
        # And five subscribers: three New Yorkers (ny2 without email consent, ny3 whose
        # address is suppressed), one in Honolulu, one whose zone nothing tells
        people = tmp_path / "people.csv"
        people.write_text(
            "external_id,first_name,phone,email,timezone,topics,sms_opt_in,email_opt_in\n"
            "ny1,A,+12125550101,ny1@example.org,America/New_York,debate;rally,yes,yes\n"
            "ny2,B,+12125550102,ny2@example.org,America/New_York,debate;rally,yes,no\n"
            "ny3,C,+12125550103,ny3@example.org,America/New_York,debate;rally,yes,yes\n"
            "hi1,D,+18085550101,hi1@example.org,Pacific/Honolulu,debate;rally,yes,yes\n"
            "unk,E,+18335550100,,,debate;rally,yes,no\n"
        )
        rapid(env, "supporters", "import", str(people))
        rapid(env, "optout", "add", "ny3@example.org")
        fleet.start("intake", "intake", "--wait-time", "1")
        fleet.start("sender", "sender", "--threads", "4")
        rally = [
            "alert", "send", "--topic", "rally", "--sms-body", "Rally at 9, {{ first_name }}",
            "--email-subject", "Rally at 9", "--email-text", "Hi {{ first_name }}",
            "--quiet-hours-fallback", "email",
        ]  # fmt: skip
        # When the team dry-runs the rally alert, with and without a deadline in 30 minutes
        dry = json.loads(rapid(env, *rally, "--dry-run", "--json").stdout)["estimate"]["sms"]
        send_by = f"{datetime.now(UTC) + timedelta(minutes=30):%Y-%m-%dT%H:%M:%SZ}"
        late = json.loads(rapid(env, *rally, "--dry-run", "--json", "--send-by", send_by).stdout)[
            "estimate"
        ]["sms"]
        # Then it sees who would wait, who would get the email instead, who would expire
        quiet = ("deferred_for_quiet_hours", "fallback_for_quiet_hours", "expired_for_quiet_hours")
        assert [dry[k] for k in quiet] == [3, 1, 0]
        assert [late[k] for k in quiet] == [0, 1, 3]
        assert emulators.sms() == []
        # When the 9 p.m. debate alert goes out on the debate topic
        rapid(env, "alert", "send", "--topic", "debate", "--alert-id", "deb-1",
              "--priority", "urgent", "--sms-body", "Live fact check: https://ex.am/1")  # fmt: skip
        debate = wait_ended(env, "deb-1")
        # Then every subscriber is texted now, New York and the unknown zone included
        assert debate["counts"]["sms"]["sent"] == 5
        assert len({m["to"] for m in emulators.sms()}) == 5
        # When the rally alert goes out with the email fallback
        rapid(env, *rally, "--alert-id", "rally-1")

        def settled() -> bool:
            summary = blast_summary(env, "rally-1")
            counts = summary["counts"] if summary else {}
            return bool(counts) and all(c["pending"] == 0 for c in counts.values())

        wait_until(settled, "rally-1 to settle", timeout_s=90, every_s=0.5)
        counts = blast_summary(env, "rally-1")["counts"]  # type: ignore[index]
        # Then Honolulu is texted, ny1 gets the email instead (once), ny2, ny3 and the
        # unknown zone wait for the morning, and blast show says so
        sms, email = counts["sms"], counts["email"]
        assert (sms["sent"], sms["fallback"], sms["deferred"], sms["targeted"]) == (1, 1, 3, 5)
        assert (email["sent"], email["suppressed"], email["targeted"]) == (2, 1, 3)
        rally_mail = Counter(m["to"] for m in sendgrid.messages()[0])
        assert rally_mail == {"ny1@example.org": 1, "hi1@example.org": 1}
        texted = Counter(m["to"] for m in emulators.sms())
        assert texted["+18085550101"] == 2 and texted["+12125550101"] == 1
        shown = rapid({**env, "COLUMNS": "200"}, "blast", "show", "rally-1").stdout
        assert "fallback" in shown and "capped" in shown
    finally:
        fleet.stop()
        sendgrid.close()
