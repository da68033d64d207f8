"""Targeting (issue #19 item 4): tags_all / tags_any / tags_none, custom fields, from_blast.

Every expression runs against one table of supporters on every backend (memory, SQLite,
PostgreSQL), so the in-memory twin, json_extract and JSONB containment agree. Custom fields
come in through the CSV import (contract §5: any other column is kept) and reach templates as
``{{ fields.NAME }}``.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text, update

from messaging.blasts.lifecycle import RowState
from messaging.content.alert import parse_alert
from messaging.content.templates import render
from messaging.errors import InputError
from messaging.ports import Outcome, SupporterRow
from messaging.store import Stores, memory_stores, open_stores
from messaging.store.db import create_db_engine
from messaging.store.memory.ledger import MemoryLedger
from messaging.store.schema import deliveries
from messaging.supporters.csv_import import import_csv

TOPIC = "debate-night"
COLUMNS = frozenset({"first_name", "phone", "sms_opt_in", "tags", "topics", "fields"})


#: The table of supporters every expression runs against: name, tags, custom fields.
PEOPLE: list[tuple[str, str | None, dict[str, str] | None]] = [
    ("ann", ";volunteer;donor;", {"ward": "7", "precinct": "7-2", "union": "yes"}),
    ("bo", ";volunteer;", {"ward": "7", "precinct": "7-1", "union": ""}),
    ("cy", ";donor;", {"ward": "12", "precinct": "12-1", "union": "yes"}),
    ("di", ";volunteer;no_sms;", {"ward": "12", "precinct": "12-4", "union": "no"}),
    ("ed", None, None),  # no tags, no custom fields at all
    ("flo", ";donorx;", {"ward": "70"}),  # near misses: "donorx", "70"
]


@pytest.fixture
def stores(store_engine: Engine | None) -> Stores:
    """Empty stores on one backend (once each: memory, SQLite, PostgreSQL)."""
    return memory_stores() if store_engine is None else open_stores(store_engine)


def seed(stores: Stores) -> None:
    rows = [
        SupporterRow(
            external_id=name,
            first_name=name,
            phone=f"+1415555{1000 + i:04d}",
            sms_opt_in=True,
            tags=tags,
            fields=fields,
            topics=(TOPIC,),
        )
        for i, (name, tags, fields) in enumerate(PEOPLE)
    ]
    stores.supporters.write_batch(rows, COLUMNS)


def audience_of(stores: Stores, audience: dict[str, Any], alert_id: str = "t-1") -> set[str]:
    """Expand a blast with this audience; the first names it reached (pending SMS rows)."""
    document = {"alert_id": alert_id, "sms": {"body": "Hi"}, "audience": audience}
    alert = parse_alert(json.dumps(document), fallback_id="x")
    stores.blasts.create(alert, TOPIC, None)
    cursor = 0
    noop: Any = lambda _c, _p: None  # noqa: E731
    while (step := stores.ledger.expand_page(alert_id, alert, TOPIC, cursor, 2, noop)) is not None:
        cursor = step[0]
    ids = stores.ledger.open_ids(alert_id, "sms", RowState.PENDING, 0, 100)
    claimed = stores.ledger.claim(alert_id, "sms", ids)
    return {c.fields["first_name"] for c in claimed}


EXPRESSIONS: list[tuple[dict[str, Any], set[str]]] = [
    ({}, {"ann", "bo", "cy", "di", "ed", "flo"}),
    ({"tags_all": ["volunteer", "donor"]}, {"ann"}),
    ({"tags_any": ["donor", "no_sms"]}, {"ann", "cy", "di"}),
    # tags_none keeps supporters with no tags at all (NULL must not make NOT LIKE unknown)
    ({"tags_none": ["volunteer"]}, {"cy", "ed", "flo"}),
    ({"tags_none": ["donor"]}, {"bo", "di", "ed", "flo"}),  # "donorx" is another tag
    ({"tags_all": ["volunteer"], "tags_none": ["no_sms"]}, {"ann", "bo"}),
    ({"tags": ["donor"], "tags_none": ["volunteer"]}, {"cy"}),
    ({"fields": {"ward": "7"}}, {"ann", "bo"}),  # exact: "70" is not "7"
    ({"fields": {"ward": 7}}, {"ann", "bo"}),  # a number means the CSV's text
    ({"fields": {"ward": ["7", "12"]}}, {"ann", "bo", "cy", "di"}),
    ({"fields": {"ward": "12", "union": "yes"}}, {"cy"}),
    ({"fields": {"union": ""}}, {"bo"}),  # a blank cell is kept, and matches ""
    ({"fields": {"Precinct": ["7-1", "12-4"]}}, {"bo", "di"}),  # names are case-insensitive
    ({"fields": {"nope": "x"}}, set()),
    ({"fields": {"ward": "7"}, "tags_any": ["donor"]}, {"ann"}),
]


@pytest.mark.parametrize(
    ("audience", "expected"), EXPRESSIONS, ids=[str(e[0]) for e in EXPRESSIONS]
)
def test_targeting_expressions_against_a_table_of_supporters(
    stores: Stores, audience: dict[str, Any], expected: set[str]
) -> None:
    # Given the table of supporters, when a blast with the audience expands
    seed(stores)
    # Then exactly the expected supporters are in it, and the stats count the same audience
    assert audience_of(stores, audience) == expected
    document = {"alert_id": "s", "sms": {"body": "x"}, "audience": audience}
    stats = stores.ledger.audience_stats(parse_alert(json.dumps(document), fallback_id="s"), TOPIC)
    assert stats["audience"] == len(expected)


@pytest.mark.parametrize(
    "audience",
    [
        {"fields": {"bad name": "x"}},
        {"fields": {"ward": []}},
        {"fields": {"ward": {"nested": 1}}},
        {"from_blast": {"id": "b 1"}},
        {"tags_all": "volunteer"},
    ],
)
def test_bad_targeting_is_refused_at_validation(audience: dict[str, Any]) -> None:
    with pytest.raises(InputError):
        parse_alert(json.dumps({"sms": {"body": "x"}, "audience": audience}), fallback_id="x")


@pytest.mark.parametrize(
    ("document", "where"),
    [
        # Found by the intake fuzzer: the audience query failed in PostgreSQL instead
        ({"sms": {"body": "x"}, "audience": {"postal_codes": ["\x00"]}}, "audience.postal_codes.0"),
        ({"sms": {"body": "x"}, "audience": {"fields": {"ward": "1\x00"}}}, "audience.fields.ward"),
        ({"sms": {"body": "Hi\x00"}}, "sms.body"),
        ({"sms": {"body": "x"}, "audience": {"tags": ["ok", "a\x00b"]}}, "audience.tags.1"),
    ],
)
def test_a_nul_anywhere_in_an_alert_is_refused_with_where_it_is(
    document: dict[str, Any], where: str
) -> None:
    # Given an alert carrying U+0000, which PostgreSQL text cannot hold: when it is parsed,
    # then it is refused, saying where (the intake dead-letters it with that reason)
    with pytest.raises(InputError, match=rf"{re.escape(where)}: .*NUL"):
        parse_alert(json.dumps(document), fallback_id="x")


def _mark_clicked(stores: Stores, blast_id: str, supporter_id: int) -> None:
    """What ``GET /l/{code}`` will record (the tracked-links work sets ``clicked_at``; no
    store method exists for it yet, so the test writes the column itself)."""
    now = datetime.now(UTC)
    ledger = stores.ledger
    if isinstance(ledger, MemoryLedger):
        ledger._t.deliveries[(blast_id, "sms", supporter_id)].clicked_at = now
        return
    with ledger.engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(
            update(deliveries)
            .where(deliveries.c.blast_id == blast_id, deliveries.c.supporter_id == supporter_id)
            .values(clicked_at=now)
        )


def test_from_blast_follows_up_on_recipients_reached_and_their_clicks(stores: Stores) -> None:
    # Given a first blast that reached ann, bo and cy (sent or delivered), failed for di and
    # never got to ed and flo (still pending); ann and di clicked (di's click on a failed
    # row does not make di reached)
    seed(stores)
    first = parse_alert(json.dumps({"alert_id": "first", "sms": {"body": "x"}}), fallback_id="x")
    stores.blasts.create(first, TOPIC, None)
    noop: Any = lambda _c, _p: None  # noqa: E731
    stores.ledger.expand_page("first", first, TOPIC, 0, 100, noop)
    ids = {
        c.fields["first_name"]: c.supporter_id
        for c in stores.ledger.claim(
            "first", "sms", stores.ledger.open_ids("first", "sms", RowState.PENDING, 0, 100)
        )
    }
    outcomes = [
        Outcome(ids["ann"], RowState.SENT, provider_message_id="SM1"),
        Outcome(ids["bo"], RowState.SENT, provider_message_id="SM2"),
        Outcome(ids["cy"], RowState.SENT, provider_message_id="SM3"),
        Outcome(ids["di"], RowState.FAILED, error_code="30003"),
    ]
    stores.ledger.record("first", "sms", outcomes)
    # ed's and flo's sends were put back (a transient error): pending, not reached
    stores.ledger.record(
        "first",
        "sms",
        [Outcome(ids[n], RowState.PENDING) for n in ("ed", "flo")],
    )
    _mark_clicked(stores, "first", ids["ann"])
    _mark_clicked(stores, "first", ids["di"])
    # When follow-up blasts target it
    reached = audience_of(stores, {"from_blast": {"id": "first"}}, "f-all")
    clicked = audience_of(stores, {"from_blast": {"id": "first", "clicked": True}}, "f-yes")
    not_clicked = audience_of(stores, {"from_blast": {"id": "first", "clicked": False}}, "f-no")
    combined = audience_of(
        stores, {"from_blast": {"id": "first"}, "fields": {"ward": "7"}}, "f-ward"
    )
    unknown = audience_of(stores, {"from_blast": {"id": "never-sent"}}, "f-none")
    # Then each reaches exactly the expected recipients
    assert reached == {"ann", "bo", "cy"}
    assert clicked == {"ann"}
    assert not_clicked == {"bo", "cy"}
    assert combined == {"ann", "bo"}
    assert unknown == set()


def test_import_keeps_unknown_columns_as_fields_usable_in_templates_and_audiences(
    stores: Stores, tmp_path: Path
) -> None:
    # Given a CSV with custom columns (odd header spellings, a formula-looking value, a
    # blank cell, a control character)
    path = tmp_path / "voters.csv"
    path.write_text(
        "external_id,first_name,phone,sms_opt_in,topics,Ward #,Precinct,Shirt-Size\n"
        "v1,Ann,415 555 0101,yes,debate-night,7,7-2,=SUM(A1)\n"
        "v2,Bo,415 555 0102,yes,debate-night,12,,L\n"
        "v3,Cy,415 555 0103,yes,debate-night,7,7-1,M\x07L\n",
        encoding="utf-8",
    )
    report = import_csv(path, stores.supporters)
    assert report.inserted == 3
    # When a blast targets ward 7 with a template over the custom fields
    document = {
        "alert_id": "f-1",
        "sms": {
            "body": "{{ first_name }}: ward {{ fields.ward }} {{ fields.precinct }} "
            "({{ fields.shirt_size }})"
        },
        "audience": {"fields": {"ward": "7"}},
    }
    alert = parse_alert(json.dumps(document), fallback_id="x")
    stores.blasts.create(alert, TOPIC, None)
    stores.ledger.expand_page("f-1", alert, TOPIC, 0, 100, lambda _c, _p: None)
    claimed = stores.ledger.claim(
        "f-1", "sms", stores.ledger.open_ids("f-1", "sms", RowState.PENDING, 0, 100)
    )
    assert alert.sms is not None
    bodies = sorted(render(alert.sms.body, c.fields) for c in claimed)
    # Then the columns were kept per supporter, under their normalised names, and render
    assert bodies == ["Ann: ward 7 7-2 (=SUM(A1))", "Cy: ward 7 7-1 (M L)"]
    # And a re-import with other custom columns replaces them (the file's columns win)
    path.write_text("external_id,ward\nv1,9\n", encoding="utf-8")
    import_csv(path, stores.supporters)
    assert audience_of(stores, {"fields": {"ward": "9"}}, "f-2") == {"Ann"}
    assert audience_of(stores, {"fields": {"precinct": "7-2"}}, "f-3") == set()


def test_a_missing_custom_field_fails_that_message_only(stores: Stores) -> None:
    # Given ed, who has no custom fields, and a template that needs one
    seed(stores)
    document = {"alert_id": "m-1", "sms": {"body": "ward {{ fields.ward }}"}}
    alert = parse_alert(json.dumps(document), fallback_id="x")
    stores.blasts.create(alert, TOPIC, None)
    stores.ledger.expand_page("m-1", alert, TOPIC, 0, 100, lambda _c, _p: None)
    claimed = stores.ledger.claim(
        "m-1", "sms", stores.ledger.open_ids("m-1", "sms", RowState.PENDING, 0, 100)
    )
    from messaging.content.templates import RenderError

    rendered, failed = [], []
    for c in claimed:
        try:
            rendered.append(render("ward {{ fields.ward }}", c.fields))
        except RenderError:
            failed.append(c.fields["first_name"])
    # Then only ed's message fails to render; the others render
    assert failed == ["ed"]
    assert len(rendered) == len(PEOPLE) - 1


@pytest.mark.postgres
@pytest.mark.integration
def test_fields_filter_uses_the_gin_index_on_postgresql(pg_url: str) -> None:
    # Given PostgreSQL with the planner told to avoid sequential scans, when it plans the
    # supporters matching a fields filter
    from sqlalchemy import func, select

    from messaging.content.alert import Alert
    from messaging.store.schema import supporters
    from messaging.store.sql.audience import audience_filter
    from messaging.store.sql.dialect import dialect_for

    engine = create_db_engine(pg_url)
    try:
        alert: Alert = parse_alert(
            json.dumps({"sms": {"body": "x"}, "audience": {"fields": {"ward": ["7", "12"]}}}),
            fallback_id="x",
        )
        assert alert.audience is not None
        where = audience_filter(alert.audience, dialect_for(engine))
        query = select(func.count()).select_from(supporters).where(*where)
        with engine.connect() as conn:
            conn.execute(text("SET enable_seqscan = off"))
            compiled = query.compile(engine)
            params = {
                k: json.dumps(v) if isinstance(v, dict) else v for k, v in compiled.params.items()
            }
            plan = "\n".join(row[0] for row in conn.exec_driver_sql(f"EXPLAIN {compiled}", params))
        # Then the containment filter is answered by the GIN index
        assert "ix_supporters_fields" in plan
    finally:
        engine.dispose()
