"""A blast seen closer than its counts: failures by error code, deferrals by time zone.

What the dashboard's blast page shows beside the counters (contract §7): which provider
codes failed how many rows, and, per time zone, how many texts wait for quiet hours to end
and when the first and last of them are released.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class DeferredZone:
    """The SMS of one blast deferred in one time zone."""

    #: IANA name; None for recipients whose zone is unknown (the conservative window).
    timezone: str | None
    rows: int
    #: When the first and the last of them are released (the window's end there).
    first_release: datetime | None
    last_release: datetime | None


@dataclass(frozen=True, slots=True)
class Breakdown:
    """Failures and deferrals of one blast."""

    #: ``{channel: {error code or "": rows}}``, largest first.
    failures: dict[str, dict[str, int]]
    #: Deferred SMS per zone, the soonest release first.
    deferred: list[DeferredZone]


class BreakdownReads(Protocol):
    """Reads one blast's breakdown from the ledger (two grouped, indexed queries)."""

    def breakdown(self, blast_id: str) -> Breakdown:
        """Failures by code and deferrals by zone; empty for an unknown blast."""
        ...


def ordered(failures: dict[str, dict[str, int]], deferred: list[DeferredZone]) -> Breakdown:
    """The shared ordering of both backends: biggest failure codes first, soonest release
    first (unknown zones last among equals)."""
    return Breakdown(
        failures={
            channel: dict(sorted(codes.items(), key=lambda kv: (-kv[1], kv[0])))
            for channel, codes in sorted(failures.items())
        },
        deferred=sorted(
            deferred,
            key=lambda z: (
                z.first_release is None,
                z.first_release or datetime.min,
                z.timezone or "~",
            ),
        ),
    )
