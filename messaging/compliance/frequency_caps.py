"""Cross-blast frequency caps (``SMS_FREQUENCY_CAP``, ``EMAIL_FREQUENCY_CAP``: ``N/24h``).

A supporter who has already been messaged by ``N`` blasts on a channel within the window is
not messaged by another one: their ledger row ends ``capped``. The decision is taken when a
blast is expanded, one page at a time, by :meth:`CapLedger.reserve` (the port, in
``messaging/ports/``; Redis in ``queues/flow/caps.py``), which both checks and
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from config.caps import FrequencyCap, parse_frequency_cap
from messaging.ports import CapLedger, CapScreen

if TYPE_CHECKING:
    from messaging.content.alert import Alert

__all__ = [
    "CapLedger",
    "FrequencyCap",
    "FrequencyCaps",
    "InMemoryCapLedger",
    "parse_frequency_cap",
]


@dataclass(frozen=True, slots=True)
class FrequencyCaps:
    """The fleet's caps per channel, and the ledger their slots are kept in."""

    ledger: CapLedger
    #: ``{channel: cap}``; a channel without one is not capped.
    by_channel: Mapping[str, FrequencyCap]

    def screen(self, alert: Alert) -> CapScreen | None:
        """What expansion asks of each page of ``alert``'s blast: the pending supporters
        over their cap (a dry run only counts). None when nothing caps this blast: no
        channel of the alert has a cap, or it is a test send (staff checking a message
        must not use up supporters' slots, nor be refused their own test)."""
        caps = {c: cap for c, cap in self.by_channel.items() if c in alert.channels}
        if not caps or alert.test_recipients:
            return None

        def capped(channel: str, supporter_ids: list[int]) -> set[int]:
            cap = caps.get(channel)
            if cap is None or not supporter_ids:
                return set()
            return self.ledger.reserve(
                channel, alert.alert_id, supporter_ids, cap, dry_run=alert.dry_run
            )

        return capped


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
