"""First pages first: while alerts wait for their first expansion page, other expansions
hold their later pages back (issue #21, item 2).

Fifty alerts published together each need a first page written and queued before their
first text can go; their later pages can wait. One intake process handles many alerts at
once, and the database is what they share, so an expansion about to write its second or
later page first lets every alert still short of its first page go ahead. The hold is
bounded per expansion (:data:`MAX_HOLD_S` in all), so a stream of small alerts slows a
million-recipient expansion by seconds at most, never starves it.

In memory, per process: it orders one intake's own threads; alerts in other intake
processes have their own database connections and their own turn.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

#: Longest one expansion waits, over all its later pages, for other alerts' first pages.
MAX_HOLD_S = 3.0


class FirstPagesFirst:
    """Counts the alerts still short of their first page; later pages wait for none."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._waiting = 0
        self._cond = threading.Condition()
        self._clock = clock

    @property
    def waiting(self) -> int:
        """Alerts accepted by this process whose first page is not written yet."""
        return self._waiting

    def arrived(self) -> Callable[[], None]:
        """An alert is being handled; call the returned function once its first page is
        queued (or it will have none). Calling it again does nothing."""
        with self._cond:
            self._waiting += 1
        done = threading.Event()

        def first_page_done() -> None:
            if done.is_set():
                return
            done.set()
            with self._cond:
                self._waiting -= 1
                if self._waiting == 0:
                    self._cond.notify_all()

        return first_page_done

    def hold(self, budget_s: float) -> float:
        """Before a later page: wait until no alert is short of its first page, for at most
        ``budget_s``; returns the seconds waited (the caller's budget shrinks by them)."""
        if budget_s <= 0:
            return 0.0
        started = self._clock()
        with self._cond:
            self._cond.wait_for(lambda: self._waiting == 0, timeout=budget_s)
        return self._clock() - started
