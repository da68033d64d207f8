"""Fair share of a lane between the blasts in it (issue #21, item 2).

A lane (channel x priority) is one FIFO queue on the broker, so two same-priority blasts
used to go out one after the other: the second waited behind every unit of the first.
Now a blast keeps at most :data:`FAIR_WINDOW` units in the lane; the rest wait in the
blast's own Redis list, and when a worker starts one of its units the blast's next unit
joins the *back* of the lane. The lane therefore holds a unit of every waiting blast in
turn: round robin per blast within a priority, while the lanes' priorities still decide
between priorities (urgent before normal before bulk, as before).

A blast new to its lane (no unit pushed there for :data:`NEW_AFTER_IDLE_MS`) goes ahead
of the blasts already taking turns (``fair_front.lua``), behind the other new ones, as a
fair queue serves a new flow first: with fifty blasts sharing a lane, the fifty-first
starts after a few turns, not after a whole round of the others. It gets one turn there;
its next unit joins the back like everyone's.

Units keep travelling as ordinary broker messages (retries, redelivery after a crash and
dead letters are the broker's, as before); only *when* a unit is enqueued changes. Each
step is one Lua script (``fair_push.lua``, ``fair_next.lua``). A place held by a unit that
cannot start (its worker killed with it prefetched, or lost between a script and the
broker) lapses after :data:`COUNT_TTL_MS`, and ``fair_pump.lua`` (run by every unit that
starts and by the scheduler) lets the blast's next unit in: a crash holds a blast back for
seconds, never until the sweep's re-drive.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from typing import Any

#: Units of one blast in its lane at once. One is round robin by unit; a blast still runs
#: on every free thread, since each unit that starts lets the next one in behind the
#: other blasts' units.
FAIR_WINDOW = 1
#: A blast's place count in a lane lapses this long after a unit of it last went in or
#: started: longer than a unit waits in a lane that holds one unit per blast (a few pieces
#: of the other blasts), short enough that a place held by a unit that cannot start (its
#: worker killed with it prefetched; the broker gives such messages back only after a
#: minute or more) holds the blast back for seconds: ``fair_pump.lua`` then lets the next in.
COUNT_TTL_MS = 10_000
#: Waiting units outlive any pause of the senders; a re-drive re-creates lost ones.
WAITING_TTL_MS = 86_400_000
#: A blast that pushed no unit to a lane for this long is new there again (paused, say):
#: its next unit goes ahead. Longer than any gap between a sending blast's pieces.
NEW_AFTER_IDLE_MS = 30_000
#: How long the lane remembers its last unit moved ahead (new blasts keep their order).
FRONT_TTL_MS = 60_000

#: ``(blast_id, supporter_ids)``: a unit of work as it waits here.
Unit = tuple[str, list[int]]


class FairShare:
    """Which units go on a lane now and which wait their blast's turn (Redis, Lua)."""

    __slots__ = (
        "_front",
        "_key_prefix",
        "_next",
        "_openings",
        "_others",
        "_pump",
        "_push",
        "_window",
    )

    def __init__(self, client: Any, key_prefix: str, window: int = FAIR_WINDOW) -> None:
        """``client``: a Redis client; ``key_prefix``: namespaced and versioned, such as
        ``{prefix}-dramatiq:fair:v1``."""
        lua = resources.files("queues.flow")
        self._push = client.register_script(lua.joinpath("fair_push.lua").read_text())
        self._next = client.register_script(lua.joinpath("fair_next.lua").read_text())
        self._others = client.register_script(lua.joinpath("fair_others.lua").read_text())
        self._pump = client.register_script(lua.joinpath("fair_pump.lua").read_text())
        self._front = client.register_script(lua.joinpath("fair_front.lua").read_text())
        self._openings = client.register_script(lua.joinpath("fair_openings.lua").read_text())
        self._key_prefix = key_prefix
        self._window = window

    def _keys(self, lane: str, blast_id: str) -> list[str]:
        base = f"{self._key_prefix}:{lane}"
        return [
            f"{base}:{blast_id}:queued",
            f"{base}:{blast_id}:waiting",
            f"{base}:turns",
            f"{base}:waiters",
        ]

    def _openings_key(self, lane: str) -> str:
        return f"{self._key_prefix}:{lane}:openings"

    def push(
        self, lane: str, blast_id: str, supporter_ids: Sequence[int]
    ) -> tuple[Unit | None, bool]:
        """Offer a new unit: the unit to enqueue on ``lane`` now (this one, or the blast's
        oldest waiting one), or None when the blast's window is full and it waits; and
        whether the blast is new to the lane (its unit then goes ahead: :meth:`ahead`)."""
        payload = json.dumps([blast_id, list(supporter_ids)])
        keys = self._keys(lane, blast_id)
        out = self._push(
            keys=[*keys, f"{self._key_prefix}:{lane}:{blast_id}:seen", self._openings_key(lane)],
            args=[self._window, payload, COUNT_TTL_MS, WAITING_TTL_MS, blast_id, NEW_AFTER_IDLE_MS],
        )
        return _unit(out[0]), bool(out[1])

    def ahead(self, queue_key: str, message_id: str) -> bool:
        """Move a new blast's unit (dramatiq's ``message_id`` on the lane's list
        ``queue_key``) ahead of the blasts taking turns; False if it already left."""
        last = f"{queue_key}:fair-front"
        return bool(self._front(keys=[queue_key, last], args=[message_id, FRONT_TTL_MS]))

    def started(self, lane: str, blast_id: str) -> Unit | None:
        """A unit of the blast left the lane: its next unit to enqueue, if one waits."""
        keys = [*self._keys(lane, blast_id), self._openings_key(lane)]
        return _unit(self._next(keys=keys, args=[COUNT_TTL_MS, blast_id]))

    def pump(self, lane: str) -> list[Unit]:
        """Units to enqueue on ``lane`` now: the next of each blast whose place lapsed."""
        base = f"{self._key_prefix}:{lane}"
        raw = self._pump(keys=[f"{base}:waiters"], args=[base, COUNT_TTL_MS])
        return [u for u in map(_unit, raw or []) if u is not None]

    def others_waiting(self, lane: str, blast_id: str) -> int:
        """How many other blasts have a unit waiting in ``lane`` for a thread."""
        turns = self._keys(lane, blast_id)[2]
        return int(self._others(keys=[turns], args=[COUNT_TTL_MS, blast_id]))

    def openings_waiting(self, lane: str) -> int:
        """How many blasts' openings (their first unit in ``lane``) wait for a thread."""
        return int(self._openings(keys=[self._openings_key(lane)], args=[COUNT_TTL_MS]))

    def waiting(self, lane: str, blast_id: str) -> int:
        """Units of the blast waiting for their turn (for tests and metrics)."""
        client = self._push.registered_client
        return int(client.llen(self._keys(lane, blast_id)[1]))


def _unit(raw: Any) -> Unit | None:
    if raw is None or raw is False:
        return None
    blast_id, ids = json.loads(raw)
    return str(blast_id), [int(i) for i in ids]
