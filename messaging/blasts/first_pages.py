"""First pages first: while alerts wait for their first expansion page, other expansions
hold their later pages back (issue #21, item 2).

Fifty alerts published together each need a first page written and queued before their
first text can go; their later pages can wait. One intake process handles many alerts at
once, and the database is what they share, so an expansion about to write its second or
later page first lets every alert still short of its first page go ahead. The hold is
bounded per expansion like a token bucket: :data:`MAX_HOLD_S` at first, earning
:data:`HOLD_SHARE` of the time it runs, so a stream of small alerts gets ahead of a
million-recipient expansion for as long as it runs, and slows it by a fifth at most (plus
the first seconds), never starves it.

In memory, per process: it orders one intake's own threads; alerts in other intake
processes have their own database connections and their own turn.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

#: Longest one expansion waits in a row, over its later pages, for other alerts' first
#: pages (its budget at the start, and the most it saves up) ...
MAX_HOLD_S = 3.0
#: ... and the share of its running time it earns back as budget.
HOLD_SHARE = 0.2


class HoldBudget:
    """One expansion's budget for holding its later pages (a token bucket in seconds)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last = clock()
        self.left_s = MAX_HOLD_S

    def spend(self, hold: Callable[[float], float]) -> None:
        """Earn the budget's share of the time since the last call, then hold with it."""
        now = self._clock()
        self.left_s = min(MAX_HOLD_S, self.left_s + HOLD_SHARE * (now - self._last))
        if self.left_s > 0:
            self.left_s -= hold(self.left_s)
        self._last = self._clock()


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
        done = False

        def first_page_done() -> None:
            nonlocal done
            with self._cond:
                if done:
                    return
                done = True
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
