"""Engines for the system of record, and schema migrations.

One function builds an engine for either database with the settings each needs; another
applies the Alembic migrations that ship inside the package (``rapid provision`` calls it).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InvalidatePoolError, OperationalError

from messaging.errors import ServiceUnavailableError

#: Where the Alembic environment and revisions live, inside the installed package.
MIGRATIONS_DIR = Path(__file__).with_name("migrations")

#: How long a SQLite writer waits for another writer's lock before giving up.
SQLITE_BUSY_TIMEOUT_MS = 30_000

#: A pooled PostgreSQL connection idle for longer than this is pinged before it is handed
#: out; one back in the pool for less is handed out as it is.
PING_AFTER_IDLE_S = 2.0


def normalize_url(url: str) -> str:
    """Pin PostgreSQL URLs to psycopg 3 (``postgres://`` and bare ``postgresql://`` too)."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def create_db_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``, tuned for its backend; no connection is made yet."""
    url = normalize_url(url)
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            **kwargs,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    ping_after_idle_s = kwargs.pop("ping_after_idle_s", PING_AFTER_IDLE_S)
    kwargs.setdefault("pool_size", 5)
    kwargs.setdefault("max_overflow", 10)
    engine = create_engine(url, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        _ping_when_idle(engine, ping_after_idle_s)
    return engine


def _ping_when_idle(engine: Engine, after_s: float) -> None:
    """Ping a pooled connection on checkout only when it sat idle for ``after_s`` or more.

    SQLAlchemy's ``pool_pre_ping`` pings on every checkout: a round trip before each of an
    alert's 11 checkouts (4.4 ms of its 30 ms under cProfile) and each of a sender batch's, in
    bursts where the connection came back milliseconds ago. What the ping guards against
    (a restarted or failed-over server, a connection the network or the server dropped
    while idle) is found the same way after an idle spell. A connection that dies while
    in use fails its statement instead, which SQLAlchemy reports as a disconnect and
    answers by replacing every pooled connection older than the failure; the caller's
    transient-error handling retries (a batch re-queued, an alert redelivered).
    """
    dialect = engine.dialect

    def stamp(_dbapi_conn: Any, record: Any, *_: Any) -> None:
        record.info["idle_since_s"] = time.monotonic()

    def ping(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get("idle_since_s", 0.0) < after_s:
            return
        try:
            dialect.do_ping(dbapi_conn)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi_conn, None):
                # As pre-ping does: this connection and every older one are replaced.
                raise InvalidatePoolError(str(exc)) from exc
            raise

    event.listen(engine, "connect", stamp)
    event.listen(engine, "checkin", stamp)
    event.listen(engine, "checkout", ping)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # The sqlite3 module only opens a transaction implicitly before statements that *start*
    # with INSERT/UPDATE/DELETE, so a `WITH … INSERT` would autocommit row by row. Take
    # transactions over: no implicit ones, and an explicit BEGIN from the "begin" event.
    dbapi_conn.isolation_level = None
    # WAL lets the web process read progress while workers write; foreign keys are off by
    # default in SQLite and our cascades need them.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.close()


def _sqlite_begin(conn: Any) -> None:
    # IMMEDIATE: take the write lock up front. A deferred transaction that reads and then
    # writes fails at once with SQLITE_BUSY when another writer committed in between (the
    # busy timeout does not apply); several worker threads on one file make that common.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def check_connection(engine: Engine) -> None:
    """Raise :class:`ServiceUnavailableError` (one clear line) if the database does not answer."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        where = engine.url.render_as_string(hide_password=True)
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise ServiceUnavailableError(f"database {where} is not answering: {reason}") from None


def migrate(engine: Engine, revision: str = "head") -> None:
    """Apply the packaged Alembic migrations up to ``revision`` (idempotent)."""
    from alembic import command
    from alembic.config import Config

    check_connection(engine)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Alembic owns the transactions (one per migration), so a migration can step outside
    # them for CREATE INDEX CONCURRENTLY, which a rolling update needs (deploy/README.md).
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def current_revision(engine: Engine) -> str | None:
    """The schema revision the database is at, or None before the first migration."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
