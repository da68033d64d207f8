"""One leader among several processes: a lease in Redis (``SET NX PX``), renewed and
released by its holder only (``leader.lua``).

Every web instance runs ``rapid scheduler``; each used to sweep the ledger every 5 s and
count every live blast. Now only the lease holder does: the others tick, find the lease
held, and wait. A leader that dies stops renewing, and another takes over within the TTL;
one that stops cleanly releases the lease, and another takes over at its next tick.

A holder counts itself leader only until ``ttl - safety`` after the start of its last
successful acquire or renew (measured on its own monotonic clock, started before the
round trip), so a partitioned leader stands down before Redis can hand the lease to
another. The sweep's work is safe to run twice anyway (claims are conditional updates); the
lease is about not doing it N times, not about correctness.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from importlib import resources
from typing import Any, Protocol

import structlog

from config.names import Names

log = structlog.get_logger(__name__)

#: How long a lease lives without renewal, in milliseconds: the longest a dead leader's
#: role stays vacant. Three scheduler ticks (5 s each).
LEASE_TTL_MS = 15_000
#: A holder stops counting itself leader this long before its lease could expire in Redis
#: (clock drift between this host and Redis, a slow round trip), in milliseconds.
LEASE_SAFETY_MS = 2_000


class Leadership(Protocol):
    """Who does a singleton's work right now."""

    def hold(self) -> bool:
        """Acquire or renew the lease; True while this process leads."""
        ...

    def release(self) -> None:
        """Give the lease up (a clean stop), so another process takes over at once."""
        ...


class RedisLeaderLease:
    """:class:`Leadership` on Redis, one lease per ``role`` and prefix."""

    __slots__ = ("_client", "_clock", "_key", "_renew", "_safety_ms", "_token", "_ttl_ms", "_until")

    def __init__(
        self,
        client: Any,
        names: Names,
        role: str,
        *,
        ttl_ms: int = LEASE_TTL_MS,
        safety_ms: int = LEASE_SAFETY_MS,
        token: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= safety_ms < ttl_ms:
            raise ValueError("safety_ms must be below ttl_ms")
        self._client = client
        self._key = names.redis_key("leader", role)
        self._token = token or uuid.uuid4().hex
        self._ttl_ms = ttl_ms
        self._safety_ms = safety_ms
        self._clock = clock
        self._until = 0.0
        script = resources.files("queues").joinpath("leader.lua").read_text()
        self._renew = client.register_script(script)

    @property
    def token(self) -> str:
        """This holder's identity (the lease key's value while it leads)."""
        return self._token

    def hold(self) -> bool:
        """See :class:`Leadership`. Redis errors propagate after standing down."""
        started = self._clock()
        try:
            if self._until > started:
                owned = bool(self._renew(keys=[self._key], args=[self._token, self._ttl_ms]))
                if not owned:
                    log.warning("leader.lost", key=self._key)
            else:
                owned = bool(self._client.set(self._key, self._token, nx=True, px=self._ttl_ms))
                if not owned:  # a restarted holder keeps its token only within one process
                    owned = bool(self._renew(keys=[self._key], args=[self._token, self._ttl_ms]))
                if owned:
                    log.info("leader.acquired", key=self._key)
        except Exception:
            self._until = 0.0
            raise
        self._until = started + (self._ttl_ms - self._safety_ms) / 1000 if owned else 0.0
        return owned

    def release(self) -> None:
        """See :class:`Leadership`."""
        was_leading = self._until > self._clock()
        self._until = 0.0
        if self._renew(keys=[self._key], args=[self._token, 0]) and was_leading:
            log.info("leader.released", key=self._key)


class InMemoryLeadership:
    """:class:`Leadership` within one process (tests, the demo): a shared dict of leases."""

    __slots__ = ("_clock", "_leases", "_role", "_token", "_ttl_s")

    def __init__(
        self,
        leases: dict[str, tuple[str, float]],
        role: str,
        *,
        ttl_ms: int = LEASE_TTL_MS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._leases = leases
        self._role = role
        self._token = uuid.uuid4().hex
        self._ttl_s = ttl_ms / 1000
        self._clock = clock

    def hold(self) -> bool:
        """See :class:`Leadership`."""
        now = self._clock()
        holder = self._leases.get(self._role)
        if holder is None or holder[0] == self._token or holder[1] <= now:
            self._leases[self._role] = (self._token, now + self._ttl_s)
            return True
        return False

    def release(self) -> None:
        """See :class:`Leadership`."""
        holder = self._leases.get(self._role)
        if holder is not None and holder[0] == self._token:
            del self._leases[self._role]
