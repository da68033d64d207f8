"""`rapid supporters import` (contract §5), on SQLite and on PostgreSQL.

Every test runs twice through the ``engine`` fixture and asserts on what the database holds
and on what ``FILE.rejects.csv`` says, for files shaped like real voter-file exports.
"""

from __future__ import annotations

import csv
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from structlog.testing import capture_logs

from messaging.errors import InputError
from messaging.ports import SUPPORTER_COLUMNS, SupporterRow
from messaging.store.schema import alert_topics, subscriptions, supporters
from messaging.store.sql import supporters as portable_writer
from messaging.store.sql.supporters import SqlSupporterWriter
from messaging.supporters.csv_import import ImportReport, import_csv, rejects_path_for

HEADER = "external_id,first_name,last_name,phone,email,postal_code,state,tags,topics"


def write(tmp_path: Path, text: str, name: str = "voters.csv", *, bom: bool = False) -> Path:
    """A CSV file with exactly these characters (newlines as written: no translation)."""
    path = tmp_path / name
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode("utf-8"))
    return path


def rows(engine: Engine) -> dict[str, dict[str, Any]]:
    """Every supporter, by external id."""
    with engine.connect() as conn:
        result = conn.execute(select(supporters))
        return {row.external_id: dict(row._mapping) for row in result}


def topics_of(engine: Engine) -> dict[str, set[str]]:
    """Every supporter's subscriptions, by external id."""
    query = select(supporters.c.external_id, subscriptions.c.topic).join_from(
        subscriptions, supporters, subscriptions.c.supporter_id == supporters.c.id
    )
    out: dict[str, set[str]] = {}
    with engine.connect() as conn:
        for external_id, topic in conn.execute(query):
            out.setdefault(external_id, set()).add(topic)
    return out


def rejects(report: ImportReport) -> list[dict[str, str]]:
    """The rejects file of an import, as dicts (utf-8-sig: it starts with a BOM for Excel)."""
    assert report.rejects_path is not None
    with report.rejects_path.open(encoding="utf-8-sig", newline="") as stream:
        return list(csv.DictReader(stream))


def test_a_messy_voter_file_export_imports(engine: Engine, tmp_path: Path) -> None:
    # Given an Excel-style export: BOM, CRLF, upper-case headers, an unknown column, quoted
    # commas and newlines, Unicode names, phones in every spelling, blanks, a bad email
    text = (
        "EXTERNAL_ID, First_Name ,Last_Name,PHONE,Email,Postal_Code,State,Precinct,Notes\r\n"
        'v1,Zoë,"Smith, Jr.",(415) 555-0100,Zoe.Smith@Example.COM,2139,ma,12,\r\n'
        'v2,Nguyễn,Văn An,415.555.0101,,,,7,"line one\r\nline two"\r\n'
        "v3,李,小龙,+1 415 555 0102,bad@,94103,CA,,\r\n"
        "v4,Anne-Marie,O'Brien,1-415-555-0103,anne@example.org,,,,\r\n"
        "v5,,,555-0100,,,,,\r\n"
    )
    path = write(tmp_path, text, bom=True)
    # When imported
    report = import_csv(path, SqlSupporterWriter(engine))
    # Then every row is a supporter, with normalised fields
    stored = rows(engine)
    assert report.rows_read == 5
    assert (report.inserted, report.updated) == (5, 0)
    assert stored["v1"]["first_name"] == "Zoë"
    assert stored["v1"]["last_name"] == "Smith, Jr."
    assert stored["v1"]["phone"] == "+14155550100"
    assert stored["v1"]["email"] == "Zoe.Smith@example.com"
    assert stored["v1"]["postal_code"] == "02139"  # Excel's lost leading zero, restored
    assert stored["v1"]["state"] == "MA"
    assert stored["v2"]["first_name"] == "Nguyễn"
    assert stored["v2"]["phone"] == "+14155550101"
    assert stored["v2"]["email"] is None  # a blank cell is no value
    assert stored["v3"]["first_name"] == "李"
    assert stored["v3"]["phone"] == "+14155550102"
    assert stored["v4"]["phone"] == "+14155550103"
    assert stored["v4"]["last_name"] == "O'Brien"
    # and the bad fields are dropped, the rows kept
    assert stored["v3"]["email"] is None
    assert stored["v5"]["phone"] is None
    # and the rejects name the spreadsheet row (v2 spans two lines but is one row, so v3
    # is row 4 and v5 row 6), the field, the value as typed and why.
    assert report.fields_rejected == 2
    assert report.rows_rejected == 0
    assert rejects(report) == [
        {"row": "4", "external_id": "v3", "field": "email", "value": "bad@",
         "reason": "There must be something after the @-sign."},
        {"row": "6", "external_id": "v5", "field": "phone", "value": "555-0100",
         "reason": "no area code"},
    ]  # fmt: skip
    assert report.rejects_path == tmp_path / "voters.rejects.csv"


