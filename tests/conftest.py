"""Shared fixtures: real PostgreSQL, real Redis, a real moto server.

A test that needs a service and finds it down fails with a message naming the service; it
never skips (a skipped guarantee is an untested guarantee). Which service a test needs is
marked here, from the fixtures it uses (see :func:`pytest_collection_modifyitems`), so
`make test-fast` can leave those tests out without anyone remembering to mark them.
"""

from __future__ import annotations

import inspect
import os
import socket
import types
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import Engine, text

from messaging.store.db import create_db_engine, migrate

if TYPE_CHECKING:
    from emulators.server import Emulator

#: The PostgreSQL server the tests use; each test session gets its own throwaway database.
PG_ADMIN_URL = os.environ.get("RAPID_TEST_PG_URL", "postgresql+psycopg://127.0.0.1:5432/postgres")
#: The Redis the tests use; each test gets its own key prefix.
REDIS_TEST_URL = os.environ.get("RAPID_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

# Test-only variables are ours, not settings: keep them out of load_settings' unknown check.
for _name in ("RAPID_TEST_PG_URL", "RAPID_TEST_REDIS_URL"):
    os.environ.pop(_name, None)


#: Fixtures that need a service, by the marker a test using them (even through another
#: fixture) gets. `db_url` needs PostgreSQL only for its "postgresql" param (checked below).
SERVICE_FIXTURES = {
    "pg_server_url": "postgres",
    "_pg_engine": "postgres",
    "pg_url": "postgres",
    "moto_url": "moto",
    "rapid_env": "redis",
}


#: The value of a parametrized fixture's param that puts it on PostgreSQL (`db_url` and the
#: stores that run once per backend).
POSTGRES_PARAMS = {"postgresql", "postgres"}
#: Fixtures that drive Debian's chromium (playwright's `page`, our own `browser`).
BROWSER_FIXTURES = {"page", "browser", "chromium"}


def _code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    """A function's code and the code of every function nested in it."""
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


#: Names whose use in a test, a fixture or a test helper means a service.
SERVICE_NAMES = {"REDIS_TEST_URL": "redis", "sync_playwright": "browser"}


def _names_used(code: types.CodeType, scope: dict[str, Any], seen: set[int]) -> set[str]:
    """The markers of the SERVICE_NAMES that code uses, itself or through the test helpers it
    calls (plain functions and classes of the tests package, looked up in its module)."""
    needs: set[str] = set()
    for each in _code_objects(code):
        needs |= {SERVICE_NAMES[n] for n in each.co_names if n in SERVICE_NAMES}
        for name in each.co_names:
            helper = scope.get(name)
            if id(helper) in seen or not getattr(helper, "__module__", "").startswith("tests"):
                continue
            seen.add(id(helper))
            funcs = [helper] if inspect.isfunction(helper) else []
            if inspect.isclass(helper):
                funcs = [f for f in vars(helper).values() if inspect.isfunction(f)]
            for func in funcs:
                needs |= _names_used(func.__code__, func.__globals__, seen)
    return needs


def _fixture_needs(item: pytest.Item, name: str, seen: set[str]) -> set[str]:
    """What fixture ``name`` needs for this test: through its own arguments, the fixtures it
    asks for with ``request.getfixturevalue("…")`` and the SERVICE_NAMES it uses."""
    if name in seen:
        return set()
    seen.add(name)
    info = getattr(item, "_fixtureinfo", None)
    defs = info.name2fixturedefs.get(name) if info is not None else None
    if not defs:
        defs = item.session._fixturemanager.getfixturedefs(name, item)
    if not defs:
        return set()  # not a fixture (a string constant that only looked like one)
    needs = {SERVICE_FIXTURES[name]} if name in SERVICE_FIXTURES else set()
    if name in BROWSER_FIXTURES:
        needs.add("browser")
    fixturedef = defs[-1]  # the closest definition wins, as pytest resolves it
    callspec = getattr(item, "callspec", None)
    param = callspec.params.get(name) if callspec is not None else None
    if isinstance(param, str) and param in POSTGRES_PARAMS:
        needs.add("postgres")
    func = fixturedef.func
    codes = list(_code_objects(func.__code__))
    needs |= _names_used(func.__code__, func.__globals__, set())
    deps = set(fixturedef.argnames) - {"request"}
    # A parametrized fixture asks for its backend only under its own param (checked above).
    if param is None:
        deps |= {c for code in codes for c in code.co_consts if isinstance(c, str)}
    for dep in sorted(deps):
        if dep.isidentifier():
            needs |= _fixture_needs(item, dep, seen)
    return needs


def _service_markers(item: pytest.Item) -> set[str]:
    seen: set[str] = set()
    needs: set[str] = set()
    for name in getattr(item, "fixturenames", ()):
        needs |= _fixture_needs(item, name, seen)
    function = getattr(item, "function", None)
    if function is not None:
        codes = list(_code_objects(function.__code__))
        needs |= _names_used(function.__code__, function.__globals__, set())
        asked = {c for code in codes for c in code.co_consts if isinstance(c, str)}
        for name in sorted(asked - seen):
            if name.isidentifier():
                needs |= _fixture_needs(item, name, seen)
    return needs


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with the services it needs (and `integration` if any)."""
    for item in items:
        needs = _service_markers(item)
        for mark in sorted(needs - {m.name for m in item.iter_markers()}):
            item.add_marker(mark)
        if needs and item.get_closest_marker("integration") is None:
            item.add_marker("integration")


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
        if engine.dialect.name == "postgresql":
            # The audit log's trigger refuses DELETE from every role; a superuser session in
            # replica mode skips ordinary triggers (the tests' role is a superuser).
            conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
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


#: The store backends a contract test runs on: the in-memory twin, SQLite, PostgreSQL.
STORE_BACKENDS = [
    "memory",
    pytest.param("sqlite", marks=pytest.mark.integration),
    pytest.param("postgresql", marks=[pytest.mark.integration, pytest.mark.postgres]),
]


# A module asks for its stores with a fixture of its own on this one: a `stores` fixture here
# would be seen (by the service markers above) in every test whose asserts name a local `stores`.
@pytest.fixture(params=STORE_BACKENDS)
def store_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine | None]:
    """A migrated, empty engine on SQLite or PostgreSQL; None on the in-memory backend."""
    if request.param == "memory":
        yield None
        return
    if request.param == "sqlite":
        engine = create_db_engine(f"sqlite:///{tmp_path / 'rapid.db'}")
        migrate(engine)
    else:
        pg_engine: Engine = request.getfixturevalue("_pg_engine")
        _reset(pg_engine)
        engine = create_db_engine(pg_engine.url.render_as_string(hide_password=False))
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


@pytest.fixture(scope="module")
def twilio_emulator(request: pytest.FixtureRequest) -> Iterator[Emulator]:
    """The Twilio emulator for a test module, on the module's ACCOUNT_SID and AUTH_TOKEN."""
    from emulators.server import start_twilio

    module = request.module
    with start_twilio(auth_token=module.AUTH_TOKEN, account_sid=module.ACCOUNT_SID) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def sendgrid_emulator(request: pytest.FixtureRequest) -> Iterator[Emulator]:
    """The SendGrid emulator for a test module, on the module's API_KEY."""
    from emulators.server import start_sendgrid

    with start_sendgrid(api_key=request.module.API_KEY) as emulator:
        yield emulator


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
        RAPID_ENV="test",
    )
    return env
