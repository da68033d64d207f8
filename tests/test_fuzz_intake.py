"""Fuzz: any message body into the intake service is a blast or a reason, never a crash.

The intake worker dead-letters an :class:`InputError` with its message and retries anything
else, so "never a crash" means: ``Intake.handle`` returns a blast or raises ``InputError``
with a non-empty reason, within a second, and a refused alert writes nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from messaging.errors import InputError
from messaging.store.schema import blasts
from tests.fuzzing import (
    BUDGET,
    FUZZ,
    Tally,
    deeply_nested,
    hostile_text,
    json_values,
    quiet_logs,
)
from tests.running_web import service_settings
from workers.app import App

pytestmark = pytest.mark.integration

TOPIC = "fuzz-night"

templates = st.one_of(
    hostile_text,
    st.sampled_from(
        [
            "Hi {{ first_name }}",
            "{{ 'x' * 400000000 }}",
            "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
            "{{ '%1000000000s' % 'x' }}",
            "{{ ''|attr('format') }}",
            "{{ cycler.__init__.__globals__ }}",
            "{{ " + "(" * 400 + "1" + ")" * 400 + " }}",
            "{% if %}",
        ]
    ),
)
alert_docs = st.fixed_dictionaries(
    {},
    optional={
        "alert_id": st.one_of(
            st.from_regex(r"[A-Za-z0-9._:-]{1,20}", fullmatch=True), hostile_text
        ),
        "priority": st.one_of(st.sampled_from(["urgent", "normal", "bulk"]), hostile_text),
        "sms": st.one_of(st.fixed_dictionaries({"body": templates}), json_values),
        "email": st.one_of(
            st.fixed_dictionaries(
                {"subject": templates},
                optional={"text": templates, "html": templates},
            ),
            json_values,
        ),
        "audience": st.one_of(
            st.fixed_dictionaries(
                {},
                optional={
                    "postal_codes": st.lists(hostile_text, max_size=3),
                    "states": st.lists(hostile_text, max_size=3),
                    "tags": st.lists(hostile_text, max_size=3),
                },
            ),
            json_values,
        ),
        "send_by": st.one_of(st.datetimes().map(lambda d: d.isoformat() + "Z"), hostile_text),
        "test_recipients": st.lists(hostile_text, max_size=3),
        "dry_run": st.one_of(st.booleans(), json_values),
        "topic": st.one_of(st.just(TOPIC), hostile_text),
        "unknown": json_values,
    },
)


@st.composite
def bodies(draw: st.DrawFn, prefix: str) -> str:
    """A raw alert, an SNS envelope around one, or anything at all."""
    kind = draw(st.sampled_from(["valid", "valid", "raw", "envelope", "json", "text", "deep"]))
    if kind == "valid":  # well-formed but for what the templates and texts hold
        doc = {
            "alert_id": draw(st.from_regex(r"[A-Za-z0-9]{1,12}", fullmatch=True)),
            "topic": TOPIC,
            "priority": draw(st.sampled_from(["urgent", "normal", "bulk"])),
            "sms": {"body": draw(templates)},
        }
        if draw(st.booleans()):
            doc["email"] = {"subject": draw(templates), "text": draw(templates)}
        return json.dumps(doc)
    if kind == "text":
        return draw(hostile_text)
    if kind == "json":
        return json.dumps(draw(json_values))
    if kind == "deep":
        return deeply_nested(draw(st.integers(min_value=500, max_value=50_000)))
    doc: dict[str, Any] = draw(alert_docs)
    if kind == "raw":
        doc.setdefault("topic", TOPIC)
        return json.dumps(doc)
    arn = draw(
        st.sampled_from(
            [f"arn:aws:sns:us-east-1:000000000000:{prefix}-alert-{TOPIC}", "arn:aws:sns:x:y:z"]
        )
    )
    message = draw(st.one_of(st.just(json.dumps(doc)), json_values))
    return json.dumps(
        {"Type": "Notification", "TopicArn": arn, "MessageId": "m-1", "Message": message}
    )


@pytest.fixture
def app(pg_url: str, prefix: str) -> Iterator[App]:
    """The real application over PostgreSQL and Redis, with the fuzz topic."""
    settings_ = service_settings(pg_url, prefix)
    app = App(settings_.with_overrides(environment="test"))
    from messaging.store.sql.topics import SqlTopicStore

    SqlTopicStore(app.engine).register(TOPIC)
    yield app
    app.close()


def _blast_count(app: App) -> int:
    with app.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(blasts)).scalar_one())


def test_any_body_into_intake_is_a_blast_or_a_reason(app: App, prefix: str) -> None:
    intake = app.intake
    tally = Tally("intake (alerts)")

    @given(body=bodies(prefix))
    @settings(parent=FUZZ)
    def case(body: str) -> None:
        before = _blast_count(app)
        started = time.monotonic()
        reason = None
        try:
            intake.handle(body)
        except InputError as exc:
            reason = str(exc)
        if reason is None:
            tally.add("accepted")
        else:
            assert reason.strip(), "a rejection without a reason"
            # No partial write: a refused alert records no blast
            assert _blast_count(app) == before
            tally.add("rejected with a reason")
        elapsed = time.monotonic() - started
        tally.slowest_s = max(tally.slowest_s, elapsed)
        # Generous: two shared cores; the one-second rule is tested in test_hardening.py.
        assert elapsed < 5.0, body[:200]

    with quiet_logs():
        case()
    tally.report()
    assert tally.cases >= BUDGET