def test_opt_ins_are_false_unless_the_file_says_yes(engine: Engine, tmp_path: Path) -> None:
    # Given one file without opt-in columns and one with every spelling of yes and no
    path = write(tmp_path, "external_id,phone\na1,(212) 555-0100\n", name="a.csv")
    import_csv(path, SqlSupporterWriter(engine))
    text = "external_id,sms_opt_in,email_opt_in\nb1,yes,TRUE\nb2,No,0\nb3,,\nb4,maybe,1\nb5,Y,f\n"
    report = import_csv(write(tmp_path, text, name="b.csv"), SqlSupporterWriter(engine))
    # Then absent, blank and unusable opt-ins are no consent
    stored = rows(engine)
    assert (stored["a1"]["sms_opt_in"], stored["a1"]["email_opt_in"]) == (False, False)
    assert (stored["b1"]["sms_opt_in"], stored["b1"]["email_opt_in"]) == (True, True)
    assert (stored["b2"]["sms_opt_in"], stored["b2"]["email_opt_in"]) == (False, False)
    assert (stored["b3"]["sms_opt_in"], stored["b3"]["email_opt_in"]) == (False, False)
    assert (stored["b4"]["sms_opt_in"], stored["b4"]["email_opt_in"]) == (False, True)
    assert (stored["b5"]["sms_opt_in"], stored["b5"]["email_opt_in"]) == (True, False)
    # and the unusable one is reported.
    assert [(r["row"], r["field"], r["value"]) for r in rejects(report)] == [
        ("5", "sms_opt_in", "maybe")
    ]


def test_reimport_updates_and_keeps_columns_the_file_lacks(engine: Engine, tmp_path: Path) -> None:
    # Given supporters imported once with names, emails and consent
    first = (
        "external_id,first_name,email,sms_opt_in,timezone\n"
        "r1,Ann,ann@example.org,yes,America/Chicago\n"
        "r2,Bob,bob@example.org,yes,\n"
    )
    import_csv(write(tmp_path, first, name="first.csv"), SqlSupporterWriter(engine))
    before = rows(engine)
    # When a second file has only names (and a new supporter)
    second = "External_ID,First_Name\nr1,Annie\nr2,Bob\nr3,Cy\n"
    report = import_csv(write(tmp_path, second, name="second.csv"), SqlSupporterWriter(engine))
    # Then the known supporters count as updated, the new one as inserted
    assert (report.inserted, report.updated) == (1, 2)
    after = rows(engine)
    assert after["r1"]["first_name"] == "Annie"
    # and what the second file does not mention is kept: email, consent, time zone
    assert after["r1"]["email"] == "ann@example.org"
    assert after["r1"]["sms_opt_in"] is True
    assert after["r1"]["timezone"] == "America/Chicago"
    assert after["r1"]["id"] == before["r1"]["id"]
    assert after["r1"]["created_at"] == before["r1"]["created_at"]
    assert after["r1"]["updated_at"] > before["r1"]["updated_at"]
    # and a supporter the file does not change is not rewritten (still counted as updated).
    assert after["r2"]["updated_at"] == before["r2"]["updated_at"]
    # and the new supporter has no consent.
    assert after["r3"]["sms_opt_in"] is False


