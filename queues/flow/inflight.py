"""Which ledger rows each live sender holds, so the sweep can tell a dead worker's rows.

A row is ``sending`` from its claim until its outcome is written. While a sender holds it,
the sender's id and the row are in Redis, and the sender beats every :data:`BEAT_S`. When
the beats stop (SIGKILL, a lost instance) the sweep finds the dead process's rows
``sending`` and held by nobody alive, and settles them within a minute: SMS by asking the
provider's message log, email as ``lost_in_flight`` (see :mod:`messaging.safety.sweep`). A batch
that hits an unexpected error gives its rows up the same way, so nothing is stranded.

Rows are announced before they are claimed and given up after their outcome is written, so
a live sender's rows are never without an owner. A beat re-adds every row the process holds,
so a Redis that restarted empty knows them again within one beat (the sweep also leaves rows
claimed less than :data:`GRACE_S` ago alone).
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Any

import structlog

from config.names import Names
from messaging.errors import ServiceUnavailableError
from messaging.memory import InMemoryInFlight as InMemoryInFlight
from messaging.ports import IN_FLIGHT_GRACE_S, HeldRow
from messaging.ports import InFlight as InFlight
from messaging.ports import InFlightView as InFlightView

log = structlog.get_logger(__name__)

#: How often a sender that holds rows says it is alive, in seconds.
BEAT_S = 2.0
#: A sender silent this long is dead (five missed beats: a GC pause or a slow Redis is not).
ALIVE_S = 10.0
#: Rows claimed less than this long ago are never settled by the sweep, whoever holds them.
GRACE_S = IN_FLIGHT_GRACE_S
#: A dead process's set of rows expires by itself after this, if no sweep dropped it.
SET_TTL_S = 3_600

#: One held row: (blast id, channel, supporter id).
Row = HeldRow


class InFlightUnknown(ServiceUnavailableError):
    """Which rows live senders hold cannot be known yet (see :meth:`RedisInFlight.owned`)."""


def encode(row: Row) -> str:
    """``"<channel>|<supporter id>|<blast id>"`` (alert ids never contain ``|``)."""
    blast_id, channel, supporter_id = row
    return f"{channel}|{supporter_id}|{blast_id}"


def decode(member: str | bytes) -> Row:
    """The inverse of :func:`encode`."""
    text = member.decode() if isinstance(member, bytes) else member
    channel, supporter_id, blast_id = text.split("|", 2)
    return blast_id, channel, int(supporter_id)


def packed(blast_id: str, channel: str, supporter_ids: Iterable[int]) -> list[str]:
    """Rows of one blast and channel as the scripts take them: ``"<channel>|"``,
    ``"|<blast id>"`` and the supporter ids comma-separated; the script builds each row's
    :func:`encode` form. One argument instead of a thousand: redis-py encodes arguments one
    by one in Python, which cost more than the scripts themselves."""
    return [f"{channel}|", f"|{blast_id}", ",".join(map(str, supporter_ids))]


def process_id() -> str:
    """An id unique to this process run: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"


class RedisInFlight:
    """Held rows in Redis, one set per process, with a heartbeat thread while it holds any.

    The thread starts on the first :meth:`hold`, so a process that never sends (the web
    app, a CLI command) never beats.
    """

    def __init__(
        self, client: Any, names: Names, *, proc: str | None = None, alive_s: float = ALIVE_S
    ) -> None:
        self._client = client
        self._alive_ms = int(alive_s * 1000)
        self._names = names
        self.proc = proc or process_id()
        self._registry = names.redis_key("senders")
        self._set_prefix = names.redis_key("inflight") + ":"
        lua = resources.files("queues.flow")
        self._beat = client.register_script(lua.joinpath("inflight_beat.lua").read_text())
        self._owned = client.register_script(lua.joinpath("inflight_owned.lua").read_text())
        self._release = client.register_script(lua.joinpath("inflight_release.lua").read_text())
        #: Supporter ids held, per (blast id, channel).
        self._held: dict[tuple[str, str], set[int]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def _set(self) -> str:
        return self._set_prefix + self.proc

    def hold(self, blast_id: str, channel: str, supporter_ids: Sequence[int]) -> None:
        """See :class:`InFlight`: one round trip, which is also a beat."""
        ids = list(map(int, supporter_ids))
        if not ids:
            return
        with self._lock:
            self._held.setdefault((blast_id, channel), set()).update(ids)
        args = [self.proc, SET_TTL_S * 1000, *packed(blast_id, channel, ids)]
        self._beat(keys=[self._registry, self._set], args=args)
        self._start()

    def release(self, blast_id: str, channel: str, supporter_ids: Sequence[int]) -> None:
        """See :class:`InFlight`."""
        ids = list(map(int, supporter_ids))
        if not ids:
            return
        with self._lock:
            held = self._held.get((blast_id, channel))
            if held is not None:
                held.difference_update(ids)
                if not held:
                    del self._held[(blast_id, channel)]
        self._release(keys=[self._set], args=packed(blast_id, channel, ids))

    def beat(self) -> None:
        """Say this process is alive, re-announcing every row it holds."""
        args: list[Any] = [self.proc, SET_TTL_S * 1000]
        with self._lock:
            for (blast_id, channel), ids in self._held.items():
                args += packed(blast_id, channel, ids)
        self._beat(keys=[self._registry, self._set], args=args)

    def owned(self) -> set[Row]:
        """See :class:`InFlightView`.

        Raises :class:`InFlightUnknown` while the registry is younger than the alive window
        (a Redis that restarted empty): a live sender may not have beaten yet, and rows it
        holds must not look orphaned.
        """
        out = self._owned(keys=[self._registry], args=[self._set_prefix, self._alive_ms])
        if int(out[0]) < self._alive_ms:
            raise InFlightUnknown(
                "the in-flight registry is younger than the senders' beat window "
                "(Redis restarted?): rows in doubt wait for the next pass"
            )
        return {decode(m) for m in out[1:]}

    def _start(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="inflight-beat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(BEAT_S):
            try:
                self.beat()
                if failing:
                    log.info("inflight.beat_recovered")
                failing = False
            except Exception as exc:  # Redis away: say so once, keep trying
                if not failing:
                    log.warning(
                        "inflight.beat_failed", error=str(exc)[:200], error_type=type(exc).__name__
                    )
                failing = True

    def close(self) -> None:
        """Stop beating and forget this process (a clean exit holds no rows)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=BEAT_S + 1)
        try:
            self._client.hdel(self._registry, self.proc)
            self._client.delete(self._set)
        except Exception as exc:  # best effort: the sweep forgets us after ALIVE_S anyway
            log.warning("inflight.close_failed", error=str(exc)[:200])


def rows_of(rows: Iterable[Row], blast_id: str) -> set[tuple[str, int]]:
    """``(channel, supporter id)`` of the rows of one blast."""
    return {(channel, sid) for b, channel, sid in rows if b == blast_id}
