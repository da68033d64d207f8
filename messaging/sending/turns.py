"""Claiming in turn on a binding rate: one thread of a process at a time sizes its piece to
the room the rate's schedule has left within the horizon, claims it and reserves its slots.

Without turns, every sender thread claimed a full piece, asked the limiter, and put back
what it was not granted: at a binding 500/s, eight threads claimed 3.7 rows for every row
sent (issue #21). That churn is database work and, worse, CPU in the sending process, whose
provider loop then ran its sends late (late sends take fresh slots: the rate lost ~8 %).
With turns, a thread that finds the schedule booked a horizon ahead waits for room before it
claims anything, and the next thread sees the schedule as the last reservation left it.

The schedule's state seen here is this process's last look; other processes book too, so a
piece can still be granted less than it claimed (the limiter stays the authority, the rows it
refuses wait as before). Only the claiming is serialized: sending happens after the turn.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

#: A turn waits for room for at least this share of a full piece before claiming (tiny
#: pieces would pay a claim, a render pass and a Redis call for a handful of rows).
MIN_PIECE_SHARE = 0.25


class Turn:
    """One thread's turn: claim ``size`` rows, reserve their slots, then :meth:`end` it."""

    def __init__(self, turns: Turns, size: int) -> None:
        self.size = size
        self._turns: Turns | None = turns

    def end(self, booked_until_s: float = 0.0) -> None:
        """Record what the reservation said (0: nothing learned) and let the next thread
        claim. Idempotent: the caller ends it after reserving, and again in ``finally``."""
        turns, self._turns = self._turns, None
        if turns is not None:
            turns._release(booked_until_s)


class Turns:
    """The turns of one process's threads on one rate's schedule (one priority)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        #: The schedule's next free slot, as the last reservation of this process saw it.
        self._booked_until_s = 0.0

    def begin(self, want: int, interval_s: float, horizon_s: float) -> Turn:
        """Wait for the turn, then for room for at least a share of ``want`` sends within
        ``horizon_s`` of now; returns a turn of at most ``want`` rows (at least one)."""
        self._lock.acquire()
        try:
            need = max(1, math.ceil(want * MIN_PIECE_SHARE))
            while True:
                now = self._clock()
                start = max(now, self._booked_until_s)
                room = math.floor((now + horizon_s - start) / interval_s) + 1
                if room >= need:
                    return Turn(self, max(1, min(want, room)))
                # Until the horizon reaches `need` slots past the booking, at most a horizon:
                # other processes' sends free nothing, time does.
                wait_s = start + (need - 1) * interval_s - horizon_s - now
                self._sleep(min(max(wait_s, 0.001), horizon_s))
        except BaseException:
            self._lock.release()
            raise

    def _release(self, booked_until_s: float) -> None:
        if booked_until_s > 0:
            self._booked_until_s = booked_until_s
        self._lock.release()