def test_a_blank_cell_in_a_present_column_clears_the_value(engine: Engine, tmp_path: Path) -> None:
    # Given a supporter with an email, when a file with an email column leaves it blank
    import_csv(
        write(tmp_path, "external_id,email\nc1,c@example.org\n", name="a.csv"),
        SqlSupporterWriter(engine),
    )
    import_csv(
        write(tmp_path, "external_id,email\nc1,\n", name="b.csv"), SqlSupporterWriter(engine)
    )
    # then the file is the truth: the email is gone.
    assert rows(engine)["c1"]["email"] is None


def test_duplicate_ids_in_one_file_last_row_wins(engine: Engine, tmp_path: Path) -> None:
    # Given a file listing d1 three times, and d2 twice far apart (in another batch)
    text = (
        "external_id,first_name,phone\n"
        "d1,First,555-0100\n"
        "d2,Early,\n"
        "d1,Second,\n"
        "x1,,\n"
        "x2,,\n"
        "d1,Third,(212) 555-0100\n"
        "d2,Late,\n"
    )
    # When imported in batches of three rows
    report = import_csv(write(tmp_path, text), SqlSupporterWriter(engine), batch_size=3)
    # Then the last row of each id is what is stored
    stored = rows(engine)
    assert stored["d1"]["first_name"] == "Third"
    assert stored["d1"]["phone"] == "+12125550100"
    assert stored["d2"]["first_name"] == "Late"
    # and within a batch the earlier rows are rejected as superseded (naming the row that
    # won; their own bad fields are moot), while across batches the later row updates.
    assert [(r["row"], r["external_id"], r["field"], r["reason"]) for r in rejects(report)] == [
        ("2", "d1", "external_id", "duplicate external_id: superseded by row 4"),
    ]
    assert report.rows_read == 7
    assert report.rows_rejected == 1
    assert (report.inserted, report.updated) == (4, 2)


def test_rows_without_external_id_are_rejected_whole(engine: Engine, tmp_path: Path) -> None:
    # Given rows with a blank and a missing external id, and a short row
    text = "external_id,first_name,phone\n,Nobody,(212) 555-0100\n   ,Blank,\ne1\n"
    report = import_csv(write(tmp_path, text), SqlSupporterWriter(engine))
    # Then only the row with an id is stored (its missing cells read as blank)
    assert set(rows(engine)) == {"e1"}
    assert report.rows_rejected == 2
    assert [(r["row"], r["field"]) for r in rejects(report)] == [
        ("2", "external_id"),
        ("3", "external_id"),
    ]


@pytest.mark.parametrize(
    ("header", "cells", "zone"),
    [
        ("phone", "(212) 555-0100", "America/New_York"),  # from the phone
        ("postal_code", "94103", "America/Los_Angeles"),  # no phone: from the ZIP
        ("phone,postal_code", "555-0100,02139", "America/New_York"),  # bad phone: ZIP
        ("phone,timezone", "(212) 555-0100,america/chicago", "America/Chicago"),  # given
        ("phone,timezone", "(212) 555-0100,Mars/Base", "America/New_York"),  # bad: derived
        ("phone,postal_code", ",", None),  # nothing to go on
    ],
)
def test_timezone_is_given_or_derived(
    engine: Engine, tmp_path: Path, header: str, cells: str, zone: str | None
) -> None:
    # Given a supporter with this phone / ZIP / time zone, when imported
    import_csv(write(tmp_path, f"external_id,{header}\nt1,{cells}\n"), SqlSupporterWriter(engine))
    # then the stored zone is the file's, else the phone's, else the ZIP's, else unknown.
    assert rows(engine)["t1"]["timezone"] == zone


def test_an_invalid_timezone_is_reported_then_derived(engine: Engine, tmp_path: Path) -> None:
    path = write(tmp_path, "external_id,phone,timezone\nt1,(212) 555-0100,Mars/Base\n")
    report = import_csv(path, SqlSupporterWriter(engine))
    assert rows(engine)["t1"]["timezone"] == "America/New_York"
    assert [(r["field"], r["value"]) for r in rejects(report)] == [("timezone", "Mars/Base")]


