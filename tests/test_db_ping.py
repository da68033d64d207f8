"""A pooled PostgreSQL connection is pinged on checkout only after an idle spell.

Observed from the server: ``pg_stat_activity.query`` is the last statement a backend ran,
so a checkout that pinged changes it (psycopg's ping is the empty statement ``;``), one
that did not leaves what the connection ran before it went back to the pool.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from messaging.store.db import create_db_engine

#: Short, for the tests that wait it out; those that must not reach it get a long one, so
#: a stall of a loaded CI host cannot make them ping.
IDLE_S = 0.3
LONG_IDLE_S = 60.0


@pytest.fixture
def engine(pg_url: str, request: pytest.FixtureRequest) -> Iterator[Engine]:
    idle_s = getattr(request, "param", IDLE_S)
    engine = create_db_engine(pg_url, pool_size=1, max_overflow=0, ping_after_idle_s=idle_s)
    yield engine
    engine.dispose()


@pytest.fixture
def observer(pg_url: str) -> Iterator[Engine]:
    """A second engine, to read the first one's backend from the server's side."""
    engine = create_db_engine(pg_url)
    yield engine
    engine.dispose()


def _backend_pid(engine: Engine) -> int:
    with engine.connect() as conn:
        pid = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
        conn.execute(text("SELECT 'marker'"))
    return pid


def _last_query(observer: Engine, pid: int) -> str:
    with observer.connect() as conn:
        return str(
            conn.execute(
                text("SELECT query FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
            ).scalar_one()
        )


def _checkout(engine: Engine) -> None:
    """Check a connection out and back in without running anything on it."""
    with engine.connect():
        pass


@pytest.mark.parametrize("engine", [LONG_IDLE_S], indirect=True)
def test_a_connection_back_from_a_burst_is_handed_out_without_a_round_trip(
    engine: Engine, observer: Engine
) -> None:
    pid = _backend_pid(engine)
    before = _last_query(observer, pid)
    _checkout(engine)
    assert _last_query(observer, pid) == before


def test_a_connection_idle_past_the_threshold_is_pinged_first(
    engine: Engine, observer: Engine
) -> None:
    pid = _backend_pid(engine)
    before = _last_query(observer, pid)
    time.sleep(IDLE_S * 1.5)
    _checkout(engine)
    assert _last_query(observer, pid) != before


def test_a_connection_the_server_dropped_while_idle_is_replaced_unseen(
    engine: Engine, observer: Engine
) -> None:
    pid = _backend_pid(engine)
    with observer.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
    time.sleep(IDLE_S * 1.5)
    with engine.connect() as conn:  # no error: the ping found it dead, a new one came
        new_pid = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
    assert new_pid != pid


@pytest.mark.parametrize("engine", [LONG_IDLE_S], indirect=True)
def test_a_connection_dropped_inside_the_window_fails_once_then_the_pool_recovers(
    engine: Engine, observer: Engine
) -> None:
    """The trade made: no ping inside the window, so the statement meets the dead
    connection; SQLAlchemy sees a disconnect and the next checkout gets a live one."""
    pid = _backend_pid(engine)
    with observer.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    with pytest.raises(OperationalError) as failure, engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    assert failure.value.connection_invalidated
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 2")).scalar_one() == 2
