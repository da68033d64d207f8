"""Quiet hours: no SMS between ``QUIET_HOURS`` in the recipient's local time (contract §9.3).

TCPA's safe harbour is 8 a.m.–9 p.m. in the called party's time zone. A recipient whose time
zone is unknown gets the window that is allowed in *every* US time zone at once (with the
default, 1 p.m.–9 p.m. Eastern): we would rather text late than at 3 a.m.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from config.settings import QuietHours

#: The time zones of the fifty states, east to west. Territories far across the date line
#: (Guam, American Samoa) would leave no common window at all; their supporters have a
#: known time zone from their number or ZIP code.
US_TIME_ZONES = (
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Phoenix",
    "America/Los_Angeles",
    "America/Anchorage",
    "Pacific/Honolulu",
)


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def is_quiet(local: time, window: QuietHours) -> bool:
    """True if ``local`` falls inside the quiet window (which may wrap midnight)."""
    if window.start < window.end:
        return window.start <= local < window.end
    return local >= window.start or local < window.end


def _quiet_in(zone: ZoneInfo, now: datetime, window: QuietHours) -> bool:
    return is_quiet(now.astimezone(zone).time().replace(tzinfo=None), window)


def _window_end_after(zone: ZoneInfo, now: datetime, window: QuietHours) -> datetime:
    """The next local ``window.end`` strictly after ``now``, in UTC."""
    local = now.astimezone(zone)
    for days in range(3):
        day = (local + timedelta(days=days)).date()
        candidate = datetime.combine(day, window.end, tzinfo=zone).astimezone(UTC)
        if candidate > now:
            return candidate
    raise AssertionError("a daily window ends within three days")  # pragma: no cover


def next_allowed(now: datetime, tz_name: str | None, window: QuietHours) -> datetime | None:
    """None if an SMS may go now; else the UTC instant at which the quiet window ends.

    ``now`` must be timezone-aware. An unknown or invalid ``tz_name`` means "quiet if it is
    quiet anywhere in the US".
    """
    zone = _zone(tz_name) if tz_name else None
    zones = [zone] if zone is not None else [z for z in map(_zone, US_TIME_ZONES) if z]
    if not any(_quiet_in(z, now, window) for z in zones):
        return None
    # The first moment at which some zone's quiet window ends and no zone is quiet.
    candidates = sorted(
        {_window_end_after(z, now + timedelta(days=d), window) for z in zones for d in (0, 1)}
    )
    for candidate in candidates:
        if not any(_quiet_in(z, candidate, window) for z in zones):
            return candidate
    raise AssertionError(
        f"no allowed time for {window} in {tz_name or 'the US'}"
    )  # pragma: no cover
