"""Fuzz: any CSV into the supporters importer is imported or refused with a reason.

Each case is one file: a header of known and unknown columns (external_id usually present)
and rows of hostile cells, or bytes that are not CSV at all. The importer either refuses the
file with an :class:`InputError` naming why, or reports counts; every rejected field or row
is written with a reason, never as a spreadsheet formula; no stored name keeps a line break.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from messaging.errors import InputError
from messaging.ports import SUPPORTER_COLUMNS
from messaging.store.db import create_db_engine
from messaging.store.schema import supporters
from tests.fuzzing import BUDGET, FUZZ, HOSTILE_PIECES, Tally, hostile_text, quiet_logs

pytestmark = pytest.mark.integration

#: The header names an import knows (custom ``fields`` come from any other name), so a
#: column added to the import is fuzzed too.
COLUMNS = ["external_id", *(c for c in SUPPORTER_COLUMNS if c != "fields"), "topics"]
cells = st.one_of(
    hostile_text,
    st.sampled_from(
        [
            "+1 415 555 0100",
            "(212) 555-0100",
            "jane@example.org",
            "JANE@Example.ORG",
            "15213",
            "PA",
            "yes",
            "0",
            "America/New_York",
            "debate-night;Volunteer",
            "Ann\r\nBcc: x@evil.example",
            *HOSTILE_PIECES,
        ]
    ),
)


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    """A CSV (usually with external_id), or bytes that are not one."""
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        return draw(st.binary(max_size=300))
    header = draw(
        st.lists(st.one_of(st.sampled_from(COLUMNS), hostile_text), min_size=1, max_size=8)
    )
    if draw(st.integers(min_value=0, max_value=9)) > 0 and "external_id" not in header:
        header.insert(draw(st.integers(min_value=0, max_value=len(header))), "external_id")
    rows = draw(
        st.lists(st.lists(cells, min_size=0, max_size=len(header) + 1), min_size=0, max_size=6)
    )
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    text = out.getvalue()
    if draw(st.booleans()):  # sometimes broken by hand: stray quotes, NULs, CRs
        text = text.replace(draw(st.sampled_from([",", "\n", "a"])), draw(cells), 1)
    return text.encode("utf-8", "surrogatepass")


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[Engine]:
    """The migrated PostgreSQL system of record."""
    engine = create_db_engine(pg_url)
    yield engine
    engine.dispose()


def test_any_csv_is_imported_or_refused_with_a_reason(pg_engine: Engine, tmp_path: Path) -> None:
    from messaging.store.sql.supporters import SqlSupporterWriter
    from messaging.supporters.csv_import import import_csv

    tally = Tally("supporters import (CSV files)")
    path = tmp_path / "voters.csv"

    @given(data=csv_files())
    @settings(parent=FUZZ)
    def case(data: bytes) -> None:
        path.write_bytes(data)
        reason = None
        try:
            report = import_csv(path, SqlSupporterWriter(pg_engine), batch_size=3)
        except InputError as exc:
            reason = str(exc)
        if reason is not None:
            assert reason.strip()
            tally.add("file refused with a reason")
            return
        tally.add("imported")
        if report.rejects_path is not None:
            with report.rejects_path.open(encoding="utf-8-sig", newline="") as f:
                lines = list(csv.reader(f))
            for line in lines[1:]:
                assert line[4].strip(), line  # every reject has its reason
                assert not any(c[:1] in ("=", "+", "-", "@") for c in line), line
                tally.note("fields or rows rejected with a reason")

    with quiet_logs():
        case()
    # No stored name carries a line break or control character
    with pg_engine.connect() as conn:
        names = conn.execute(select(supporters.c.first_name, supporters.c.last_name)).all()
    for first, last in names:
        for name in (first or "", last or ""):
            assert not any(ord(ch) < 32 or 0x7F <= ord(ch) <= 0x9F for ch in name), name
    tally.report()
    assert tally.cases >= BUDGET
