"""The demo's supporters: a voter-file-like CSV with consent gaps, households, typos and bad
numbers, living in time zones chosen so that the demo sends at any hour of the day."""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from config.settings import QuietHours, Settings

#: Synthetic supporters, spread over US area codes (and so time zones).
AREA_CODES = {
    "212": "New York",
    "412": "Pittsburgh",
    "305": "Miami",
    "312": "Chicago",
    "214": "Dallas",
    "303": "Denver",
    "602": "Phoenix",
    "206": "Seattle",
    "415": "San Francisco",
    "907": "Anchorage",
    "808": "Honolulu",
}
#: Zones the demo's supporters live in: the US ones, and enough others that it is daytime
#: in some of them at any hour (UTC-10 to UTC+10, no gap wider than ~4 h).
DEMO_ZONES = (
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Phoenix",
    "America/Los_Angeles",
    "America/Anchorage",
    "Pacific/Honolulu",
    "America/Sao_Paulo",
    "Europe/London",
    "Europe/Berlin",
    "Africa/Lagos",
    "Asia/Kolkata",
    "Asia/Tokyo",
    "Australia/Sydney",
)
#: Every n-th supporter lives where it is quiet now, so the report shows deferral at work.
QUIET_EVERY = 10
#: A zone counts as awake when texts may go now and for this long (the demo's whole run).
AWAKE_FOR = timedelta(hours=1)


@dataclass
class Seeded:
    """What the demo data should produce, to check the report against."""

    people: int
    bad_numbers: int
    twilio_invalid: set[str]
    opted_out: set[str]


def zones_now(now: datetime, quiet_hours: QuietHours) -> tuple[list[str], list[str]]:
    """``(awake, asleep)``: the demo zones where texts may go now (and for the next
    :data:`AWAKE_FOR`), and those inside their quiet hours."""
    from messaging.compliance.quiet_hours import next_allowed

    awake = [
        z
        for z in DEMO_ZONES
        if next_allowed(now, z, quiet_hours) is None
        and next_allowed(now + AWAKE_FOR, z, quiet_hours) is None
    ]
    asleep = [z for z in DEMO_ZONES if next_allowed(now, z, quiet_hours) is not None]
    return awake, asleep


def seed_zone(i: int, awake: list[str], asleep: list[str]) -> str:
    """Supporter ``i``'s time zone: mostly where it is day now, every
    :data:`QUIET_EVERY`-th where it is night (when it is night somewhere)."""
    if asleep and i % QUIET_EVERY == QUIET_EVERY - 1:
        return asleep[i % len(asleep)]
    pool = awake or asleep
    return pool[i % len(pool)]


def seed_csv(
    path: Path,
    people: int,
    rng: random.Random,
    *,
    now: datetime | None = None,
    quiet_hours: QuietHours | None = None,
) -> Seeded:
    """A voter-file-like CSV: consent gaps, households, typos, bad numbers.

    Time zones are chosen relative to ``now``: most supporters live where texts may go now,
    a tenth where it is night, so the demo sends SMS at any hour of the day (with zones
    derived from US phone numbers, every text waited at US night).
    """
    codes = list(AREA_CODES)
    awake, asleep = zones_now(now or datetime.now(UTC), quiet_hours or Settings().quiet_hours)
    invalid, twilio_invalid = 0, set()
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "external_id",
                "first_name",
                "last_name",
                "phone",
                "email",
                "topics",
                "sms_opt_in",
                "email_opt_in",
                "tags",
                "timezone",
            ]
        )
        for i in range(people):
            code = codes[i % len(codes)]
            phone = f"({code}) 555-{i:04d}"
            if i % 211 == 5:
                phone, invalid = "555-01", invalid + 1  # too short: the import drops it
            if i % 97 == 11:
                twilio_invalid.add(f"+1{code}555{i:04d}")  # Twilio will answer 21211
            if i % 40 == 7 and i > 0:  # a household member sharing the previous phone
                phone = f"({codes[(i - 1) % len(codes)]}) 555-{i - 1:04d}"
            w.writerow(
                [
                    f"demo-{i}",
                    rng.choice(["Ana", "Ben", "Chloé", "Dev", "Eli", "Fatima"]),
                    rng.choice(["Nguyen", "Smith", "García", "Okafor"]),
                    phone,
                    f"supporter{i}@example.org",
                    "debate-night",
                    "no" if i % 9 == 4 else "yes",
                    "no" if i % 8 == 3 else "yes",
                    "volunteer" if i % 3 else "donor",
                    seed_zone(i, awake, asleep),
                ]
            )
    return Seeded(people, invalid, twilio_invalid, set())
