"""Per-recipient export (issue #19 item 6): ``rapid blast export`` and its HTTP twin.

One CSV row per recipient and channel, the same on every backend, through the CLI (to a file
and to standard output) and ``GET /api/blasts/{id}/export`` (viewer role); a 100,000-row
blast streams (a server-side cursor on PostgreSQL, chunks of CSV), so its memory stays flat
in the blast's size; ``benchmarks/bench_export.py`` measures that bound on 1,000,000 rows.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text, update

from benchmarks.bench_export import seed_blast
from config.settings import Settings
from emulators.server import start_in_thread
from messaging.access.operators import Role
from messaging.blasts.export import EXPORT_HEADER, csv_chunks
from messaging.blasts.lifecycle import RowState
from messaging.content.alert import parse_alert
from messaging.ports import Outcome, SupporterRow
from messaging.store import Stores, memory_stores, open_stores
from messaging.store.db import create_db_engine
from messaging.store.memory.ledger import MemoryLedger
from messaging.store.schema import deliveries
from messaging.store.sql.export import FETCH_ROWS
from tests.conftest import REDIS_TEST_URL
from workers.app import App
from workers.web.app import create_app

TOPIC = "t"
SENT_AT = datetime(2026, 11, 27, 1, 2, 3, 456000, tzinfo=UTC)


@pytest.fixture
def stores(store_engine: Engine | None) -> Stores:
    """Empty stores on one backend (once each: memory, SQLite, PostgreSQL)."""
    return memory_stores() if store_engine is None else open_stores(store_engine)


def _click(stores: Stores, blast_id: str, channel: str, supporter_id: int, at: datetime) -> None:
    """What ``GET /l/{code}`` records (the links work owns the writer; none exists yet)."""
    ledger = stores.ledger
    if isinstance(ledger, MemoryLedger):
        ledger._t.deliveries[(blast_id, channel, supporter_id)].clicked_at = at
        return
    with ledger.engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(
            update(deliveries)
            .where(
                deliveries.c.blast_id == blast_id,
                deliveries.c.channel == channel,
                deliveries.c.supporter_id == supporter_id,
            )
            .values(clicked_at=at)
        )


def seed_small_blast(stores: Stores) -> dict[str, int]:
    """Four supporters, an SMS+email blast over them with every kind of outcome; their ids."""
    people = [
        SupporterRow("ann", phone="+14155550101", email="ann@example.org"),
        SupporterRow("bo", phone="+14155550102", email="=cmd@example.org"),  # formula-looking
        SupporterRow("cy", phone="+14155550101", email="cy@example.org"),  # ann's household
        SupporterRow("di", phone="+14155550104", email="di@example.org"),
    ]
    rows = [p._replace(sms_opt_in=True, email_opt_in=True, topics=(TOPIC,)) for p in people]
    stores.supporters.write_batch(
        rows, frozenset({"phone", "email", "sms_opt_in", "email_opt_in", "topics"})
    )
    document = {
        "alert_id": "x1",
        "sms": {"body": "Hi"},
        "email": {"subject": "s", "text": "t"},
    }
    alert = parse_alert(json.dumps(document), fallback_id="x1")
    stores.blasts.create(alert, TOPIC, None)
    stores.ledger.expand_page("x1", alert, TOPIC, 0, 100, lambda _c, _p: None)
    sms = {
        c.fields["external_id"]: c.supporter_id
        for c in stores.ledger.claim(
            "x1", "sms", stores.ledger.open_ids("x1", "sms", RowState.PENDING, 0, 100)
        )
    }
    stores.ledger.record(
        "x1",
        "sms",
        [
            Outcome(sms["ann"], RowState.SENT, provider_message_id="SMann"),
            Outcome(sms["bo"], RowState.FAILED, error_code="30007", error="filtered"),
            Outcome(sms["di"], RowState.PENDING),  # a transient error: back to pending
        ],
    )
    stores.delivery_events.settle_sms(
        "SMann", {"state": RowState.DELIVERED, "delivered_at": SENT_AT, "updated_at": SENT_AT}
    )
    _click(stores, "x1", "sms", sms["ann"], SENT_AT + timedelta(minutes=5))
    return sms


def parse(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_export_rows_are_the_ledger_on_every_backend(stores: Stores) -> None:
    # Given a blast with sent+delivered+clicked, failed, pending, duplicate rows on two channels
    ids = seed_small_blast(stores)
    # When it is exported
    text = "".join(csv_chunks(stores.exports.export_rows("x1"), chunk_rows=2))
    rows = parse(text)
    # Then the header is the contract's, and there is one row per recipient and channel,
    # by channel then supporter
    assert text.splitlines()[0].split(",") == list(EXPORT_HEADER)
    assert [(r["channel"], r["external_id"]) for r in rows] == [
        ("email", "ann"),
        ("email", "bo"),
        ("email", "cy"),
        ("email", "di"),
        ("sms", "ann"),
        ("sms", "bo"),
        ("sms", "cy"),
        ("sms", "di"),
    ]
    by = {(r["channel"], r["external_id"]): r for r in rows}
    ann = by["sms", "ann"]
    assert ann["destination"] == "+14155550101" and ann["state"] == "delivered"
    assert ann["delivered_at"] == "2026-11-27T01:02:03.456Z"
    assert ann["clicked_at"] == "2026-11-27T01:07:03.456Z"
    assert ann["sent_at"].endswith("Z") and ann["variant"] == ""
    assert by["sms", "bo"]["state"] == "failed" and by["sms", "bo"]["error_code"] == "30007"
    assert by["sms", "cy"]["state"] == "duplicate" and by["sms", "cy"]["sent_at"] == ""
    assert by["sms", "di"]["state"] == "pending"
    # And a value a spreadsheet would run is neutralised (phones are left alone)
    assert by["email", "bo"]["destination"] == "'=cmd@example.org"
    assert set(ids) == {"ann", "bo", "di"}  # cy, a household duplicate, was never claimed


def test_export_of_an_unknown_or_empty_blast(stores: Stores) -> None:
    assert parse("".join(csv_chunks(stores.exports.export_rows("nope")))) == []


@pytest.mark.integration
def test_cli_export_to_a_file_and_to_stdout(rapid_env: dict[str, str], tmp_path: Path) -> None:
    # Given the small blast in the system of record the CLI uses
    engine = create_db_engine(rapid_env["DATABASE_URL"])
    seed_small_blast(open_stores(engine))
    engine.dispose()

    def rapid(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "workers", *args],
            env=rapid_env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    # When it is exported to a file and to standard output
    out = tmp_path / "x1.csv"
    to_file = rapid("blast", "export", "x1", "--out", str(out))
    to_stdout = rapid("blast", "export", "x1")
    # Then both hold the same eight rows, and the file run says how many it wrote
    assert to_file.returncode == 0, to_file.stderr
    assert "8 rows" in to_file.stderr
    assert out.read_text(encoding="utf-8") == to_stdout.stdout
    assert len(parse(to_stdout.stdout)) == 8
    # And an unknown blast is one clear line and exit 1
    missing = rapid("blast", "export", "nope")
    assert missing.returncode == 1 and missing.stderr.strip().count("\n") == 0
    assert "no blast 'nope'" in missing.stderr and "Traceback" not in missing.stderr


@pytest.mark.integration
def test_api_export_is_the_same_csv_for_a_viewer(pg_url: str, moto_url: str, prefix: str) -> None:
    # Given rapid web over the small blast, and a viewer
    settings = Settings(
        prefix=prefix,
        database_url=pg_url,
        redis_url=REDIS_TEST_URL,
        aws_endpoint_url=moto_url,
        secret_key="export-tests-secret-key-0123456789abcdef",
    )
    app = App(settings)
    seed_small_blast(app.stores)
    _, token = app.operators.add("viewer-1", Role.VIEWER, created_by="test")
    server = start_in_thread(create_app(app))
    try:
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=server.url, trust_env=False, timeout=30) as http:
            # When the viewer asks for the export, and for one that does not exist
            answer = http.get("/api/blasts/x1/export", headers=auth)
            missing = http.get("/api/blasts/nope/export", headers=auth)
            anonymous = http.get("/api/blasts/x1/export")
    finally:
        server.stop()
        keys = list(app.redis.scan_iter(f"{prefix}:*"))
        if keys:
            app.redis.delete(*keys)
        app.close()
    # Then it is the CLI's CSV, as an attachment
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/csv")
    assert 'filename="x1.csv"' in answer.headers["content-disposition"]
    expected = "".join(csv_chunks(stored_rows(pg_url)))
    assert answer.text == expected and len(parse(answer.text)) == 8
    assert missing.status_code == 404 and anonymous.status_code == 401


def stored_rows(database_url: str) -> Iterator[Any]:
    """The export rows of x1, read by a store of our own."""
    engine = create_db_engine(database_url)
    try:
        yield from open_stores(engine).exports.export_rows("x1")
    finally:
        engine.dispose()


# The export's memory bound (peak RSS flat in the blast's size, 1,000,000 rows) is measured
# by `python -m benchmarks.bench_export`; here, the two properties it rests on.


def test_the_csv_streams_an_export_of_any_length() -> None:
    # Given an export whose rows never end (a list or a join of them would never return)
    row = next(iter(memory_export_rows()))
    endless = itertools.repeat(row)
    # When the CSV is asked for its first chunks
    chunks = csv_chunks(endless, chunk_rows=100)
    first, second = next(chunks), next(chunks)
    # Then they come: the header and 100 rows, then 100 more
    assert len(parse(first)) == 100 and len(second.splitlines()) == 100


@pytest.mark.integration
@pytest.mark.postgres
def test_postgres_export_reads_through_a_server_side_cursor(pg_url: str) -> None:
    # Given a blast of three of the store's fetches (FETCH_ROWS each) on PostgreSQL
    seed_blast(pg_url, 3 * FETCH_ROWS, blast_id="x-big")
    engine = create_db_engine(pg_url)
    try:
        rows = open_stores(engine).exports.export_rows("x-big")
        # When the first row has been read
        first = next(rows)
        # Then the rest wait in the server: a cursor is open there, fetching by pages
        with engine.connect() as watcher:
            fetching = watcher.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND pid <> pg_backend_pid() AND query ILIKE 'FETCH FORWARD %'"
                )
            )
        assert fetching == 1
        # And every row still comes, in the primary key's order
        rest = list(rows)
    finally:
        engine.dispose()
    assert 1 + len(rest) == 3 * FETCH_ROWS
    assert first.external_id == "v00000000"


def memory_export_rows() -> Iterator[Any]:
    """The export rows of the small blast on the in-memory stores."""
    stores = memory_stores()
    seed_small_blast(stores)
    return stores.exports.export_rows("x1")
