"""The audit log (contract §11): appended by every change, masked, never edited.

The same behaviour is asserted on the in-memory store and on SQLite and PostgreSQL; the
append-only trigger on PostgreSQL; and the CLI end to end (operators, opt-outs, imports,
``rapid audit list``), acting as ``RAPID_OPERATOR``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from messaging.access.audit import (
    Actor,
    AuditAction,
    AuditLog,
    AuditStore,
    Source,
    parse_since,
)
from messaging.errors import InputError
from messaging.store.memory.audit import MemoryAuditStore
from messaging.store.schema import audit_log, operators
from messaging.store.sql.audit import SqlAuditStore
from tests.factories import migrated_engine
from tests.fleet import rapid

T0 = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.integration),
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuditStore]:
    """The audit store: in memory, on SQLite and on PostgreSQL."""
    if request.param == "memory":
        yield MemoryAuditStore()
        return
    engine = migrated_engine(request, tmp_path)
    yield SqlAuditStore(engine)
    engine.dispose()


def test_entries_are_appended_masked_and_read_newest_first(store: AuditStore) -> None:
    clock = iter([T0, T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)])
    log = AuditLog(store, clock=lambda: next(clock))
    alice = Actor("alice", Source.CLI)
    # When three changes are recorded
    log.record(alice, AuditAction.OPTOUT_ADDED, value="+14155550100", detail="operator")
    log.record(alice, AuditAction.OPTOUT_REMOVED, value="Jane.Doe@example.org")
    log.record(Actor("bob", Source.API), AuditAction.BLAST_PAUSED, blast_id="b1")
    # Then they read back newest first, phones and emails masked
    entries = log.entries()
    assert [(e.actor, e.source, e.action, e.blast_id, e.value) for e in entries] == [
        ("bob", "api", "blast.pause", "b1", None),
        ("alice", "cli", "optout.remove", None, "J***@example.org"),
        ("alice", "cli", "optout.add", None, "+***00"),
    ]
    assert entries[-1].at == T0 and entries[-1].detail == "operator"
    # And --since keeps only what happened at or after it
    assert [e.action for e in log.entries(since=T0 + timedelta(minutes=1))] == [
        "blast.pause",
        "optout.remove",
    ]
    assert len(log.entries(limit=1)) == 1
    assert entries[0].to_dict()["at"] == (T0 + timedelta(minutes=2)).isoformat()


def test_since_takes_times_and_ages() -> None:
    now = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
    assert parse_since("30m", now) == now - timedelta(minutes=30)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("2026-11-27T01:00:00Z") == datetime(2026, 11, 27, 1, tzinfo=UTC)
    assert parse_since("2026-11-27T01:00:00") == datetime(2026, 11, 27, 1, tzinfo=UTC)
    assert parse_since(None) is None and parse_since(" ") is None
    with pytest.raises(InputError, match="since 'yesterday'"):
        parse_since("yesterday")


def test_postgresql_refuses_to_change_or_remove_entries(pg_url: str) -> None:
    from messaging.store.db import create_db_engine

    engine = create_db_engine(pg_url)
    try:
        AuditLog(SqlAuditStore(engine)).record(
            Actor("alice", Source.CLI), AuditAction.BLAST_CANCELED, blast_id="b1"
        )
        # When anyone, the table's owner included, updates, deletes or truncates
        for statement in (
            "UPDATE audit_log SET actor = 'mallory'",
            "DELETE FROM audit_log",
            "TRUNCATE audit_log",
        ):
            with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
                conn.execute(text(statement))
        # Then the entry is still there, unchanged
        with engine.connect() as conn:
            assert conn.execute(select(audit_log.c.actor)).scalars().all() == ["alice"]
    finally:
        engine.dispose()


def test_cli_records_operators_optouts_and_imports(
    rapid_env: dict[str, str], tmp_path: Path, db_url: str
) -> None:
    env = {**rapid_env, "RAPID_OPERATOR": "alice"}
    rapid(env, "provision")
    # When alice adds an operator, an opt-out, lifts one, imports supporters, revokes the
    # operator
    added = rapid(env, "operators", "add", "Bob", "--role", "approver", "--json")
    token = json.loads(added.stdout)["token"]
    assert token.startswith("rr_")
    listed = json.loads(rapid(env, "operators", "list", "--json").stdout)
    assert [(o["name"], o["role"], o["created_by"]) for o in listed] == [
        ("bob", "approver", "alice")
    ]
    rapid(env, "optout", "add", "+1 (415) 555-0100")
    rapid(env, "optout", "remove", "+14155550100")
    csv_file = tmp_path / "people.csv"
    csv_file.write_text("external_id,phone,sms_opt_in\nx1,+14155550111,yes\n")
    rapid(env, "supporters", "import", str(csv_file))
    rapid(env, "operators", "revoke", "bob")
    # Then `rapid audit list --json` shows each, newest first, by alice from the CLI
    entries = json.loads(rapid(env, "audit", "list", "--json").stdout)
    assert [(e["action"], e["actor"], e["source"], e["value"]) for e in entries] == [
        ("operator.revoke", "alice", "cli", "bob"),
        ("supporters.import", "alice", "cli", "people.csv"),
        ("optout.remove", "alice", "cli", "+***00"),
        ("optout.add", "alice", "cli", "+***00"),
        ("operator.add", "alice", "cli", "bob"),
    ]
    assert entries[1]["detail"] == "inserted=1, updated=0"
    assert json.loads(rapid(env, "audit", "list", "--json", "--since", "2999-01-01").stdout) == []
    # And the table form prints too; the token is in neither the log nor the database
    assert "alice" in rapid(env, "audit", "list").stdout
    from messaging.store.db import create_db_engine

    engine = create_db_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = [*conn.execute(select(operators)), *conn.execute(select(audit_log))]
        assert token not in json.dumps([list(r) for r in rows], default=str)
    finally:
        engine.dispose()


def test_cli_refuses_bad_roles_and_unknown_operators(rapid_env: dict[str, str]) -> None:
    import subprocess
    import sys

    rapid(rapid_env, "provision")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "workers", *args],
            env=rapid_env,
            capture_output=True,
            text=True,
            check=False,
        )

    bad_role = run("operators", "add", "eve", "--role", "root")
    assert bad_role.returncode == 2 and "root" in bad_role.stderr
    unknown = run("operators", "revoke", "nobody")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == "error: no active operator 'nobody'"
    reserved = run("operators", "add", "bootstrap", "--role", "admin")
    assert reserved.returncode == 1 and "reserved" in reserved.stderr
