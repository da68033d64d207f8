"""Live progress of a blast: ledger rows per channel and state, counted in Redis as they move.

The ledger is the truth, but counting a million-row blast there every half second (``blast
watch``, the API, dashboards) is a grouped scan per look. So every writer that moves rows
adds its deltas here in the same round trip that stamps the blast's last progress:
expansion (rows written per state), senders (outcomes out of ``pending``), the sweep
(deferred rows released, lost rows failed). Reading is one ``HGETALL``.

Reconciling: counters are replaced by the ledger's counts (atomically, ``progress_replace.lua``)
when expansion starts and on every scheduler pass while the blast is live. Writers add
their deltas just *before* their ledger commit, so a reconcile can only lose a batch whose
increment and commit straddle its snapshot (until the next reconcile), never count one
twice; a writer that dies between the two is corrected the same way. Counters never
based on the ledger (a blast from before they existed, expired keys) are ignored by
readers, who count the ledger instead.

Rows in ``sending`` are counted as ``pending`` by writers (a claim is not worth a round
trip); readers merge the two, as :func:`messaging.blasts.lifecycle.counts_from_states` does.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any

from config.names import Names
from messaging.blasts.lifecycle import as_written
from messaging.ports import ByChannel

#: Counters and the progress stamp outlive any blast by far; a reconcile re-creates them.
KEY_TTL_S = 7 * 86_400
#: Marks a counters hash that was based on the ledger (see the module docstring).
BASE_FIELD = "_base"


def _fields(channel: str, deltas: Mapping[str, int]) -> list[str | int]:
    args: list[str | int] = []
    for state, n in deltas.items():
        if n:
            args += [f"{channel}:{state}", int(n)]
    return args


def _parse(raw: Mapping[Any, Any]) -> ByChannel | None:
    if not raw:
        return None
    out: ByChannel = {}
    based = False
    for key, value in raw.items():
        name = key.decode() if isinstance(key, bytes) else str(key)
        if name == BASE_FIELD:
            based = True
            continue
        channel, _, state = name.partition(":")
        # A batch straddling a reconcile can leave a count a little low for a few seconds;
        # never show a negative number of rows.
        out.setdefault(channel, {})[state] = max(int(value), 0)
    return out if based else None


class RedisProgressCounters:
    """:class:`~messaging.ports.ProgressCounters` in one Redis hash per blast; each write is
    one script call."""

    def __init__(self, client: Any, names: Names) -> None:
        self._client = client
        self._names = names
        lua = resources.files("queues.flow")
        self._add = client.register_script(lua.joinpath("progress_add.lua").read_text())
        self._replace = client.register_script(lua.joinpath("progress_replace.lua").read_text())

    def _counts_key(self, blast_id: str) -> str:
        return self._names.redis_key("counts", blast_id)

    def _stamp_key(self, blast_id: str) -> str:
        return self._names.redis_key("progress", blast_id)

    def add(self, blast_id: str, channel: str, deltas: Mapping[str, int]) -> None:
        """See :class:`~messaging.ports.ProgressCounters`."""
        self._add(
            keys=[self._counts_key(blast_id), self._stamp_key(blast_id)],
            args=[KEY_TTL_S, repr(time.time()), *_fields(channel, deltas)],
        )

    def touch(self, blast_id: str) -> None:
        """See :class:`~messaging.ports.ProgressCounters`."""
        self._client.set(self._stamp_key(blast_id), repr(time.time()), ex=KEY_TTL_S)

    def last_progress(self, blast_id: str) -> float | None:
        """See :class:`~messaging.ports.ProgressCounters`."""
        raw = self._client.get(self._stamp_key(blast_id))
        return float(raw) if raw else None

    def replace(self, blast_id: str, by_channel: Mapping[str, Mapping[str, int]]) -> None:
        """See :class:`~messaging.ports.ProgressCounters`."""
        args: list[str | int] = [KEY_TTL_S]
        for channel, by_state in by_channel.items():
            args += _fields(channel, as_written(by_state))
        self._replace(keys=[self._counts_key(blast_id)], args=args)

    def read(self, blast_ids: Iterable[str]) -> dict[str, ByChannel | None]:
        """See :class:`~messaging.ports.ProgressCounters`."""
        ids = list(blast_ids)
        pipe = self._client.pipeline(transaction=False)
        for blast_id in ids:
            pipe.hgetall(self._counts_key(blast_id))
        return {b: _parse(raw) for b, raw in zip(ids, pipe.execute(), strict=True)}