def test_a_derived_timezone_never_erases_a_stored_one(engine: Engine, tmp_path: Path) -> None:
    # Given a supporter whose file gave a zone
    import_csv(
        write(tmp_path, "external_id,timezone\nz1,America/Denver\n", name="a.csv"),
        SqlSupporterWriter(engine),
    )
    # When a later file has a phone column but no phone for them, and no timezone column
    import_csv(
        write(tmp_path, "external_id,phone\nz1,\n", name="b.csv"), SqlSupporterWriter(engine)
    )
    # Then nothing derivable does not mean "forget the zone"
    assert rows(engine)["z1"]["timezone"] == "America/Denver"
    # but a phone that tells us the zone corrects it.
    import_csv(
        write(tmp_path, "external_id,phone\nz1,(212) 555-0100\n", name="c.csv"),
        SqlSupporterWriter(engine),
    )
    assert rows(engine)["z1"]["timezone"] == "America/New_York"


def test_topics_become_subscriptions_and_are_replaced(engine: Engine, tmp_path: Path) -> None:
    # Given a file subscribing supporters to topics, one of them with a bad topic name
    first = "external_id,topics,tags\ns1,Debate;gotv,Volunteer;donor\ns2,debate;bad_topic!,\ns3,,\n"
    report = import_csv(write(tmp_path, first, name="a.csv"), SqlSupporterWriter(engine))
    # Then the subscriptions are exactly the valid topics, which are registered for provision
    assert topics_of(engine) == {"s1": {"debate", "gotv"}, "s2": {"debate"}}
    assert report.new_topics == ("debate", "gotv")
    with engine.connect() as conn:
        assert set(conn.scalars(select(alert_topics.c.name))) == {"debate", "gotv"}
    assert [(r["external_id"], r["field"], r["value"]) for r in rejects(report)] == [
        ("s2", "topics", "bad_topic!")
    ]
    assert rows(engine)["s1"]["tags"] == ";donor;volunteer;"
    # When a second file moves s1 to one new topic, s2 to none, and adds s3 to gotv
    second = "external_id,topics\ns1,fundraising\ns2,\ns3,gotv\n"
    report = import_csv(write(tmp_path, second, name="b.csv"), SqlSupporterWriter(engine))
    # Then each supporter's subscriptions are replaced by exactly what the file says
    assert topics_of(engine) == {"s1": {"fundraising"}, "s3": {"gotv"}}
    assert report.new_topics == ("fundraising",)
    assert report.rejects_path is None
    # and a file without a topics column leaves subscriptions alone.
    import_csv(
        write(tmp_path, "external_id,first_name\ns1,Sam\n", name="c.csv"),
        SqlSupporterWriter(engine),
    )
    assert topics_of(engine)["s1"] == {"fundraising"}


def test_reimporting_the_same_topics_is_idempotent(engine: Engine, tmp_path: Path) -> None:
    # Given supporters subscribed by one import
    path = write(tmp_path, "external_id,topics\nu1,debate;gotv\nu2,gotv\n")
    import_csv(path, SqlSupporterWriter(engine))
    query = select(subscriptions.c.supporter_id, subscriptions.c.topic, subscriptions.c.created_at)
    with engine.connect() as conn:
        before = set(conn.execute(query))
    # When the same file is imported again
    report = import_csv(path, SqlSupporterWriter(engine))
    # Then nothing is new and the subscriptions are the very same rows, not recreated.
    assert report.new_topics == ()
    assert (report.inserted, report.updated) == (0, 2)
    with engine.connect() as conn:
        assert set(conn.execute(query)) == before


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"external_id,phone\nv1,\x00\x01\x02\n", "binary"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
        ("external_id,first_name\nv1,Zoë\n".encode("latin-1"), "not UTF-8"),
        ("external_id,first_name\nv1,Zoë\n".encode("utf-16"), "UTF-16"),
        (b"", "empty"),
        (b"\n\n", "no header"),
    ],
)
def test_a_file_that_is_not_csv_text_imports_nothing(
    engine: Engine, tmp_path: Path, content: bytes, message: str
) -> None:
    # Given a file that is not UTF-8 CSV text
    path = tmp_path / "voters.csv"
    path.write_bytes(content)
    # When imported, then it is refused with a clear reason, and nothing is written.
    with pytest.raises(InputError, match=message):
        import_csv(path, SqlSupporterWriter(engine))
    assert rows(engine) == {}
    assert not rejects_path_for(path).exists()


