"""The room a binding rate's schedule has left: sender threads size their pieces to it, so they
stop claiming rows the limiter will not grant.

Without it, every sender thread claimed a full piece, asked the limiter, and put back what it
was not granted: at a binding 500/s, eight threads claimed 3.7 rows for every row sent (issue
#21). That churn is database work and, worse, CPU in the sending process, whose provider loop
then ran its sends late (late sends take fresh slots: the rate lost ~8 %).

Each process keeps its own view of how far ahead the schedule is booked: the last
reservation's answer, plus what its threads have taken since and not yet reserved. A thread
takes room from that view before it claims (waiting, without holding anyone up, while there
is too little), and gives back what its reservation did not use. Other processes book too,
so a piece can still be granted less than it took (the limiter stays the authority; the rows
it refuses wait as before). Claims themselves run in parallel: with fifty blasts taking turns
on one lane, serializing them made a round of first pieces take seconds.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

#: A thread waits for room for at least this share of the piece it wants before claiming
#: (tiny pieces would pay a claim, a render pass and a Redis call for a handful of rows).
MIN_PIECE_SHARE = 0.25
#: A thread waiting for room asks this often whether to give its thread up (``give_up``).
#: Waiting threads are most of a priority's threads while a big blast sends at a binding
#: rate, and a new blast's opening waited ~150 ms for one of them (issue #21).
GIVE_UP_POLL_S = 0.025


class Booking:
    """Room for ``size`` sends taken from a :class:`Room`; :meth:`settle` it once reserved."""

    def __init__(self, room: Room, size: int, interval_s: float) -> None:
        self.size = size
        self._room: Room | None = room
        self._interval_s = interval_s

    def settle(self, granted: int = 0, booked_until_s: float = 0.0) -> None:
        """Give back what the reservation did not use (``granted`` of ``size``) and learn
        where it left the schedule (0: nothing learned). Idempotent: the caller settles after
        reserving, and again in ``finally`` (nothing reserved: all of it back)."""
        room, self._room = self._room, None
        if room is not None:
            room._settle((self.size - granted) * self._interval_s, booked_until_s)


class Room:
    """One process's view of one rate's schedule (per priority: each has its horizon)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        #: The schedule's next free slot as this process sees it (local epoch seconds).
        self._booked_until_s = 0.0

    def take(
        self,
        want: int,
        interval_s: float,
        horizon_s: float,
        give_up: Callable[[], bool] | None = None,
    ) -> Booking | None:
        """Room for at most ``want`` sends slots ``interval_s`` apart within ``horizon_s`` of
        now, waiting until there is room for at least a share of them; None when
        ``give_up`` said so while waiting (asked every :data:`GIVE_UP_POLL_S`)."""
        need = max(1, math.ceil(want * MIN_PIECE_SHARE))
        poll_s = horizon_s if give_up is None else min(horizon_s, GIVE_UP_POLL_S)
        while True:
            with self._lock:
                now = self._clock()
                start = max(now, self._booked_until_s)
                room = math.floor((now + horizon_s - start) / interval_s) + 1
                if room >= need:
                    size = max(1, min(want, room))
                    self._booked_until_s = start + size * interval_s
                    return Booking(self, size, interval_s)
                # Until the horizon reaches `need` slots past the booking, at most a horizon:
                # other processes' sends free nothing, time does.
                wait_s = start + (need - 1) * interval_s - horizon_s - now
            self._sleep(min(max(wait_s, 0.001), poll_s))
            if give_up is not None and give_up():
                return None

    def _settle(self, unused_s: float, booked_until_s: float) -> None:
        with self._lock:
            self._booked_until_s = max(self._booked_until_s - unused_s, booked_until_s)
