"""Shared fixtures: real PostgreSQL, real Redis, a real moto server.

A test that needs a service and finds it down fails with a message naming the service; it
never skips (a skipped guarantee is an untested guarantee).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from messaging.store.db import create_db_engine, migrate

#: The PostgreSQL server the tests use; each test session gets its own throwaway database.
PG_ADMIN_URL = os.environ.get("RAPID_TEST_PG_URL", "postgresql+psycopg://127.0.0.1:5432/postgres")
#: The Redis the tests use; each test gets its own key prefix.
REDIS_TEST_URL = os.environ.get("RAPID_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

# Test-only variables are ours, not settings: keep them out of load_settings' unknown check.
for _name in ("RAPID_TEST_PG_URL", "RAPID_TEST_REDIS_URL"):
    os.environ.pop(_name, None)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    admin = create_db_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"rapid_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.fail(f"PostgreSQL is not answering at {PG_ADMIN_URL}: {exc}", pytrace=False)
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _reset(engine: Engine) -> None:
    from messaging.store.schema import metadata

    with engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())


@pytest.fixture(scope="session")
def _pg_engine(pg_server_url: str) -> Iterator[Engine]:
    engine = create_db_engine(pg_server_url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty system of record: once on SQLite, once on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'rapid.db'}"
        engine = create_db_engine(url)
        migrate(engine)
        engine.dispose()
        yield url
    else:
        pg_engine: Engine = request.getfixturevalue("_pg_engine")
        _reset(pg_engine)
        yield pg_engine.url.render_as_string(hide_password=False)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on :func:`db_url`."""
    engine = create_db_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> str:
    """A migrated, empty PostgreSQL system of record (for tests that need the real thing)."""
    pg_engine: Engine = request.getfixturevalue("_pg_engine")
    _reset(pg_engine)
    return pg_engine.url.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """A real moto server (SNS/SQS over HTTP) on a loopback port, for the whole session."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def prefix() -> str:
    """A fresh RAPID_PREFIX, so tests sharing a moto server or Redis never collide."""
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def rapid_env(db_url: str, moto_url: str, prefix: str) -> dict[str, str]:
    """The environment of a `rapid` process wired to this test's services."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAPID_", "AWS_"))}
    env.update(
        RAPID_PREFIX=prefix,
        DATABASE_URL=db_url,
        REDIS_URL=REDIS_TEST_URL,
        AWS_ENDPOINT_URL=moto_url,
        AWS_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        RAPID_LOG_FORMAT="json",
    )
    return env