def test_a_utf8_error_deep_in_the_file_imports_nothing(engine: Engine, tmp_path: Path) -> None:
    # Given a file whose 5,000th row was pasted from a Latin-1 source
    good = "".join(f"v{n},Name{n}\n" for n in range(5000))
    path = tmp_path / "voters.csv"
    path.write_bytes(b"external_id,first_name\n" + good.encode() + "v,Zoë\n".encode("latin-1"))
    # Then the whole file is refused before any batch is written.
    with pytest.raises(InputError, match="not UTF-8"):
        import_csv(path, SqlSupporterWriter(engine), batch_size=100)
    assert rows(engine) == {}


@pytest.mark.parametrize(
    "text",
    [
        "first_name,phone\nZoë,(415) 555-0100\n",
        "v1,Zoë,(415) 555-0100,zoe@example.com\n",  # no header row at all
        '{"external_id": "v1"}\n',
    ],
)
def test_no_external_id_column_imports_nothing(engine: Engine, tmp_path: Path, text: str) -> None:
    # Given a file whose first row does not name an external_id column
    with pytest.raises(InputError, match="no external_id column") as caught:
        import_csv(write(tmp_path, text), SqlSupporterWriter(engine))
    # then nothing is imported, and the message does not echo personal data.
    assert rows(engine) == {}
    assert "555" not in str(caught.value)
    assert "zoe@" not in str(caught.value)


def test_a_quote_never_closed_stops_the_import(engine: Engine, tmp_path: Path) -> None:
    # Given a file whose row 4 opens a quote that is never closed (the csv module would read
    # every later row into that one cell)
    text = 'external_id,first_name,phone\nq1,Ann,\nq2,Bob,\nq3,"Cy,\nq4,Di,\nq5,Ed,\n'
    # When imported, then the import stops there and names the row
    with pytest.raises(InputError, match="row 4: a quote opened in this row is never closed"):
        import_csv(write(tmp_path, text), SqlSupporterWriter(engine), batch_size=2)
    # and only the batches before it were written.
    assert set(rows(engine)) == {"q1", "q2"}


def test_a_repeated_column_is_refused(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="appears twice"):
        import_csv(
            write(tmp_path, "external_id,Email,email\nv1,a@b.co,c@d.co\n"),
            SqlSupporterWriter(engine),
        )


def test_no_rejects_no_file_and_a_stale_one_is_removed(engine: Engine, tmp_path: Path) -> None:
    # Given a rejects file left by an earlier import of the same file
    path = write(tmp_path, "external_id,phone\nv1,(415) 555-0100\n")
    stale = rejects_path_for(path)
    stale.write_text("row,external_id,field,value,reason\n2,v1,phone,555-0100,no area code\n")
    # When the fixed file imports cleanly
    report = import_csv(path, SqlSupporterWriter(engine))
    # Then there is no rejects file to mislead anyone.
    assert report.rejects_path is None
    assert not stale.exists()


def test_rejects_file_name_follows_the_input() -> None:
    assert rejects_path_for(Path("/data/voters.csv")) == Path("/data/voters.rejects.csv")
    assert rejects_path_for(Path("export.2026.CSV")) == Path("export.2026.rejects.csv")


def test_report_progress_and_logs(engine: Engine, tmp_path: Path) -> None:
    # Given a file of 25 rows, some with personal data that is rejected
    body = "".join(f"p{n},(415) 555-{n:04d},bad{n}@\n" for n in range(25))
    path = write(tmp_path, "external_id,phone,email\n" + body)
    seen: list[int] = []
    switch_interval = sys.getswitchinterval()
    # When imported in batches of 10 with a progress callback, capturing logs
    with capture_logs() as logs:
        report = import_csv(
            path, SqlSupporterWriter(engine), batch_size=10, on_progress=seen.append
        )
    # Then progress is reported after each committed batch
    assert seen == [10, 20, 25]
    # and the report is plain JSON for --json
    data = json.loads(json.dumps(report.to_dict()))
    assert data["rows_read"] == 25
    assert data["inserted"] == 25
    assert data["fields_rejected"] == 25
    assert data["rejects_path"] == str(tmp_path / "voters.rejects.csv")
    assert data["new_topics"] == []
    assert data["elapsed_s"] >= 0
    # and the logs carry counts, never a phone number or an email address.
    assert [log["event"] for log in logs] == ["supporters.import.finished"]
    # and the interpreter's thread switch interval, lowered while importing, is restored.
    assert sys.getswitchinterval() == switch_interval
    assert "555" not in repr(logs)
    assert "bad" not in repr(logs)


