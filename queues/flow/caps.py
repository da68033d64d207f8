"""Frequency caps in Redis: one sorted set per supporter and channel, one script per page.

Each key holds the blasts that messaged the supporter within the window (member: blast id,
score: Redis's clock in ms) and expires with the window, so a supporter costs Redis nothing
once their window has passed. With a 24 h window, a fleet that reached a million supporters
on a channel in the last day holds about a million small sets (~100 bytes each).
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Any, Final

from config.names import Names
from messaging.compliance.frequency_caps import FrequencyCap

#: Supporters per script call: a 20,000-supporter expansion page is two calls, each short
#: enough (a few ms) not to hold up the rate limiter's scripts behind it.
CALL_SIZE: Final = 10_000


class RedisCapLedger:
    """A :class:`~messaging.compliance.frequency_caps.CapLedger` shared by the whole fleet."""

    def __init__(self, client: Any, names: Names) -> None:
        self._names = names
        lua = resources.files("queues.flow")
        self._script = client.register_script(lua.joinpath("caps.lua").read_text())

    def reserve(
        self,
        channel: str,
        blast_id: str,
        supporter_ids: Sequence[int],
        cap: FrequencyCap,
        *,
        dry_run: bool = False,
    ) -> set[int]:
        """See :meth:`~messaging.compliance.frequency_caps.CapLedger.reserve`."""
        capped: set[int] = set()
        for start in range(0, len(supporter_ids), CALL_SIZE):
            chunk = supporter_ids[start : start + CALL_SIZE]
            keys = [self._names.redis_key("cap", channel, sid) for sid in chunk]
            args = [blast_id, cap.limit, cap.window_s * 1000, "1" if dry_run else "0"]
            for position in self._script(keys=keys, args=args):
                capped.add(chunk[int(position) - 1])
        return capped
