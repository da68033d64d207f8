"""Operators in the system of record (table ``operators``, migration 0007)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from messaging.access.operators import Operator, Role
from messaging.store.schema import operators


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything we store is UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _operator(row: Any) -> Operator:
    return Operator(
        name=row.name,
        role=Role(row.role),
        created_at=_aware(row.created_at),
        created_by=row.created_by,
        revoked_at=_aware(row.revoked_at) if row.revoked_at else None,
    )


class SqlOperatorStore:
    """Reads and writes ``operators``; tokens are only ever seen as their hashes."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(self, operator: Operator, token_hash: str) -> bool:
        """Store a new operator; False if an active one has that name (a revoked one's row
        is taken over, so its name can be given out again)."""
        values = {
            "role": operator.role.value,
            "token_hash": token_hash,
            "created_by": operator.created_by,
            "created_at": operator.created_at,
            "revoked_at": None,
        }
        try:
            with self._engine.begin() as conn:
                reused = conn.execute(
                    operators.update()
                    .where(operators.c.name == operator.name, operators.c.revoked_at.is_not(None))
                    .values(**values)
                ).rowcount
                if not reused:
                    conn.execute(operators.insert().values(name=operator.name, **values))
        except IntegrityError:  # an active operator holds the name
            return False
        return True

    def by_token_hash(self, token_hash: str) -> Operator | None:
        """The active operator with this token hash, or None (one unique-index probe)."""
        query = select(operators).where(
            operators.c.token_hash == token_hash, operators.c.revoked_at.is_(None)
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        return _operator(row) if row else None

    def list(self) -> list[Operator]:
        """Every operator, by name."""
        with self._engine.connect() as conn:
            return [
                _operator(r) for r in conn.execute(select(operators).order_by(operators.c.name))
            ]

    def revoke(self, name: str, at: datetime) -> bool:
        """Revoke an active operator; False if there was none."""
        with self._engine.begin() as conn:
            moved = conn.execute(
                operators.update()
                .where(operators.c.name == name, operators.c.revoked_at.is_(None))
                .values(revoked_at=at)
            ).rowcount
        return bool(moved)
