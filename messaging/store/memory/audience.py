"""The alert's ``audience`` filter over the in-memory tables (twin of ``sql/audience.py``)."""

from __future__ import annotations

from typing import Any

from messaging.blasts.lifecycle import RowState
from messaging.content.alert import Audience
from messaging.store.memory.tables import MemoryTables

#: Ledger states of a recipient an earlier blast reached (``from_blast``).
REACHED = frozenset({RowState.SENT, RowState.DELIVERED})


def _has(tags: str, tag: str) -> bool:
    return f";{tag};" in tags


class AudienceFilter:
    """Whether one supporter passes an alert's ``audience`` (every given part must hold)."""

    def __init__(self, tables: MemoryTables, audience: Audience | None) -> None:
        self._audience = audience
        self._reached: set[int] | None = None
        self._clicked: set[int] = set()
        if audience is not None and audience.from_blast is not None:
            earlier = audience.from_blast.id
            rows = [r for r in tables.rows_of(earlier) if r.state in REACHED]
            self._reached = {r.supporter_id for r in rows}
            self._clicked = {r.supporter_id for r in rows if r.clicked_at is not None}

    def matches(self, sid: int, person: dict[str, Any]) -> bool:
        """True if the supporter ``sid`` (its columns ``person``) is in the audience."""
        a = self._audience
        if a is None:
            return True
        if a.postal_codes and person.get("postal_code") not in a.postal_codes:
            return False
        if a.states and person.get("state") not in a.states:
            return False
        tags = person.get("tags") or ""
        for any_of in (a.tags, a.tags_any):
            if any_of and not any(_has(tags, t) for t in any_of):
                return False
        if not all(_has(tags, t) for t in a.tags_all):
            return False
        if any(_has(tags, t) for t in a.tags_none):
            return False
        fields = person.get("fields") or {}
        if any(fields.get(name) not in values for name, values in a.fields.items()):
            return False
        if self._reached is not None:
            assert a.from_blast is not None
            if sid not in self._reached:
                return False
            clicked = a.from_blast.clicked
            if clicked is not None and (sid in self._clicked) != clicked:
                return False
        return True