def test_long_values_are_rejected_not_truncated(engine: Engine, tmp_path: Path) -> None:
    long_name, long_id = "N" * 201, "X" * 129
    text = f"external_id,first_name\nv1,{long_name}\n{long_id},Ann\n"
    report = import_csv(write(tmp_path, text), SqlSupporterWriter(engine))
    assert rows(engine)["v1"]["first_name"] is None
    assert report.rows_rejected == 1
    assert [(r["row"], r["field"]) for r in rejects(report)] == [
        ("2", "first_name"),
        ("3", "external_id"),
    ]


def test_writer_upserts_a_batch_and_counts(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given IN lists limited to 3 keys (so a batch of 8 needs several on SQLite)
    monkeypatch.setattr(portable_writer, "IN_CHUNK", 3)
    writer = SqlSupporterWriter(engine)
    columns = frozenset({*SUPPORTER_COLUMNS, "topics"})
    batch = [SupporterRow(f"w{n}", first_name=f"n{n}", topics=("debate",)) for n in range(8)]
    # When written, then all are inserted and the topic is new
    first = writer.write_batch(batch, columns)
    assert (first.inserted, first.updated, first.new_topics) == (8, 0, frozenset({"debate"}))
    # When written again with a repeated id, then the last row wins and all count as updated
    again = [*batch, SupporterRow("w0", first_name="last", topics=("gotv",))]
    second = writer.write_batch(again, columns)
    assert (second.inserted, second.updated, second.new_topics) == (0, 8, frozenset({"gotv"}))
    assert rows(engine)["w0"]["first_name"] == "last"
    assert topics_of(engine)["w0"] == {"gotv"}
    assert writer.write_batch([], columns).inserted == 0


def test_supporter_row_fields_follow_the_table_columns() -> None:
    # The PostgreSQL path COPYs a row's leading fields straight into these columns.
    assert SupporterRow._fields[: 1 + len(SUPPORTER_COLUMNS)] == ("external_id", *SUPPORTER_COLUMNS)
    assert set(SUPPORTER_COLUMNS) <= set(supporters.c.keys())


def test_a_concurrent_insert_of_the_same_id_is_merged(pg_url: str, tmp_path: Path) -> None:
    # Given an import that finds n1 new, and another writer that inserts n1 right after
    # (between the import's existence query and its INSERT)
    from sqlalchemy import event

    from messaging.store.db import create_db_engine

    engine = create_db_engine(pg_url)
    other = create_db_engine(pg_url)
    done: list[bool] = []

    def sneak_in(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().startswith("CREATE TEMPORARY TABLE rapid_import_rows") and not done:
            done.append(True)
            with other.begin() as conn:
                conn.execute(
                    supporters.insert(),
                    {"external_id": "n1", "first_name": "Other", "email": "o@example.org",
                     "created_at": datetime.now(UTC), "updated_at": datetime.now(UTC)},
                )  # fmt: skip

    event.listen(engine, "before_cursor_execute", sneak_in)
    try:
        # When the import goes on
        path = write(tmp_path, "external_id,first_name,topics\nn1,Mine,debate\nn2,Two,gotv\n")
        report = import_csv(path, SqlSupporterWriter(engine))
        # Then its plain INSERT collides, and the rows are merged instead: the file wins
        # for its columns, the other writer's email stays, and the subscriptions are made.
        assert done
        stored = rows(engine)
        assert stored["n1"]["first_name"] == "Mine"
        assert stored["n1"]["email"] == "o@example.org"
        assert topics_of(engine) == {"n1": {"debate"}, "n2": {"gotv"}}
        assert report.inserted + report.updated == 2
    finally:
        engine.dispose()
        other.dispose()
