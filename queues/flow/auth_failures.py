"""Failed bearer attempts per client address, counted fleet-wide in Redis.

Every ``rapid web`` process shares the count, so guessing tokens against a load-balanced
fleet is no faster than against one process. One script call per check or failure.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from config.names import Names


class RedisFailureLimiter:
    """At most ``limit`` failed attempts per address per ``window_s``; then a wait."""

    def __init__(self, client: Any, names: Names, *, limit: int, window_s: float) -> None:
        self._names = names
        self._limit = limit
        self._window_ms = int(window_s * 1000)
        lua = resources.files("queues.flow")
        self._script = client.register_script(lua.joinpath("auth_failures.lua").read_text())

    def _call(self, address: str, add: bool) -> float:
        key = self._names.redis_key("authfail", address)
        failures, ttl_ms = self._script(keys=[key], args=["1" if add else "0", self._window_ms])
        if int(failures) < self._limit:
            return 0.0
        return max(int(ttl_ms), 1) / 1000

    def retry_after(self, address: str) -> float:
        """Seconds until ``address`` may try again (0: now)."""
        return self._call(address, add=False)

    def failed(self, address: str) -> float:
        """Count one failure; returns the wait it now faces (0: none yet)."""
        return self._call(address, add=True)
