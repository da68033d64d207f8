"""``pick_winner``: test the variants on a share of the audience, then send the winner.

The expansion writes the test share's rows ``pending`` with their variant, and everyone
else's ``deferred`` with no variant and a release a year away (messaging/content/variants.py
decides who is which, by a hash of (blast, supporter)). Each scheduler pass, once a blast's
``after`` has passed since it was created, :class:`WinnerPicker` counts the clicks per
variant on the ledger, gives the held rows the variant with the most (the lowest on a tie)
and releases them now; the same pass's release of due deferrals queues them, and senders
read each held row's variant from the ledger (:func:`held_variants`). Picking is one
conditional update that only touches rows still without a variant, so a second pick (a
restart, a second scheduler) changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

import structlog

from messaging.blasts.lifecycle import BlastStatus
from messaging.content.alert import Alert
from messaging.content.variants import is_held
from messaging.ports import BlastStore

log = structlog.get_logger(__name__)


class WinnerStore(Protocol):
    """The ledger's side of picking a winner (SQL and memory: ``store/*/links.py``)."""

    def settle_winner(self, blast_id: str, winner: int, now: datetime) -> int:
        """Give held rows the winner's variant and release them at ``now``; how many."""
        ...

    def row_variants(
        self, blast_id: str, channel: str, supporter_ids: Sequence[int]
    ) -> dict[int, int]:
        """The variant on each of these rows (rows without one are left out)."""
        ...


class VariantCounts(Protocol):
    """Counts per variant (the blast stores)."""

    def variant_counts(self, blast_id: str) -> dict[int, dict[str, dict[str, int]]]:
        """``{variant: {channel: {state: rows, "clicked": rows}}}``."""
        ...


def winner_by_clicks(alert: Alert, counts: dict[int, dict[str, dict[str, int]]]) -> int:
    """The variant with the most clicks over every channel (the lowest on a tie)."""
    n = len(alert.variants or ())
    clicks = [sum(c.get("clicked", 0) for c in counts.get(v, {}).values()) for v in range(n)]
    return max(range(n), key=lambda v: (clicks[v], -v))


class WinnerPicker:
    """Picks the winners that are due (one scheduler pass)."""

    def __init__(
        self,
        blasts: BlastStore,
        counts: VariantCounts,
        store: WinnerStore,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._blasts = blasts
        self._counts = counts
        self._store = store
        self._clock = clock
        #: Blasts this process has settled (a restart asks the ledger again, which answers 0).
        self._done: set[str] = set()

    def run_once(self) -> dict[str, int]:
        """``{blast_id: winner}`` of the blasts whose held rows were released now."""
        picked: dict[str, int] = {}
        now = self._clock()
        for blast_id in self._blasts.ids_with_status(BlastStatus.SENDING, expanded=True):
            if blast_id in self._done:
                continue
            blast = self._blasts.get(blast_id)
            pick = blast.alert.pick_winner if blast is not None else None
            if blast is None or pick is None:
                self._done.add(blast_id)
                continue
            if now < blast.created_at + pick.after:
                continue
            winner = winner_by_clicks(blast.alert, self._counts.variant_counts(blast_id))
            released = self._store.settle_winner(blast_id, winner, now)
            self._done.add(blast_id)
            if released:
                picked[blast_id] = winner
                log.info("blast.winner_picked", blast_id=blast_id, winner=winner, rows=released)
        return picked


def held_variants(
    store: WinnerStore | None,
    alert: Alert,
    blast_id: str,
    channel: str,
    supporter_ids: Sequence[int],
) -> dict[int, int]:
    """The winner's variant of each held recipient among ``supporter_ids`` (one read, only
    for a ``pick_winner`` blast); the test share's come from the hash."""
    if store is None or alert.pick_winner is None:
        return {}
    held = [sid for sid in supporter_ids if is_held(alert, sid)]
    return store.row_variants(blast_id, channel, held) if held else {}
