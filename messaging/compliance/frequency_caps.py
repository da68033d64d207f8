"""Cross-blast frequency caps (``SMS_FREQUENCY_CAP``, ``EMAIL_FREQUENCY_CAP``: ``N/24h``).

A supporter who has already been messaged by ``N`` blasts on a channel within the window is
not messaged by another one: their ledger row ends ``capped``. The decision is taken when a
blast is expanded, one page at a time, by :class:`CapLedger.reserve`, which both checks and
takes the slots in one atomic step fleet-wide (two blasts expanding at once cannot both take
a supporter's last slot). A dry run asks the same question with ``dry_run=True`` and takes
nothing.

A slot is taken by the blast, not by a message: a blast whose message to that supporter is
later suppressed, expires or is canceled still counts. The cap errs on the side of fewer
messages, which is the side the supporter would choose.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from config.caps import FrequencyCap, parse_frequency_cap

__all__ = ["CapLedger", "FrequencyCap", "InMemoryCapLedger", "parse_frequency_cap"]


class CapLedger(Protocol):
    """Who has used up their cap: the fleet-wide, atomic part of frequency capping."""

    def reserve(
        self,
        channel: str,
        blast_id: str,
        supporter_ids: Sequence[int],
        cap: FrequencyCap,
        *,
        dry_run: bool = False,
    ) -> set[int]:
        """Take a slot for ``blast_id`` for each supporter; return those over the cap.

        A supporter for whom this blast already holds a slot is never capped (a retried
        page), and ``dry_run`` only counts.
        """
        ...


class InMemoryCapLedger:
    """A :class:`CapLedger` in a dict, for unit tests (one process only)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._slots: dict[tuple[str, int], dict[str, float]] = {}

    def reserve(
        self,
        channel: str,
        blast_id: str,
        supporter_ids: Sequence[int],
        cap: FrequencyCap,
        *,
        dry_run: bool = False,
    ) -> set[int]:
        """See :meth:`CapLedger.reserve`."""
        now = self._clock()
        capped: set[int] = set()
        with self._lock:
            for supporter_id in supporter_ids:
                held = self._slots.setdefault((channel, supporter_id), {})
                for blast, at in list(held.items()):
                    if at <= now - cap.window_s:
                        del held[blast]
                if blast_id in held:
                    continue
                if len(held) >= cap.limit:
                    capped.add(supporter_id)
                elif not dry_run:
                    held[blast_id] = now
        return capped
