"""Array parameters sent to PostgreSQL as array text (``messaging/store/sql/pg_arrays.py``):
whatever the values, the server reads back exactly the list the sender meant. The text is
built by joining, so a value that looks like array syntax is where it could go wrong."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, create_engine, text

from messaging.store.sql.pg_arrays import int_array, text_array

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


@pytest.fixture(scope="module")
def conn(pg_server_url: str) -> Iterator[Connection]:
    engine = create_engine(pg_server_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as c:
        yield c
    engine.dispose()


def read_back(conn: Connection, literal: str, pg_type: str) -> list[Any]:
    return list(conn.execute(text(f"SELECT CAST(:a AS {pg_type}[])"), {"a": literal}).scalar_one())


AWKWARD = [
    "ann@example.org",
    'say "hi"',
    "back\\slash",
    "\\",
    '"',
    "a,b",
    "{braces}",
    "NULL",
    "null",
    "",
    "  spaced  ",
    "zoë@exämple.org",
    "tab\there",
    "line\nbreak",
]


@pytest.mark.parametrize("values", [[], ["x"], AWKWARD, [None], ["a", None, "NULL", None]])
def test_text_arrays_read_back_as_sent(conn: Connection, values: list[str | None]) -> None:
    assert read_back(conn, text_array(values), "text") == values


@pytest.mark.parametrize(
    "values", [[], [0], [1, -2, 9_223_372_036_854_775_807], [None, 5, None], [True, 3]]
)
def test_int_arrays_read_back_as_sent(conn: Connection, values: list[int | None]) -> None:
    expected = [None if v is None else int(v) for v in values]
    assert read_back(conn, int_array(values), "bigint") == expected


def test_only_integers_reach_an_int_array() -> None:
    # A value int() refuses never becomes statement text.
    with pytest.raises(ValueError, match="invalid literal for int"):
        int_array(["1}; DROP TABLE deliveries; --"])  # type: ignore[list-item]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.none(), st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)))
        )
    )
)
def test_any_strings_read_back_as_sent(conn: Connection, values: list[str | None]) -> None:
    assert read_back(conn, text_array(values), "text") == values
