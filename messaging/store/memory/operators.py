"""In-memory operators: the twin of :mod:`messaging.store.sql.operators` for unit tests."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime

from messaging.access.operators import Operator


class MemoryOperatorStore:
    """Operators and token hashes in a dict, with the SQL store's semantics."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_name: dict[str, tuple[Operator, str]] = {}

    def add(self, operator: Operator, token_hash: str) -> bool:
        """Store a new operator; False if an active one has that name."""
        with self._lock:
            current = self._by_name.get(operator.name)
            if current is not None and current[0].active:
                return False
            if any(h == token_hash for _op, h in self._by_name.values()):
                raise ValueError("token hash collision")  # as the unique index would
            self._by_name[operator.name] = (operator, token_hash)
            return True

    def by_token_hash(self, token_hash: str) -> Operator | None:
        """The active operator with this token hash, or None."""
        with self._lock:
            for operator, stored in self._by_name.values():
                if stored == token_hash and operator.active:
                    return operator
        return None

    def list(self) -> list[Operator]:
        """Every operator, by name."""
        with self._lock:
            return [op for _name, (op, _h) in sorted(self._by_name.items())]

    def revoke(self, name: str, at: datetime) -> bool:
        """Revoke an active operator; False if there was none."""
        with self._lock:
            current = self._by_name.get(name)
            if current is None or not current[0].active:
                return False
            self._by_name[name] = (replace(current[0], revoked_at=at), current[1])
            return True
